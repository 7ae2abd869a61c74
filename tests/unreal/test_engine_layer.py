"""The engine layer driven through the recording stand-in: exact calls and arguments, cleanup on failure."""

import io
import math
import struct
from pathlib import Path

import pytest
from PIL import Image

from controlbridge_unreal import (camera_math, capture_look, engine_capture, engine_classes, engine_results, engine_ui, naming,
                                  result_plan, settings_model)
from controlbridge_unreal.buffers import CaptureProblem
from controlbridge_unreal.controller import CINE_CAMERA, VIEWPORT, UserError
from controlbridge_unreal.settings_model import PluginSettings
import fake_unreal
from fake_unreal import make_png


# ---------------------------------------------------------------------------- views

def test_viewport_view(fake_editor):
    editor, ue = fake_editor
    view = engine_capture.resolve_view(ue, VIEWPORT, PluginSettings(viewport_fov=75.0))
    assert view.key == "viewport" and view.location == (0.0, 0.0, 170.0) and view.rotation == (-10.0, 0.0, 0.0)
    assert view.hfov_deg == 75.0 and view.aspect is None and view.actor is None


def test_cine_camera_view_uses_filmback_and_focal_length(fake_editor):
    editor, ue = fake_editor
    cam = editor.add_cine_camera(sensor=(23.76, 13.365), focal=35.0, rotation=(-5.0, 30.0, 2.0))
    view = engine_capture.resolve_view(ue, CINE_CAMERA, PluginSettings())
    assert view.actor is cam and view.label == "Shot_010" and view.key == cam.get_path_name()
    assert view.hfov_deg == pytest.approx(camera_math.hfov_from_filmback(23.76, 35.0))
    assert view.aspect == pytest.approx(23.76 / 13.365)
    assert view.rotation == (-5.0, 30.0, 2.0)


@pytest.mark.parametrize("setup,message", [
    (lambda e: None, "Select a CineCameraActor"),
    (lambda e: (e.add_cine_camera("A"), e.add_cine_camera("B", select=False),
                setattr(e, "selected", list(e.level))), "2 CineCameras are selected"),
])
def test_cine_camera_selection_errors(fake_editor, setup, message):
    editor, ue = fake_editor
    setup(editor)
    with pytest.raises(UserError, match=message):
        engine_capture.resolve_view(ue, CINE_CAMERA, PluginSettings())


def test_orthographic_camera_is_refused(fake_editor):
    editor, ue = fake_editor
    cam = editor.add_cine_camera()
    cam._component.projection_mode = ue.CameraProjectionMode.ORTHOGRAPHIC
    with pytest.raises(UserError, match="orthographic"):
        engine_capture.resolve_view(ue, CINE_CAMERA, PluginSettings())


# ---------------------------------------------------------------------------- capture

def test_capture_calls_and_cleanup(fake_editor):
    editor, ue = fake_editor
    editor.add_cine_camera()
    view = engine_capture.resolve_view(ue, CINE_CAMERA, PluginSettings())
    hidden = [object()]
    before = list(editor.level)
    editor.calls.clear()
    cap = engine_capture.capture(ue, view, 48, 32, PluginSettings(max_depth_cm=0.0), hidden_actors=hidden)

    assert editor.level == before                                    # nothing left in the level
    spawn, = editor.calls_named("EditorActorSubsystem.spawn_actor_from_class")
    assert spawn.args[0] is ue.SceneCapture2D and spawn.kwargs == {"transient": True}
    assert spawn.args[1] == ue.Vector(0.0, 0.0, 170.0)
    assert spawn.args[2] == ue.Rotator(pitch=-5.0, yaw=30.0, roll=0.0)
    destroy, = editor.calls_named("EditorActorSubsystem.destroy_actor")
    assert isinstance(destroy.args[0], ue.SceneCapture2D) and destroy.args[0].transient
    targets = editor.calls_named("RenderingLibrary.create_render_target2d")
    assert [(c.args[1], c.args[2], c.args[3]) for c in targets] == [
        (48, 32, ue.TextureRenderTargetFormat.RTF_RGBA8), (48, 32, ue.TextureRenderTargetFormat.RTF_RGBA16F),
        (48, 32, ue.TextureRenderTargetFormat.RTF_RGBA16F)]                 # the probe: 48 px long side
    assert all(rt.released for rt in editor.render_targets)

    props = [(c.args[0], c.args[1]) for c in editor.calls_named("Object.set_editor_property")]
    assert ("fov_angle", pytest.approx(view.hfov_deg)) in [(n, v) for n, v in props]
    assert ("capture_every_frame", False) in props and ("hidden_actors", hidden) in props
    camera_look = [v for n, v in props if n == "post_process_settings"]
    assert camera_look[0]._props["auto_exposure_bias"] == 1.5                   # the camera's own look ...
    assert camera_look[-1]._props["auto_exposure_bias"] == 1.5                  # ... kept under our overrides
    assert ("post_process_blend_weight", 1.0) in props
    assert [v for n, v in props if n == "capture_source"] == [ue.SceneCaptureSource.SCS_FINAL_COLOR_LDR,
                                                              ue.SceneCaptureSource.SCS_SCENE_DEPTH]
    raw, = editor.calls_named("RenderingLibrary.read_render_target_raw")
    assert raw.kwargs == {"normalize": False} and raw.args[1] is editor.render_targets[2]   # only the probe
    exr, = editor.calls_named("ImageWriteBlueprintLibrary.export_to_disk")
    assert exr.args[0] is editor.render_targets[1] and exr.args[1].endswith(".exr")
    options = exr.args[2]
    assert options.format is ue.DesiredImageFormat.EXR and options.async_ is False and options.overwrite_file
    # warm-up frames of a persistent view before the color frame is read; depth needs no history
    assert [c["source"] for c in editor.captures] == [ue.SceneCaptureSource.SCS_FINAL_COLOR_LDR] * (
        capture_look.WARMUP_FRAMES + 1) + [ue.SceneCaptureSource.SCS_SCENE_DEPTH] * 2
    assert all(c["persist"] is True for c in editor.captures)
    # Lumen GI and reflections as the project has them (scene captures switch them off otherwise)
    look = editor.captures[0]["post_process"]
    assert look["override_dynamic_global_illumination_method"] is True
    assert look["dynamic_global_illumination_method"] is ue.DynamicGlobalIlluminationMethod.LUMEN
    assert look["override_reflection_method"] is True and look["reflection_method"] is ue.ReflectionMethod.LUMEN

    # color: the engine's PNG export, sent as is (no per-pixel Python), as bright as the viewport
    assert cap.color_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert editor.calls_named("RenderingLibrary.read_render_target") == []
    image = Image.open(io.BytesIO(cap.color_png)).convert("RGB")
    assert image.size == (48, 32)
    assert image.getpixel((0, 0)) == (120, 160, 220)                    # sky, top row first, not darkened
    assert image.getpixel((24, 20)) == (200, 80, 60)                    # the box
    assert not list(Path(editor.saved_dir).rglob("*.png"))              # the exported files are removed
    assert not list(Path(editor.saved_dir).rglob("*.exr"))
    # depth: the engine's EXR, raw cm, sky saturated, nearest floor row not normalised; no full-frame read-back
    depth = fake_unreal.read_exr_red(cap.depth_exr)
    assert len(depth) == 48 * 32 and depth[0] == 65504.0 and cap.far == 65504.0
    assert depth[-1] == pytest.approx(500.0)
    assert cap.probe.nearest == pytest.approx(500.0, rel=0.05) and 0.2 < cap.probe.background_fraction < 0.5


def test_without_target_gamma_the_capture_would_be_dark(fake_editor):
    """The fault the target gamma fixes, shown with the stand-in's model of an LDR target: forced linear
    gamma stores mid-grey 18 % as 46, the viewport shows 117."""
    assert capture_look.stored_byte(0.18, 1.0) == 46
    assert capture_look.stored_byte(0.18, capture_look.DISPLAY_GAMMA) == 117
    assert abs(capture_look.stored_byte(0.18, 2.2) - capture_look.srgb_byte(0.18)) <= 1   # gamma 2.2 ~ sRGB
    assert capture_look.stored_byte(0.0, 2.2) == 0 and capture_look.stored_byte(1.0, 2.2) == 255
    assert capture_look.stored_byte(2.0, 2.2) == 255                                        # HDR clipped in LDR
    with pytest.raises(ValueError):
        capture_look.stored_byte(0.5, 0.0)
    editor, ue = fake_editor
    view = engine_capture.resolve_view(ue, VIEWPORT, PluginSettings())
    cap = engine_capture.capture(ue, view, 16, 16, PluginSettings())
    gamma_sets = [c for c in editor.calls_named("Object.set_editor_property") if c.args[0] == "target_gamma"]
    assert [(type(c.target).__name__, c.args[1]) for c in gamma_sets] == [("TextureRenderTarget2D", 2.2)]
    assert Image.open(io.BytesIO(cap.color_png)).convert("RGB").getpixel((0, 15)) == (90, 90, 90)
    # what the same target stored without it: the old, dark image
    assert fake_unreal._stored(ue.Color(r=90, g=90, b=90, a=0), 1.0).r == 26


def test_a_camera_that_chooses_its_own_gi_keeps_it(fake_editor):
    editor, ue = fake_editor
    camera = editor.add_cine_camera()
    camera.get_cine_camera_component()._props["post_process_settings"] = ue.PostProcessSettings(
        override_dynamic_global_illumination_method=True,
        dynamic_global_illumination_method=ue.DynamicGlobalIlluminationMethod.SCREEN_SPACE)
    editor.cvars["r.ReflectionMethod"] = 2
    view = engine_capture.resolve_view(ue, CINE_CAMERA, PluginSettings())
    engine_capture.capture(ue, view, 8, 8, PluginSettings())
    look = editor.captures[0]["post_process"]
    assert look["dynamic_global_illumination_method"] is ue.DynamicGlobalIlluminationMethod.SCREEN_SPACE
    assert look["reflection_method"] is ue.ReflectionMethod.SCREEN_SPACE
    assert capture_look.method_override(False, 7, capture_look.GI_METHODS) is None   # unknown: engine decides


def test_capture_cleans_up_when_reading_fails(fake_editor, monkeypatch):
    editor, ue = fake_editor
    view = engine_capture.resolve_view(ue, VIEWPORT, PluginSettings())

    def broken(*a, **k):
        raise RuntimeError("GPU readback failed")

    monkeypatch.setattr(ue.RenderingLibrary, "read_render_target_raw", classmethod(lambda cls, *a, **k: broken()))
    with pytest.raises(RuntimeError, match="readback"):
        engine_capture.capture(ue, view, 16, 16, PluginSettings())
    assert editor.level == [] and len(editor.calls_named("EditorActorSubsystem.destroy_actor")) == 1
    assert all(rt.released for rt in editor.render_targets)


def test_capture_of_only_sky_is_a_capture_problem(fake_editor):
    editor, ue = fake_editor
    editor.scene = lambda comp, w, h, src: [ue.LinearColor(65504.0, 0, 0, 1) if src is
                                            ue.SceneCaptureSource.SCS_SCENE_DEPTH else ue.Color(r=1, g=2, b=3, a=0)
                                            for _ in range(w * h)]
    view = engine_capture.resolve_view(ue, VIEWPORT, PluginSettings())
    with pytest.raises(CaptureProblem):
        engine_capture.capture(ue, view, 8, 8, PluginSettings())
    assert editor.level == []


# ---------------------------------------------------------------------------- results

def make_plan(view, job_id="abcd1234", create_plane=True, distance=500.0, assets=None):
    return result_plan.plan_result(
        view=view, width=768, height=512, job_id=job_id, result_settings={"prompt": "castle", "seed": 3},
        seed=3, saved_path="/srv/out/a.png", encoding="png", create_plane=create_plane, plane_distance_cm=distance,
        asset_exists=(assets or {}).__contains__)


def test_texture_import_options_and_metadata(fake_editor, tmp_path):
    editor, ue = fake_editor
    view = camera_math.viewport_view((0, 0, 0), (0, 0, 0), 90.0)
    plan = make_plan(view, create_plane=False)
    summary = engine_results.apply_result(ue, plan, view, make_png(8, 4), str(tmp_path / "incoming"))

    task = editor.calls_named("AssetTools.import_asset_tasks")[0].args[0][0]
    assert task._props["filename"].endswith(plan.asset_name + ".png")           # the file name IS the asset name
    assert task._props["destination_path"] == "/Game/ControlBridge"
    assert task._props["destination_name"] == plan.asset_name
    assert task._props["automated"] is True and task._props["replace_existing"] is True and task._props["save"] is True
    assert list((tmp_path / "incoming").iterdir()) == []                         # temp file removed
    tex = editor.assets[plan.texture_object_path]
    assert (tex.width, tex.height) == (8, 4)
    assert tex.metadata[naming.METADATA_SEED] == "3"
    assert '"prompt": "castle"' in tex.metadata[naming.METADATA_SETTINGS]
    assert tex.metadata[naming.METADATA_SERVER_PATH] == "/srv/out/a.png"
    assert tex in editor.saved
    assert summary == "/Game/ControlBridge/" + plan.asset_name
    assert editor.level == []                                                    # no plane asked for


def test_plane_is_created_attached_then_updated_not_duplicated(fake_editor, tmp_path):
    editor, ue = fake_editor
    cam = editor.add_cine_camera(sensor=(36.0, 24.0), focal=18.0)               # hfov 90
    view = engine_capture.resolve_view(ue, CINE_CAMERA, PluginSettings())
    plan1 = make_plan(view, job_id="job1")
    engine_results.apply_result(ue, plan1, view, make_png(8, 4), str(tmp_path))
    planes = engine_results.find_planes(ue)
    assert len(planes) == 1
    plane = planes[0]
    assert plane.label == "CB_Result_Shot_010"
    assert plane.root_component.parent is cam.get_cine_camera_component()      # attached to the lens component
    loc, rot, scale = plane.relative
    assert loc == ue.Vector(500.0, 0.0, 0.0)
    assert rot == ue.Rotator(pitch=90.0, yaw=0.0, roll=0.0)
    width = 2 * 500.0 * math.tan(math.radians(45.0))
    assert scale.y == pytest.approx(width / 100.0) and scale.x == pytest.approx(width * 512 / 768 / 100.0)
    mesh = plane.static_mesh_component
    assert mesh.mesh is editor.engine_assets[naming.PLANE_MESH_PATH]
    assert mesh._props["collision"] is ue.CollisionEnabled.NO_COLLISION and mesh._props["cast_shadow"] is False
    mic = mesh.materials[0]
    assert mic.parent.get_name() == naming.BASE_MATERIAL_NAME
    assert mic.textures["Image"] is editor.assets[plan1.texture_object_path]
    material = mic.parent
    assert material._props["shading_model"] is ue.MaterialShadingModel.MSM_UNLIT
    expr = material.expressions[0]
    assert expr._props["parameter_name"] == "Image"
    connect, = editor.calls_named("MaterialEditingLibrary.connect_material_property")
    assert connect.args[1:] == ("RGB", ue.MaterialProperty.MP_EMISSIVE_COLOR)

    # second generation from the same camera: same plane, same material instance, new texture
    editor.calls.clear()
    plan2 = make_plan(view, job_id="job2", distance=250.0)
    engine_results.apply_result(ue, plan2, view, make_png(8, 4), str(tmp_path))
    assert engine_results.find_planes(ue) == [plane]
    assert editor.calls_named("EditorActorSubsystem.spawn_actor_from_class") == []
    assert editor.calls_named("AssetTools.create_asset") == []                 # material + instance reused
    assert editor.calls_named("Actor.attach_to_component") == []               # already attached
    assert mesh.materials[0] is mic and mic.textures["Image"] is editor.assets[plan2.texture_object_path]
    assert plane.relative[0] == ue.Vector(250.0, 0.0, 0.0)
    assert plane.relative[2].y == pytest.approx(width / 200.0)


def test_viewport_plane_is_placed_in_world_not_attached(fake_editor, tmp_path):
    editor, ue = fake_editor
    view = camera_math.viewport_view((100.0, 0.0, 200.0), (0.0, 90.0, 0.0), 90.0)
    plan = make_plan(view)
    engine_results.apply_result(ue, plan, view, make_png(4, 4), str(tmp_path))
    plane, = engine_results.find_planes(ue, naming.plane_key_tag("viewport"))
    assert plane.root_component.parent is None and plane.relative is None
    loc = plane.root_component.location
    assert (loc.x, loc.y, loc.z) == pytest.approx((100.0, 500.0, 200.0))        # 500 cm along +Y (yaw 90)
    x_axis, y_axis, z_axis = camera_math.rotator_axes(
        (plane.root_component.rotation.pitch, plane.root_component.rotation.yaw, plane.root_component.rotation.roll))
    assert z_axis == pytest.approx((0.0, -1.0, 0.0), abs=1e-9)                 # facing the camera
    assert x_axis == pytest.approx((0.0, 0.0, 1.0), abs=1e-9)                  # image up = world up


def test_a_failing_plane_is_removed_again(fake_editor, tmp_path, monkeypatch):
    editor, ue = fake_editor
    view = camera_math.viewport_view((0, 0, 0), (0, 0, 0), 90.0)
    monkeypatch.setattr(ue.StaticMeshComponent, "set_material",
                        lambda self, i, m: (_ for _ in ()).throw(RuntimeError("no material")))
    with pytest.raises(RuntimeError):
        engine_results.apply_result(ue, make_plan(view), view, make_png(4, 4), str(tmp_path))
    assert editor.level == []


def test_asset_names_do_not_collide(fake_editor, tmp_path):
    editor, ue = fake_editor
    view = camera_math.viewport_view((0, 0, 0), (0, 0, 0), 90.0)
    exists = lambda p: engine_results.asset_exists(ue, p)  # noqa: E731
    plans = []
    for _ in range(2):
        plan = result_plan.plan_result(view=view, width=8, height=8, job_id="same", result_settings={}, seed=1,
                                       saved_path="", encoding="png", create_plane=False, plane_distance_cm=1.0,
                                       asset_exists=exists)
        engine_results.apply_result(ue, plan, view, make_png(8, 8), str(tmp_path))
        plans.append(plan.asset_name)
    assert plans == ["T_CB_Viewport_same", "T_CB_Viewport_same_2"]


# ---------------------------------------------------------------------------- ui

def test_menus(fake_editor):
    editor, ue = fake_editor
    assert engine_ui.register_menus(ue)
    main = editor.menus.menus_by_name["LevelEditor.MainMenu"]
    sub = main.submenus["ControlBridge"]
    labels = [entry.label for _, entry in sub.entries]
    assert labels == ["Generate from viewport", "Generate from selected CineCamera", "Live mode (toggle)",
                      "Generate Level Sequence shots", "Render shot range", "Project result onto level",
                      "Remove projections", "History...", "Cancel", "Settings..."]
    for _, entry in sub.entries:
        kind, _, command = entry.command
        assert kind is ue.ToolMenuStringCommandType.PYTHON
        module, func = "controlbridge_unreal.plugin", command.rsplit(".", 1)[1].rstrip("()")
        import importlib
        assert callable(getattr(importlib.import_module(module), func))
    assert editor.calls_named("ToolMenus.refresh_all_widgets")


def test_task_progress(fake_editor):
    editor, ue = fake_editor
    classes = engine_classes.define(ue)
    p = engine_ui.TaskProgress(ue, classes.task, "ControlBridge: Shot")
    task, = editor.tasks
    p.update("Step 1/4")
    p.update("Step 1/4")                       # unchanged text is not re-sent
    p.update("Step 2/4")
    assert task.texts == ["Step 1/4", "Step 2/4"]
    assert not p.cancel_requested()
    p.fail("The server reported an error: boom")
    assert task.finished is False and task.texts[-1] == "Failed"
    assert editor.messages == ["The server reported an error: boom"]
    assert ("error", "ControlBridge: The server reported an error: boom") in editor.log
    p.succeed("ignored")                       # finishing twice is harmless
    assert not p.cancel_requested()


def test_cancel_button_lets_the_engine_finish_the_task(fake_editor):
    editor, ue = fake_editor
    classes = engine_classes.define(ue)
    p = engine_ui.TaskProgress(ue, classes.task, "t")
    task, = editor.tasks
    task.cancel = True                         # the notification's Cancel button
    assert p.cancel_requested()
    editor.tick()                              # Unreal's subsystem finishes the task itself
    assert task.finished == "by-engine"
    assert not p.cancel_requested()
    p.cancelled("Cancelled")                   # must not finish it a second time (would be an ensure)
    p.fail("late error")
    assert task.finished == "by-engine" and editor.messages == ["late error"]


def test_task_progress_on_engines_without_success_flag(fake_editor, monkeypatch):
    editor, ue = fake_editor
    classes = engine_classes.define(ue)

    def old_finish(self):                      # UE 5.3/5.4 signature
        self.finished = True

    monkeypatch.setattr(classes.task, "finish_executing_task", old_finish)
    p = engine_ui.TaskProgress(ue, classes.task, "t")
    p.succeed("Done")
    assert editor.tasks[0].finished is True


def test_settings_dialog_round_trip(fake_editor):
    editor, ue = fake_editor
    classes = engine_classes.define(ue)

    def user_edits(obj):
        assert obj.get_editor_property("prompt") == "old"
        obj.set_editor_property("prompt", "new prompt")
        obj.set_editor_property("steps", 999)
        return True

    editor.details_view = user_edits
    edited = engine_ui.edit_settings(ue, classes.settings, PluginSettings(prompt="old"))
    assert edited.prompt == "new prompt" and edited.steps == 150
    call, = editor.calls_named("EditorDialog.show_object_details_view")
    assert call.args[0] == "ControlBridge Settings" and call.args[2].show_object_name is False
    assert call.args[1].get_editor_property("server_offers") == ""
    editor.details_view = lambda obj: False
    assert engine_ui.edit_settings(ue, classes.settings, PluginSettings()) is None


def test_settings_class_matches_the_field_list(fake_editor):
    editor, ue = fake_editor
    classes = engine_classes.define(ue)
    props = {name: value for name, value in vars(classes.settings).items() if isinstance(value, type(ue.uproperty(str)))}
    assert list(props) == [f.name for f in settings_model.FIELDS] + ["server_offers"]   # shown, never saved
    for f in settings_model.FIELDS:
        assert props[f.name].type is f.type, f.name
        assert props[f.name].meta == settings_model.uproperty_meta(f)
    assert issubclass(classes.task, ue.EditorUtilityTask)
    assert engine_classes.define(ue) is classes                               # generated once


def test_tick_pump_survives_errors(fake_editor):
    editor, ue = fake_editor
    seen = []

    def callback(dt):
        seen.append(dt)
        raise ValueError("bad frame")

    handle = engine_ui.register_tick(ue, callback)
    editor.tick(0.5)
    editor.tick(0.5)
    assert seen == [0.5, 0.5]
    assert [kind for kind, _ in editor.log].count("error") == 1              # logged once, not every frame
    engine_ui.unregister_tick(ue, handle)
    assert editor.tick_callbacks == []
