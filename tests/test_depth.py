"""Depth normalization on hand-made buffers: the one mapping every client's depth goes through."""
import numpy as np
import pytest

from controlbridge.imaging.depth import depth_to_control


def ramp(near=1.0, far=10.0, shape=(8, 16)):
    return np.tile(np.linspace(near, far, shape[1], dtype=np.float32), (shape[0], 1))


def test_near_is_bright_far_is_dark():
    out = depth_to_control(ramp())
    assert out.dtype == np.float32 and out.shape == (8, 16)
    assert out[0, 0] == pytest.approx(1.0, abs=1e-6) and out[0, -1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(out[0]) < 0)


def test_inverse_depth_spacing():
    depth = np.repeat(np.array([[1, 2, 3, 4]], np.float32), 100, axis=0)   # many pixels: exact percentiles
    expected = (1 / np.array([1, 2, 3, 4]) - 1 / 4) / (1 - 1 / 4)
    assert np.allclose(depth_to_control(depth)[0], expected, atol=1e-6)


@pytest.mark.parametrize("background", [np.inf, -np.inf, np.nan, 0.0, 1e10, 65504.0])
def test_background_is_masked_and_does_not_stretch_the_range(background):
    depth = ramp()
    depth[:, :4] = background
    out = depth_to_control(depth)
    assert np.all(out[:, :4] == 0)
    assert out[0, 4] == pytest.approx(1.0, abs=1e-6) and out[0, -1] == pytest.approx(0.0, abs=1e-6)


def test_explicit_far_value():
    depth = ramp(1, 100)
    out = depth_to_control(depth, far=50)
    assert np.all(out[depth >= 50] == 0) and out.max() == pytest.approx(1.0, abs=1e-6)


def test_negative_camera_space_depth_is_read_as_distance():
    assert np.allclose(depth_to_control(-ramp()), depth_to_control(ramp()))


def test_inverted_ramp_gives_the_mirrored_map():
    assert np.allclose(depth_to_control(ramp()[:, ::-1]), depth_to_control(ramp())[:, ::-1])


def test_constant_plane_is_uniform_with_background_kept():
    depth = np.full((6, 6), 3.5, np.float32)
    depth[0] = np.inf
    out = depth_to_control(depth)
    assert np.all(out[1:] == 1.0) and np.all(out[0] == 0)


def test_all_background_is_black():
    assert not depth_to_control(np.full((4, 4), np.inf, np.float32)).any()


def test_a_stray_pixel_does_not_flatten_the_map():
    depth = ramp(2, 10, (20, 20))
    depth[0, 0] = 0.001                                  # a single sliver right at the lens
    out = depth_to_control(depth)
    assert out[5, 0] > 0.9 and out[5, -1] < 0.1


def test_unreal_style_float16_centimetres():
    depth = np.full((4, 8), 65504, np.float16)           # sky
    depth[:, :4] = np.float16(250.0)                     # a wall 2.5 m away
    depth[:, 4:6] = np.float16(1000.0)
    out = depth_to_control(depth.astype(np.float32))
    assert np.allclose(out[:, :4], 1) and np.allclose(out[:, 4:6], 0, atol=1e-6) and np.all(out[:, 6:] == 0)


def test_large_buffers_take_their_range_from_a_grid_that_agrees_with_every_pixel():
    # 1024x1024: near/far from every 4th row and column; the map stays within 1% (under 3 of 255 levels) of
    # the one from exact percentiles, and within 0.3% on average
    yy, xx = np.mgrid[0:1024, 0:1024]
    depth = (2 + xx / 90 + yy / 250 + np.sin(xx / 17.0)).astype(np.float32)
    depth[:100] = 1e10
    out = depth_to_control(depth)
    valid = depth < 1e9
    near, far = np.percentile(depth[valid], [0.5, 99.5])
    exact = np.clip((1 / depth - 1 / far) / (1 / near - 1 / far), 0, 1) * valid
    assert np.abs(out - exact).max() < 0.01 and np.abs(out - exact).mean() < 3e-3
    assert np.all(out[:100] == 0)


def test_a_small_object_uses_every_pixel_for_its_range():
    # 1000 valid pixels out of 512x512: too few on the grid, so near/far come from all of them (exact ends)
    depth = np.full((512, 512), np.inf, np.float32)
    depth[100:110, 200:300] = np.linspace(3, 7, 100, dtype=np.float32)
    out = depth_to_control(depth)
    assert out[100:110, 200:300].max() == pytest.approx(1.0, abs=1e-6)
    assert out[100:110, 200:300].min() == pytest.approx(0.0, abs=1e-6)
