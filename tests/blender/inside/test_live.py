"""Live mode against a real server: camera and scene changes send frames, one image is updated in place.

Headless Blender runs no timers and evaluates the depsgraph only when asked, so pump() does what the UI's
main loop would: view_layer.update() (depsgraph handlers), bridge.drain() and live.tick() (the timers).
"""
import json
import time

import bpy
import numpy as np
import pytest

from conftest import emission_material, env_or_skip
from test_capture import _user_settings


@pytest.fixture(autouse=True)
def live_off(cb):
    yield
    cb.live.stop()


@pytest.fixture
def live_scene(cb, scene, server_url, use_server):
    use_server(server_url)
    p = scene.controlbridge
    p.live_delay = 40             # ms: short, to keep the tests quick
    p.place_background = p.place_plane = True
    p.denoise = 0.6
    # Workbench: quick, and its EXR bytes repeat exactly (Cycles stamps its render times into the EXR header,
    # so the server cannot tell an unchanged Cycles frame by its bytes).
    p.capture_engine = "WORKBENCH"
    scene.objects["Cube"].data.materials.append(emission_material("seen", (0.9, 0.4, 0.1)))   # a visible shot
    return scene


def pump(cb, seconds=None, until=None, timeout=30.0):
    """Run the main loop's part by hand: for `seconds`, or until `until(live state)` holds."""
    deadline = time.monotonic() + (seconds if seconds is not None else timeout)
    while time.monotonic() < deadline:
        bpy.context.view_layer.update()
        cb.bridge.drain()
        cb.live.tick()
        if until is not None and until(cb.live.state()):
            return cb.live.state()
        time.sleep(0.01)
    if until is not None:
        raise AssertionError(f"timed out; live state: {cb.live.state()}")
    return cb.live.state()


def settled(lv):
    """Nothing waits to be captured, sent or answered."""
    return not lv.dirty and not lv.frames and lv.pending_meta is not None


def pixels(image):
    px = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(px)
    return px


def datablocks():
    return {"images": len(bpy.data.images), "objects": len(bpy.data.objects), "meshes": len(bpy.data.meshes),
            "materials": len(bpy.data.materials)}


def start_live(cb):
    assert bpy.ops.controlbridge.live() == {"FINISHED"}
    assert cb.live.is_on()
    return pump(cb, until=lambda lv: lv.results >= 1 and settled(lv))


def test_camera_moves_update_one_image_in_place(cb, live_scene):
    scene = live_scene
    user = _user_settings(scene)
    lv = start_live(cb)
    assert lv.sent == 1 and lv.capture_path == "render" and lv.capture_ms > 0   # headless: the render path
    assert not lv.error, lv.line
    print(f"\n[live] capture {lv.capture_ms:.1f} ms per frame ({lv.capture_path}, 96x64), line: {lv.line}")
    image = cb.results.live_image()
    name, pointer, first = image.name, image.as_pointer(), pixels(image)
    assert tuple(image.size) == (96, 64) and first.std() > 0.01
    cam = scene.camera
    assert [b.image for b in cam.data.background_images] == [image] and cam.data.show_background_images
    plane = next(o for o in scene.objects if o.get(cb.capture.HELPER_PROP) == "plane")
    assert plane.active_material.node_tree.nodes["ControlBridge Image"].image == image
    info = image[cb.results.LIVE_PROP]
    settings = cb.protocol.JobSettings.from_dict(json.loads(info["settings"]))
    assert (settings.sampler, settings.steps, settings.cfg) == ("lcm", 4, 1.0)         # the fast live settings
    assert settings.result_encoding == "jpeg" and settings.fast_decode and settings.preview_every == 0
    before = datablocks()

    # Nothing changes: nothing is captured or sent (the result's own updates are not changes).
    pump(cb, seconds=0.4)
    assert lv.sent == 1 and lv.results == 1

    # Move the camera: one new frame, the same image with new pixels, nothing new in the file.
    cam.location.x += 0.4
    lv = pump(cb, until=lambda lv: lv.results >= 2 and settled(lv))
    assert lv.sent == 2
    image = cb.results.live_image()
    assert (image.name, image.as_pointer()) == (name, pointer)
    assert not np.array_equal(pixels(image), first)
    assert datablocks() == before
    assert sum(1 for o in scene.objects if o.get(cb.capture.HELPER_PROP) == "plane") == 1
    assert [b.image for b in cam.data.background_images] == [image]
    captured = json.loads(image[cb.results.LIVE_PROP]["capture"])
    assert captured["matrix"][0][3] == pytest.approx(cam.location.x)
    assert image[cb.results.LIVE_PROP]["frame"] not in lv.frames

    # A panel setting is a change too (the server applies it to the next frame).
    scene.controlbridge.prompt = "a lighthouse"
    lv = pump(cb, until=lambda lv: lv.results >= 3 and settled(lv))
    assert json.loads(cb.results.live_image()[cb.results.LIVE_PROP]["settings"])["prompt"] == "a lighthouse"

    after = _user_settings(scene)                                         # the capture put everything back
    after["hide_render"] = {k: v for k, v in after["hide_render"].items() if k in user["hide_render"]}
    assert after == user and plane.hide_render   # out of F12 renders by default
    assert "Live:" in lv.line and "render" in lv.line


def test_no_change_sends_nothing_and_an_identical_frame_is_skipped(cb, live_scene):
    lv = start_live(cb)
    image = cb.results.live_image()
    first = pixels(image)
    cube = live_scene.objects["Cube"]
    cube.select_set(True)                                   # selection is no change
    bpy.context.view_layer.objects.active = cube
    pump(cb, seconds=0.3)
    assert lv.sent == 1
    cube.location = tuple(cube.location)                    # a transform update that changes nothing
    lv = pump(cb, until=lambda lv: lv.skipped >= 1 and settled(lv))
    assert lv.sent == 2 and lv.results == 1                 # the server said "unchanged"
    assert lv.line == "Live: no change" and not lv.error
    assert np.array_equal(pixels(image), first)


def test_quick_changes_collapse_into_few_frames_and_the_latest_wins(cb, live_scene):
    live_scene.controlbridge.live_delay = 150
    lv = start_live(cb)
    cam = live_scene.camera
    for _ in range(10):                                     # a drag: a change every 30 ms, never still for 150
        cam.location.x += 0.05
        bpy.context.view_layer.update()
        cb.bridge.drain()
        cb.live.tick()
        time.sleep(0.03)
    assert lv.sent == 1                                     # nothing is captured while things move
    lv = pump(cb, until=lambda lv: lv.results >= 2 and settled(lv))
    pump(cb, seconds=0.3)
    assert lv.sent == 2 and lv.results == 2
    captured = json.loads(cb.results.live_image()[cb.results.LIVE_PROP]["capture"])
    assert captured["matrix"][0][3] == pytest.approx(cam.location.x)   # the final camera position


def test_turning_live_off_stops_updates(cb, live_scene):
    lv = start_live(cb)
    image = cb.results.live_image()
    cam = live_scene.camera
    cam.location.x += 0.3
    lv = pump(cb, until=lambda lv: lv.sent >= 2 and lv.frames)   # a frame is on its way to the server
    assert bpy.ops.controlbridge.live() == {"FINISHED"}          # the toggle: off
    assert not cb.live.is_on() and lv.line == "Live off" and not lv.error
    shown = pixels(image)
    cam.location.x += 0.3
    pump(cb, seconds=1.0)                                        # its answer (stopped or late) changes nothing
    assert np.array_equal(pixels(image), shown) and lv.sent == 2
    assert cb.live.tick() is None
    assert cb.live._on_depsgraph not in bpy.app.handlers.depsgraph_update_post
    assert not bpy.app.timers.is_registered(cb.live.tick)
    # On again: the same image, updated again.
    lv = start_live(cb)
    assert cb.results.live_image() == image and lv.sent == 1


def test_closing_the_file_and_unregistering_stop_live(cb, live_scene):
    start_live(cb)
    bpy.ops.wm.read_homefile(use_empty=True)
    lv = cb.live.state()
    assert not cb.live.is_on() and "another file" in lv.line
    assert cb.live._on_depsgraph not in bpy.app.handlers.depsgraph_update_post

    sc = bpy.context.scene
    sc.camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    sc.collection.objects.link(sc.camera)
    assert bpy.ops.controlbridge.live() == {"FINISHED"} and cb.live.is_on()
    cb.package.unregister()
    try:
        assert not cb.live.is_on() and not bpy.app.timers.is_registered(cb.live.tick)
    finally:
        cb.package.register()


def test_errors_are_one_line_and_stop_live(cb, live_scene, use_server):
    url = env_or_skip("CONTROLBRIDGE_TEST_DOWN_URL")
    use_server(url)
    assert bpy.ops.controlbridge.live() == {"FINISHED"}
    lv = pump(cb, until=lambda lv: not lv.on)
    assert lv.error == lv.line and "\n" not in lv.line and url in lv.line and lv.line.startswith("Live stopped")

    use_server(env_or_skip("CONTROLBRIDGE_TEST_SERVER_URL"))
    live_scene.controlbridge.live_fast = False
    live_scene.controlbridge.sampler = "no_such_sampler"             # the server refuses the frame
    assert bpy.ops.controlbridge.live() == {"FINISHED"}
    lv = pump(cb, until=lambda lv: not lv.on)
    assert lv.error == lv.line and "sampler" in lv.line and cb.results.live_image() is None

    live_scene.camera = None
    assert not bpy.ops.controlbridge.live.poll()


@pytest.mark.parametrize("kind", ["PERSP", "ORTHO"])
def test_depth_buffer_to_camera_z(cb, scene, kind):
    """The GPU path's depth conversion (the draw itself needs the interactive UI), against the projection
    matrix Blender draws the camera view with."""
    cam = scene.camera.data
    cam.type, cam.clip_start, cam.clip_end, cam.ortho_scale, cam.lens = kind, 0.25, 80.0, 6.0, 35.0
    depsgraph = bpy.context.evaluated_depsgraph_get()
    proj = np.array(scene.camera.calc_matrix_camera(depsgraph, x=96, y=64))
    z = np.array([0.25, 0.5, 1.0, 5.0, 12.345, 40.0, 79.0])
    eye = np.stack([0.1 * z, -0.05 * z, -z, np.ones_like(z)])          # points in front of the camera
    clip = proj @ eye
    depth = np.clip((clip[2] / clip[3] + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)   # what the depth buffer holds
    assert np.all(depth < 1)
    got = cb.viewport.depth_to_z(depth.reshape(1, -1), proj)
    assert got.dtype == np.float32 and got.shape == (1, len(z))
    assert np.allclose(got[0], z, rtol=2e-4 if kind == "PERSP" else 1e-5)
    assert cb.viewport.depth_to_z(np.ones((2, 2)), proj).min() == cb.viewport.BACKGROUND_Z   # nothing drawn
    near, far = cb.viewport.clip_range(proj)
    assert near == pytest.approx(0.25, rel=1e-4) and far == pytest.approx(80.0, rel=1e-3)


def test_viewport_capture_is_unavailable_headless(cb, scene):
    with pytest.raises(cb.viewport.Unavailable):
        cb.viewport.capture(scene, bpy.context.view_layer)
