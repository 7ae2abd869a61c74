"""World normals from Unreal's GBuffer -> the protocol's camera-space normal map. Stdlib only, no `unreal` import.

A SceneCapture2D with SCS_Normal writes the GBuffer's WORLD normal, signed (-1..1), into a float target. The protocol's
`normal` attachment is camera-space: x right, y up, z toward the camera, encoded (n + 1) / 2 as RGBA8, the zero vector
where there is no geometry (PROTOCOL.md; the server turns it into NormalBae colours, as for Blender). Unreal is
left-handed, X forward, Y right, Z up, and a camera looks along its +X with its +Y to the right of the image and +Z up,
so a world normal n becomes (n . right, n . up, -(n . forward)) in the camera's own axes (camera_math.rotator_axes).
The sky writes a normal too (what a cleared GBuffer decodes to), so background is told by depth, as in buffers.py.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence, Tuple

from .camera_math import Rot3, Vec3, rotator_axes

BACKGROUND = (128, 128, 128, 255)   # the zero vector, encoded as Blender's capture encodes it


def camera_axes(rotation: Rot3) -> Tuple[Vec3, Vec3, Vec3]:
    """(right, up, toward the camera) of a camera with `rotation`, in world axes."""
    forward, right, up = rotator_axes(rotation)
    return right, up, (-forward[0], -forward[1], -forward[2])


def to_camera(normal: Vec3, rotation: Rot3) -> Vec3:
    """One world normal in the protocol's camera space (unit length; the zero vector stays zero)."""
    axes = camera_axes(rotation)
    v = tuple(normal[0] * a[0] + normal[1] * a[1] + normal[2] * a[2] for a in axes)
    length = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    return (0.0, 0.0, 0.0) if length < 1e-6 else (v[0] / length, v[1] / length, v[2] / length)


def encode(v: Vec3) -> Tuple[int, int, int, int]:
    return tuple(min(255, max(0, int(round((c * 0.5 + 0.5) * 255.0)))) for c in v) + (255,)  # type: ignore


def camera_normal_map(world_normals: Iterable, depths: Sequence[float], rotation: Rot3, far: float) -> bytes:
    """The capture's normal attachment: RGBA8 bytes, top row first, from the SCS_Normal read-back (objects with
    r, g, b: Unreal's LinearColor, read with normalize=False) and the same view's SceneDepth (cm). A pixel at or
    beyond `far`, or without a usable normal, is background. One pass of plain arithmetic per pixel: Unreal's Python
    has no numpy (about a second for a 1024 x 576 frame)."""
    (rx, ry, rz), (ux, uy, uz), (tx, ty, tz) = camera_axes(rotation)
    out = bytearray(len(depths) * 4)
    background = bytes(BACKGROUND)
    i = 0
    for n, d in zip(world_normals, depths):
        x, y, z = n.r, n.g, n.b
        cx = x * rx + y * ry + z * rz
        cy = x * ux + y * uy + z * uz
        cz = x * tx + y * ty + z * tz
        length = math.sqrt(cx * cx + cy * cy + cz * cz)
        if not (0.0 < d < far) or not length > 0.5:      # also NaN; a GBuffer normal is near unit length
            out[i:i + 4] = background
        else:
            s = 127.5 / length
            out[i] = min(255, max(0, int(cx * s + 128.0)))
            out[i + 1] = min(255, max(0, int(cy * s + 128.0)))
            out[i + 2] = min(255, max(0, int(cz * s + 128.0)))
            out[i + 3] = 255
        i += 4
    if i != len(out):
        raise ValueError(f"normal buffer has {i // 4} pixels, depth has {len(depths)}")
    return bytes(out)
