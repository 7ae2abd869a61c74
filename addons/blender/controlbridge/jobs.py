"""Panel properties <-> JobSettings, the one request type. No bpy operators, no network."""
import random

from .properties import CONTROL_KINDS, MAX_SEED
from .vendor.controlbridge_protocol import ControlNetSettings, JobSettings, StyleSettings, control_offer, presets


def new_seed() -> int:
    return random.randint(0, MAX_SEED)


def controlnets_from_props(p) -> dict:
    """The ControlNets switched on, each fed by the server's default input for its name: depth and normal the
    capture's passes, canny edges and tile the color, lineart and softedge the estimator in `estimate`."""
    return {kind: ControlNetSettings(weight=getattr(p, f"{kind}_weight"), start=getattr(p, f"{kind}_start"),
                                     end=getattr(p, f"{kind}_end"), model=getattr(p, f"{kind}_model").strip() or None)
            for kind in CONTROL_KINDS if getattr(p, f"use_{kind}")}


def settings_from_props(p) -> JobSettings:
    controlnets = controlnets_from_props(p)
    # empty: the server's first estimator for the kind (control_offer.fill_estimators, once it is known)
    estimate = {kind: getattr(p, f"{kind}_estimator").strip() for kind in control_offer.ESTIMATED_KINDS
                if kind in controlnets}
    values = dict(prompt=p.prompt, negative_prompt=p.negative_prompt, seed=int(p.seed), steps=int(p.steps),
                  cfg=float(p.cfg), denoise=float(p.denoise), controlnets=controlnets, estimate=estimate,
                  canny_low=int(p.canny_low), canny_high=int(p.canny_high), preview_every=int(p.preview_every),
                  style=StyleSettings(weight=float(p.style_weight)) if p.use_style else None)
    if p.sampler:
        values["sampler"] = p.sampler
    if p.model:
        values["model"] = p.model
    if not p.use_scene_resolution:
        values["width"], values["height"] = int(p.width), int(p.height)
    return JobSettings(**values)


def live_settings(p, capabilities) -> JobSettings:
    """The panel's settings for a live frame, through the live preset every client shares (presets.py: a JPEG
    back, the tiny decoder when offered, no previews; with Fast Sampler, LCM at Live Steps and CFG 1 when the
    server has it). With Randomize on, seed -1: the server keeps one seed for the whole session, so frames are
    stable."""
    s = presets.live_settings(control_offer.fill_estimators(settings_from_props(p), capabilities), capabilities,
                              steps=int(p.live_steps), sampler=presets.LIVE_SAMPLER if p.live_fast else None)
    return s.replace(seed=-1) if p.randomize_seed else s


def props_from_settings(p, s: JobSettings) -> None:
    """Load stored settings back into the panel (history: "Load Settings")."""
    p.prompt, p.negative_prompt = s.prompt, s.negative_prompt
    if s.seed >= 0:
        p.seed = s.seed % (MAX_SEED + 1)
        p.randomize_seed = False
    p.steps, p.cfg, p.denoise = s.steps, s.cfg, s.denoise
    p.sampler, p.model = s.sampler or "", s.model or ""
    for name in CONTROL_KINDS:
        cn = s.controlnets.get(name)
        setattr(p, f"use_{name}", cn is not None)
        if cn is not None:
            setattr(p, f"{name}_weight", cn.weight)
            setattr(p, f"{name}_start", cn.start)
            setattr(p, f"{name}_end", cn.end)
            setattr(p, f"{name}_model", cn.model or "")
    for name, estimator in s.estimate.items():
        if name in control_offer.ESTIMATED_KINDS:
            setattr(p, f"{name}_estimator", estimator)
    p.use_style = s.style is not None        # the image itself is not stored in the settings: it stays as chosen
    if s.style is not None:
        p.style_weight = s.style.weight
    p.canny_low, p.canny_high = s.canny_low, s.canny_high
    p.preview_every = s.preview_every
    p.use_scene_resolution = s.width is None or s.height is None
    if not p.use_scene_resolution:
        p.width, p.height = s.width, s.height


def capture_later(scene_name: str, view_layer_name: str, options, camera_name: str = ""):
    """The capture a job makes once the server has answered (bridge.Job.capture): main thread, returns
    (attachments, meta). With `camera_name`, that camera is the scene's camera for the capture only."""
    def take():
        import bpy
        from . import capture, style
        scene = bpy.data.scenes.get(scene_name)
        if scene is None:
            raise capture.CaptureError(f"the scene '{scene_name}' is gone")
        active = scene.camera
        if camera_name:
            camera = bpy.data.objects.get(camera_name)
            if camera is None or camera.type != "CAMERA":
                raise capture.CaptureError(f"the camera '{camera_name}' is gone")
            scene.camera = camera
        try:
            shot = capture.capture(scene, scene.view_layers.get(view_layer_name), options)
        finally:
            if scene.camera != active:
                scene.camera = active
        return shot.attachments() + style.attachments(scene.controlbridge), shot.meta()
    return take


def start(context, settings: JobSettings, prefs) -> str:
    """Hand a job to the bridge: it checks the server first and captures the active camera once the server
    has answered. Returns a line for the operator report.

    Raises capture.CaptureError (no camera: nothing to ask the server) or bridge.Busy with a one-line message."""
    from . import bridge, capture   # bpy-heavy modules, imported where used

    if bridge.busy():
        raise bridge.Busy("ControlBridge is busy with a job; wait for it or cancel it")
    scene = context.scene
    p = scene.controlbridge
    if scene.camera is None or scene.camera.type != "CAMERA":
        raise capture.CaptureError("The scene has no active camera: add one or set Scene > Camera")
    selected = [o.name for o in (context.selected_objects or []) if o.type == "MESH"] if p.place_projection else []
    job = bridge.Job(settings=settings, scene_name=scene.name,
                     capture=capture_later(scene.name, context.view_layer.name, capture.options_from_props(p)),
                     place_background=p.place_background, place_plane=p.place_plane,
                     plane_distance=p.plane_distance, project_objects=selected)
    bridge.generate(prefs.server_url, prefs.token, job)
    return f"Connecting to {prefs.server_url} to generate from {scene.camera.name} (seed {settings.seed})"
