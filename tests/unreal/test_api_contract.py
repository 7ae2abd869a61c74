"""Contract check: every `unreal` class, method, property, editor property and enum value the plugin uses exists,
with the parameter names used, in Epic's generated Python API stub (unreal-stub 0.3 = UE 5.6).

The uses are collected from the plugin's source with `ast` (engine_api_scan.py), not from a hand-written list.
"""

import ast
import inspect
import json

import pytest

import engine_api_scan
import fake_unreal
from ue_paths import ENGINE_MODULES, PACKAGE_DIR, PLAIN_MODULES, PLUGIN_DIR, PLUGIN_PYTHON

# Names whose type the scanner cannot know, each with the reason it is not an engine API call.
KNOWN_PLAIN_RECEIVERS = {
    ("engine_ui.py", "settings_object"): "instance of our own Python-defined ControlBridgeSettings class; its "
                                         "properties are checked against settings_model.FIELDS by "
                                         "test_engine_layer.test_settings_class_matches_the_field_list",
    ("engine_ui.py", "history_object"): "instance of our own Python-defined ControlBridgeHistory class; its "
                                        "properties are checked against engine_classes.HISTORY_PROPERTIES by "
                                        "test_history.test_the_history_picker_class_has_what_the_picker_sets",
}

# Engine plugins the plugin may rely on: its own dependency plus those listed in ControlBridge.uplugin.
ALWAYS_AVAILABLE_PLUGINS = {"PythonScriptPlugin"}


def engine_files():
    return [PLUGIN_PYTHON / "init_unreal.py"] + [PACKAGE_DIR / f"{m}.py" for m in ENGINE_MODULES]


@pytest.fixture(scope="module")
def scan(stub):
    return engine_api_scan.scan_files(stub, engine_files())


def test_every_module_is_classified():
    on_disk = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {"__init__"}
    assert on_disk == set(PLAIN_MODULES) | set(ENGINE_MODULES)


@pytest.mark.parametrize("module", PLAIN_MODULES)
def test_plain_modules_never_touch_unreal(module):
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names]
            assert not any(n.split(".")[0] == "unreal" for n in names), f"{module} imports unreal"
            if isinstance(node, ast.ImportFrom) and node.level:
                assert not (node.module or "").startswith("engine_") and node.module != "plugin", \
                    f"{module} imports the engine layer"
        assert not (isinstance(node, ast.Name) and node.id == "unreal"), f"{module} uses a name 'unreal'"
        assert not (isinstance(node, ast.arg) and node.arg == "unreal"), f"{module} takes an 'unreal' argument"


def test_every_unreal_use_exists_in_the_stub(scan, stub):
    assert not scan.problems, "API not in Unreal 5.6's stub:\n" + "\n".join(map(str, scan.problems))


def test_no_engine_object_escapes_the_check(scan):
    unknown = [f for f in scan.unresolved if (f.file, f.expr.split(".")[0]) not in KNOWN_PLAIN_RECEIVERS]
    assert not unknown, ("engine objects of unknown type (annotate them `x: unreal.T`):\n"
                         + "\n".join(map(str, unknown)))


def test_the_scan_really_sees_the_plugin(scan):
    """Guards the guard: the uses the plugin's features depend on must all be among those checked."""
    expected = {
        "SceneCapture2D", "SceneCaptureComponent2D.capture_scene", "SceneCaptureComponent2D[fov_angle]",
        "SceneCaptureComponent2D[capture_source]", "SceneCaptureComponent2D[texture_target]",
        "SceneCaptureComponent2D[hidden_actors]", "SceneCaptureSource.SCS_SCENE_DEPTH",
        "SceneCaptureSource.SCS_FINAL_COLOR_LDR", "TextureRenderTargetFormat.RTF_RGBA16F",
        "RenderingLibrary.read_render_target_raw(normalize=)", "RenderingLibrary.export_render_target",
        "ImageWriteBlueprintLibrary.export_to_disk", "DesiredImageFormat.EXR", "unreal.ImageWriteOptions()(async_=)",
        "TextureRenderTarget2D[target_gamma]", "SceneCaptureComponent2D[always_persist_rendering_state]",
        "PostProcessSettings[override_dynamic_global_illumination_method]",
        "PostProcessSettings[dynamic_global_illumination_method]", "PostProcessSettings[reflection_method]",
        "DynamicGlobalIlluminationMethod.LUMEN", "ReflectionMethod.LUMEN",
        "SystemLibrary.get_console_variable_int_value", "StaticMeshActor.modify", "StaticMeshComponent.modify",
        "RenderingLibrary.import_file_as_texture2d", "StaticMeshComponent.create_dynamic_material_instance",
        "MaterialInstanceDynamic.set_texture_parameter_value", "StaticMeshComponent.get_material",
        "EditorActorSubsystem.spawn_actor_from_class(transient=)", "EditorActorSubsystem.destroy_actor",
        "CineCameraComponent.filmback", "CineCameraComponent.current_focal_length",
        "CameraFilmbackSettings.sensor_width", "AssetImportTask[destination_path]", "AssetImportTask[automated]",
        "AssetTools.import_asset_tasks", "EditorAssetSubsystem.set_metadata_tag",
        "StaticMeshActor.attach_to_component", "StaticMeshActor.set_actor_relative_scale3d",
        "MaterialEditingLibrary.set_material_instance_texture_parameter_value", "ToolMenu.add_sub_menu",
        "ToolMenuEntry.set_string_command", "EditorUtilitySubsystem.register_and_execute_task",
        "EditorUtilityTask.set_task_notification_text", "EditorUtilityTask.finish_executing_task(success=)",
        "EditorDialog.show_object_details_view", "register_slate_post_tick_callback()", "uclass()", "uproperty()",
        "unreal.Rotator()(pitch=)", "LevelEditorSubsystem.is_in_play_in_editor", "UnrealEditorSubsystem.get_editor_world",
        "StaticMeshActor.set_actor_location_and_rotation",
        "LevelSequenceEditorBlueprintLibrary.get_current_level_sequence", "LevelSequence.find_tracks_by_type",
        "MovieSceneCameraCutSection.get_camera_binding_id", "LevelSequenceEditorBlueprintLibrary.set_current_time",
        "LevelSequenceEditorBlueprintLibrary.get_bound_objects", "Canvas.draw_texture",
        "RenderingLibrary.begin_draw_canvas_to_render_target", "DecalActor.set_decal_material",
        "DecalComponent.create_dynamic_material_instance", "MaterialInstanceDynamic.set_vector_parameter_value",
        "MaterialExpressionCustom[code]", "MaterialDomain.MD_DEFERRED_DECAL",
        "SceneCaptureComponent2D[show_flag_settings]", "unreal.EngineShowFlagsSetting()(show_flag_name=)",
    }
    missing = expected - scan.used
    assert not missing, f"the scan no longer sees: {sorted(missing)}"
    assert scan.calls > 100


def test_only_declared_engine_plugins_are_used(scan, stub):
    declared = {p["Name"] for p in json.loads((PLUGIN_DIR / "ControlBridge.uplugin").read_text())["Plugins"]}
    assert "PythonScriptPlugin" in declared
    needs = {c: stub.classes[c].plugin for c in scan.classes if stub.classes[c].plugin}
    undeclared = {c: p for c, p in needs.items() if p not in declared | ALWAYS_AVAILABLE_PLUGINS}
    assert not undeclared, f"classes from engine plugins not enabled by ControlBridge.uplugin: {undeclared}"


@pytest.mark.parametrize("snippet,fragment", [
    ("def f(unreal):\n    unreal.SceneCaptureComponent3D\n", "does not exist"),
    ("def f(unreal):\n    unreal.RenderingLibrary.read_render_target_raw(None, None, normalise=False)\n",
     "no parameter 'normalise'"),
    ("def f(unreal):\n    unreal.SceneCaptureSource.SCS_DEPTH\n", "no member 'SCS_DEPTH'"),
    ("def f(unreal):\n    c: unreal.SceneCaptureComponent2D = g()\n    c.capture()\n", "no attribute 'capture'"),
    ("def f(unreal):\n    c: unreal.SceneCaptureComponent2D = g()\n    c.set_editor_property('fov', 1)\n",
     "no editor property 'fov'"),
    ("def f(unreal):\n    a: unreal.SceneCapture2D = g()\n    a.set_editor_property('capture_component2d', 1)\n",
     "read-only"),
    ("def f(unreal):\n    s = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)\n"
     "    s.spawn_actor_from_class(unreal.Actor, None, None, True, 1)\n", "at most 4 positional"),
    ("def f(unreal):\n    s = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)\n"
     "    for a in s.get_selected_level_actors():\n        a.get_cine_camera_component()\n",
     "Actor has no attribute 'get_cine_camera_component'"),
    ("def f(unreal):\n    unreal.Rotator(pitch=1, yaw=2, rol=3)\n", "no parameter 'rol'"),
    ("def f(unreal):\n    unreal.EditorAssetSubsystem.load_asset()\n", "missing required"),
])
def test_a_call_that_does_not_exist_fails(stub, snippet, fragment):
    result = engine_api_scan.scan_source(stub, snippet)
    assert any(fragment in p.message for p in result.problems), result.problems


def test_an_unannotated_engine_object_is_reported(stub):
    result = engine_api_scan.scan_source(stub, "def f(unreal):\n    x = mystery()\n    x.destroy_actor()\n")
    assert result.unresolved and not result.problems


# ---- the recording stand-in may only imitate what exists

def _stub_params(stub, cls_name, member):
    m = stub.member(cls_name, member)
    return None if m is None else m.params


@pytest.mark.parametrize("name", fake_unreal._EXPORTED)
def test_stand_in_mirrors_the_stub(stub, name):
    obj = getattr(fake_unreal, name)
    if inspect.isfunction(obj):
        if name in ("uclass", "uproperty"):
            params = stub.functions[name].params
        else:
            assert name in stub.functions, f"unreal.{name} is not a stub function"
            params = stub.functions[name].params
        fake_params = list(inspect.signature(inspect.unwrap(obj)).parameters)
        assert fake_params == params.names[:len(fake_params)], (name, fake_params, params.names)
        return
    assert name in stub.classes, f"stand-in class {name} is not in the stub"
    if issubclass(obj, fake_unreal._Struct):
        assert list(obj._fields) == stub.init_params(name).names[:len(obj._fields)], name
    for member, value in vars(obj).items():
        if member.startswith("_") or member in ("menus_by_name",):
            continue
        if isinstance(value, fake_unreal._EnumValue):
            assert stub.member(name, member) is not None and stub.member(name, member).kind == "enum", \
                f"{name}.{member} is not an enum value of the stub"
            continue
        fn = value.__func__ if isinstance(value, classmethod) else value
        if not callable(fn):
            continue
        params = _stub_params(stub, name, member)
        assert params is not None, f"stand-in method {name}.{member} does not exist in the stub"
        fake_params = list(inspect.signature(inspect.unwrap(fn)).parameters)[1:]
        assert fake_params == params.names[:len(fake_params)], (f"{name}.{member}", fake_params, params.names)
