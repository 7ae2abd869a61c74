"""ENGINE LAYER: which camera, and its color + SceneDepth through a transient SceneCapture2D.

Every function takes the `unreal` module as its first argument (tests pass a recording stand-in). Local
variables holding engine objects are annotated with their `unreal` type: the contract test reads these
annotations to check every call against Epic's API stub. Game thread only.
"""

from __future__ import annotations

import os
import tempfile
from typing import List, Optional, Sequence, TYPE_CHECKING

from . import buffers, camera_math, capture_look, naming, normals, style
from .controller import CINE_CAMERA, VIEWPORT, UserError
from .jobs import Capture, wants_normals
from .settings_model import PluginSettings

if TYPE_CHECKING:   # for annotations only: the module itself is always passed in as `unreal`
    import unreal


def vec(v: unreal.Vector) -> camera_math.Vec3:
    return (float(v.x), float(v.y), float(v.z))


def rot(r: unreal.Rotator) -> camera_math.Rot3:
    return (float(r.pitch), float(r.yaw), float(r.roll))


def make_vector(unreal, v: Sequence[float]):
    return unreal.Vector(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def make_rotator(unreal, r: Sequence[float]):
    # unreal.Rotator's positional order is (roll, pitch, yaw): always pass keywords
    return unreal.Rotator(pitch=float(r[0]), yaw=float(r[1]), roll=float(r[2]))


# --------------------------------------------------------------------------- which view

def resolve_view(unreal, source: str, settings: PluginSettings) -> camera_math.CameraView:
    if source == VIEWPORT:
        return viewport_view(unreal, settings.viewport_fov)
    if source == CINE_CAMERA:
        return selected_cine_camera_view(unreal)
    raise ValueError(f"unknown capture source {source!r}")


def viewport_view(unreal, hfov_deg: float) -> camera_math.CameraView:
    editor: unreal.UnrealEditorSubsystem = unreal.get_editor_subsystem(unreal.UnrealEditorSubsystem)
    info = editor.get_level_viewport_camera_info()
    if not info:
        raise UserError("No level viewport camera is available. Click into the level viewport, then try again.")
    location, rotation = info
    return camera_math.viewport_view(vec(location), rot(rotation), hfov_deg)


def selected_cine_camera_view(unreal) -> camera_math.CameraView:
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    cameras = [a for a in actors.get_selected_level_actors() if isinstance(a, unreal.CineCameraActor)]
    if not cameras:
        raise UserError("Select a CineCameraActor in the level (Outliner or viewport), then choose "
                        "ControlBridge > Generate from selected CineCamera.")
    if len(cameras) > 1:
        raise UserError(f"{len(cameras)} CineCameras are selected; select only the one to generate from.")
    return cine_camera_view(unreal, cameras[0])


def labelled_view(unreal, label: str, matches, viewport_fov: float = 90.0) -> camera_math.CameraView:
    """The view of the CineCamera whose label matches (matches(actor_label, label)), or the level viewport for
    the label 'Viewport' - how a history entry names where it was generated."""
    if label == "Viewport":
        return viewport_view(unreal, viewport_fov)
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    for found in actors.get_all_level_actors():
        if isinstance(found, unreal.CineCameraActor):
            camera: unreal.CineCameraActor = found
            if matches(camera.get_actor_label(), label):
                return cine_camera_view(unreal, camera)
    raise UserError(f"No CineCamera labelled {label} in this level: the result's camera is needed to place it "
                    "(rename a camera, or re-apply as a texture only).")


def cine_camera_view(unreal, camera: unreal.CineCameraActor) -> camera_math.CameraView:
    component: unreal.CineCameraComponent = camera.get_cine_camera_component()
    if component.projection_mode == unreal.CameraProjectionMode.ORTHOGRAPHIC:
        raise UserError(f"{camera.get_actor_label()} is orthographic; ControlBridge needs a perspective camera.")
    filmback: unreal.CameraFilmbackSettings = component.filmback
    try:
        return camera_math.cine_camera_view(
            key=camera.get_path_name(),
            label=camera.get_actor_label(),
            location=vec(component.get_world_location()),
            rotation=rot(component.get_world_rotation()),
            sensor_width_mm=float(filmback.sensor_width),
            sensor_height_mm=float(filmback.sensor_height),
            focal_length_mm=float(component.current_focal_length),
            actor=camera,
        )
    except ValueError as e:
        raise UserError(f"{camera.get_actor_label()}: {e}") from None


# --------------------------------------------------------------------------- capture

def capture(unreal, view: camera_math.CameraView, width: int, height: int, settings: PluginSettings,
            hidden_actors: List = (), temp_dir: str = "", rig: Optional[dict] = None) -> Capture:
    """Render color and depth of `view` at width x height. A transient SceneCapture2D is spawned at the camera
    and always destroyed again; the render targets are released. `hidden_actors` (our result planes) are left
    out of the capture. No per-pixel Python on the full frame:

    Color: Final Color (LDR) into RGBA8 with TargetGamma = display gamma (capture_look explains why), written
    to a PNG by the engine's own exporter and sent as that file.
    Depth: SceneDepth (cm, in R) into RGBA16F - the sky saturates at 65504 - written to EXR by the engine's image
    writer (half floats, values untouched) and sent as that file; a PROBE_LONG_SIDE-pixel render of the same
    depth is read back to check that the camera sees anything in range.
    Color after WARMUP_FRAMES frames of a view whose rendering state persists, with the project's GI/reflections.

    `rig` (live mode): a dict that keeps the capture actor and its targets between calls - moved to each new view
    instead of spawned, its view state (temporal history, eye adaptation) carried from frame to frame, so only
    its first capture needs the warm-up frames. release_rig() ends it; an error releases it too.

    Normals (a normal ControlNet on): SCS_Normal (the GBuffer's world normal, signed) into RGBA16F, written to EXR
    by the engine's image writer like the depth and sent with the view's world_to_camera (normals.py): the server
    makes them camera-space, background told by the depth; the style image (Settings > Style Image) is
    read or exported as it is named (jobs only, not live frames)."""
    editor: unreal.UnrealEditorSubsystem = unreal.get_editor_subsystem(unreal.UnrealEditorSubsystem)
    actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    world: unreal.World = editor.get_editor_world()
    probe_w, probe_h = buffers.probe_size(width, height)
    with_normals = wants_normals(settings)
    if rig is not None and rig.get("size") != (width, height, with_normals):
        release_rig(unreal, rig)                     # another frame size (or normals on/off): new targets
    fresh = rig is None or rig.get("actor") is None
    if fresh:
        color_target: unreal.TextureRenderTarget2D = make_target(
            unreal, world, width, height, unreal.TextureRenderTargetFormat.RTF_RGBA8, 0.0)
        color_target.set_editor_property("target_gamma", capture_look.DISPLAY_GAMMA)
        depth_target = make_target(unreal, world, width, height, unreal.TextureRenderTargetFormat.RTF_RGBA16F,
                                   buffers.FP16_MAX)
        probe_target = make_target(unreal, world, probe_w, probe_h, unreal.TextureRenderTargetFormat.RTF_RGBA16F,
                                   buffers.FP16_MAX)
        normal_target = (make_target(unreal, world, width, height, unreal.TextureRenderTargetFormat.RTF_RGBA16F, 0.0)
                         if with_normals else None)
        capture_actor = None
    else:
        color_target, depth_target, probe_target, normal_target = rig["targets"]
        capture_actor = rig["actor"]
    normal_exr = None
    try:
        if capture_actor is None:
            capture_actor = actors.spawn_actor_from_class(
                unreal.SceneCapture2D, make_vector(unreal, view.location), make_rotator(unreal, view.rotation),
                transient=True)
            # tagged ours: live mode's check for level changes must not see its own capture actor appear
            capture_actor.set_editor_property("tags", [unreal.Name(naming.CAPTURE_TAG)])
            if rig is not None:
                rig.update(actor=capture_actor, targets=(color_target, depth_target, probe_target, normal_target),
                           size=(width, height, with_normals))
        scene_capture: unreal.SceneCapture2D = capture_actor
        if not fresh:
            scene_capture.set_actor_location_and_rotation(make_vector(unreal, view.location),
                                                          make_rotator(unreal, view.rotation), False, True)
        component: unreal.SceneCaptureComponent2D = scene_capture.capture_component2d
        configure_capture(unreal, component, view, hidden_actors, settings.capture_post_process)

        component.set_editor_property("capture_source", unreal.SceneCaptureSource.SCS_FINAL_COLOR_LDR)
        component.set_editor_property("texture_target", color_target)
        for _ in range((capture_look.WARMUP_FRAMES if fresh else 0) + 1):
            component.capture_scene()
        color_png = export_file(temp_dir, "png", lambda folder, name: unreal.RenderingLibrary.export_render_target(
            world, color_target, folder, name))

        component.set_editor_property("capture_source", unreal.SceneCaptureSource.SCS_SCENE_DEPTH)
        component.set_editor_property("texture_target", depth_target)
        component.capture_scene()
        depth_exr = export_file(temp_dir, "exr", lambda folder, name: export_exr(unreal, depth_target,
                                                                                 os.path.join(folder, name)))
        component.set_editor_property("texture_target", probe_target)
        component.capture_scene()
        # normalize=False: the default (True) would squash centimetres into 0..1
        probe_colors = unreal.RenderingLibrary.read_render_target_raw(world, probe_target, normalize=False)
        if normal_target is not None:
            normal_exr = capture_normals(unreal, component, normal_target, temp_dir)
    except BaseException:
        if rig is not None:
            release_rig(unreal, rig)
        raise
    finally:
        if rig is None:
            if capture_actor is not None:
                actors.destroy_actor(capture_actor)
            for target in (color_target, depth_target, probe_target, normal_target):
                if target is not None:
                    unreal.RenderingLibrary.release_render_target2d(target)

    if not color_png:
        raise buffers.CaptureProblem("Unreal wrote no color image for the capture (render target export failed).")
    if not depth_exr:
        raise buffers.CaptureProblem("Unreal wrote no depth image for the capture (EXR export failed).")
    if not probe_colors or len(probe_colors) != probe_w * probe_h:
        raise buffers.CaptureProblem("Unreal returned no depth pixels for the capture (render target read failed).")
    probe = buffers.depth_stats(buffers.depth_from_linear_colors(probe_colors), probe_w, probe_h,
                                max_depth_cm=settings.max_depth_cm)
    # live frames (a rig) never carry the style image: the server runs style references in jobs only
    style_bytes = style_image(unreal, settings.style_image, temp_dir) if settings.style_image.strip() and rig is None \
        else None
    return Capture(width, height, color_png, depth_exr, probe.far, probe, normal_exr,
                   normals.world_to_camera(view.rotation) if normal_exr is not None else None, style_bytes)


def capture_normals(unreal, component: unreal.SceneCaptureComponent2D,
                    normal_target: unreal.TextureRenderTarget2D, temp_dir: str) -> bytes:
    """The view's world normals (SCS_Normal) as the EXR the engine writes; the server makes them camera-space."""
    component.set_editor_property("capture_source", unreal.SceneCaptureSource.SCS_NORMAL)
    component.set_editor_property("texture_target", normal_target)
    component.capture_scene()
    normal_exr = export_file(temp_dir, "exr", lambda folder, name: export_exr(unreal, normal_target,
                                                                              os.path.join(folder, name)))
    if not normal_exr:
        raise buffers.CaptureProblem("Unreal wrote no normal image for the capture (EXR export failed).")
    return normal_exr


def style_image(unreal, name: str, temp_dir: str) -> bytes:
    """Settings > Style Image's bytes: a file as it is, a texture asset exported to PNG by the engine's image writer."""
    if style.source_kind(name) == style.FILE:
        data = style.read_file(name)
    else:
        assets: unreal.EditorAssetSubsystem = unreal.get_editor_subsystem(unreal.EditorAssetSubsystem)
        found = assets.load_asset(name.strip())
        if not isinstance(found, unreal.Texture):
            raise buffers.CaptureProblem(f"Style Image '{name}' is not a texture asset; name a texture (or a PNG or "
                                         "JPEG file) in ControlBridge settings.")
        texture: unreal.Texture = found
        options: unreal.ImageWriteOptions = unreal.ImageWriteOptions(
            format=unreal.DesiredImageFormat.PNG, compression_quality=0, overwrite_file=True, async_=False)
        data = export_file(temp_dir, "png", lambda folder, file: unreal.ImageWriteBlueprintLibrary.export_to_disk(
            texture, os.path.join(folder, file), options))
        if not data:
            raise buffers.CaptureProblem(f"Unreal could not export the style texture {name} to PNG.")
    style.image_size(data)        # a clear message now, not a server error later
    return data


def release_rig(unreal, rig: dict) -> None:
    """Destroy a kept capture actor and release its targets (live mode's end, or another frame size)."""
    actor = rig.pop("actor", None)
    targets = rig.pop("targets", ())
    rig.pop("size", None)
    if actor is not None:
        actors: unreal.EditorActorSubsystem = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
        actors.destroy_actor(actor)
    for target in targets:
        if target is not None:
            unreal.RenderingLibrary.release_render_target2d(target)


def make_target(unreal, world: unreal.World, width: int, height: int, target_format, clear_red: float):
    target: unreal.TextureRenderTarget2D = unreal.RenderingLibrary.create_render_target2d(
        world, width, height, target_format, clear_color=unreal.LinearColor(r=clear_red, g=0.0, b=0.0, a=1.0),
        auto_generate_mip_maps=False)
    return target


def configure_capture(unreal, component: unreal.SceneCaptureComponent2D, view: camera_math.CameraView,
                      hidden_actors: List, post_process: bool = True) -> None:
    component.set_editor_property("projection_type", unreal.CameraProjectionMode.PERSPECTIVE)
    flags = []
    for name, enabled in capture_look.show_flags(post_process):
        flag: unreal.EngineShowFlagsSetting = unreal.EngineShowFlagsSetting(show_flag_name=name, enabled=enabled)
        flags.append(flag)
    component.set_editor_property("show_flag_settings", flags)
    component.set_editor_property("fov_angle", float(view.hfov_deg))
    component.set_editor_property("capture_every_frame", False)
    component.set_editor_property("capture_on_movement", False)
    # keep the view state between our captures: temporal AA and eye adaptation need history
    component.set_editor_property("always_persist_rendering_state", True)
    component.set_editor_property("hidden_actors", list(hidden_actors))
    if view.actor is not None:
        # look through the CineCamera's own post-process (exposure, color grading) like its viewport does
        camera: unreal.CineCameraActor = view.actor
        lens: unreal.CineCameraComponent = camera.get_cine_camera_component()
        component.set_editor_property("post_process_settings", lens.get_editor_property("post_process_settings"))
        component.set_editor_property("post_process_blend_weight",
                                      lens.get_editor_property("post_process_blend_weight"))
    apply_project_lighting(unreal, component)


def apply_project_lighting(unreal, component: unreal.SceneCaptureComponent2D) -> None:
    """Scene captures switch Lumen GI and reflections off unless their post-process overrides the method:
    override both with the project's own (a camera that overrides them itself keeps its choice)."""
    pps: unreal.PostProcessSettings = component.get_editor_property("post_process_settings")
    gi_members = {"NONE": unreal.DynamicGlobalIlluminationMethod.NONE,
                  "LUMEN": unreal.DynamicGlobalIlluminationMethod.LUMEN,
                  "SCREEN_SPACE": unreal.DynamicGlobalIlluminationMethod.SCREEN_SPACE,
                  "PLUGIN": unreal.DynamicGlobalIlluminationMethod.PLUGIN}
    reflection_members = {"NONE": unreal.ReflectionMethod.NONE, "LUMEN": unreal.ReflectionMethod.LUMEN,
                          "SCREEN_SPACE": unreal.ReflectionMethod.SCREEN_SPACE}
    gi = capture_look.method_override(
        bool(pps.get_editor_property("override_dynamic_global_illumination_method")),
        unreal.SystemLibrary.get_console_variable_int_value(capture_look.GI_CVAR), capture_look.GI_METHODS)
    if gi is not None:
        pps.set_editor_property("override_dynamic_global_illumination_method", True)
        pps.set_editor_property("dynamic_global_illumination_method",
                                gi_members[gi])
    reflections = capture_look.method_override(
        bool(pps.get_editor_property("override_reflection_method")),
        unreal.SystemLibrary.get_console_variable_int_value(capture_look.REFLECTION_CVAR),
        capture_look.REFLECTION_METHODS)
    if reflections is not None:
        pps.set_editor_property("override_reflection_method", True)
        pps.set_editor_property("reflection_method", reflection_members[reflections])
    component.set_editor_property("post_process_settings", pps)


def export_exr(unreal, target: unreal.TextureRenderTarget2D, path: str) -> None:
    """The engine's image writer: a float target becomes a half-float EXR, written before the call returns."""
    options: unreal.ImageWriteOptions = unreal.ImageWriteOptions(
        format=unreal.DesiredImageFormat.EXR, compression_quality=0, overwrite_file=True, async_=False)
    unreal.ImageWriteBlueprintLibrary.export_to_disk(target, path, options)


def export_file(temp_dir: str, extension: str, write) -> bytes:
    """Let the engine write a file (write(folder, name)) in C++, read its bytes back and remove it."""
    folder = temp_dir or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    name = f"controlbridge_capture_{os.getpid()}.{extension}"
    path = os.path.join(folder, name)
    try:
        write(folder, name)
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
