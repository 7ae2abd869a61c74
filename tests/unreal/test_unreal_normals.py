"""Unreal's world normals (SCS_Normal) go to the server as the engine's EXR with the view's world_to_camera rotation;
the server makes them camera-space (x right, y up, z toward the camera). No per-pixel Python in the editor.

Checked: the rotation on cameras in known orientations (whatever way the camera looks, a surface facing it comes out
"toward the camera", the floor below a level camera "up", a wall facing the image's right "right"); the capture
through the recording stand-in (an EXR export of the normal target, no read-back). End to end against a real server
(the NormalBae colours its normal ControlNet sees): test_unreal_control_kinds.py."""

import numpy as np
import pytest

from controlbridge_unreal import camera_math, engine_capture, jobs, normals
from controlbridge_unreal.settings_model import PluginSettings

ROTATIONS = [(0.0, 0.0, 0.0), (0.0, 90.0, 0.0), (-30.0, 135.0, 0.0), (20.0, -60.0, 15.0), (-89.0, 10.0, 0.0),
             (0.0, 180.0, 90.0)]


def to_camera(normal, rotation):
    """What the server does with the attachment's matrix: n_camera = M n_world."""
    m = np.asarray(normals.world_to_camera(rotation)).reshape(3, 3)
    return tuple(m @ np.asarray(normal, float))


def facing(rotation):
    """The world normal of a surface facing a camera with `rotation`: minus its forward axis."""
    forward = camera_math.rotator_axes(rotation)[0]
    return tuple(-c for c in forward)


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_a_surface_facing_the_camera_is_toward_the_camera(rotation):
    assert to_camera(facing(rotation), rotation) == pytest.approx((0.0, 0.0, 1.0), abs=1e-9)
    m = np.asarray(normals.world_to_camera(rotation)).reshape(3, 3)
    assert m @ m.T == pytest.approx(np.eye(3), abs=1e-9)      # a rotation, as the server requires
    assert np.linalg.det(m) == pytest.approx(-1.0)           # Unreal's world is left-handed, the camera's axes not


def test_a_level_camera_sees_the_floor_up_and_the_walls_left_and_right():
    looking_east = (0.0, 90.0, 0.0)          # yaw 90: forward is world +Y, so the image's right is world -X
    assert to_camera((0.0, 0.0, 1.0), looking_east) == pytest.approx((0.0, 1.0, 0.0), abs=1e-9)     # floor
    assert to_camera((-1.0, 0.0, 0.0), looking_east) == pytest.approx((1.0, 0.0, 0.0), abs=1e-9)    # faces right
    assert to_camera((1.0, 0.0, 0.0), looking_east) == pytest.approx((-1.0, 0.0, 0.0), abs=1e-9)    # faces left
    assert to_camera((0.0, 1.0, 0.0), looking_east) == pytest.approx((0.0, 0.0, -1.0), abs=1e-9)    # faces away


def test_roll_turns_the_image_axes():
    rolled = (0.0, 0.0, 90.0)                # rolled 90 degrees: the world's up is the image's left or right
    x, y, z = to_camera((0.0, 0.0, 1.0), rolled)
    assert abs(x) == pytest.approx(1.0) and y == pytest.approx(0.0, abs=1e-9) and z == pytest.approx(0.0, abs=1e-9)
    # and it agrees with the camera's own up axis: the world direction of its local +Z maps to image up
    up = camera_math.local_to_world_direction(rolled, (0.0, 0.0, 1.0))
    assert to_camera(up, rolled) == pytest.approx((0.0, 1.0, 0.0), abs=1e-9)


def read_exr_rgb(data: bytes, tmp_path) -> np.ndarray:
    import OpenEXR
    path = tmp_path / "sent.exr"
    path.write_bytes(data)
    with OpenEXR.File(str(path), separate_channels=True) as exr:
        return np.stack([exr.channels()[c].pixels.astype(np.float32) for c in "RGB"], axis=2)


def test_the_capture_exports_the_normal_target_as_an_exr_and_reads_no_pixels_back(fake_editor, tmp_path):
    editor, ue = fake_editor
    view = camera_math.viewport_view((0.0, 0.0, 170.0), (-10.0, 30.0, 0.0), 90.0)
    cap = engine_capture.capture(ue, view, 48, 32, PluginSettings(normal_weight=0.5), temp_dir=str(tmp_path / "t"))

    assert [c["source"] for c in editor.captures][-1] is ue.SceneCaptureSource.SCS_NORMAL
    normal_target = editor.render_targets[3]
    assert normal_target.format is ue.TextureRenderTargetFormat.RTF_RGBA16F
    exports = editor.calls_named("ImageWriteBlueprintLibrary.export_to_disk")
    assert [e.args[0] for e in exports] == [editor.render_targets[1], normal_target]   # depth, then normals
    assert all(e.args[2].format is ue.DesiredImageFormat.EXR and e.args[2].async_ is False for e in exports)
    raw, = editor.calls_named("RenderingLibrary.read_render_target_raw")                  # the depth probe only
    assert raw.args[1] is editor.render_targets[2]
    assert all(rt.released for rt in editor.render_targets) and not list((tmp_path / "t").glob("*.exr"))

    # the world normals as the GBuffer holds them: box facing the camera, floor up (the sky's normal is junk)
    world = read_exr_rgb(cap.normal_exr, tmp_path)
    assert world.shape == (32, 48, 3)
    assert world[20, 24] == pytest.approx(facing(view.rotation), abs=1e-3)
    assert tuple(world[-1, 0]) == (0.0, 0.0, 1.0)
    assert cap.world_to_camera == normals.world_to_camera(view.rotation)
    normal = {a.name: a for a in jobs.attachments(cap)}["normal"]
    assert (normal.encoding, normal.width, normal.height) == ("exr", 48, 32)
    assert normal.data == cap.normal_exr and normal.descriptor()["world_to_camera"] == list(cap.world_to_camera)

    without = engine_capture.capture(ue, view, 48, 32, PluginSettings(normal_weight=0.0), temp_dir=str(tmp_path))
    assert without.normal_exr is None and "normal" not in {a.name for a in jobs.attachments(without)}
