"""Live mode end to end: the plugin started as init_unreal.py starts it, the recording stand-in of `unreal`, and a
REAL `controlbridge serve --model tiny`. What a user would check: frames appear on one transient plane in front
of the view, follow the camera, unchanged frames are skipped by the server, and stopping (toggle, Play In Editor,
another level, editor shutdown) leaves the level and the Content Browser as they were."""

import time

import pytest

from controlbridge_unreal import naming, plugin
from fake_unreal import SceneCaptureSource, default_scene
from test_end_to_end import started  # noqa: F401 - the fixture


def scene_seen_from(capture, width, height, source):
    """The greybox, but what the camera sees depends on where it stands: the floor comes nearer as it moves."""
    pixels = default_scene(capture, width, height, source)
    shift = capture.owner.root_component.location.x
    if source is SceneCaptureSource.SCS_SCENE_DEPTH:
        for p in pixels:
            if p.r < 60000.0:
                p.r = max(1.0, p.r - shift)
    return pixels


def pump(editor, until, timeout=120.0, what=""):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; log: {editor.log[-5:]}"
        editor.tick(0.016)
        time.sleep(0.005)


def live_planes(editor, ue):
    return [a for a in editor.level if isinstance(a, ue.StaticMeshActor) and naming.LIVE_TAG in a.tags]


def shown_texture(plane):
    material = plane.static_mesh_component.materials.get(0)
    return material.textures.get(naming.TEXTURE_PARAMETER) if material is not None else None


def test_live_frames_follow_the_viewport_and_stopping_leaves_nothing(started):
    editor, ue, server, p = started
    s = p.store.get()
    p.store.set(s.__class__(**{**s.to_dict(), "width": 256, "height": 192, "live_max_side": 64}))
    editor.scene = scene_seen_from
    level_before = list(editor.level)
    plugin.toggle_live()                                  # nothing selected: follows the level viewport
    assert p.controller.live is not None and editor.messages == []
    session = p.controller.live
    pump(editor, lambda: session.frames_shown >= 1, what="the first live frame")

    plane, = live_planes(editor, ue)
    assert plane.transient and plane.label == naming.LIVE_PLANE_LABEL        # never saved with the level
    assert isinstance(plane.static_mesh_component.materials[0], ue.MaterialInstanceDynamic)
    first = shown_texture(plane)
    assert first in editor.transient_textures and first.png[:2] == b"\xff\xd8"   # the server's JPEG, no asset
    assert plane.root_component.location.z == pytest.approx(170.0 + 500.0 * -0.1736, abs=1.0)  # 500 cm ahead, 10 deg down
    # a live frame is captured small: 256 x 192 scaled to live_max_side 64
    sizes = [(c.args[1], c.args[2]) for c in editor.calls_named("RenderingLibrary.create_render_target2d")]
    assert sizes[0] == (64, 48)

    # the camera at rest: no new capture however long we wait
    captures = len(editor.captures)
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        editor.tick(0.016)
        time.sleep(0.01)
    assert len(editor.captures) == captures
    assert session.frames_sent == 1            # nor before: our own capture actor appearing is no level change

    # the user flies the viewport: a new frame, on the same plane, moved in front of the new view
    editor.viewport = (ue.Vector(400.0, 0.0, 170.0), ue.Rotator(roll=0.0, pitch=-10.0, yaw=0.0))
    pump(editor, lambda: session.frames_shown >= 2, what="a frame after moving")
    assert live_planes(editor, ue) == [plane] and shown_texture(plane) is not first
    # one capture actor for the whole session, moved to each view; only its first frame needed warm-up renders
    rigs = [c.args[0] for c in editor.calls_named("EditorActorSubsystem.spawn_actor_from_class")]
    assert rigs.count(ue.SceneCapture2D) == 1
    assert len(editor.calls_named("SceneCaptureComponent2D.capture_scene")) < 2 * (4 + 2) + 3
    assert plane.root_component.location.x == pytest.approx(400.0 + 500.0 * 0.9848, abs=1.0)
    assert len(editor.calls_named("PrimitiveComponent.create_dynamic_material_instance")) == 1   # reused

    # something changes that the capture does not show (a new actor off camera): the server skips the frame as
    # unchanged and the plane keeps its picture
    shown = shown_texture(plane)
    editor.level.append(ue.StaticMeshActor())
    pump(editor, lambda: session.skipped >= 1, what="an unchanged frame skipped by the server")
    assert shown_texture(plane) is shown and session.frames_shown == 2
    editor.level.pop()

    plugin.toggle_live()                                  # off
    assert p.controller.live is None and live_planes(editor, ue) == []
    assert editor.level == level_before
    assert all(rt.released for rt in editor.render_targets)   # the session's capture actor and targets are gone
    # nothing in the Content Browser but the shared unlit material every plane uses
    assert [a for a in editor.assets if not a.startswith(naming.MATERIAL_DIR)] == []
    for _ in range(20):                                   # late answers never bring a plane back
        editor.tick(0.016)
        time.sleep(0.01)
    assert live_planes(editor, ue) == [] and editor.messages == []
    assert any("Live mode stopped: switched off (2 frame(s) shown" in text for _, text in editor.log)


@pytest.mark.parametrize("stop", ["pie", "map", "shutdown"])
def test_live_mode_stops_on_play_in_editor_another_level_and_shutdown(started, stop):
    editor, ue, server, p = started
    camera = editor.add_cine_camera(label="Shot 020")
    level_before = list(editor.level)
    plugin.toggle_live()                                  # follows the selected CineCamera
    session = p.controller.live
    pump(editor, lambda: session.frames_shown >= 1, what="the first live frame")
    plane, = live_planes(editor, ue)
    assert plane.root_component.parent is None            # placed in world space in front of the camera
    if stop == "pie":
        editor.playing = True
        editor.tick(0.016)
        assert any("Play In Editor started" in text for _, text in editor.log)
    elif stop == "map":
        editor.world = ue.World(name="OtherMap")
        editor.world._path = "/Game/Maps/OtherMap.OtherMap"
        editor.tick(0.016)
        assert any("another level was opened" in text for _, text in editor.log)
    else:
        for callback in list(editor.shutdown_callbacks):
            callback()
        assert not p.worker.alive
    assert p.controller.live is None and editor.level == level_before and camera in editor.level
    assert editor.messages == []
