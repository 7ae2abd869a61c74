"""The DCC's normal pass in the colours normal ControlNets were trained on: the one conversion, for every client.

Clients send camera-space normals, x right, y up, z toward the camera, as (n + 1) / 2 in RGB (PROTOCOL.md:
Blender's capture makes them from its Normal pass). ControlNet 1.1 `normalbae` (and the normal mode of union /
ControlNet++ models) learnt from maps made by Bae et al.'s estimator (NormalBae), whose axes differ in x only:
red grows toward the LEFT, green up, blue toward the camera. In its pictures a wall facing the camera is lavender
(128, 128, 255), a floor mint green, a wall seen on the left of a corridor (facing right) teal, one on the right
salmon. So the conversion mirrors x and keeps y and z.

Pixels without geometry (the render's zero normal) become "facing the camera", which is how ControlNet 1.0's
normal maps made their background, instead of a grey no estimator ever produces.
"""
import numpy as np

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
