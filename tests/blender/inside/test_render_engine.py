"""The ControlBridge render engine through a real server: F12 and Ctrl-F12 into the Render Result and the output
files, with a temporary capture scene that never outlives the frame."""
import time
from pathlib import Path

import bpy
import numpy as np
import pytest

from conftest import emission_material, env_or_skip
from test_capture import _saved_pixels
from test_errors import RenderCounter


@pytest.fixture
def engine_scene(cb, scene, server_url, use_server, tmp_path):
    use_server(server_url)
    scene.render.engine = "CONTROLBRIDGE"
    p = scene.controlbridge
    p.capture_engine = "WORKBENCH"          # the inner engine: quick here
    p.prompt, p.steps, p.preview_every = "a red house", 2, 1
    p.seed, p.randomize_seed = 1234, True   # Randomize is Generate's: a render keeps the panel's seed
    scene.objects["Cube"].data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))
    scene.render.image_settings.file_format = "PNG"
    return scene


def file_pixels(path):
    image = bpy.data.images.load(str(path))
    try:
        px = np.empty(image.size[0] * image.size[1] * 4, np.float32)
        image.pixels.foreach_get(px)
        return px.reshape(image.size[1], image.size[0], 4)
    finally:
        bpy.data.images.remove(image)


def assert_same_pixels(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a[..., :3] - b[..., :3]).max() <= 1.5 / 255, np.abs(a[..., :3] - b[..., :3]).max()


def test_f12_renders_a_frame_through_the_server(cb, engine_scene, tmp_path):
    scene = engine_scene
    scene.render.filepath = str(tmp_path / "still_")
    scenes = sorted(bpy.data.scenes.keys())

    with RenderCounter() as renders:
        assert bpy.ops.render.render(write_still=True) == {"FINISHED"}

    est = cb.engine.state()
    assert not est.error, est.line
    frame = est.last(scene.name)
    assert (frame.frame, frame.seed, frame.chained, frame.width, frame.height) == (1, 1234, False, 96, 64)
    assert Path(frame.saved_path).is_file()
    assert renders.count == 2                          # F12, and its capture of a temporary copy of the scene
    assert sorted(bpy.data.scenes.keys()) == scenes    # ... which is gone
    assert scene.render.engine == "CONTROLBRIDGE"
    served = file_pixels(frame.saved_path)             # what the server made and saved
    assert served[..., :3].std() > 0.01
    # The Render Result and the output file hold the server's pixels (Standard view transform: exactly).
    written = sorted(tmp_path.glob("still_*.png"))
    assert len(written) == 1
    assert_same_pixels(file_pixels(written[0]), served)
    result = next(i for i in bpy.data.images if i.type == "RENDER_RESULT")
    assert_same_pixels(_saved_pixels(result, scene, tmp_path / "result.png"), served)
    assert "seed 1234" in est.line


def test_ctrl_f12_renders_an_animation_with_one_seed_chained(cb, engine_scene, tmp_path):
    scene = engine_scene
    scene.controlbridge.render_chain = True
    scene.frame_start, scene.frame_end = 1, 3
    cube = scene.objects["Cube"]
    cube.location.x = -0.5
    cube.keyframe_insert("location", frame=1)
    cube.location.x = 0.5
    cube.keyframe_insert("location", frame=3)
    scene.render.filepath = str(tmp_path / "anim_####")
    side = bpy.data.objects.new("Side", bpy.data.cameras.new("Side"))   # the shot cuts to it at frame 3
    side.location = (0.5, 0.0, 0.0)
    scene.collection.objects.link(side)
    scene.timeline_markers.new("A", frame=1).camera = scene.camera
    scene.timeline_markers.new("B", frame=3).camera = side

    assert bpy.ops.render.render(animation=True) == {"FINISHED"}

    est = cb.engine.state()
    assert not est.error, est.line
    frames = [f for f in est.frames if f.scene == scene.name][-3:]
    assert [f.frame for f in frames] == [1, 2, 3]
    assert {f.seed for f in frames} == {1234}                      # one seed for the shot
    assert [f.camera for f in frames] == ["Camera", "Camera", "Side"]   # marker-bound cameras are followed
    assert [f.chained for f in frames] == [False, True, False]          # ... and a cut starts afresh
    assert len({f.job_id for f in frames}) == 3
    # Frame 2 started from frame 1's result: the server kept the colour input as it was sent.
    inputs = [Path(f.saved_path).with_suffix(".inputs") for f in frames]
    assert (inputs[1] / "color.png").read_bytes() == Path(frames[0].saved_path).read_bytes()
    assert (inputs[2] / "color.png").read_bytes() != Path(frames[1].saved_path).read_bytes()
    assert all((i / "depth.exr").is_file() for i in inputs)             # each frame's own depth
    written = sorted(tmp_path.glob("anim_*.png"))
    assert [p.name for p in written] == ["anim_0001.png", "anim_0002.png", "anim_0003.png"]
    for path, frame in zip(written, frames):
        assert_same_pixels(file_pixels(path), file_pixels(frame.saved_path))

    scene.frame_set(4)                                             # F12 of the next frame: a still, not chained
    assert bpy.ops.render.render() == {"FINISHED"}
    assert est.last(scene.name).frame == 4 and not est.last(scene.name).chained


def test_f12_with_the_server_down_captures_nothing(cb, engine_scene, use_server):
    url = env_or_skip("CONTROLBRIDGE_TEST_DOWN_URL")
    use_server(url)
    started = time.monotonic()
    raised = ""
    with RenderCounter() as renders:
        try:
            bpy.ops.render.render()
        except RuntimeError as exc:      # the engine's error report fails the operator
            raised = str(exc)
    assert time.monotonic() - started < 1.0
    assert renders.count == 1                                      # F12 only: no capture was made
    error = cb.engine.state().error
    assert url in error and "cannot reach" in error
    assert not raised or "cannot reach" in raised


def test_a_render_thread_hands_the_capture_to_the_main_thread(cb, engine_scene):
    """In the UI, render() runs on the render job's thread: the capture (Blender data) is made on the main thread by
    its task pump (a timer there; pumped by hand here, as the timers never fire headless)."""
    import threading
    from types import SimpleNamespace
    scene = engine_scene
    options = cb.capture.options_from_props(scene.controlbridge)
    running = SimpleNamespace(test_break=lambda: False)   # the render job's Esc flag: not pressed
    out = {}

    def render_thread():
        try:
            out["images"], out["meta"] = cb.engine._on_main(
                running, lambda: cb.engine._capture_copy(scene, "ViewLayer", options))
            out["off_main"] = threading.main_thread() is not threading.current_thread()
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            out["error"] = exc

    thread = threading.Thread(target=render_thread)
    thread.start()
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        assert cb.engine._pump_main_tasks() == cb.engine.PUMP_INTERVAL
        time.sleep(0.01)
    thread.join(1)
    assert "error" not in out, out.get("error")
    assert out["off_main"] and {a.name for a in out["images"]} == {"color", "depth"}
    assert out["meta"]["camera"] == "Camera"
    assert not any(s.name.startswith(cb.engine.CAPTURE_SCENE_PREFIX) for s in bpy.data.scenes)

    pressed = SimpleNamespace(test_break=lambda: True)    # Esc while waiting: the task is dropped, not run
    ran = []
    thread = threading.Thread(target=lambda: out.update(
        cancelled=pytest.raises(cb.engine.RenderFailed, cb.engine._on_main, pressed, lambda: ran.append(1))))
    thread.start()
    thread.join(5)
    cb.engine._pump_main_tasks()
    assert not ran and "Cancelled" in str(out["cancelled"].value)
