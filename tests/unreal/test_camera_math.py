import math
import random

import pytest

from controlbridge_unreal import camera_math as cm


def _flat(v):
    if isinstance(v, (tuple, list)):
        return [x for item in v for x in _flat(item)]
    return [v]


def close(a, b, tol=1e-9):
    a, b = _flat(a), _flat(b)
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_filmback_to_horizontal_fov():
    # Unreal's default CineCamera: 16:9 DSLR filmback 23.76 x 13.365 mm, 35 mm lens -> ~37.5 degrees
    assert cm.hfov_from_filmback(23.76, 35.0) == pytest.approx(37.4974, abs=1e-3)
    assert cm.hfov_from_filmback(36.0, 18.0) == pytest.approx(90.0)
    with pytest.raises(ValueError):
        cm.hfov_from_filmback(36.0, 0.0)


def test_vertical_fov_and_frustum():
    assert cm.vfov_from_hfov(90.0, 1.0) == pytest.approx(90.0)
    w, h = cm.frustum_size(500.0, 90.0, 2.0)
    assert w == pytest.approx(1000.0) and h == pytest.approx(500.0)
    # the frustum edge passes through (d, w/2): half-angle is hfov/2
    w, h = cm.frustum_size(300.0, 60.0, 16 / 9)
    assert math.degrees(math.atan2(w / 2, 300.0)) * 2 == pytest.approx(60.0)
    assert math.degrees(math.atan2(h / 2, 300.0)) * 2 == pytest.approx(cm.vfov_from_hfov(60.0, 16 / 9))
    with pytest.raises(ValueError):
        cm.frustum_size(1.0, 180.0, 1.0)


@pytest.mark.parametrize("box,aspect,expected", [
    ((768, 512), 1.5, (768, 512)),
    ((768, 512), 16 / 9, (768, 432)),
    ((768, 512), 2.39, (768, 320)),
    ((768, 512), 0.5, (256, 512)),
    ((768, 512), None, (768, 512)),
    ((770, 515), None, (768, 512)),
    ((1024, 1024), 23.76 / 13.365, (1024, 576)),
])
def test_fit_output_size(box, aspect, expected):
    assert cm.fit_output_size(*box, aspect) == expected


def test_fit_output_size_never_leaves_the_box():
    rng = random.Random(1)
    for _ in range(500):
        bw, bh = rng.randint(64, 2048), rng.randint(64, 2048)
        aspect = rng.uniform(0.2, 5.0)
        w, h = cm.fit_output_size(bw, bh, aspect)
        assert w % 8 == 0 and h % 8 == 0
        assert w <= max(bw, 8) and h <= max(bh, 8)
        if w >= 64 and h >= 64:
            assert abs(w / h - aspect) / aspect < 0.15


def test_rotator_axes_follow_unreal():
    assert close(cm.rotator_axes((0, 0, 0)), ((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    x, y, z = cm.rotator_axes((0, 90, 0))          # yaw 90: forward = +Y
    assert close(x, (0, 1, 0)) and close(y, (-1, 0, 0))
    x, y, z = cm.rotator_axes((90, 0, 0))          # pitch 90: forward = up
    assert close(x, (0, 0, 1)) and close(z, (-1, 0, 0))
    x, y, z = cm.rotator_axes((0, 0, 90))          # roll 90 about forward
    assert close(x, (1, 0, 0)) and close(y, (0, 0, -1)) and close(z, (0, 1, 0))


def test_axes_to_rotator_inverts():
    rng = random.Random(2)
    for _ in range(200):
        rot = (rng.uniform(-89, 89), rng.uniform(-180, 180), rng.uniform(-180, 180))
        back = cm.axes_to_rotator(*cm.rotator_axes(rot))
        assert close(cm.rotator_axes(back)[0], cm.rotator_axes(rot)[0], 1e-9)
        assert close(back, rot, 1e-6)


def test_compose_places_child_in_parent_frame():
    loc, rot = cm.compose((100, 200, 300), (0, 90, 0), (500, 0, 0), (0, 0, 0))
    assert close(loc, (100, 700, 300), 1e-9) and close(rot, (0, 90, 0), 1e-9)


def test_plane_fills_the_frustum():
    p = cm.plane_placement(500.0, 90.0, 2.0)
    assert p.width == pytest.approx(1000.0) and p.height == pytest.approx(500.0)
    assert p.relative_location == (500.0, 0.0, 0.0)
    assert p.relative_rotation == cm.PLANE_RELATIVE_ROTATION
    assert p.scale == pytest.approx((5.0, 10.0, 1.0))   # mesh X (100 uu) -> up/height, mesh Y -> right/width
    # after the relative rotation the plane's face (+Z) points back at the camera and its X points up
    x, y, z = cm.rotator_axes(p.relative_rotation)
    assert close(z, (-1, 0, 0), 1e-12) and close(x, (0, 0, 1), 1e-12) and close(y, (0, 1, 0), 1e-12)


def test_plane_corners_lie_on_the_frustum_edges():
    view = cm.cine_camera_view("k", "Cam", (10.0, -20.0, 150.0), (-12.0, 33.0, 4.0), 36.0, 24.0, 35.0)
    aspect = 1.5
    p = cm.plane_placement(400.0, view.hfov_deg, aspect)
    world = cm.plane_world_placement(view, p)
    px, py, _ = cm.rotator_axes(world.rotation)
    fx, fy, fz = cm.rotator_axes(view.rotation)
    half_h, half_w = 50.0 * world.scale[0], 50.0 * world.scale[1]
    for sx in (-1, 1):
        for sy in (-1, 1):
            corner = [world.location[i] + sx * half_h * px[i] + sy * half_w * py[i] for i in range(3)]
            rel = [corner[i] - view.location[i] for i in range(3)]
            d = sum(rel[i] * fx[i] for i in range(3))
            r = sum(rel[i] * fy[i] for i in range(3))
            u = sum(rel[i] * fz[i] for i in range(3))
            assert d == pytest.approx(400.0)
            assert math.degrees(math.atan2(abs(r), d)) * 2 == pytest.approx(view.hfov_deg)
            assert math.degrees(math.atan2(abs(u), d)) * 2 == pytest.approx(cm.vfov_from_hfov(view.hfov_deg, aspect))
            assert (r > 0) == (sy > 0) and (u > 0) == (sx > 0)   # mesh +Y is right, mesh +X is up


def test_views():
    v = cm.cine_camera_view("path", "Shot", (0, 0, 0), (0, 0, 0), 36.0, 24.0, 18.0, actor="actor")
    assert v.aspect == pytest.approx(1.5) and v.attached and v.hfov_deg == pytest.approx(90.0)
    vp = cm.viewport_view((1, 2, 3), (0, 0, 0), 90.0)
    assert vp.key == "viewport" and vp.aspect is None and not vp.attached
    with pytest.raises(ValueError):
        cm.cine_camera_view("p", "S", (0, 0, 0), (0, 0, 0), 36.0, 0.0, 35.0)
