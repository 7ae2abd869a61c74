"""From the plugin's settings and a capture to the protocol's request objects. No `unreal` import."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from controlbridge_protocol import ControlNetSettings, ImageAttachment, JobSettings, StyleSettings, control_offer

from . import camera_math, style
from .buffers import CaptureProblem, DepthStats
from .naming import sanitize
from .settings_model import CONTROL_KINDS, PluginSettings


@dataclass(frozen=True)
class Capture:
    """What engine_capture hands back: color and raw depth of one view, same size, top row first, both as the
    files the engine's own exporters wrote (no per-pixel Python): Final Color as PNG, SceneDepth (cm, in R) as
    EXR, sent with `far`. `probe` describes the same depth from a small read-back (the sky check, the log)."""

    width: int
    height: int
    color_png: bytes
    depth_exr: bytes
    far: float
    probe: DepthStats
    # World normals (SCS_Normal) as the EXR the engine wrote, and the view's world_to_camera rotation
    # (normals.world_to_camera, 9 numbers), when a normal ControlNet is on; else None. The server converts them.
    normal_exr: Optional[bytes] = None
    world_to_camera: Optional[Tuple[float, ...]] = None
    # The style reference image's file bytes (PNG/JPEG), when Settings > Style Image names one; else None.
    style_image: Optional[bytes] = None


def output_size(settings: PluginSettings, view: camera_math.CameraView) -> Tuple[int, int]:
    """Capture/output size: the settings' box, or the camera's filmback aspect fitted inside it."""
    aspect = view.aspect if (settings.match_camera_aspect and view.aspect) else None
    return camera_math.fit_output_size(settings.width, settings.height, aspect)


PREVIEWS_PER_JOB = 8   # enough to watch the image form; each preview is a small JPEG on the wire


def preview_interval(steps: int, denoise: float) -> int:
    """preview_every for a job: about PREVIEWS_PER_JOB previews over the steps img2img really runs."""
    run = max(1, int(steps * denoise))
    return max(1, run // PREVIEWS_PER_JOB)


def controlnets(s: PluginSettings) -> Dict[str, ControlNetSettings]:
    """The ControlNets the artist switched on (weight > 0), each with its window and library file. Each is fed by
    the server's default input for its name: depth and normal the capture's passes, canny edges and tile the color,
    lineart and softedge the estimator in `estimate`."""
    out = {}
    for kind in CONTROL_KINDS:
        weight = float(getattr(s, f"{kind}_weight"))
        if weight > 0:
            out[kind] = ControlNetSettings(weight=weight, start=float(getattr(s, f"{kind}_start")),
                                           end=float(getattr(s, f"{kind}_end")),
                                           model=getattr(s, f"{kind}_model").strip() or None)
    return out


def wants_normals(settings: PluginSettings) -> bool:
    """The capture renders world normals only for a normal ControlNet (it costs a render and an EXR export)."""
    return settings.validated().normal_weight > 0


def capture_settings(settings: PluginSettings, job: JobSettings) -> PluginSettings:
    """The settings a capture for `job` runs with: the normal pass when the job has a normal ControlNet, the style
    image when it has a style. Equal to `settings` for a new job; a history re-run may differ from them."""
    if job.style is not None and not settings.style_image.strip():
        raise CaptureProblem("This result used a style reference: choose a Style Image in ControlBridge settings "
                             "to re-run it.")
    normal = job.controlnets.get("normal")
    return replace(settings, normal_weight=normal.weight if normal is not None else 0.0,
                   style_image=settings.style_image if job.style is not None else "")


def job_settings(settings: PluginSettings, width: int, height: int, camera_label: str = "") -> JobSettings:
    """The one JobSettings for a generation. A ControlNet whose weight is 0 is left out (= switched off)."""
    s = settings.validated()
    nets = controlnets(s)
    # empty: the server's first estimator for the kind, chosen by the worker once it has the welcome
    estimate = {kind: getattr(s, f"{kind}_estimator").strip() for kind in control_offer.ESTIMATED_KINDS if kind in nets}
    return JobSettings(
        prompt=s.prompt,
        negative_prompt=s.negative_prompt,
        seed=int(s.seed),
        steps=int(s.steps),
        cfg=float(s.cfg),
        sampler=s.sampler,
        denoise=float(s.denoise),
        width=int(width),
        height=int(height),
        model=s.model or None,
        controlnets=nets,
        estimate=estimate,
        style=StyleSettings(weight=float(s.style_weight)) if s.style_image.strip() else None,
        result_encoding="png",
        preview_every=preview_interval(int(s.steps), float(s.denoise)),
        filename_prefix=f"unreal_{sanitize(camera_label, 'view')}" if camera_label else "unreal",
    )


def attachments(capture: Capture) -> List[ImageAttachment]:
    images = [
        ImageAttachment.encoded("color", "png", capture.width, capture.height, capture.color_png),
        ImageAttachment.exr_depth("depth", capture.width, capture.height, capture.depth_exr, far=capture.far),
    ]
    if capture.normal_exr is not None:
        images.append(ImageAttachment.exr_world_normals("normal", capture.width, capture.height, capture.normal_exr,
                                                        capture.world_to_camera))
    if capture.style_image is not None:
        images.append(style.attachment(capture.style_image))
    return images


def offer_summary(capabilities) -> str:
    """What the last server offers for each ControlNet kind, its estimators and style, one line each: shown read-only
    in Settings so the artist sees which kinds are not on this server before generating."""
    if capabilities is None:
        return "Not connected yet: the server is asked with the first generation (then reopen Settings)."
    own = set(getattr(capabilities, "controlnets", None) or [])
    lines = []
    for kind in CONTROL_KINDS:
        where = (["the model's own"] if kind in own else []) + control_offer.controlnet_files(capabilities, kind)
        line = f"{kind}: {', '.join(where) or 'not on this server'}"
        if kind in control_offer.ESTIMATED_KINDS:
            line += f"; estimators: {', '.join(control_offer.estimators_for(capabilities, kind)) or 'none'}"
        lines.append(line)
    adapters = [str(a.get("name")) for a in (getattr(capabilities, "style", None) or {}).get("adapters") or []]
    lines.append(f"style: {', '.join(adapters) or 'not on this server (no IP-Adapter)'}")
    return "\n".join(lines)


def check_against_capabilities(settings: JobSettings, capabilities) -> Optional[str]:
    """A message for the user when the server cannot run these settings, else None (the server checks again)."""
    if capabilities is None:
        return None
    samplers = list(getattr(capabilities, "samplers", None) or [])
    if samplers and settings.sampler not in samplers:
        return f"The server has no sampler '{settings.sampler}'. Choose one of: {', '.join(samplers)}."
    missing = control_offer.problems(settings, capabilities)
    if missing:
        return (f"Not on this server: {'; '.join(missing)}. Set those weights to 0, or choose what it has, in "
                "ControlBridge settings.")
    limits = getattr(capabilities, "limits", None) or {}
    max_pixels = limits.get("max_pixels")
    if max_pixels and settings.width and settings.height and settings.width * settings.height > max_pixels:
        return (f"{settings.width} x {settings.height} is larger than the server allows ({max_pixels} pixels); "
                "lower Width/Height in ControlBridge settings.")
    return None
