"""ENGINE LAYER: carry out a ResultPlan - import the texture, tag it, show it on a plane in front of the camera.

Every function takes the `unreal` module as its first argument (tests pass a recording stand-in); engine objects
in local variables are annotated with their `unreal` type for the contract test. Game thread only.
Assets are created before the level is touched, and a plane spawned by a failing call is removed again, so a
failure leaves the level as it was.
"""

from __future__ import annotations

import os
from typing import List, Optional, TYPE_CHECKING

from . import naming
from .camera_math import CameraView
from .engine_capture import make_rotator, make_vector
from .result_plan import ResultPlan

if TYPE_CHECKING:   # for annotations only: the module itself is always passed in as `unreal`
    import unreal


def asset_exists(unreal, object_path: str) -> bool:
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    return bool(assets.does_asset_exist(object_path))


def load_asset(unreal, object_path: str):
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    return assets.load_asset(object_path)


def find_planes(unreal, key_tag: Optional[str] = None) -> List:
    """Our result planes in the level (all, or the one belonging to a camera key tag)."""
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    found = []
    for actor in actors.get_all_level_actors():
        level_actor: unreal.Actor = actor
        tags = [str(t) for t in level_actor.tags]
        if naming.PLANE_TAG in tags and (key_tag is None or key_tag in tags):
            found.append(actor)
    return found


# --------------------------------------------------------------------------- texture

def import_texture(unreal, plan: ResultPlan, image_bytes: bytes, temp_dir: str):
    """Write the image to <temp>/<asset name>.png and import it as a Texture2D under the ControlBridge folder."""
    os.makedirs(temp_dir, exist_ok=True)
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    path = os.path.join(temp_dir, plan.temp_filename)
    with open(path, "wb") as fh:
        fh.write(image_bytes)
    try:
        assets.make_directory(plan.texture_dir)
        task: unreal.AssetImportTask = unreal.AssetImportTask()
        task.set_editor_property("filename", path)
        task.set_editor_property("destination_path", plan.texture_dir)
        task.set_editor_property("destination_name", plan.asset_name)
        task.set_editor_property("automated", True)        # no import dialog
        task.set_editor_property("replace_existing", True)
        task.set_editor_property("save", True)
        tools: unreal.AssetTools = unreal.AssetToolsHelpers.get_asset_tools()
        tools.import_asset_tasks([task])
        imported = [str(p) for p in (task.get_editor_property("imported_object_paths") or [])]
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
    object_path = imported[0] if imported else plan.texture_object_path
    texture = assets.load_asset(object_path)
    if texture is None:
        raise RuntimeError(f"importing the result did not create {plan.texture_object_path}")
    return texture


def tag_texture(unreal, texture, metadata: dict) -> None:
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    for tag, value in metadata.items():
        assets.set_metadata_tag(texture, tag, value)
    assets.save_loaded_asset(texture, only_if_is_dirty=False)


# --------------------------------------------------------------------------- materials

def load_or_create_material(unreal, name: str):
    """The plugin's material asset `name`: (material, True when just created, so its graph is still to build)."""
    path = naming.object_path(naming.MATERIAL_DIR, name)
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    if assets.does_asset_exist(path):
        return assets.load_asset(path), False
    assets.make_directory(naming.MATERIAL_DIR)
    tools: unreal.AssetTools = unreal.AssetToolsHelpers.get_asset_tools()
    return tools.create_asset(name, naming.MATERIAL_DIR, unreal.Material, unreal.MaterialFactoryNew()), True


def ensure_base_material(unreal):
    """/Game/ControlBridge/Materials/M_ControlBridge_Unlit: unlit, two-sided, Emissive = texture parameter 'Image'."""
    material, created = load_or_create_material(unreal, naming.BASE_MATERIAL_NAME)
    if not created:
        return material
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    material.set_editor_property("shading_model", unreal.MaterialShadingModel.MSM_UNLIT)
    material.set_editor_property("two_sided", True)
    sample: unreal.MaterialExpressionTextureSampleParameter2D = unreal.MaterialEditingLibrary.create_material_expression(
        material, unreal.MaterialExpressionTextureSampleParameter2D, node_pos_x=-400, node_pos_y=0)
    sample.set_editor_property("parameter_name", naming.TEXTURE_PARAMETER)
    sample.set_editor_property("texture", assets.load_asset(naming.DEFAULT_TEXTURE_PATH))
    unreal.MaterialEditingLibrary.connect_material_property(sample, "RGB", unreal.MaterialProperty.MP_EMISSIVE_COLOR)
    unreal.MaterialEditingLibrary.recompile_material(material)
    assets.save_loaded_asset(material, only_if_is_dirty=False)
    return material


def ensure_material_instance(unreal, plan: ResultPlan, texture):
    """One material instance per camera, its 'Image' parameter pointed at the newest texture."""
    path = naming.object_path(plan.material_dir, plan.material_instance_name)
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    if assets.does_asset_exist(path):
        instance = assets.load_asset(path)
    else:
        parent = ensure_base_material(unreal)
        tools: unreal.AssetTools = unreal.AssetToolsHelpers.get_asset_tools()
        instance = tools.create_asset(plan.material_instance_name, plan.material_dir,
                                      unreal.MaterialInstanceConstant, unreal.MaterialInstanceConstantFactoryNew())
        unreal.MaterialEditingLibrary.set_material_instance_parent(instance, parent)
    unreal.MaterialEditingLibrary.set_material_instance_texture_parameter_value(
        instance, naming.TEXTURE_PARAMETER, texture)
    unreal.MaterialEditingLibrary.update_material_instance(instance)
    assets.save_loaded_asset(instance, only_if_is_dirty=False)
    return instance


# --------------------------------------------------------------------------- plane

def place_plane(unreal, plan: ResultPlan, view: CameraView, material_instance):
    """Create the camera's result plane, or update the existing one (found by its camera tag)."""
    existing = find_planes(unreal, plan.plane_key_tag)
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    created = not existing
    if existing:
        plane: unreal.StaticMeshActor = existing[0]
        # record the plane's old state in the open transaction, so Ctrl+Z undoes an update as it undoes a spawn
        plane.modify()
        plane.static_mesh_component.modify()
    else:
        plane = actors.spawn_actor_from_class(unreal.StaticMeshActor, make_vector(unreal, plan.world.location),
                                              make_rotator(unreal, plan.world.rotation))
    try:
        mesh: unreal.StaticMeshComponent = plane.static_mesh_component
        if created:
            set_up_plane(unreal, plane, plan.plane_label, [naming.PLANE_TAG, plan.plane_key_tag])
        mesh.set_material(0, material_instance)
        if plan.attach:
            # attach to the camera COMPONENT: the view comes from it, wherever it sits under the actor
            camera: unreal.CineCameraActor = view.actor
            lens: unreal.CineCameraComponent = camera.get_cine_camera_component()
            root: unreal.SceneComponent = plane.root_component
            if root.get_attach_parent() != lens:
                plane.attach_to_component(lens, "", unreal.AttachmentRule.KEEP_RELATIVE,
                                          unreal.AttachmentRule.KEEP_RELATIVE, unreal.AttachmentRule.KEEP_RELATIVE,
                                          False)
            plane.set_actor_relative_location(make_vector(unreal, plan.placement.relative_location), False, False)
            plane.set_actor_relative_rotation(make_rotator(unreal, plan.placement.relative_rotation), False, False)
            plane.set_actor_relative_scale3d(make_vector(unreal, plan.placement.scale))
        else:
            plane.set_actor_location_and_rotation(make_vector(unreal, plan.world.location),
                                                  make_rotator(unreal, plan.world.rotation), False, False)
            plane.set_actor_scale3d(make_vector(unreal, plan.world.scale))
    except BaseException:
        if created:
            actors.destroy_actor(plane)
        raise
    return plane


def set_up_plane(unreal, plane: unreal.StaticMeshActor, label: str, tags: List[str]) -> None:
    """A new plane: label, our tags, the engine's plane mesh, movable, no collision, no shadow."""
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    mesh: unreal.StaticMeshComponent = plane.static_mesh_component
    plane.set_actor_label(label)
    plane.set_editor_property("tags", [unreal.Name(t) for t in tags])
    mesh.set_mobility(unreal.ComponentMobility.MOVABLE)
    mesh.set_static_mesh(assets.load_asset(naming.PLANE_MESH_PATH))
    mesh.set_collision_enabled(unreal.CollisionEnabled.NO_COLLISION)
    mesh.set_cast_shadow(False)


def transient_texture(unreal, image_bytes: bytes, encoding: str, temp_dir: str):
    """An image as a transient Texture2D (no asset), through a temporary file the engine reads in C++."""
    os.makedirs(temp_dir, exist_ok=True)
    path = os.path.join(temp_dir, naming.preview_filename(encoding))
    editor: unreal.UnrealEditorSubsystem = unreal.get_editor_subsystem(unreal.UnrealEditorSubsystem)
    with open(path, "wb") as fh:
        fh.write(image_bytes)
    try:
        texture: unreal.Texture2D = unreal.RenderingLibrary.import_file_as_texture2d(editor.get_editor_world(), path)
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
    return texture


# --------------------------------------------------------------------------- step previews

def show_preview(unreal, plane_key_tag: str, image_bytes: bytes, encoding: str, temp_dir: str,
                 restore: dict) -> bool:
    """Show a step preview on the camera's existing result plane: a transient texture (no asset) through a
    dynamic material instance made once per job. The plane's material before the first preview is kept in
    `restore`, for end_preview. No plane yet (the camera's first generation): nothing is shown, False."""
    planes = find_planes(unreal, plane_key_tag)
    if not planes:
        return False
    texture = transient_texture(unreal, image_bytes, encoding, temp_dir)
    if texture is None:
        return False
    plane: unreal.StaticMeshActor = planes[0]
    mesh: unreal.StaticMeshComponent = plane.static_mesh_component
    current: unreal.MaterialInterface = mesh.get_material(0)
    if isinstance(current, unreal.MaterialInstanceDynamic):
        dynamic: unreal.MaterialInstanceDynamic = current
    else:
        restore[plane_key_tag] = current
        dynamic = mesh.create_dynamic_material_instance(0, ensure_base_material(unreal))
    dynamic.set_texture_parameter_value(naming.TEXTURE_PARAMETER, texture)
    return True


def end_preview(unreal, plane_key_tag: str, restore: dict) -> None:
    """A job ended without a result: its plane gets back the material it had before the previews."""
    if plane_key_tag not in restore:
        return
    material = restore.pop(plane_key_tag)
    for found in find_planes(unreal, plane_key_tag):
        plane: unreal.StaticMeshActor = found
        plane.static_mesh_component.set_material(0, material)


# --------------------------------------------------------------------------- all of it

def apply_result(unreal, plan: ResultPlan, view: CameraView, image_bytes: bytes, temp_dir: str,
                 texture=None) -> str:
    """`texture`: the result's texture when it already exists (re-applied from the history): not imported again."""
    if texture is None:
        texture = import_texture(unreal, plan, image_bytes, temp_dir)
        tag_texture(unreal, texture, plan.metadata)
    summary = plan.texture_object_path.split(".")[0]
    if plan.create_plane:
        instance = ensure_material_instance(unreal, plan, texture)
        with unreal.ScopedEditorTransaction("ControlBridge result"):
            place_plane(unreal, plan, view, instance)
        summary += f" on {plan.plane_label}"
    return summary
