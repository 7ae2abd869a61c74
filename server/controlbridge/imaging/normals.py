"""The DCC's normal pass in the colours normal ControlNets were trained on: the one conversion, for every client.

Clients send camera-space normals, x right, y up, z toward the camera, as (n + 1) / 2 in RGB, or their renderer's
WORLD-space normal pass as exr with `world_to_camera` (PROTOCOL.md; what both add-ons send): `world_normals_to_camera`
turns those into camera space here, so no add-on converts pixels itself. ControlNet 1.1 `normalbae` (and the normal
mode of union / ControlNet++ models) learnt from maps made by Bae et al.'s estimator (NormalBae), whose axes differ in x only:
red grows toward the LEFT, green up, blue toward the camera. In its pictures a wall facing the camera is lavender
(128, 128, 255), a floor mint green, a wall seen on the left of a corridor (facing right) teal, one on the right
salmon. So the conversion mirrors x and keeps y and z.

Pixels without geometry (the render's zero normal) become "facing the camera", which is how ControlNet 1.0's
normal maps made their background, instead of a grey no estimator ever produces.
"""
from typing import Optional, Sequence

import numpy as np

from .depth import geometry_mask

_FACING_CAMERA = np.array([0.0, 0.0, 1.0], np.float32)


def camera_normals_to_bae(encoded: np.ndarray) -> np.ndarray:
    """A decoded camera-space normal pass (float32 HxWx3 in [0, 1], (n + 1) / 2) -> NormalBae colours."""
    return camera_vectors_to_bae(encoded.astype(np.float32) * 2.0 - 1.0)


def camera_vectors_to_bae(n: np.ndarray) -> np.ndarray:
    """Signed camera-space normals (float32 HxWx3; background the zero vector) -> float32 HxWx3 in [0, 1] in
    NormalBae colours. Rounded to 8 bits, as the estimator's own maps are, so a saved map reproduces it exactly."""
    length = np.linalg.norm(n, axis=2, keepdims=True)
    # A unit normal has length ~1 (8-bit encoded too); the background's zero vector ~0 (~0.007 decoded from 8 bits).
    n = np.where(length < 0.5, _FACING_CAMERA, n / np.maximum(length, 1e-6))
    n[..., 0] = -n[..., 0]
    return np.round((n + 1.0) * 127.5) / 255.0


def world_to_camera_problem(matrix: Sequence[float], tolerance: float = 1e-2) -> Optional[str]:
    """Why `matrix` (an attachment's world_to_camera) is not 9 finite numbers forming a rotation, or None.

    Either handedness is a rotation here: Unreal's left-handed world maps to the right-handed camera axes with
    determinant -1."""
    if len(matrix) != 9:
        return f"has {len(matrix)} numbers; it needs 9 (a row-major 3x3 rotation)"
    m = np.asarray(matrix, np.float64).reshape(3, 3)
    if not np.isfinite(m).all():
        return "has a number that is not finite"
    off = np.abs(m @ m.T - np.eye(3))
    if off.max() > tolerance:
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        return (f"is not a rotation: row {i} . row {j} is {float((m @ m.T)[i, j]):.4g}, not {int(i == j)} (its rows "
                f"must be the camera's right, up and toward-camera axes, unit vectors in world coordinates)")
    return None


def world_normals_to_camera(world: np.ndarray, world_to_camera: Sequence[float], depth: Optional[np.ndarray] = None,
                            far: Optional[float] = None) -> np.ndarray:
    """A renderer's world-space normal pass (float32 HxWx3, signed) -> signed camera-space normals, ready for
    camera_vectors_to_bae (which normalizes them, and treats short ones as background).

    Background becomes the zero vector, as camera-space clients send it: where a normal is not finite, and, with the
    frame's raw depth, where that depth is background by depth.py's rule (geometry_mask: the sky writes a normal too
    in Unreal's GBuffer)."""
    m = np.asarray(world_to_camera, np.float32).reshape(3, 3)
    n = (world.reshape(-1, 3) @ m.T).reshape(world.shape)   # each pixel: (right . n, up . n, toward . n)
    keep = np.isfinite(n).all(axis=2)
    if depth is not None:
        keep &= geometry_mask(depth, far)
    return np.where(keep[..., None], n, 0.0).astype(np.float32)
