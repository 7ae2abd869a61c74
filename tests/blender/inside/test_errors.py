"""Cancel and failures: one clear line in the add-on state, nothing the artist has changed or lost."""
import time

import bpy
import pytest

from conftest import env_or_skip


def scene_state(scene):
    cam = scene.camera.data
    return {
        "images": sorted(i.name for i in bpy.data.images if i.type != "RENDER_RESULT"),
        "objects": sorted(o.name for o in bpy.data.objects),
        "materials": sorted(m.name for m in bpy.data.materials),
        "backgrounds": [b.image.name if b.image else None for b in cam.background_images],
        "show_backgrounds": cam.show_background_images,
        "slots": {o.name: [(s.link, s.material.name if s.material else None) for s in o.material_slots]
                  for o in scene.objects},
        "history": len(scene.controlbridge.history),
    }


def assert_one_line_error(st):
    assert st.phase == "failed"
    assert st.error and st.error == st.line
    assert "\n" not in st.error and len(st.error) < 300
    return st.error


class RenderCounter:
    """Counts the renders Blender starts (render_pre), to show a failing server costs the artist none."""

    def __init__(self):
        self.count = 0

    def __call__(self, *_args):
        self.count += 1

    def __enter__(self):
        bpy.app.handlers.render_pre.append(self)
        return self

    def __exit__(self, *_exc):
        bpy.app.handlers.render_pre.remove(self)


def generate_and_fail(scene, wait_idle):
    scene.objects["Cube"].select_set(True)
    p = scene.controlbridge
    p.place_plane = p.place_projection = True
    before = scene_state(scene)
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}   # handed over; the network part fails
    st = wait_idle()
    assert scene_state(scene) == before
    return assert_one_line_error(st)


def test_server_down_is_reported_within_a_second_without_rendering(cb, scene, use_server, wait_idle):
    url = env_or_skip("CONTROLBRIDGE_TEST_DOWN_URL")
    use_server(url)
    started = time.monotonic()
    with RenderCounter() as renders:
        error = generate_and_fail(scene, wait_idle)
    assert time.monotonic() - started < 1.0
    assert renders.count == 0 and not any(i.type == "RENDER_RESULT" for i in bpy.data.images)
    assert url in error and "cannot reach" in error


@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_server_refuses_the_token_before_any_render(cb, scene, use_server, wait_idle, token):
    use_server(env_or_skip("CONTROLBRIDGE_TEST_TOKEN_SERVER_URL"), token)
    started = time.monotonic()
    with RenderCounter() as renders:
        error = generate_and_fail(scene, wait_idle)
    assert time.monotonic() - started < 1.0 and renders.count == 0
    assert "token" in error


def test_capture_runs_once_the_server_answered(cb, scene, server_url, use_server, wait_idle):
    use_server(server_url)
    scene.controlbridge.steps = 2
    with RenderCounter() as renders:
        assert bpy.ops.controlbridge.generate() == {"FINISHED"}
        assert renders.count == 0 and cb.bridge.state().phase == "connecting"   # nothing rendered yet
        st = wait_idle()
    assert st.phase == "finished" and renders.count == 1, st


def test_capabilities_come_from_the_handshake(cb, scene, use_server, wait_idle):
    url = env_or_skip("CONTROLBRIDGE_TEST_TOKEN_SERVER_URL")
    token = env_or_skip("CONTROLBRIDGE_TEST_TOKEN")
    use_server(url, token)
    assert bpy.ops.controlbridge.connect() == {"FINISHED"}
    st = wait_idle()
    assert st.phase == "idle" and not st.error and url in st.line
    info = bpy.context.window_manager.controlbridge_server
    with cb.protocol.Client(url, token=token, client_name="test") as client:
        caps = client.capabilities
    assert info.connected_url == url and info.token_required
    assert [s.name for s in info.samplers] == caps.samplers
    assert [m.name for m in info.models] == [m["name"] for m in caps.models]
    assert info.max_steps == caps.limits["max_steps"] and info.default_model == caps.default_model


def test_server_error_is_one_line_and_keeps_the_previous_result(cb, scene, server_url, use_server, wait_idle):
    use_server(server_url)
    p = scene.controlbridge
    p.steps = 2
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    assert wait_idle().phase == "finished"
    p.sampler = "no_such_sampler"
    error = generate_and_fail(scene, wait_idle)
    assert "no_such_sampler" in error or "sampler" in error
    # What the interactive operator reports when its job is over: the server's message, as an error.
    assert cb.operators.outcome(cb.bridge.state()) == ("ERROR", error)
    # Without a window (scripts, headless) invoking hands over and returns, like execute.
    assert bpy.ops.controlbridge.generate("INVOKE_DEFAULT") == {"FINISHED"}
    assert cb.operators.outcome(wait_idle()) == ("ERROR", error)


def test_cancel(cb, scene, server_url, use_server, wait_idle):
    use_server(server_url)
    p = scene.controlbridge
    # A long job (about 5 s on 2 CPU cores), so the cancel arrives while it runs.
    p.steps, p.denoise, p.preview_every = 150, 1.0, 1
    p.use_scene_resolution, p.width, p.height = False, 512, 512
    before = scene_state(scene)
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    st = wait_idle(until=lambda s: s.phase == "running" and s.step >= 1 and s.preview_name, timeout=60)
    assert st.line == f"Step {st.step}/{st.total}"
    assert bpy.data.images[st.preview_name].size[0] > 0             # the preview is shown while it runs
    assert not bpy.ops.controlbridge.generate.poll()               # one job at a time
    assert bpy.ops.controlbridge.cancel() == {"FINISHED"}
    st = wait_idle(timeout=30)
    assert st.phase == "cancelled" and not st.error, st
    assert cb.operators.outcome(st) == ("WARNING", "Cancelled")
    assert "ControlBridge Preview" not in bpy.data.images
    assert scene_state(scene) == before
    # The connection is still good for the next job.
    p.steps, p.use_scene_resolution = 2, True
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    assert wait_idle().phase == "finished"


def test_opening_another_file_cancels_the_job(cb, scene, server_url, use_server, wait_idle):
    use_server(server_url)
    p = scene.controlbridge
    p.steps, p.denoise = 150, 1.0
    p.use_scene_resolution, p.width, p.height = False, 512, 512
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    wait_idle(until=lambda s: s.job_id is not None, timeout=60)
    bpy.ops.wm.read_homefile(use_empty=True)
    st = cb.bridge.state()
    assert st.phase == "cancelled" and "another file" in st.line
    assert not cb.bridge.busy()
    assert not any(i.name.startswith("CB ") for i in bpy.data.images)
