"""Pixel buffers read back from Unreal render targets -> bytes for the protocol. Stdlib only (Unreal's Python has
no numpy). No `unreal` import: the engine layer hands over plain sequences / objects with r, g, b, a attributes.

Depth: Unreal's SceneDepth is the distance along the view axis in centimetres. A 16-bit float render target
(RTF_RGBA16F / RTF_R16F) saturates at 65504 (FP16_MAX); the sky, and anything beyond ~655 m, reads as 65504.
We send the RAW values as little-endian float32 with `far` set, and never normalise: the server turns raw depth
into a control map in one place for every client. Pixels >= far (or non-finite, or <= 0) are background.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

FP16_MAX = 65504.0


class CaptureProblem(Exception):
    """A capture that cannot give a useful result; the message is shown to the user as is."""


@dataclass(frozen=True)
class DepthBuffer:
    data: bytes                 # little-endian float32, width * height, top row first
    width: int
    height: int
    far: float
    background_fraction: float
    nearest: float | None       # smallest foreground depth (cm), None if all background
    farthest: float | None      # largest foreground depth (cm)


def half_floats(buf: bytes | bytearray | memoryview, channels: int = 1, channel: int = 0) -> array:
    """Unpack IEEE half floats (little-endian, `channels` interleaved per pixel) and keep one channel."""
    mv = memoryview(buf).cast("B")
    if len(mv) % (2 * channels):
        raise ValueError(f"buffer of {len(mv)} bytes is not a whole number of {channels}-channel half-float pixels")
    n = len(mv) // 2
    values = struct.unpack(f"<{n}e", mv)
    return array("f", values[channel::channels])


def float32_le_bytes(values: Iterable[float]) -> bytes:
    arr = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
    if sys.byteorder != "little":
        arr = array("f", arr)
        arr.byteswap()
    return arr.tobytes()


def depth_far(max_depth_cm: float = 0.0, source_max: float = FP16_MAX) -> float:
    """The far value sent with the depth: the render target's saturation value (sky), or a nearer user limit."""
    if max_depth_cm and max_depth_cm > 0:
        return min(float(max_depth_cm), source_max)
    return source_max


def prepare_depth(values: Sequence[float], width: int, height: int, *, max_depth_cm: float = 0.0,
                  source_max: float = FP16_MAX) -> DepthBuffer:
    """Raw SceneDepth values (cm, top row first) -> DepthBuffer. Raises CaptureProblem when nothing is in range."""
    if len(values) != width * height:
        raise ValueError(f"depth buffer has {len(values)} values, expected {width} x {height} = {width * height}")
    far = depth_far(max_depth_cm, source_max)
    arr = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
    background = 0
    nearest = math.inf
    farthest = -math.inf
    for v in arr:
        if v >= far or v <= 0.0 or v != v or v == math.inf:  # v != v: NaN
            background += 1
        else:
            if v < nearest:
                nearest = v
            if v > farthest:
                farthest = v
    total = width * height
    if background == total:
        limit = f"{far / 100.0:g} m"
        raise CaptureProblem(
            f"The depth capture shows nothing closer than {limit} (only sky/background). "
            "Point the camera at some geometry, or raise 'Max Depth Cm' in ControlBridge settings."
        )
    return DepthBuffer(
        data=float32_le_bytes(arr), width=width, height=height, far=far,
        background_fraction=background / total,
        nearest=nearest, farthest=farthest,
    )


def depth_from_linear_colors(colors: Iterable[Any]) -> array:
    """SceneDepth lives in the red channel of the capture (LinearColor read back with normalize=False)."""
    return array("f", (c.r for c in colors))


def rgba8_from_colors(colors: Sequence[Any], width: int, height: int, opaque: bool = True) -> bytes:
    """8-bit colors (objects with r, g, b, a ints, e.g. unreal.Color from read_render_target) -> RGBA8 bytes,
    top row first. A scene capture's alpha is not coverage (it is often 0), so by default it is forced opaque."""
    if len(colors) != width * height:
        raise ValueError(f"color buffer has {len(colors)} pixels, expected {width} x {height} = {width * height}")
    out = bytearray(4 * width * height)
    i = 0
    if opaque:
        for c in colors:
            out[i] = c.r
            out[i + 1] = c.g
            out[i + 2] = c.b
            out[i + 3] = 255
            i += 4
    else:
        for c in colors:
            out[i] = c.r
            out[i + 1] = c.g
            out[i + 2] = c.b
            out[i + 3] = c.a
            i += 4
    return bytes(out)
