"""ENGINE LAYER for projection: carry out a projection.ProjectionPlan with a transient DecalActor and the projector
material. Every function takes the `unreal` module first; engine objects in local variables are annotated with
their `unreal` type for the contract test. Game thread only.

The DecalActor is spawned transient (never saved with the level, not in the undo history): "Remove projections"
destroys it, and so does projecting again from the same camera. Its material is a dynamic instance of
M_ControlBridge_Projector (created once as an asset, like the plane's unlit material) holding the camera's
parameters and the result texture.
"""

from __future__ import annotations

from typing import List, TYPE_CHECKING

from . import naming, projection
from .engine_capture import make_rotator, make_vector
from .engine_results import load_or_create_material

if TYPE_CHECKING:   # for annotations only: the module itself is always passed in as `unreal`
    import unreal


def ensure_projector_material(unreal):
    """Deferred decal, translucent: Emissive = the image seen through the camera, Opacity = inside its view."""
    material, created = load_or_create_material(unreal, projection.MATERIAL_NAME)
    if not created:
        return material
    assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
    material.set_editor_property("material_domain", unreal.MaterialDomain.MD_DEFERRED_DECAL)
    material.set_editor_property("decal_blend_mode", unreal.DecalBlendMode.DBM_TRANSLUCENT)
    material.set_editor_property("shading_model", unreal.MaterialShadingModel.MSM_UNLIT)
    custom: unreal.MaterialExpressionCustom = unreal.MaterialEditingLibrary.create_material_expression(
        material, unreal.MaterialExpressionCustom, node_pos_x=-300, node_pos_y=0)
    custom.set_editor_property("code", projection.PROJECTOR_HLSL)
    custom.set_editor_property("output_type", unreal.CustomMaterialOutputType.CMOT_FLOAT4)
    names = ["P", projection.CAM_POS, projection.CAM_FORWARD, projection.CAM_RIGHT, projection.CAM_UP,
             projection.TAN_HALF_H, projection.TAN_HALF_V, projection.IMAGE]
    inputs = []
    for name in names:
        custom_input: unreal.CustomInput = unreal.CustomInput()
        custom_input.set_editor_property("input_name", unreal.Name(name))
        inputs.append(custom_input)
    custom.set_editor_property("inputs", inputs)

    position: unreal.MaterialExpressionWorldPosition = unreal.MaterialEditingLibrary.create_material_expression(
        material, unreal.MaterialExpressionWorldPosition, node_pos_x=-700, node_pos_y=-200)
    unreal.MaterialEditingLibrary.connect_material_expressions(position, "", custom, "P")
    for i, name in enumerate((projection.CAM_POS, projection.CAM_FORWARD, projection.CAM_RIGHT, projection.CAM_UP)):
        vector: unreal.MaterialExpressionVectorParameter = unreal.MaterialEditingLibrary.create_material_expression(
            material, unreal.MaterialExpressionVectorParameter, node_pos_x=-700, node_pos_y=-100 + 80 * i)
        vector.set_editor_property("parameter_name", name)
        unreal.MaterialEditingLibrary.connect_material_expressions(vector, "", custom, name)
    for i, name in enumerate((projection.TAN_HALF_H, projection.TAN_HALF_V)):
        scalar: unreal.MaterialExpressionScalarParameter = unreal.MaterialEditingLibrary.create_material_expression(
            material, unreal.MaterialExpressionScalarParameter, node_pos_x=-700, node_pos_y=240 + 60 * i)
        scalar.set_editor_property("parameter_name", name)
        scalar.set_editor_property("default_value", 1.0)
        unreal.MaterialEditingLibrary.connect_material_expressions(scalar, "", custom, name)
    image: unreal.MaterialExpressionTextureObjectParameter = unreal.MaterialEditingLibrary.create_material_expression(
        material, unreal.MaterialExpressionTextureObjectParameter, node_pos_x=-700, node_pos_y=380)
    image.set_editor_property("parameter_name", projection.IMAGE)
    image.set_editor_property("texture", assets.load_asset(naming.DEFAULT_TEXTURE_PATH))
    unreal.MaterialEditingLibrary.connect_material_expressions(image, "", custom, projection.IMAGE)

    alpha: unreal.MaterialExpressionComponentMask = unreal.MaterialEditingLibrary.create_material_expression(
        material, unreal.MaterialExpressionComponentMask, node_pos_x=-100, node_pos_y=120)
    alpha.set_editor_property("a", True)
    unreal.MaterialEditingLibrary.connect_material_expressions(custom, "", alpha, "")
    unreal.MaterialEditingLibrary.connect_material_property(custom, "", unreal.MaterialProperty.MP_EMISSIVE_COLOR)
    unreal.MaterialEditingLibrary.connect_material_property(alpha, "", unreal.MaterialProperty.MP_OPACITY)
    unreal.MaterialEditingLibrary.recompile_material(material)
    assets.save_loaded_asset(material, only_if_is_dirty=False)
    return material


def find_projections(unreal, key_tag: str = "") -> List:
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    found = []
    for actor in actors.get_all_level_actors():
        level_actor: unreal.Actor = actor
        tags = [str(t) for t in level_actor.tags]
        if projection.PROJECTION_TAG in tags and (not key_tag or key_tag in tags):
            found.append(actor)
    return found


def project(unreal, plan: projection.ProjectionPlan, texture):
    """Show `texture` projected from the plan's camera; replaces that camera's previous projection."""
    remove_projections(unreal, plan.key_tag)
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    decal: unreal.DecalActor = actors.spawn_actor_from_class(
        unreal.DecalActor, make_vector(unreal, plan.location), make_rotator(unreal, plan.rotation), transient=True)
    try:
        decal.set_actor_label(plan.label)
        decal.set_editor_property("tags", [unreal.Name(projection.PROJECTION_TAG), unreal.Name(plan.key_tag)])
        component: unreal.DecalComponent = decal.decal
        component.set_editor_property("decal_size", make_vector(unreal, plan.decal_size))
        decal.set_decal_material(ensure_projector_material(unreal))
        dynamic: unreal.MaterialInstanceDynamic = component.create_dynamic_material_instance()
        for name, value in plan.vectors.items():
            dynamic.set_vector_parameter_value(name, unreal.LinearColor(r=float(value[0]), g=float(value[1]),
                                                                        b=float(value[2]), a=0.0))
        for name, value in plan.scalars.items():
            dynamic.set_scalar_parameter_value(name, float(value))
        dynamic.set_texture_parameter_value(projection.IMAGE, texture)
    except BaseException:
        actors.destroy_actor(decal)
        raise
    return decal


def remove_projections(unreal, key_tag: str = "") -> int:
    """Destroy our projections (all, or one camera's). Returns how many there were."""
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    found = find_projections(unreal, key_tag)
    for actor in found:
        actors.destroy_actor(actor)
    return len(found)
