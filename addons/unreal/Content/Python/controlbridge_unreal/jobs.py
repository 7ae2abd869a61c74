"""From the plugin's settings and a capture to the protocol's request objects. No `unreal` import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from controlbridge_protocol import ControlNetSettings, ImageAttachment, JobSettings

from . import camera_math
from .buffers import DepthStats
from .naming import sanitize
from .settings_model import PluginSettings


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


def output_size(settings: PluginSettings, view: camera_math.CameraView) -> Tuple[int, int]:
    """Capture/output size: the settings' box, or the camera's filmback aspect fitted inside it."""
    aspect = view.aspect if (settings.match_camera_aspect and view.aspect) else None
    return camera_math.fit_output_size(settings.width, settings.height, aspect)


PREVIEWS_PER_JOB = 8   # enough to watch the image form; each preview is a small JPEG on the wire


def preview_interval(steps: int, denoise: float) -> int:
    """preview_every for a job: about PREVIEWS_PER_JOB previews over the steps img2img really runs."""
    run = max(1, int(steps * denoise))
    return max(1, run // PREVIEWS_PER_JOB)


def job_settings(settings: PluginSettings, width: int, height: int, camera_label: str = "") -> JobSettings:
    """The one JobSettings for a generation. A ControlNet whose weight is 0 is left out (= switched off)."""
    s = settings.validated()
    controlnets = {}
    if s.depth_weight > 0:
        controlnets["depth"] = ControlNetSettings(weight=float(s.depth_weight))
    if s.canny_weight > 0:
        controlnets["canny"] = ControlNetSettings(weight=float(s.canny_weight))
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
        controlnets=controlnets,
        result_encoding="png",
        preview_every=preview_interval(int(s.steps), float(s.denoise)),
        filename_prefix=f"unreal_{sanitize(camera_label, 'view')}" if camera_label else "unreal",
    )


def attachments(capture: Capture) -> List[ImageAttachment]:
    return [
        ImageAttachment.encoded("color", "png", capture.width, capture.height, capture.color_png),
        ImageAttachment.exr_depth("depth", capture.width, capture.height, capture.depth_exr, far=capture.far),
    ]


def check_against_capabilities(settings: JobSettings, capabilities) -> Optional[str]:
    """A message for the user when the server cannot run these settings, else None (the server checks again)."""
    if capabilities is None:
        return None
    samplers = list(getattr(capabilities, "samplers", None) or [])
    if samplers and settings.sampler not in samplers:
        return f"The server has no sampler '{settings.sampler}'. Choose one of: {', '.join(samplers)}."
    offered = set(getattr(capabilities, "controlnets", None) or [])
    missing = [name for name in settings.controlnets if offered and name not in offered]
    if missing:
        return (f"The server has no {', '.join(missing)} ControlNet; set its weight to 0 in ControlBridge settings "
                f"(available: {', '.join(sorted(offered)) or 'none'}).")
    limits = getattr(capabilities, "limits", None) or {}
    max_pixels = limits.get("max_pixels")
    if max_pixels and settings.width and settings.height and settings.width * settings.height > max_pixels:
        return (f"{settings.width} x {settings.height} is larger than the server allows ({max_pixels} pixels); "
                "lower Width/Height in ControlBridge settings.")
    return None
