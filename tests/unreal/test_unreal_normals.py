"""Unreal's world normals (SCS_Normal) -> the protocol's camera-space normal map: x right, y up, z toward the camera.

Checked on cameras in known orientations: whatever way the camera looks, a surface facing it comes out as the
protocol's "toward the camera" (encoded 128, 128, 255), the floor below a level camera as "up", a wall that faces
the image's right as "right"; the sky (depth at far) is the zero vector.
"""

import math

import pytest

from controlbridge_unreal import camera_math, normals
from fake_unreal import LinearColor

FAR = 65504.0


def facing(rotation):
    """The world normal of a surface facing a camera with `rotation`: minus its forward axis."""
    forward = camera_math.rotator_axes(rotation)[0]
    return tuple(-c for c in forward)


@pytest.mark.parametrize("rotation", [(0.0, 0.0, 0.0), (0.0, 90.0, 0.0), (-30.0, 135.0, 0.0), (20.0, -60.0, 15.0),
                                      (-89.0, 10.0, 0.0), (0.0, 180.0, 90.0)])
def test_a_surface_facing_the_camera_is_toward_the_camera(rotation):
    assert normals.to_camera(facing(rotation), rotation) == pytest.approx((0.0, 0.0, 1.0), abs=1e-9)
    data = normals.camera_normal_map([LinearColor(*facing(rotation), 0.0)], [500.0], rotation, FAR)
    assert tuple(data) == (128, 128, 255, 255)


def test_a_level_camera_sees_the_floor_up_and_the_walls_left_and_right():
    looking_east = (0.0, 90.0, 0.0)          # yaw 90: forward is world +Y, so the image's right is world -X
    assert normals.to_camera((0.0, 0.0, 1.0), looking_east) == pytest.approx((0.0, 1.0, 0.0))      # floor
    assert normals.to_camera((-1.0, 0.0, 0.0), looking_east) == pytest.approx((1.0, 0.0, 0.0))     # faces right
    assert normals.to_camera((1.0, 0.0, 0.0), looking_east) == pytest.approx((-1.0, 0.0, 0.0))     # faces left
    assert normals.to_camera((0.0, 1.0, 0.0), looking_east) == pytest.approx((0.0, 0.0, -1.0))     # faces away


def test_roll_turns_the_image_axes():
    rolled = (0.0, 0.0, 90.0)                # rolled 90 degrees: the world's up is the image's left or right
    x, y, z = normals.to_camera((0.0, 0.0, 1.0), rolled)
    assert abs(x) == pytest.approx(1.0) and y == pytest.approx(0.0, abs=1e-9) and z == pytest.approx(0.0, abs=1e-9)
    # and it agrees with the camera's own up axis: the world direction of its local +Z maps to image up
    up = camera_math.local_to_world_direction(rolled, (0.0, 0.0, 1.0))
    assert normals.to_camera(up, rolled) == pytest.approx((0.0, 1.0, 0.0), abs=1e-9)


def test_the_map_encodes_each_pixel_and_marks_background_by_depth():
    camera = (-10.0, 30.0, 0.0)
    forward, right, up = camera_math.rotator_axes(camera)
    pixels = [facing(camera), up, right, (0.3, -0.2, 0.9), facing(camera), (0.0, 0.0, 0.0)]
    depths = [800.0, 1200.0, 300.0, FAR, 0.0, 900.0]          # sky, no depth, and a zero normal: background
    data = normals.camera_normal_map([LinearColor(*p, 0.0) for p in pixels], depths, camera, FAR)
    assert len(data) == 6 * 4
    px = [tuple(data[i:i + 4]) for i in range(0, len(data), 4)]
    assert px[0] == (128, 128, 255, 255)
    assert px[1] == (128, 255, 128, 255)
    assert px[2] == (255, 128, 128, 255)
    assert px[3] == px[4] == px[5] == normals.BACKGROUND
    # a GBuffer normal a little off unit length (16-bit floats) is renormalized
    scaled = normals.camera_normal_map([LinearColor(*(0.98 * c for c in up), 0.0)], [10.0], camera, FAR)
    assert tuple(scaled) == (128, 255, 128, 255)


def test_the_encoding_decodes_back_within_8_bits():
    camera = (15.0, -40.0, 5.0)
    n = (0.48, -0.6, 0.64)
    n = tuple(c / math.sqrt(sum(v * v for v in n)) for c in n)
    data = normals.camera_normal_map([LinearColor(*n, 0.0)], [100.0], camera, FAR)
    decoded = tuple(b / 255.0 * 2.0 - 1.0 for b in data[:3])
    assert decoded == pytest.approx(normals.to_camera(n, camera), abs=1.0 / 127)
    assert tuple(data) == normals.encode(normals.to_camera(n, camera))


def test_a_buffer_of_the_wrong_size_is_an_error():
    with pytest.raises(ValueError):
        normals.camera_normal_map([LinearColor(0.0, 0.0, 1.0, 0.0)], [1.0, 2.0], (0.0, 0.0, 0.0), FAR)
