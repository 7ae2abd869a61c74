"""Raw renderer depth -> the depth ControlNet's input. The one implementation every client goes through.

Mapping (documented in shared/PROTOCOL.md):
1. Background: pixels that are not finite, are 0, or lie at/beyond `far` (default 65504, the largest
   float16, which Unreal and half-float EXR writers use for "nothing hit"; Blender writes 1e10) are masked.
2. Sign: a buffer whose valid values are all negative (camera-space -Z, the OpenGL/Blender convention) is
   negated; otherwise negative values are background.
3. Robust range: near/far are the 0.5th/99.5th percentiles of the valid depths, so a few stray pixels
   do not flatten the whole map. Above 65536 pixels they are taken on a regular grid (every n-th row and
   column, at most 65536 pixels; every valid pixel when fewer than 4096 of the grid's are valid).
4. Inverse depth, as MiDaS-style depth ControlNets were trained on: v = (1/z - 1/far) / (1/near - 1/far),
   clipped to [0, 1]: near is bright (1), far is dark (0), background is 0.
5. A constant plane (range below 1e-6 relative) maps every valid pixel to 1.
"""
import math
from typing import Optional

import numpy as np

DEFAULT_FAR = 65504.0
ROBUST_PERCENTILES = (0.5, 99.5)
RANGE_SAMPLES = 65536        # pixels on the grid that sets near/far (a 256x256 grid)
MIN_RANGE_SAMPLES = 4096     # fewer valid pixels on that grid (a small object): use every valid pixel


def depth_to_control(depth: np.ndarray, far: Optional[float] = None) -> np.ndarray:
    """float32 HxW in [0, 1], near bright, background 0."""
    z = np.asarray(depth, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"depth must be a 2-D buffer, got shape {z.shape}")
    far_limit = _far_limit(far)
    values = _range_values(z, far_limit)
    if values.size == 0:               # nothing in range as it is: camera-space -Z, or only background
        distance = _as_distance(z)
        if distance is z:
            return np.zeros(z.shape, dtype=np.float32)
        z = distance
        values = _range_values(z, far_limit)
    near_z, far_z = _linear_percentiles(values, ROBUST_PERCENTILES)
    if far_z - near_z <= 1e-6 * max(abs(far_z), 1e-12):
        return geometry_mask(z, far).astype(np.float32)
    return _inverse_depth(z, near_z, far_z)


def geometry_mask(depth: np.ndarray, far: Optional[float] = None) -> np.ndarray:
    """bool HxW: where the raw depth hit something (rules 1 and 2 above), for passes whose own background is
    unreliable (Unreal's GBuffer writes a normal for the sky too)."""
    z = _as_distance(np.asarray(depth, dtype=np.float32))
    return (z > 0) & (z < _far_limit(far))      # NaN fails both


def _far_limit(far: Optional[float]) -> float:
    return DEFAULT_FAR if far is None else abs(float(far))


def _as_distance(z: np.ndarray) -> np.ndarray:
    """Rule 2: a buffer whose finite values are all negative (camera-space -Z) negated; else `z` itself."""
    finite = np.isfinite(z)
    if (finite & (z > 0)).any() or not (finite & (z < 0)).any():
        return z
    return -z


def _range_values(z: np.ndarray, far_limit: float) -> np.ndarray:
    """The valid depths that set near/far: those on the sample grid, or every valid one when the grid holds few.
    (NaN fails both comparisons and +inf the second: no isfinite pass.)"""
    step = range_sample_step(*z.shape)
    grid = z[::step, ::step]
    values = grid[(grid > 0) & (grid < far_limit)]
    if values.size < MIN_RANGE_SAMPLES and step > 1:
        values = z[(z > 0) & (z < far_limit)]
    return values


def _inverse_depth(z: np.ndarray, near_z: float, far_z: float) -> np.ndarray:
    """(1/z - 1/far) / (1/near - 1/far) clipped to [0, 1], background 0, in OpenCV passes: a third of numpy's
    time on a live frame's depth. No mask is built: depths beyond far (+inf too) and negative ones come out below
    0; z = 0 divides to +inf, the only infinite result (besides subnormal z, background too), zeroed first; NaN
    passes every threshold and is patched last."""
    import cv2
    scale = 1.0 / (1.0 / near_z - 1.0 / far_z)
    out = cv2.divide(scale, z)     # the one new buffer: the rest runs in place (fresh pages cost a live frame)
    cv2.subtract(out, scale / far_z, dst=out)
    cv2.threshold(out, float(np.finfo(np.float32).max), 0.0, cv2.THRESH_TOZERO_INV, dst=out)
    cv2.threshold(out, 1.0, 1.0, cv2.THRESH_TRUNC, dst=out)
    cv2.threshold(out, 0.0, 0.0, cv2.THRESH_TOZERO, dst=out)
    cv2.patchNaNs(out, 0.0)
    return out


def range_sample_step(height: int, width: int) -> int:
    """The grid step (every n-th row and column) whose samples set near/far: the smallest that leaves at most
    RANGE_SAMPLES pixels. Sorting every pixel of a 512x512 frame cost most of the normalization's time."""
    return max(1, math.ceil(math.sqrt(height * width / RANGE_SAMPLES)))


def _linear_percentiles(values: np.ndarray, percents) -> tuple:
    """np.percentile's default ('linear') percentiles, from one partial sort around the ranks needed instead
    of np.percentile's general path: a third less time on a live frame's 512x512 depth."""
    n = values.size
    positions = [q / 100.0 * (n - 1) for q in percents]
    ranks = sorted({r for p in positions for r in (int(p), min(int(p) + 1, n - 1))})
    ordered = np.partition(values, ranks)
    return tuple(float(ordered[int(p)]) + (float(ordered[min(int(p) + 1, n - 1)]) - float(ordered[int(p)]))
                 * (p - int(p)) for p in positions)


def depth_to_control_torch(depth: "torch.Tensor", far: Optional[float] = None) -> "torch.Tensor":
    """The same mapping on a torch tensor, where it lies (the live engine normalizes on the device).

    Equal to `depth_to_control` to float32 rounding (tested): same masking, sign rule, sample grid,
    linear-interpolated percentiles (as numpy's default) and inverse-depth mapping. Works in float32 whatever the input dtype.
    """
    import torch
    z = depth.to(torch.float32)
    if z.ndim != 2:
        raise ValueError(f"depth must be a 2-D buffer, got shape {tuple(z.shape)}")
    far_limit = _far_limit(far)
    finite = torch.isfinite(z)
    # One host sync for the sign rule and emptiness, not one per test.
    any_pos, any_neg = torch.stack([(finite & (z > 0)).any(), (finite & (z < 0)).any()]).tolist()
    if any_neg and not any_pos:
        z = -z
    valid = finite & (z > 0) & (z < far_limit)
    out = torch.zeros_like(z)
    if not bool(valid.any()):
        return out
    step = range_sample_step(*z.shape)
    values = z[::step, ::step][valid[::step, ::step]]
    if values.numel() < MIN_RANGE_SAMPLES:
        values = z[valid]
    near_z, far_z = _percentiles(values, ROBUST_PERCENTILES)
    if float(far_z - near_z) <= 1e-6 * max(abs(float(far_z)), 1e-12):
        out[valid] = 1.0
        return out
    inv_near, inv_far = 1.0 / near_z, 1.0 / far_z
    out[valid] = ((1.0 / z[valid] - inv_far) / (inv_near - inv_far)).clamp(0.0, 1.0)
    return out


def _percentiles(values, percents):
    """numpy's default ('linear') percentiles; torch.quantile refuses inputs above 16M elements."""
    import torch
    ordered = values.sort().values
    n = ordered.numel()
    out = []
    for q in percents:
        position = q / 100.0 * (n - 1)
        lo = int(position)
        hi = min(lo + 1, n - 1)
        frac = position - lo
        out.append(ordered[lo] + (ordered[hi] - ordered[lo]) * frac)
    return torch.stack(out)
