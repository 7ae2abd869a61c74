"""End to end: the plugin's own code, started the way init_unreal.py starts it, drives a capture through the
recording stand-in of `unreal`, sends the job to a REAL `controlbridge serve --model tiny` subprocess, and applies
the result. Every engine call is checked: capture set-up and cleanup, texture import options, plane size from the
field of view, the plane updated (not duplicated) by a second generation, and a failed job leaving the level alone.
"""

import math
import time
from pathlib import Path

import pytest

from controlbridge_unreal import naming, plugin, settings_model
from fake_unreal import read_exr_red
from ue_scene import fast_settings


def pump_until_finished(editor, task_index, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        editor.tick(0.016)                       # the Slate post-tick callback the plugin registered
        if len(editor.tasks) > task_index and editor.tasks[task_index].finished is not None:
            return editor.tasks[task_index]
        time.sleep(0.005)
    raise AssertionError(f"generation did not finish; task texts: {[t.texts for t in editor.tasks]}")


@pytest.fixture
def started(fake_editor, spawn_server):
    editor, ue = fake_editor
    server = spawn_server()
    settings_model.save(settings_model.settings_path(editor.saved_dir),
                        fast_settings(server_url=server.url, width=64, height=48, plane_distance_cm=500.0))
    p = plugin.start(ue)
    yield editor, ue, server, p
    p.stop()


def test_generate_from_cine_camera_against_a_real_server(started):
    editor, ue, server, p = started
    # init: menus, tick pump, shutdown hook
    assert len(editor.tick_callbacks) == 1 and len(editor.shutdown_callbacks) == 1
    assert editor.menus.menus_by_name["LevelEditor.MainMenu"].submenus["ControlBridge"].entries

    camera = editor.add_cine_camera(label="Shot 010", location=(200.0, -50.0, 160.0), rotation=(-8.0, 20.0, 0.0),
                                    sensor=(36.0, 24.0), focal=18.0)          # hfov exactly 90 degrees
    level_before = list(editor.level)
    editor.calls.clear()

    plugin.generate_from_cine_camera()              # what the menu entry runs

    # ---- capture happened synchronously on the "game thread" and left nothing behind
    spawn, = editor.calls_named("EditorActorSubsystem.spawn_actor_from_class")
    assert spawn.args[0] is ue.SceneCapture2D and spawn.kwargs == {"transient": True}
    assert spawn.args[1] == ue.Vector(200.0, -50.0, 160.0)
    assert spawn.args[2] == ue.Rotator(pitch=-8.0, yaw=20.0, roll=0.0)
    fov_sets = [c.args[1] for c in editor.calls_named("Object.set_editor_property") if c.args[0] == "fov_angle"]
    assert fov_sets == [pytest.approx(90.0)]
    sizes = [(c.args[1], c.args[2]) for c in editor.calls_named("RenderingLibrary.create_render_target2d")]
    assert sizes == [(64, 40), (64, 40), (48, 30)]  # 3:2 filmback fitted in 64 x 48; the depth probe
    assert editor.calls_named("RenderingLibrary.read_render_target_raw")[0].kwargs == {"normalize": False}
    assert len(editor.calls_named("ImageWriteBlueprintLibrary.export_to_disk")) == 1   # full depth: engine EXR
    destroyed, = editor.calls_named("EditorActorSubsystem.destroy_actor")
    assert isinstance(destroyed.args[0], ue.SceneCapture2D)
    assert editor.level == level_before
    assert all(rt.released for rt in editor.render_targets)

    # ---- progress while the worker thread talks to the server
    task = pump_until_finished(editor, 0)
    assert task.finished is True, task.texts
    steps = [t for t in task.texts if t.startswith("Step ")]
    assert steps and steps[-1] == "Step {0}/{0}".format(steps[-1].split("/")[1])
    assert task.texts[0].startswith("Connecting to ws://127.0.0.1:")
    assert task.texts[-1].startswith("Done: /Game/ControlBridge/T_CB_Shot_010_")
    assert editor.messages == []                     # no error dialog

    # ---- texture import: options, name, content = the server's saved PNG, settings in metadata
    imp, = editor.calls_named("AssetTools.import_asset_tasks")
    t = imp.args[0][0]._props
    assert t["destination_path"] == "/Game/ControlBridge" and t["automated"] is True
    assert t["replace_existing"] is True and t["save"] is True
    assert t["filename"].endswith(t["destination_name"] + ".png")
    texture_path = naming.object_path("/Game/ControlBridge", t["destination_name"])
    texture = editor.assets[texture_path]
    meta = texture.metadata
    saved = Path(meta[naming.METADATA_SERVER_PATH])
    assert saved.parent == server.output_dir and saved.read_bytes() == texture.png   # exactly the server's PNG
    # the server received the depth as the engine's EXR and kept it: raw centimetres, sky at 65504
    kept = read_exr_red(str(saved.with_suffix(".inputs") / "depth.exr"))
    assert len(kept) == 64 * 40 and kept[0] == 65504.0 and min(kept) == pytest.approx(500.0)
    assert (texture.width, texture.height) == (64, 40)
    assert meta[naming.METADATA_CAMERA] == "Shot 010" and meta[naming.METADATA_SEED] == "7"
    assert '"prompt": "a stone castle"' in meta[naming.METADATA_SETTINGS]

    # ---- the plane: attached to the camera, sized exactly to the frustum at 500 cm
    plane, = [a for a in editor.level if isinstance(a, ue.StaticMeshActor)]
    assert plane.root_component.parent is camera.get_cine_camera_component()
    loc, rot, scale = plane.relative
    assert loc == ue.Vector(500.0, 0.0, 0.0) and rot == ue.Rotator(pitch=90.0, yaw=0.0, roll=0.0)
    width = 2 * 500.0 * math.tan(math.radians(90.0 / 2))
    assert (scale.x, scale.y, scale.z) == pytest.approx((width * 40 / 64 / 100.0, width / 100.0, 1.0))
    assert plane.static_mesh_component.materials[0].textures["Image"] is texture
    assert naming.PLANE_TAG in plane.tags
    assert editor.calls_named("ScopedEditorTransaction")

    # ---- second generation from the same camera: the plane is hidden from the capture, then updated
    editor.calls.clear()
    editor.selected = [camera]
    plugin.generate_from_cine_camera()
    assert editor.captures[-1]["hidden"] == [plane]
    task2 = pump_until_finished(editor, 1)
    assert task2.finished is True, task2.texts
    planes = [a for a in editor.level if isinstance(a, ue.StaticMeshActor)]
    assert planes == [plane]                          # updated, not duplicated
    # the update is recorded in the undo transaction (Ctrl+Z restores the previous texture)
    assert plane in editor.modified and plane.static_mesh_component in editor.modified
    names = [c.name for c in editor.calls]
    assert names.index("ScopedEditorTransaction") < names.index("Object.modify")
    new_textures = [p for p in editor.assets if p.startswith("/Game/ControlBridge/T_CB_") and p != texture_path]
    assert len(new_textures) == 1
    assert plane.static_mesh_component.materials[0].textures["Image"] is editor.assets[new_textures[0]]
    assert editor.calls_named("EditorActorSubsystem.spawn_actor_from_class")[0].args[0] is ue.SceneCapture2D
    assert len(editor.calls_named("EditorActorSubsystem.spawn_actor_from_class")) == 1   # only the capture

    # ---- editor shutdown: worker stopped, pump removed
    for callback in list(editor.shutdown_callbacks):
        callback()
    assert editor.tick_callbacks == [] and not p.worker.alive


def test_a_failed_job_leaves_the_level_unchanged(started):
    editor, ue, server, p = started
    p.store.set(p.store.get().validated().__class__(**{**p.store.get().to_dict(), "steps": 150,
                                                       "sampler": "no_such_sampler"}))
    editor.add_cine_camera()
    level_before, assets_before = list(editor.level), dict(editor.assets)
    plugin.generate_from_cine_camera()
    task = pump_until_finished(editor, 0, timeout=60)
    assert task.finished is False and task.texts[-1] == "Failed"
    assert len(editor.messages) == 1 and "no_such_sampler" in editor.messages[0]   # one clear message
    assert editor.level == level_before and editor.assets == assets_before
    assert editor.calls_named("AssetTools.import_asset_tasks") == []


def test_viewport_generation_and_user_errors(started):
    editor, ue, server, p = started
    plugin.generate_from_cine_camera()              # nothing selected
    assert len(editor.messages) == 1 and "Select a CineCameraActor" in editor.messages[0]
    assert editor.tasks == [] and editor.calls_named("EditorActorSubsystem.spawn_actor_from_class") == []

    plugin.generate_from_viewport()
    task = pump_until_finished(editor, 0)
    assert task.finished is True, task.texts
    plane, = [a for a in editor.level if isinstance(a, ue.StaticMeshActor)]
    assert plane.root_component.parent is None        # the viewport has no actor to attach to
    assert naming.plane_key_tag("viewport") in plane.tags


def test_cancel_from_the_notification_stops_the_server_job(started):
    editor, ue, server, p = started
    s = p.store.get()
    p.store.set(s.__class__(**{**s.to_dict(), "steps": 150, "width": 256, "height": 192}))
    editor.add_cine_camera()
    level_before = list(editor.level)
    plugin.generate_from_cine_camera()
    task = editor.tasks[0]
    deadline = time.monotonic() + 120
    while not any(t.startswith("Step ") for t in task.texts):
        assert time.monotonic() < deadline, task.texts
        editor.tick()
        time.sleep(0.005)
    task.cancel = True                                   # the user presses Cancel on the notification
    deadline = time.monotonic() + 60
    while p.controller.busy:
        assert time.monotonic() < deadline, task.texts
        editor.tick()
        time.sleep(0.005)
    assert task.finished == "by-engine"                 # Unreal ended the task; the plugin did not finish it twice
    assert any("Cancelled" in text for _, text in editor.log)
    assert editor.messages == [] and editor.level == level_before
    assert editor.calls_named("AssetTools.import_asset_tasks") == []
    last_step = max(int(t.split()[1].split("/")[0]) for t in task.texts if t.startswith("Step "))
    assert last_step < 150                               # the server stopped early


def test_step_previews_stream_onto_the_plane_and_cancel_puts_it_back(started):
    """The server's JPEG previews (preview_every from the settings) are shown on the camera's plane through a
    transient texture while the job runs; the result replaces them; a cancelled job restores the old image."""
    editor, ue, server, p = started
    camera = editor.add_cine_camera()
    plugin.generate_from_cine_camera()
    assert pump_until_finished(editor, 0).finished is True
    plane, = [a for a in editor.level if isinstance(a, ue.StaticMeshActor)]
    first_result = plane.static_mesh_component.materials[0]
    assert editor.transient_textures == []            # no plane yet during the first job: nothing to show on

    # second job: previews on the existing plane, then the result
    editor.selected = [camera]
    seen = []
    plugin.generate_from_cine_camera()
    deadline = time.monotonic() + 180
    while editor.tasks[1].finished is None:
        assert time.monotonic() < deadline
        editor.tick()
        material = plane.static_mesh_component.materials[0]
        if isinstance(material, ue.MaterialInstanceDynamic):
            seen.append(material.textures.get("Image"))
        time.sleep(0.005)
    assert editor.tasks[1].finished is True
    assert editor.transient_textures and all(t.png[:2] == b"\xff\xd8" for t in editor.transient_textures)  # JPEG
    assert seen and seen[-1] in editor.transient_textures
    assert len(editor.calls_named("PrimitiveComponent.create_dynamic_material_instance")) == 1   # one per job
    final = plane.static_mesh_component.materials[0]
    assert isinstance(final, ue.MaterialInstanceConstant) and final.textures["Image"] is not first_result
    assert not any(a.startswith("/Game/") and "preview" in a for a in editor.assets)    # previews are no assets

    # third job, cancelled after a preview: the plane shows the last result again
    s = p.store.get()
    p.store.set(s.__class__(**{**s.to_dict(), "steps": 150, "width": 256, "height": 192}))
    before = plane.static_mesh_component.materials[0]
    shown_before = len(editor.transient_textures)
    editor.selected = [camera]
    plugin.generate_from_cine_camera()
    task = editor.tasks[2]
    deadline = time.monotonic() + 120
    while len(editor.transient_textures) == shown_before:
        assert time.monotonic() < deadline, task.texts
        editor.tick()
        time.sleep(0.005)
    assert isinstance(plane.static_mesh_component.materials[0], ue.MaterialInstanceDynamic)
    plugin.cancel()
    deadline = time.monotonic() + 60
    while p.controller.busy:
        assert time.monotonic() < deadline, task.texts
        editor.tick()
        time.sleep(0.005)
    assert plane.static_mesh_component.materials[0] is before
    assert editor.messages == []
