"""The depth normalization's torch twin (the live engine's, on the device) equals the numpy one."""
import numpy as np
import pytest
import torch

from controlbridge.imaging.depth import depth_to_control, depth_to_control_torch


def scenes():
    rng = np.random.default_rng(0)
    z = rng.uniform(1, 80, (97, 131)).astype(np.float32)
    holes = z.copy()
    holes[:20], holes[30:40], holes[50] = np.inf, 0, 1e10
    yield "metres", z, None
    yield "blender -z", -z, None
    yield "background", holes, None
    yield "far plane", z, 70.0
    yield "flat", np.full((8, 8), 5, np.float32), None
    yield "nothing hit", np.full((8, 8), np.nan, np.float32), None
    frame = rng.uniform(1, 80, (540, 960)).astype(np.float32)     # above 65536 pixels: the range from a grid
    frame[:50] = 1e10
    yield "grid range", frame, None


@pytest.mark.parametrize("name,depth,far", list(scenes()), ids=[s[0] for s in scenes()])
def test_torch_twin_matches_numpy(name, depth, far):
    expected = depth_to_control(depth, far)
    got = depth_to_control_torch(torch.from_numpy(depth), far).numpy()
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)
