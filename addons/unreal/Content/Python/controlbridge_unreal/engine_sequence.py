"""ENGINE LAYER for Level Sequence shots: read the open sequence's camera cuts, put Sequencer's playhead on a frame
(so every bound actor, the camera included, is where that frame has it), and draw the contact sheet with the
engine's canvas. Every function takes the `unreal` module first; engine objects in local variables are annotated
with their `unreal` type for the contract test. Game thread only. The decisions live in shots.py.
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple, TYPE_CHECKING

from . import camera_math, capture_look, engine_capture, shots
from .controller import UserError

if TYPE_CHECKING:   # for annotations only: the module itself is always passed in as `unreal`
    import unreal


def open_sequence(unreal, asset_path: str = ""):
    """The Level Sequence to take shots from: the asset at `asset_path` (opened in Sequencer, so its bindings
    resolve and its playhead can move), or with no path the one open in Sequencer (its root sequence)."""
    if asset_path:
        assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
        asset = assets.load_asset(asset_path) if assets.does_asset_exist(asset_path) else None
        if not isinstance(asset, unreal.LevelSequence):
            raise UserError(f"{asset_path} is not a Level Sequence (Settings > Shot Sequence: copy its reference "
                            "from the Content Browser, or leave it empty for the one open in Sequencer).")
        unreal.LevelSequenceEditorBlueprintLibrary.open_level_sequence(asset)
    sequence: unreal.LevelSequence = unreal.LevelSequenceEditorBlueprintLibrary.get_current_level_sequence()
    if sequence is None:
        raise UserError("Open a Level Sequence in Sequencer first (double-click it in the Content Browser), then "
                        "choose ControlBridge > Generate Level Sequence shots.")
    return sequence


def read_cuts(unreal, sequence: unreal.LevelSequence) -> Tuple[str, List[shots.CutSection], Tuple[int, int]]:
    """(sequence name, its camera cut sections, its playback range) in display-rate frames."""
    sections = []
    for found in sequence.find_tracks_by_type(unreal.MovieSceneCameraCutTrack):
        track: unreal.MovieSceneCameraCutTrack = found
        for item in track.get_sections():
            section: unreal.MovieSceneCameraCutSection = item
            binding = section.get_camera_binding_id()
            sections.append(shots.CutSection(
                start=section.get_start_frame() if section.has_start_frame() else None,
                end=section.get_end_frame() if section.has_end_frame() else None,
                binding=binding, camera_label=camera_label(unreal, binding),
                active=bool(section.is_active()), row=int(section.get_row_index())))
    return sequence.get_name(), sections, (sequence.get_playback_start(), sequence.get_playback_end())


def bound_camera(unreal, binding):
    """The CineCameraActor a camera cut binding points at in the open sequence (spawnables included), or None."""
    for found in unreal.LevelSequenceEditorBlueprintLibrary.get_bound_objects(binding):
        if isinstance(found, unreal.CineCameraActor):
            return found
    return None


def camera_label(unreal, binding) -> str:
    camera = bound_camera(unreal, binding)
    if camera is None:
        return ""
    actor: unreal.CineCameraActor = camera
    return actor.get_actor_label()


def current_frame(unreal) -> int:
    return int(unreal.LevelSequenceEditorBlueprintLibrary.get_current_time())


def view_at(unreal, cut: shots.Cut, frame: int) -> camera_math.CameraView:
    """Move Sequencer's playhead to `frame` and evaluate now, then read the cut's camera as that frame has it."""
    unreal.LevelSequenceEditorBlueprintLibrary.set_current_time(int(frame))
    unreal.LevelSequenceEditorBlueprintLibrary.force_update()
    camera = bound_camera(unreal, cut.binding)
    if camera is None:
        raise UserError(f"The camera of {cut.name} ({cut.camera_label}) is not a CineCameraActor in the open "
                        f"sequence at frame {frame}.")
    return engine_capture.cine_camera_view(unreal, camera)


def set_frame(unreal, frame: int) -> None:
    unreal.LevelSequenceEditorBlueprintLibrary.set_current_time(int(frame))


def write_contact_sheet(unreal, textures: Sequence, layout: shots.SheetLayout, path: str) -> str:
    """Draw each texture into its tile of an 8-bit render target with the engine's canvas and write it as PNG
    with the engine's exporter (no Python touches a pixel). Returns the file written."""
    editor: unreal.UnrealEditorSubsystem = unreal.get_editor_subsystem(unreal.UnrealEditorSubsystem)
    world: unreal.World = editor.get_editor_world()
    target: unreal.TextureRenderTarget2D = unreal.RenderingLibrary.create_render_target2d(
        world, layout.width, layout.height, unreal.TextureRenderTargetFormat.RTF_RGBA8,
        clear_color=unreal.LinearColor(r=0.02, g=0.02, b=0.02, a=1.0), auto_generate_mip_maps=False)
    # as for the capture: without it the 8-bit target stores linear values and the sheet comes out dark
    target.set_editor_property("target_gamma", capture_look.DISPLAY_GAMMA)
    try:
        drawing = unreal.RenderingLibrary.begin_draw_canvas_to_render_target(world, target)
        canvas: unreal.Canvas = drawing[0]
        try:
            for texture, (x, y, w, h) in zip(textures, layout.tiles):
                canvas.draw_texture(texture, unreal.Vector2D(x=float(x), y=float(y)),
                                    unreal.Vector2D(x=float(w), y=float(h)), unreal.Vector2D(x=0.0, y=0.0),
                                    unreal.Vector2D(x=1.0, y=1.0), blend_mode=unreal.BlendMode.BLEND_OPAQUE)
        finally:
            unreal.RenderingLibrary.end_draw_canvas_to_render_target(world, drawing[2])
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        unreal.RenderingLibrary.export_render_target(world, target, folder, name)
    finally:
        unreal.RenderingLibrary.release_render_target2d(target)
    if not os.path.isfile(path):
        raise RuntimeError(f"Unreal did not write the contact sheet {path}")
    return path
