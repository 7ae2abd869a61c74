"""Depth checks on a small read-back, and the sizes involved. Stdlib only (Unreal's Python has no numpy).
No `unreal` import: the engine layer hands over plain sequences / objects with an `r` attribute.

Depth: Unreal's SceneDepth is the distance along the view axis in centimetres. A 16-bit float render target
(RTF_RGBA16F) saturates at 65504 (FP16_MAX); the sky, and anything beyond ~655 m, reads as 65504.
The full-size depth goes to the server as the EXR the engine itself wrote (raw values, `far` set): the server
turns raw depth into a control map in one place for every client. Python only ever walks a PROBE: the same depth
rendered at PROBE_LONG_SIDE pixels, enough to tell the user "the camera sees only sky" before anything is sent.
Pixels >= far (or non-finite, or <= 0) are background.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Tuple

FP16_MAX = 65504.0
# ~1 k pixels at 16:9: a few milliseconds to read back and walk, yet a 2 % object still covers a few pixels
PROBE_LONG_SIDE = 48


class CaptureProblem(Exception):
    """A capture that cannot give a useful result; the message is shown to the user as is."""


@dataclass(frozen=True)
class DepthStats:
    """What a depth buffer holds, for the user-facing check and the log."""

    width: int
    height: int
    far: float
    background_fraction: float
    nearest: float | None       # smallest foreground depth (cm), None if all background
    farthest: float | None      # largest foreground depth (cm)


def probe_size(width: int, height: int, long_side: int = PROBE_LONG_SIDE) -> Tuple[int, int]:
    """The probe's size: the capture's aspect with its long side at `long_side` (never larger than the capture)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"capture size must be positive, got {width} x {height}")
    scale = min(1.0, long_side / max(width, height))
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def depth_far(max_depth_cm: float = 0.0, source_max: float = FP16_MAX) -> float:
    """The far value sent with the depth: the render target's saturation value (sky), or a nearer user limit."""
    if max_depth_cm and max_depth_cm > 0:
        return min(float(max_depth_cm), source_max)
    return source_max


def depth_stats(values: Sequence[float], width: int, height: int, *, max_depth_cm: float = 0.0,
                source_max: float = FP16_MAX) -> DepthStats:
    """Raw SceneDepth values (cm) -> DepthStats. Raises CaptureProblem when nothing is in range."""
    if len(values) != width * height:
        raise ValueError(f"depth buffer has {len(values)} values, expected {width} x {height} = {width * height}")
    far = depth_far(max_depth_cm, source_max)
    background = 0
    nearest = math.inf
    farthest = -math.inf
    for v in values:
        if v >= far or v <= 0.0 or v != v or v == math.inf:  # v != v: NaN
            background += 1
        else:
            nearest = min(nearest, v)
            farthest = max(farthest, v)
    total = width * height
    if background == total:
        raise CaptureProblem(
            f"The depth capture shows nothing closer than {far / 100.0:g} m (only sky/background). "
            "Point the camera at some geometry, or raise 'Max Depth Cm' in ControlBridge settings."
        )
    return DepthStats(width=width, height=height, far=far, background_fraction=background / total,
                      nearest=nearest, farthest=farthest)


def depth_from_linear_colors(colors: Iterable[Any]) -> array:
    """SceneDepth lives in the red channel of the capture (LinearColor read back with normalize=False)."""
    return array("f", (c.r for c in colors))
