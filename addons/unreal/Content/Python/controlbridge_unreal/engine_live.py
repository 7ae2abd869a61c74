"""ENGINE LAYER for live mode: what to follow, when the level changed, and the one transient plane that shows
the frames. Every function takes the `unreal` module first (tests pass a recording stand-in); engine objects in
local variables are annotated with their `unreal` type for the contract test. Game thread only.

The live plane is spawned transient (never saved with the level, not in the undo history) and shows each
frame through ONE dynamic material instance whose texture parameter is pointed at the newest frame's transient
texture (the previous one is then unreferenced and collected by the engine). Stopping destroys the plane.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, TYPE_CHECKING

from . import camera_math, engine_capture, engine_results, naming, projection
from .controller import VIEWPORT, UserError
from .engine_capture import make_rotator, make_vector

if TYPE_CHECKING:   # for annotations only: the module itself is always passed in as `unreal`
    import unreal


def live_source(unreal) -> Any:
    """The selected CineCamera (followed for the whole session), or the level viewport when none is selected."""
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    cameras = [a for a in actors.get_selected_level_actors() if isinstance(a, unreal.CineCameraActor)]
    if len(cameras) > 1:
        raise UserError(f"{len(cameras)} CineCameras are selected; select one to follow in live mode, "
                        "or none to follow the level viewport.")
    return cameras[0] if cameras else VIEWPORT


def live_view(unreal, source: Any, viewport_fov: float) -> camera_math.CameraView:
    if source == VIEWPORT:
        return engine_capture.viewport_view(unreal, viewport_fov)
    return engine_capture.cine_camera_view(unreal, source)


def source_label(unreal, source: Any) -> str:
    if source == VIEWPORT:
        return "the level viewport"
    camera: unreal.CineCameraActor = source
    return camera.get_actor_label()


def world_key(unreal) -> str:
    editor: unreal.UnrealEditorSubsystem = unreal.get_editor_subsystem(unreal.UnrealEditorSubsystem)
    world: unreal.World = editor.get_editor_world()
    return world.get_path_name() if world is not None else ""


def stop_reason(unreal, started_in: str) -> Optional[str]:
    """Why a running session must stop now (Play In Editor started, another level open), or None."""
    level_editor: unreal.LevelEditorSubsystem = unreal.get_editor_subsystem(unreal.LevelEditorSubsystem)
    if level_editor.is_in_play_in_editor():
        return "Play In Editor started"
    if world_key(unreal) != started_in:
        return "another level was opened"
    return None


def level_signature(unreal) -> Tuple:
    """Changes when the level does, as far as a cheap look can tell: the number of actors (placed, deleted,
    duplicated) and the transforms of the selected ones (what the user is moving). Our own actors (planes, the
    kept capture actor, projections) do not count: their appearing is not the artist's change.
    Property edits that move nothing (a material swapped) are not seen: move the camera a little, or toggle."""
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    ours = {naming.PLANE_TAG, naming.CAPTURE_TAG, projection.PROJECTION_TAG}
    count = 0
    for found in actors.get_all_level_actors():
        actor: unreal.Actor = found
        if not ours.intersection(str(t) for t in actor.tags):
            count += 1
    moved = []
    for found in actors.get_selected_level_actors():
        selected: unreal.Actor = found
        moved.append((selected.get_path_name(), engine_capture.vec(selected.get_actor_location()),
                      engine_capture.rot(selected.get_actor_rotation()),
                      engine_capture.vec(selected.get_actor_scale3d())))
    return count, tuple(moved)


def show_frame(unreal, state: dict, view: camera_math.CameraView, width: int, height: int, distance_cm: float,
               image_bytes: bytes, encoding: str, temp_dir: str) -> bool:
    """Show one live frame on the live plane, placed in front of the view it was captured from."""
    texture = engine_results.transient_texture(unreal, image_bytes, encoding, temp_dir)
    if texture is None:
        return False
    placement = camera_math.plane_placement(distance_cm, view.hfov_deg, width / height)
    spot = camera_math.plane_world_placement(view, placement)
    plane: unreal.StaticMeshActor = state.get("plane")
    if plane is None:
        actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
        plane = actors.spawn_actor_from_class(unreal.StaticMeshActor, make_vector(unreal, spot.location),
                                              make_rotator(unreal, spot.rotation), transient=True)
        engine_results.set_up_plane(unreal, plane, naming.LIVE_PLANE_LABEL, [naming.PLANE_TAG, naming.LIVE_TAG])
        mesh: unreal.StaticMeshComponent = plane.static_mesh_component
        state["plane"] = plane
        state["material"] = mesh.create_dynamic_material_instance(0, engine_results.ensure_base_material(unreal))
    plane.set_actor_location_and_rotation(make_vector(unreal, spot.location), make_rotator(unreal, spot.rotation),
                                          False, False)
    plane.set_actor_scale3d(make_vector(unreal, spot.scale))
    material: unreal.MaterialInstanceDynamic = state["material"]
    material.set_texture_parameter_value(naming.TEXTURE_PARAMETER, texture)
    return True


def remove_plane(unreal, state: dict) -> None:
    plane = state.pop("plane", None)
    state.pop("material", None)
    if plane is not None:
        actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
        actors.destroy_actor(plane)
