"""The DCC's normal pass in the colours normal ControlNets were trained on: the one conversion, for every client.

Clients send camera-space normals, x right, y up, z toward the camera, as (n + 1) / 2 in RGB, or their renderer's
WORLD-space normal pass as exr with `world_to_camera` (PROTOCOL.md; what both add-ons send): `world_normals_to_camera`
turns those into the same camera-space encoding here, so no add-on converts pixels itself. ControlNet 1.1 `normalbae` (and the normal mode of union /
ControlNet++ models) learnt from maps made by Bae et al.'s estimator (NormalBae), whose axes differ in x only:
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
    """A decoded normal pass (float32 HxWx3 in [0, 1]) -> float32 HxWx3 in [0, 1] in NormalBae colours.

    The result is rounded to 8 bits, as the estimator's own maps are, so a saved map reproduces it exactly."""
    n = encoded.astype(np.float32) * 2.0 - 1.0
    length = np.linalg.norm(n, axis=2, keepdims=True)
    # A unit normal, 8-bit encoded, has length ~1; the background's zero vector decodes to length ~0.007.
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
    """A renderer's world-space normal pass (float32 HxWx3, signed) -> the protocol's camera-space encoding
    (float32 HxWx3 in [0, 1], (n + 1) / 2), ready for camera_normals_to_bae.

    Background becomes the zero vector, as camera-space clients send it: where a normal is shorter than 0.5 (or not
    finite), and, with the frame's raw depth, where that depth is background by depth.py's rule (geometry_mask: the
    sky writes a normal too in Unreal's GBuffer)."""
    m = np.asarray(world_to_camera, np.float32).reshape(3, 3)
    n = world.reshape(-1, 3) @ m.T                      # each row: (right . n, up . n, toward . n)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    keep = np.isfinite(length) & (length >= 0.5)
    if depth is not None:
        keep &= geometry_mask(depth, far).reshape(-1, 1)
    n = np.where(keep, n / np.where(keep, length, 1.0), 0.0)
    return ((n + 1.0) * 0.5).reshape(world.shape).astype(np.float32)
