"""Depth as Unreal hands it over (float16 centimetres, 65504 for the sky): the probe's checks and sizes."""

from types import SimpleNamespace

import numpy as np
import pytest

from controlbridge_unreal import buffers, jobs
from fake_unreal import read_exr_red
from ue_scene import synthetic_capture


def test_probe_statistics_in_centimetres():
    values = [65504.0] * 4 + [float("inf"), 150.0, 900.0, 65504.0]
    stats = buffers.depth_stats(values, 4, 2)
    assert stats.far == buffers.FP16_MAX == 65504.0
    assert stats.background_fraction == pytest.approx(6 / 8)         # sky and the non-finite texel
    assert (stats.nearest, stats.farthest) == (150.0, 900.0)


def test_max_depth_setting_moves_far_nearer_but_never_past_fp16():
    assert buffers.depth_far(0.0) == 65504.0
    assert buffers.depth_far(5000.0) == 5000.0
    assert buffers.depth_far(1e9) == 65504.0
    d = buffers.depth_stats([100.0, 6000.0, 65504.0, 0.0], 2, 2, max_depth_cm=5000.0)
    assert d.far == 5000.0 and d.background_fraction == 0.75


def test_all_sky_is_a_clear_error():
    with pytest.raises(buffers.CaptureProblem, match="nothing closer than 655.04 m"):
        buffers.depth_stats([65504.0] * 6, 3, 2)
    with pytest.raises(buffers.CaptureProblem, match="Max Depth"):
        buffers.depth_stats([float("nan")] * 4, 2, 2)


def test_size_mismatch_is_a_bug_not_a_silent_crop():
    with pytest.raises(ValueError):
        buffers.depth_stats([1.0] * 5, 2, 2)
    with pytest.raises(ValueError):
        buffers.probe_size(0, 10)


@pytest.mark.parametrize("size,expected", [((768, 512), (48, 32)), ((2048, 1152), (48, 27)), ((512, 768), (32, 48)),
                                           ((40, 16), (40, 16)), ((4096, 64), (48, 1))])
def test_probe_keeps_the_aspect_and_stays_small(size, expected):
    assert buffers.probe_size(*size) == expected


def test_depth_from_linear_colors_takes_red():
    colors = [SimpleNamespace(r=12.5, g=1.0, b=2.0, a=1.0), SimpleNamespace(r=65504.0, g=0, b=0, a=1)]
    assert list(buffers.depth_from_linear_colors(colors)) == [12.5, 65504.0]


def test_depth_goes_out_as_the_engines_exr_with_far():
    cap = synthetic_capture(16, 12)
    color, depth = jobs.attachments(cap)
    assert (color.encoding, color.data[:4]) == ("png", b"\x89PNG")
    assert depth.encoding == "exr" and depth.is_scalar and depth.far == 65504.0
    assert (depth.width, depth.height) == (16, 12) and depth.data == cap.depth_exr
    red = np.array(read_exr_red(depth.data)).reshape(12, 16)
    assert red[0, 0] == 65504.0 and red[-1, 0] == 500.0               # raw cm, top row first, not normalised
