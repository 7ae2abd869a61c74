"""The camera rotation that goes with Unreal's world normal pass. Stdlib only, no `unreal` import.

A SceneCapture2D with SCS_Normal writes the GBuffer's WORLD normal, signed (-1..1), into a float target; the engine
exports it as an EXR (R, G, B = world x, y, z) and the plugin sends that file as the `normal` attachment with
`world_to_camera` (PROTOCOL.md): the server turns it into camera space (x right, y up, z toward the camera), with
the background told by the depth sent beside it (the sky writes a normal too). No per-pixel work in the editor.

Unreal is left-handed, X forward, Y right, Z up, and a camera looks along its +X with its +Y to the right of the
image and +Z up, so a world normal n becomes (n . right, n . up, -(n . forward)) in the camera's own axes
(camera_math.rotator_axes): those three axes are the matrix's rows (its determinant is -1: the world is left-handed).
"""

from __future__ import annotations

from typing import Tuple

from .camera_math import Rot3, Vec3, rotator_axes


def camera_axes(rotation: Rot3) -> Tuple[Vec3, Vec3, Vec3]:
    """(right, up, toward the camera) of a camera with `rotation`, in world axes."""
    forward, right, up = rotator_axes(rotation)
    return right, up, (-forward[0], -forward[1], -forward[2])


def world_to_camera(rotation: Rot3) -> Tuple[float, ...]:
    """The attachment's world_to_camera: 9 numbers, row-major, rows = camera_axes(rotation)."""
    return tuple(float(c) for axis in camera_axes(rotation) for c in axis)
