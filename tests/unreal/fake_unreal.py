"""A recording stand-in for the few parts of Unreal's `unreal` module the plugin uses.

It behaves like the editor where the plugin depends on the behaviour (actors appear in and leave the level,
render targets hold pixels, reading a float target with normalize=True squashes it into 0..1 as Unreal does,
texture import names the asset after the FILE as Interchange does, an EditorUtilityTask has a cancel flag),
and records every call: `fake.calls` is a list of Call(name, target, args, kwargs) in order.

Each public method here mirrors a real API of the same class and parameter names; test_api_contract.py checks
this file against Epic's stub too, so the stand-in cannot invent an API the plugin then "passes" with.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

FP16_MAX = 65504.0


@dataclass
class Call:
    name: str
    target: Any
    args: tuple
    kwargs: dict

    def arg(self, index: int, keyword: str, default: Any = None) -> Any:
        if keyword in self.kwargs:
            return self.kwargs[keyword]
        return self.args[index] if index < len(self.args) else default


def _recorded(fn: Callable) -> Callable:
    name = fn.__qualname__

    @functools.wraps(fn)
    def wrapper(self_or_cls, *args, **kwargs):
        _world().calls.append(Call(name, self_or_cls, args, kwargs))
        return fn(self_or_cls, *args, **kwargs)

    return wrapper


def _recorded_function(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _world().calls.append(Call(fn.__name__, None, args, kwargs))
        return fn(*args, **kwargs)

    return wrapper


_CURRENT: List["FakeEditor"] = []


def _world() -> "FakeEditor":
    return _CURRENT[-1]


# =========================================================================== value types

class _Struct:
    _fields: tuple = ()

    def __init__(self, *args, **kwargs):
        for name, value in zip(self._fields, args, strict=False):
            setattr(self, name, value)
        for name in self._fields[len(args):]:
            setattr(self, name, kwargs.pop(name, 0.0))
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(kwargs)}")

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"

    def __eq__(self, other):
        return type(self) is type(other) and all(getattr(self, n) == getattr(other, n) for n in self._fields)


class Vector(_Struct):
    _fields = ("x", "y", "z")


class Rotator(_Struct):
    _fields = ("roll", "pitch", "yaw")       # Unreal's positional order


class LinearColor(_Struct):
    _fields = ("r", "g", "b", "a")


class Color(_Struct):
    _fields = ("b", "g", "r", "a")           # FColor's memory order, as the stub's __init__ lists it


class Name(str):
    pass


class Vector2D(_Struct):
    _fields = ("x", "y")


class MovieSceneObjectBindingID(_Struct):
    """Opaque here: the fake compares bindings by identity."""
    _fields = ()
    __eq__ = object.__eq__
    __hash__ = object.__hash__


class DrawToRenderTargetContext(_Struct):
    _fields = ()


class EditorDialogLibraryObjectDetailsViewOptions(_Struct):
    _fields = ("show_object_name", "allow_search", "allow_resizing", "min_width", "min_height",
               "value_column_width_ratio")


class CameraFilmbackSettings(_Struct):
    _fields = ("sensor_width", "sensor_height", "sensor_horizontal_offset", "sensor_vertical_offset",
               "sensor_aspect_ratio")


class _EnumValue:
    def __init__(self, enum: str, name: str):
        self.enum, self.name = enum, name

    def __repr__(self):
        return f"{self.enum}.{self.name}"


def _enum(name: str, *values: str):
    return type(name, (), {v: _EnumValue(name, v) for v in values})


SceneCaptureSource = _enum("SceneCaptureSource", "SCS_FINAL_COLOR_LDR", "SCS_SCENE_DEPTH", "SCS_NORMAL")
TextureRenderTargetFormat = _enum("TextureRenderTargetFormat", "RTF_RGBA8", "RTF_RGBA16F", "RTF_R32F")
CameraProjectionMode = _enum("CameraProjectionMode", "PERSPECTIVE", "ORTHOGRAPHIC")
AttachmentRule = _enum("AttachmentRule", "KEEP_RELATIVE", "KEEP_WORLD", "SNAP_TO_TARGET")
CollisionEnabled = _enum("CollisionEnabled", "NO_COLLISION")
ComponentMobility = _enum("ComponentMobility", "STATIC", "MOVABLE")
MaterialProperty = _enum("MaterialProperty", "MP_EMISSIVE_COLOR", "MP_BASE_COLOR", "MP_OPACITY")
MaterialDomain = _enum("MaterialDomain", "MD_SURFACE", "MD_DEFERRED_DECAL")
DecalBlendMode = _enum("DecalBlendMode", "DBM_TRANSLUCENT")
CustomMaterialOutputType = _enum("CustomMaterialOutputType", "CMOT_FLOAT3", "CMOT_FLOAT4")
MaterialShadingModel = _enum("MaterialShadingModel", "MSM_UNLIT", "MSM_DEFAULT_LIT")
MultiBlockType = _enum("MultiBlockType", "MENU_ENTRY")
ToolMenuStringCommandType = _enum("ToolMenuStringCommandType", "COMMAND", "PYTHON")
AppMsgType = _enum("AppMsgType", "OK")
AppReturnType = _enum("AppReturnType", "OK", "NO")
DynamicGlobalIlluminationMethod = _enum("DynamicGlobalIlluminationMethod", "NONE", "LUMEN", "SCREEN_SPACE", "PLUGIN")
ReflectionMethod = _enum("ReflectionMethod", "NONE", "LUMEN", "SCREEN_SPACE")
DesiredImageFormat = _enum("DesiredImageFormat", "PNG", "JPG", "BMP", "EXR")
BlendMode = _enum("BlendMode", "BLEND_OPAQUE", "BLEND_TRANSLUCENT")


class EngineShowFlagsSetting(_Struct):
    _fields = ("show_flag_name", "enabled")


class ImageWriteOptions(_Struct):
    _fields = ("format", "on_complete", "compression_quality", "overwrite_file", "async_")


class PostProcessSettings:
    """A struct with hundreds of fields in the engine; here only what was set. Read through get_editor_property
    it is a COPY, as Unreal hands out struct properties by value."""

    def __init__(self, **values):
        self._props: Dict[str, Any] = dict(values)

    def set_editor_property(self, name, value, notify_mode=None):
        _world().calls.append(Call("PostProcessSettings.set_editor_property", self, (name, value), {}))
        self._props[name] = value

    def get_editor_property(self, name):
        return self._props.get(name, False)


# =========================================================================== objects

class Object:
    def __init__(self, outer=None, name=""):
        self._props: Dict[str, Any] = {}
        self._name = name or type(self).__name__
        self._path = f"/Temp/{self._name}"

    @_recorded
    def set_editor_property(self, name, value, notify_mode=None):
        self._props[name] = value

    @_recorded
    def get_editor_property(self, name):
        value = self._props.get(name)
        if isinstance(value, PostProcessSettings):   # structs are values: the caller gets a copy
            return PostProcessSettings(**value._props)
        return value

    @_recorded
    def modify(self, always_mark_dirty=True):
        _world().modified.append(self)
        return True

    def get_path_name(self):
        return self._path

    def get_name(self):
        return self._name

    @classmethod
    def static_class(cls):
        return cls


class World(Object):
    pass


class Texture(Object):
    pass


class Texture2D(Texture):
    def __init__(self, outer=None, name="", width=0, height=0, png=b""):
        super().__init__(outer, name)
        self.width, self.height, self.png = width, height, png
        self.metadata: Dict[str, str] = {}


class StaticMesh(Object):
    pass


class TextureRenderTarget2D(Texture):
    def __init__(self, width=0, height=0, format=None):
        super().__init__()
        self.width, self.height, self.format = width, height, format
        self.pixels: Optional[list] = None      # Color or LinearColor per pixel, top row first
        self.released = False


class Factory(Object):
    pass


class MaterialFactoryNew(Factory):
    pass


class MaterialInstanceConstantFactoryNew(Factory):
    pass


class MaterialInterface(Object):
    pass


class Material(MaterialInterface):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self.expressions: list = []
        self.connections: list = []


class MaterialInstanceConstant(MaterialInterface):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self.parent = None
        self.textures: Dict[str, Any] = {}


class MaterialInstanceDynamic(MaterialInterface):
    """Transient: made on a component, never an asset."""

    def __init__(self, outer=None, name="", parent=None):
        super().__init__(outer, name)
        self.parent = parent
        self.textures: Dict[str, Any] = {}
        self.vectors: Dict[str, Any] = {}
        self.scalars: Dict[str, float] = {}

    @_recorded
    def set_texture_parameter_value(self, parameter_name, value):
        self.textures[str(parameter_name)] = value

    @_recorded
    def set_vector_parameter_value(self, parameter_name, value):
        self.vectors[str(parameter_name)] = value

    @_recorded
    def set_scalar_parameter_value(self, parameter_name, value):
        self.scalars[str(parameter_name)] = value


class MaterialExpressionTextureSampleParameter2D(Object):
    pass


class MaterialExpressionCustom(Object):
    pass


class CustomInput(Object):
    pass


class MaterialExpressionWorldPosition(Object):
    pass


class MaterialExpressionVectorParameter(Object):
    pass


class MaterialExpressionScalarParameter(Object):
    pass


class MaterialExpressionTextureObjectParameter(Object):
    pass


class MaterialExpressionComponentMask(Object):
    pass


class AssetImportTask(Object):
    pass


class EditorUtilityTask(Object):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self.texts: List[str] = []
        self.cancel = False
        self.finished: Optional[bool] = None

    @_recorded
    def set_task_notification_text(self, text):
        self.texts.append(text)

    @_recorded
    def was_cancel_requested(self):
        return self.cancel

    @_recorded
    def finish_executing_task(self, success=True):
        if self.finished is not None:
            raise AssertionError("finish_executing_task called twice")
        self.finished = bool(success)


# ---- components and actors

class ActorComponent(Object):
    pass


class SceneComponent(ActorComponent):
    def __init__(self, owner=None):
        super().__init__()
        self.owner = owner
        self.parent: Optional["SceneComponent"] = None
        self.location = Vector(0.0, 0.0, 0.0)
        self.rotation = Rotator(0.0, 0.0, 0.0)

    @_recorded
    def get_world_location(self):
        return self.location

    @_recorded
    def get_world_rotation(self):
        return self.rotation

    @_recorded
    def get_attach_parent(self):
        return self.parent

    @_recorded
    def set_mobility(self, new_mobility):
        self._props["mobility"] = new_mobility


class PrimitiveComponent(SceneComponent):
    @_recorded
    def set_collision_enabled(self, new_type):
        self._props["collision"] = new_type

    @_recorded
    def set_cast_shadow(self, new_cast_shadow):
        self._props["cast_shadow"] = new_cast_shadow

    @_recorded
    def create_dynamic_material_instance(self, element_index, source_material=None, optional_name="None"):
        dynamic = MaterialInstanceDynamic(parent=source_material)
        self.materials[element_index] = dynamic
        return dynamic


class StaticMeshComponent(PrimitiveComponent):
    def __init__(self, owner=None):
        super().__init__(owner)
        self.mesh = None
        self.materials: Dict[int, Any] = {}

    @_recorded
    def set_static_mesh(self, new_mesh):
        self.mesh = new_mesh
        return True

    @_recorded
    def set_material(self, element_index, material):
        self.materials[element_index] = material

    @_recorded
    def get_material(self, element_index):
        return self.materials.get(element_index)


class CameraComponent(SceneComponent):
    pass


class CineCameraComponent(CameraComponent):
    def __init__(self, owner=None):
        super().__init__(owner)
        self.filmback = CameraFilmbackSettings(36.0, 24.0)
        self.current_focal_length = 35.0
        self.projection_mode = CameraProjectionMode.PERSPECTIVE
        self._props.update(post_process_settings=PostProcessSettings(auto_exposure_bias=1.5),
                           post_process_blend_weight=1.0)


class SceneCaptureComponent2D(SceneComponent):
    def __init__(self, owner=None):
        super().__init__(owner)
        self._props["post_process_settings"] = PostProcessSettings()

    @_recorded
    def capture_scene(self):
        target = self._props.get("texture_target")
        if target is None:
            raise RuntimeError("capture_scene without a texture_target")
        _world().render(self, target)


class Actor(Object):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self.root_component = SceneComponent(self)
        self.label = type(self).__name__
        self.tags: list = []
        self.scale = Vector(1.0, 1.0, 1.0)
        self.relative = None     # (location, rotation, scale) relative to the attach parent
        self.transient = False

    def set_editor_property(self, name, value, notify_mode=None):
        _world().calls.append(Call("Object.set_editor_property", self, (name, value), {}))
        if name == "tags":
            self.tags = list(value)
        else:
            self._props[name] = value

    @_recorded
    def get_actor_label(self, create_if_none=True):
        return self.label

    @_recorded
    def set_actor_label(self, new_actor_label, mark_dirty=True):
        self.label = new_actor_label

    @_recorded
    def attach_to_component(self, parent, socket_name, location_rule, rotation_rule, scale_rule,
                            weld_simulated_bodies=True):
        self.root_component.parent = parent
        return True

    @_recorded
    def set_actor_relative_location(self, new_relative_location, sweep, teleport):
        self._rel(0, new_relative_location)

    @_recorded
    def set_actor_relative_rotation(self, new_relative_rotation, sweep, teleport):
        self._rel(1, new_relative_rotation)

    @_recorded
    def set_actor_relative_scale3d(self, new_relative_scale):
        self._rel(2, new_relative_scale)

    @_recorded
    def set_actor_location_and_rotation(self, new_location, new_rotation, sweep, teleport):
        self.root_component.location, self.root_component.rotation = new_location, new_rotation

    @_recorded
    def set_actor_scale3d(self, new_scale3d):
        self.scale = new_scale3d

    @_recorded
    def get_actor_location(self):
        return self.root_component.location

    @_recorded
    def get_actor_rotation(self):
        return self.root_component.rotation

    @_recorded
    def get_actor_scale3d(self):
        return self.scale

    def _rel(self, i, value):
        rel = list(self.relative or (None, None, None))
        rel[i] = value
        self.relative = tuple(rel)


class StaticMeshActor(Actor):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self.static_mesh_component = StaticMeshComponent(self)
        self.root_component = self.static_mesh_component


class CameraActor(Actor):
    pass


class CineCameraActor(CameraActor):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self._component = CineCameraComponent(self)

    @_recorded
    def get_cine_camera_component(self):
        return self._component


class DecalComponent(SceneComponent):
    @_recorded
    def create_dynamic_material_instance(self):
        dynamic = MaterialInstanceDynamic(parent=self._props.get("decal_material"))
        self._props["decal_material"] = dynamic
        return dynamic


class DecalActor(Actor):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self.decal = DecalComponent(self)
        self.root_component = self.decal

    @_recorded
    def set_decal_material(self, new_decal_material):
        self.decal._props["decal_material"] = new_decal_material


class SceneCapture(Actor):
    pass


class SceneCapture2D(SceneCapture):
    def __init__(self, outer=None, name=""):
        super().__init__(outer, name)
        self.capture_component2d = SceneCaptureComponent2D(self)


# ---- Sequencer

class MovieSceneSection(Object):
    def __init__(self, start=None, end=None, active=True, row=0):
        super().__init__()
        self.start, self.end, self.active, self.row = start, end, active, row

    @_recorded
    def has_start_frame(self):
        return self.start is not None

    @_recorded
    def has_end_frame(self):
        return self.end is not None

    @_recorded
    def get_start_frame(self):
        if self.start is None:
            raise RuntimeError("section has no start frame")   # Unreal throws too
        return self.start

    @_recorded
    def get_end_frame(self):
        if self.end is None:
            raise RuntimeError("section has no end frame")
        return self.end

    @_recorded
    def is_active(self):
        return self.active

    @_recorded
    def get_row_index(self):
        return self.row


class MovieSceneCameraCutSection(MovieSceneSection):
    def __init__(self, start=None, end=None, binding=None, active=True, row=0):
        super().__init__(start, end, active, row)
        self.binding = binding

    @_recorded
    def get_camera_binding_id(self):
        return self.binding


class MovieSceneTrack(Object):
    def __init__(self, sections=()):
        super().__init__()
        self.sections = list(sections)

    @_recorded
    def get_sections(self):
        return list(self.sections)


class MovieSceneCameraCutTrack(MovieSceneTrack):
    pass


class MovieSceneSequence(Object):
    def __init__(self, outer=None, name="", playback=(0, 0), tracks=()):
        super().__init__(outer, name)
        self.playback, self.tracks = playback, list(tracks)
        self.bindings: list = []    # (MovieSceneObjectBindingID, actor, animate(frame) -> (location, rotation))

    @_recorded
    def find_tracks_by_type(self, track_type):
        return [t for t in self.tracks if isinstance(t, track_type)]

    @_recorded
    def get_playback_start(self):
        return self.playback[0]

    @_recorded
    def get_playback_end(self):
        return self.playback[1]

    def _bind(self, actor, animate=None) -> "MovieSceneObjectBindingID":
        binding = MovieSceneObjectBindingID()
        self.bindings.append((binding, actor, animate))
        return binding


class LevelSequence(MovieSceneSequence):
    pass


class LevelSequenceEditorBlueprintLibrary(Object):
    """Sequencer with one open sequence: setting the time evaluates it (animated cameras move)."""

    @classmethod
    @_recorded
    def get_current_level_sequence(cls):
        return _world().sequence

    @classmethod
    @_recorded
    def get_current_time(cls):
        return _world().sequence_time

    @classmethod
    @_recorded
    def open_level_sequence(cls, level_sequence):
        w = _world()
        w.sequence, w.sequence_time = level_sequence, level_sequence.get_playback_start()
        return True

    @classmethod
    @_recorded
    def set_current_time(cls, new_frame):
        w = _world()
        w.sequence_time = new_frame
        w.evaluated = False

    @classmethod
    @_recorded
    def force_update(cls):
        w = _world()
        for _, actor, animate in w.sequence.bindings:
            if animate is not None:
                location, rotation = animate(w.sequence_time)
                component = actor.get_cine_camera_component()
                component.location = Vector(*location)
                component.rotation = Rotator(roll=rotation[2], pitch=rotation[0], yaw=rotation[1])
        w.evaluated = True

    @classmethod
    @_recorded
    def get_bound_objects(cls, object_binding):
        return [actor for binding, actor, _ in _world().sequence.bindings if binding is object_binding]


class Canvas(Object):
    def __init__(self, target=None):
        super().__init__()
        self.target = target

    @_recorded
    def draw_texture(self, render_texture, screen_position, screen_size, coordinate_position,
                     coordinate_size=None, render_color=None, blend_mode=None):
        """Draws the texture's image (its PNG/JPEG, resized) into the target's pixels."""
        import cv2
        import numpy as np

        rt = self.target
        image = cv2.imdecode(np.frombuffer(render_texture.png, np.uint8), cv2.IMREAD_COLOR)
        w, h = int(screen_size.x), int(screen_size.y)
        tile = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        x0, y0 = int(screen_position.x), int(screen_position.y)
        for y in range(h):
            for x in range(w):
                b, g, r = (int(v) for v in tile[y, x])
                rt.pixels[(y0 + y) * rt.width + x0 + x] = Color(r=r, g=g, b=b, a=255)


# =========================================================================== libraries and subsystems

class EditorSubsystem(Object):
    pass


class EditorActorSubsystem(EditorSubsystem):
    @_recorded
    def spawn_actor_from_class(self, actor_class, location, rotation=None, transient=False):
        actor = actor_class()
        actor.root_component.location = location
        actor.root_component.rotation = rotation or Rotator(0.0, 0.0, 0.0)
        actor.transient = transient
        _world().level.append(actor)
        return actor

    @_recorded
    def destroy_actor(self, actor_to_destroy):
        _world().level.remove(actor_to_destroy)
        return True

    @_recorded
    def get_selected_level_actors(self):
        return list(_world().selected)

    @_recorded
    def get_all_level_actors(self):
        return list(_world().level)


class UnrealEditorSubsystem(EditorSubsystem):
    @_recorded
    def get_level_viewport_camera_info(self):
        return _world().viewport

    @_recorded
    def get_editor_world(self):
        return _world().world


class LevelEditorSubsystem(EditorSubsystem):
    @_recorded
    def is_in_play_in_editor(self):
        return _world().playing


class EditorAssetSubsystem(EditorSubsystem):
    @_recorded
    def does_asset_exist(self, asset_path):
        return asset_path in _world().assets

    @_recorded
    def load_asset(self, asset_path):
        w = _world()
        if asset_path.startswith("/Engine/"):
            return w.engine_assets.setdefault(asset_path, StaticMesh() if "Plane" in asset_path else Texture2D())
        return w.assets.get(asset_path)

    @_recorded
    def make_directory(self, directory_path):
        _world().directories.add(directory_path)
        return True

    @_recorded
    def save_loaded_asset(self, asset_to_save, only_if_is_dirty=True):
        _world().saved.append(asset_to_save)
        return True

    @_recorded
    def set_metadata_tag(self, object, tag, value):
        object.metadata[str(tag)] = value


class EditorUtilitySubsystem(EditorSubsystem):
    @_recorded
    def register_and_execute_task(self, new_task, optional_parent_task=None):
        _world().tasks.append(new_task)


class AssetTools(Object):
    @_recorded
    def import_asset_tasks(self, import_tasks):
        w = _world()
        for task in import_tasks:
            filename = task.get_editor_property("filename")
            with open(filename, "rb") as fh:
                data = fh.read()
            width, height = png_size(data)
            # Interchange names the asset after the file (destination_name is ignored)
            stem = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
            path = f"{task.get_editor_property('destination_path')}/{stem}.{stem}"
            w.assets[path] = Texture2D(name=stem, width=width, height=height, png=data)
            task._props["imported_object_paths"] = [path]

    @_recorded
    def create_asset(self, asset_name, package_path, asset_class, factory, calling_context="None"):
        asset = asset_class(name=asset_name)
        asset._path = f"{package_path}/{asset_name}.{asset_name}"
        _world().assets[asset._path] = asset
        return asset


class AssetToolsHelpers(Object):
    @classmethod
    @_recorded
    def get_asset_tools(cls):
        return _world().asset_tools


class MaterialEditingLibrary(Object):
    @classmethod
    @_recorded
    def create_material_expression(cls, material, expression_class, node_pos_x=0, node_pos_y=0):
        expression = expression_class()
        material.expressions.append(expression)
        return expression

    @classmethod
    @_recorded
    def connect_material_property(cls, from_expression, from_output_name, property_):
        return True

    @classmethod
    @_recorded
    def connect_material_expressions(cls, from_expression, from_output_name, to_expression, to_input_name):
        to_expression._props.setdefault("connected", {})[to_input_name] = from_expression
        return True

    @classmethod
    @_recorded
    def recompile_material(cls, material):
        pass

    @classmethod
    @_recorded
    def set_material_instance_parent(cls, instance, new_parent):
        instance.parent = new_parent

    @classmethod
    @_recorded
    def set_material_instance_texture_parameter_value(cls, instance, parameter_name, value, association=None):
        instance.textures[str(parameter_name)] = value
        return True

    @classmethod
    @_recorded
    def update_material_instance(cls, instance):
        pass


class RenderingLibrary(Object):
    @classmethod
    @_recorded
    def create_render_target2d(cls, world_context_object, width=256, height=256,
                               format=TextureRenderTargetFormat.RTF_RGBA16F, clear_color=None,
                               auto_generate_mip_maps=False, support_ua_vs=False):
        rt = TextureRenderTarget2D(width, height, format)
        _world().render_targets.append(rt)
        return rt

    @classmethod
    @_recorded
    def read_render_target(cls, world_context_object, texture_render_target, normalize=True):
        if texture_render_target.format is not TextureRenderTargetFormat.RTF_RGBA8:
            raise AssertionError("read_render_target on a float target loses the depth")
        return list(texture_render_target.pixels or [])

    @classmethod
    @_recorded
    def read_render_target_raw(cls, world_context_object, texture_render_target, normalize=True):
        pixels = list(texture_render_target.pixels or [])
        if normalize:   # what Unreal does by default: values squashed into 0..1
            return [LinearColor(min(p.r / FP16_MAX, 1.0), 0.0, 0.0, 1.0) for p in pixels]
        return pixels

    @classmethod
    @_recorded
    def import_file_as_texture2d(cls, world_context_object, filename):
        """A transient texture from an image file (no asset)."""
        with open(filename, "rb") as fh:
            data = fh.read()
        texture = Texture2D(name="transient", png=data)
        _world().transient_textures.append(texture)
        return texture

    @classmethod
    @_recorded
    def export_render_target(cls, world_context_object, texture_render_target, file_path, file_name):
        """An 8-bit target is written as PNG, its stored bytes unchanged (alpha included)."""
        rt = texture_render_target
        if rt.format is not TextureRenderTargetFormat.RTF_RGBA8:
            raise AssertionError("the fake exports 8-bit targets only (the engine writes float ones as HDR)")
        rows = [[(p.r, p.g, p.b, p.a) for p in rt.pixels[y * rt.width:(y + 1) * rt.width]] for y in range(rt.height)]
        with open(f"{file_path}/{file_name}", "wb") as fh:
            fh.write(make_rgba_png(rows))

    @classmethod
    @_recorded
    def release_render_target2d(cls, texture_render_target):
        texture_render_target.released = True

    @classmethod
    @_recorded
    def begin_draw_canvas_to_render_target(cls, world_context_object, texture_render_target):
        rt = texture_render_target
        clear = Color(r=5, g=5, b=5, a=255)
        rt.pixels = [clear] * (rt.width * rt.height)
        canvas = Canvas(rt)
        _world().canvases.append(canvas)
        return canvas, Vector2D(float(rt.width), float(rt.height)), DrawToRenderTargetContext()

    @classmethod
    @_recorded
    def end_draw_canvas_to_render_target(cls, world_context_object, context):
        pass


class ImageWriteBlueprintLibrary(Object):
    @classmethod
    @_recorded
    def export_to_disk(cls, texture, filename, options):
        """ImageWriteQueue: a float16 render target written as a half-float RGBA EXR, values untouched. The
        stand-in supports what the plugin relies on - a blocking (async_ False) EXR export of RTF_RGBA16F, and a
        texture asset's image written as PNG."""
        if isinstance(texture, Texture2D) and options.format is DesiredImageFormat.PNG and options.async_ is False:
            with open(filename, "wb") as fh:
                fh.write(texture.png)
            return
        if options.format is not DesiredImageFormat.EXR or options.async_ is not False:
            raise AssertionError(f"the fake writes blocking EXR exports only, got {options!r}")
        if texture.format is not TextureRenderTargetFormat.RTF_RGBA16F:
            raise AssertionError("the fake exports float16 targets only")
        write_exr(filename, texture.width, texture.height, [(p.r, p.g, p.b, p.a) for p in texture.pixels])


def write_exr(path: str, width: int, height: int, rgba) -> None:
    import numpy as np
    import OpenEXR

    pixels = np.asarray(rgba, dtype=np.float32).astype(np.float16).reshape(height, width, 4)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGBA": pixels}) as exr:
        exr.write(path)


def read_exr_red(path_or_bytes) -> list:
    """The R channel of an EXR as floats, top row first (to check what the plugin sent)."""
    import os
    import tempfile

    import OpenEXR

    path = path_or_bytes
    if isinstance(path_or_bytes, bytes):
        fd, path = tempfile.mkstemp(suffix=".exr")
        with os.fdopen(fd, "wb") as fh:
            fh.write(path_or_bytes)
    try:
        with OpenEXR.File(path, separate_channels=True) as exr:
            return exr.channels()["R"].pixels.astype("float32").ravel().tolist()
    finally:
        if isinstance(path_or_bytes, bytes):
            os.remove(path)


class ToolMenu(Object):
    def __init__(self, name=""):
        super().__init__()
        self.menu_name = name
        self.sections: List[str] = []
        self.entries: List[tuple] = []
        self.submenus: Dict[str, "ToolMenu"] = {}

    @_recorded
    def add_sub_menu(self, owner, section_name, name, label, tool_tip=""):
        sub = ToolMenu(f"{self.menu_name}.{name}")
        self.submenus[name] = sub
        return sub

    @_recorded
    def add_section(self, section_name, label="", insert_name="None", insert_type=None, alignment=None):
        self.sections.append(section_name)

    @_recorded
    def add_menu_entry(self, section_name, args):
        self.entries.append((section_name, args))


class ToolMenuEntry(Object):
    def __init__(self, name="None", owner=None, type=None, user_interface_action_type=None,
                 tutorial_highlight_name="None", insert_position=None, should_close_window_after_menu_selection=False,
                 script_object=None, style_name_override="None"):
        super().__init__()
        self.entry_name, self.type = name, type
        self.label = self.tool_tip = self.command = None

    @_recorded
    def set_label(self, label):
        self.label = label

    @_recorded
    def set_tool_tip(self, tool_tip):
        self.tool_tip = tool_tip

    @_recorded
    def set_string_command(self, type, custom_type, string):
        self.command = (type, custom_type, string)


class ToolMenus(Object):
    @classmethod
    @_recorded
    def get(cls):
        return _world().menus

    @_recorded
    def find_menu(self, name):
        return self.menus_by_name.get(name)

    @_recorded
    def refresh_all_widgets(self):
        pass

    @_recorded
    def unregister_owner_by_name(self, owner_name):
        pass

    @_recorded
    def remove_menu(self, menu_name):
        pass


class EditorDialog(Object):
    @classmethod
    @_recorded
    def show_message(cls, title, message, message_type, default_value=AppReturnType.NO, message_category=None):
        _world().messages.append(message)
        return AppReturnType.OK

    @classmethod
    @_recorded
    def show_object_details_view(cls, title, out_object, options=None):
        return _world().details_view(out_object)


class Paths(Object):
    @classmethod
    @_recorded
    def project_saved_dir(cls):
        return _world().saved_dir


class SystemLibrary(Object):
    @classmethod
    @_recorded
    def get_engine_version(cls):
        return "5.6.0-fake"

    @classmethod
    @_recorded
    def get_console_variable_int_value(cls, variable_name):
        return _world().cvars.get(variable_name, 0)


class ScopedEditorTransaction:
    def __init__(self, desc):
        _world().calls.append(Call("ScopedEditorTransaction", None, (desc,), {}))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# =========================================================================== module-level functions

@_recorded_function
def get_editor_subsystem(subsystem):
    return _world().subsystems.setdefault(subsystem, subsystem())


@_recorded_function
def log(arg):
    _world().log.append(("log", str(arg)))


@_recorded_function
def log_warning(arg):
    _world().log.append(("warning", str(arg)))


@_recorded_function
def log_error(arg):
    _world().log.append(("error", str(arg)))


@_recorded_function
def register_slate_post_tick_callback(callable):
    _world().tick_callbacks.append(callable)
    return callable


@_recorded_function
def unregister_slate_post_tick_callback(handle):
    _world().tick_callbacks.remove(handle)


@_recorded_function
def register_python_shutdown_callback(callable):
    _world().shutdown_callbacks.append(callable)
    return callable


@_recorded_function
def unregister_python_shutdown_callback(handle):
    _world().shutdown_callbacks.remove(handle)


def uclass():
    def decorate(cls):
        _world().calls.append(Call("uclass", cls, (), {}))
        return cls
    return decorate


def uproperty(type, meta=None, getter=None, setter=None):
    _world().calls.append(Call("uproperty", None, (type,), {"meta": meta}))
    return _UProperty(type, meta or {})


@dataclass
class _UProperty:
    type: type
    meta: dict


# =========================================================================== the fake editor state

def png_size(data: bytes) -> tuple:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def _stored(display: "Color", target_gamma: float) -> "Color":
    """What an LDR target stores for a scene the viewport shows as `display`: the scene value is
    display^2.2 (linear) and the target keeps linear^(1/display gamma) - gamma 1.0 (bForceLinearGamma, the
    default of create_render_target2d) stores it linear, i.e. dark."""
    def one(v):
        return int(round(255.0 * ((v / 255.0) ** 2.2) ** (1.0 / target_gamma)))
    return Color(r=one(display.r), g=one(display.g), b=one(display.b), a=display.a)


def make_rgba_png(rows) -> bytes:
    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", len(rows[0]), len(rows), 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _capture_forward(capture: SceneCaptureComponent2D) -> tuple:
    r = capture.owner.root_component.rotation
    p, y = math.radians(r.pitch), math.radians(r.yaw)
    return (math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), math.sin(p))


def default_scene(capture: SceneCaptureComponent2D, width: int, height: int, source: _EnumValue) -> list:
    """A greybox seen from the camera: sky in the top third, a floor getting nearer towards the bottom,
    a box in the middle. Depth in cm; sky = 65504 (fp16 saturation). World normals (SCS_Normal, signed, what
    the GBuffer holds): the floor faces world up, the box's front faces the camera, the sky has a cleared
    GBuffer's normal (not zero: the plugin must tell background by depth)."""
    facing = tuple(-c for c in _capture_forward(capture)) if source is SceneCaptureSource.SCS_NORMAL else None
    sky_normal = (-0.57735, -0.57735, -0.57735)
    out = []
    for y in range(height):
        for x in range(width):
            if y < height // 3:
                depth = FP16_MAX
                col = (120, 160, 220)
            else:
                t = (y - height // 3) / max(1, height - height // 3 - 1)
                depth = 3000.0 - 2500.0 * t
                col = (90, 90, 90)
                if width // 3 <= x < 2 * width // 3 and height // 3 <= y < 3 * height // 4:
                    depth, col = 800.0, (200, 80, 60)
            if source is SceneCaptureSource.SCS_NORMAL:
                n = sky_normal if depth >= FP16_MAX else (facing if depth == 800.0 else (0.0, 0.0, 1.0))
                out.append(LinearColor(n[0], n[1], n[2], 0.0))
            elif source is SceneCaptureSource.SCS_SCENE_DEPTH:
                out.append(LinearColor(depth, 0.0, 0.0, 1.0))
            else:
                out.append(Color(r=col[0], g=col[1], b=col[2], a=0))
    return out


@dataclass
class FakeEditor:
    saved_dir: str
    level: list = field(default_factory=list)
    selected: list = field(default_factory=list)
    assets: dict = field(default_factory=dict)
    engine_assets: dict = field(default_factory=dict)
    directories: set = field(default_factory=set)
    saved: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    log: list = field(default_factory=list)
    calls: List[Call] = field(default_factory=list)
    tick_callbacks: list = field(default_factory=list)
    shutdown_callbacks: list = field(default_factory=list)
    render_targets: list = field(default_factory=list)
    subsystems: dict = field(default_factory=dict)
    captures: list = field(default_factory=list)
    modified: list = field(default_factory=list)
    transient_textures: list = field(default_factory=list)
    # the project's renderer settings as console variables (UE 5 defaults: Lumen GI and reflections)
    cvars: dict = field(default_factory=lambda: {"r.DynamicGlobalIlluminationMethod": 1, "r.ReflectionMethod": 1})
    viewport: Any = None
    playing: bool = False                 # Play In Editor running
    sequence: Any = None                  # the Level Sequence open in Sequencer
    sequence_time: int = 0
    evaluated: bool = True
    canvases: list = field(default_factory=list)
    scene: Callable = default_scene
    details_view: Callable = lambda obj: False

    def __post_init__(self):
        self.world = World()
        self.asset_tools = AssetTools()
        self.menus = ToolMenus()
        self.menus.menus_by_name = {"LevelEditor.MainMenu": ToolMenu("LevelEditor.MainMenu")}
        self.viewport = (Vector(0.0, 0.0, 170.0), Rotator(roll=0.0, pitch=-10.0, yaw=0.0))

    def render(self, component: SceneCaptureComponent2D, target: TextureRenderTarget2D) -> None:
        source = component._props.get("capture_source")
        self.captures.append({"source": source, "fov": component._props.get("fov_angle"),
                              "location": component.owner.root_component.location,
                              "rotation": component.owner.root_component.rotation,
                              "hidden": list(component._props.get("hidden_actors") or []),
                              "persist": component._props.get("always_persist_rendering_state"),
                              "show_flags": {f.show_flag_name: f.enabled
                                             for f in component._props.get("show_flag_settings") or []},
                              "post_process": dict(component._props["post_process_settings"]._props)})
        pixels = self.scene(component, target.width, target.height, source)
        if target.format is TextureRenderTargetFormat.RTF_RGBA8:
            pixels = [_stored(p, target._props.get("target_gamma") or 1.0) for p in pixels]
        target.pixels = pixels

    def calls_named(self, name: str) -> List[Call]:
        return [c for c in self.calls if c.name == name]

    def tick(self, dt: float = 0.016) -> None:
        for cb in list(self.tick_callbacks):
            cb(dt)
        # EditorUtilitySubsystem::Tick: a task whose notification Cancel was pressed is finished by the engine
        for task in self.tasks:
            if task.cancel and task.finished is None:
                task.finished = "by-engine"

    def open_sequence(self, name, playback, cuts, time=0) -> "LevelSequence":
        """A Level Sequence open in Sequencer with one camera cut track: cuts = [(start, end, camera or None,
        animate(frame) -> ((x, y, z), (pitch, yaw, roll)) or None, active, row)], shorter tuples allowed."""
        sequence = LevelSequence(name=name, playback=playback)
        sections = []
        for cut in cuts:
            start, end, camera, animate, active, row = (tuple(cut) + (None, True, 0)[len(cut) - 3:])[:6]
            binding = sequence._bind(camera, animate) if camera is not None else MovieSceneObjectBindingID()
            sections.append(MovieSceneCameraCutSection(start, end, binding, active, row))
        sequence.tracks.append(MovieSceneCameraCutTrack(sections))
        self.sequence, self.sequence_time = sequence, time
        return sequence

    def add_cine_camera(self, label="Shot_010", location=(0.0, 0.0, 170.0), rotation=(-5.0, 30.0, 0.0),
                        sensor=(36.0, 24.0), focal=35.0, select=True) -> CineCameraActor:
        cam = CineCameraActor()
        cam.label = label
        cam._path = f"/Game/Maps/Blockout.Blockout:PersistentLevel.{label}"
        comp = cam.get_cine_camera_component()
        self.calls.pop()   # set-up, not the plugin's call
        comp.location = Vector(*location)
        comp.rotation = Rotator(roll=rotation[2], pitch=rotation[0], yaw=rotation[1])
        comp.filmback = CameraFilmbackSettings(*sensor)
        comp.current_focal_length = focal
        self.level.append(cam)
        if select:
            self.selected = [cam]
        return cam


class FakeUnrealModule:
    """The object passed to the plugin as `unreal`: only the names defined above exist."""

    def __init__(self, editor: FakeEditor):
        self._editor = editor
        g = globals()
        for name in _EXPORTED:
            setattr(self, name, g[name])

    def __enter__(self):
        _CURRENT.append(self._editor)
        return self

    def __exit__(self, *exc):
        _CURRENT.remove(self._editor)
        return False


_EXPORTED = [
    "Vector", "Rotator", "LinearColor", "Color", "Name", "EditorDialogLibraryObjectDetailsViewOptions",
    "CameraFilmbackSettings", "SceneCaptureSource", "TextureRenderTargetFormat", "CameraProjectionMode",
    "AttachmentRule", "CollisionEnabled", "ComponentMobility", "MaterialProperty", "MaterialShadingModel",
    "MultiBlockType", "ToolMenuStringCommandType", "AppMsgType", "AppReturnType", "DynamicGlobalIlluminationMethod",
    "ReflectionMethod", "DesiredImageFormat", "ImageWriteOptions", "ImageWriteBlueprintLibrary", "PostProcessSettings", "Object", "World", "Texture",
    "Texture2D", "StaticMesh", "TextureRenderTarget2D", "Factory", "MaterialFactoryNew",
    "MaterialInstanceConstantFactoryNew", "MaterialInterface", "Material", "MaterialInstanceConstant",
    "MaterialInstanceDynamic", "MaterialExpressionTextureSampleParameter2D", "AssetImportTask", "EditorUtilityTask", "ActorComponent",
    "SceneComponent", "PrimitiveComponent", "StaticMeshComponent", "CameraComponent", "CineCameraComponent",
    "SceneCaptureComponent2D", "Actor", "StaticMeshActor", "CameraActor", "CineCameraActor", "SceneCapture",
    "SceneCapture2D", "EditorSubsystem", "EditorActorSubsystem", "UnrealEditorSubsystem", "LevelEditorSubsystem", "EditorAssetSubsystem",
    "EditorUtilitySubsystem", "AssetTools", "AssetToolsHelpers", "MaterialEditingLibrary", "RenderingLibrary",
    "ToolMenu", "ToolMenuEntry", "ToolMenus", "EditorDialog", "Paths", "SystemLibrary", "ScopedEditorTransaction",
    "get_editor_subsystem", "log", "log_warning", "log_error", "register_slate_post_tick_callback",
    "unregister_slate_post_tick_callback", "register_python_shutdown_callback",
    "unregister_python_shutdown_callback", "uclass", "uproperty", "Vector2D", "MovieSceneObjectBindingID",
    "DrawToRenderTargetContext", "BlendMode", "EngineShowFlagsSetting", "MovieSceneSection", "MovieSceneCameraCutSection", "MovieSceneTrack",
    "MovieSceneCameraCutTrack", "MovieSceneSequence", "LevelSequence", "LevelSequenceEditorBlueprintLibrary", "Canvas",
    "MaterialDomain", "DecalBlendMode", "CustomMaterialOutputType", "MaterialExpressionCustom", "CustomInput",
    "MaterialExpressionWorldPosition", "MaterialExpressionVectorParameter", "MaterialExpressionScalarParameter",
    "MaterialExpressionTextureObjectParameter", "MaterialExpressionComponentMask", "DecalComponent", "DecalActor",
]


def make_png(width: int, height: int, rgb=(10, 20, 30)) -> bytes:
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


__all__ = ["FakeEditor", "FakeUnrealModule", "Call", "make_png", "FP16_MAX", "math"]
