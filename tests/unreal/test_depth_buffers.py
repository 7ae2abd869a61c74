"""Depth and color buffers as Unreal hands them over: float16 centimetres with 65504 for the sky."""

import math
import struct
import sys
from array import array
from types import SimpleNamespace

import pytest

from controlbridge_protocol import ImageAttachment
from controlbridge_unreal import buffers


def unreal_like_depth(width, height):
    """An RGBA16F SceneDepth read-back as raw bytes: R = depth in cm, sky rows saturated at 65504."""
    raw = bytearray()
    expected = []
    for y in range(height):
        for x in range(width):
            if y < height // 4:
                d = 65504.0                     # sky: fp16 saturation
            elif y == height // 4 and x == 0:
                d = float("inf")                # a non-finite texel must not break anything
            else:
                d = 150.0 + 37.5 * x + 1000.0 * y / height
            h = struct.unpack("<e", struct.pack("<e", d))[0]   # what an fp16 target stores
            expected.append(h)
            raw += struct.pack("<eeee", d, 0.0, 0.0, 1.0)
    return bytes(raw), expected


def test_float16_rgba_buffer_to_raw_float32():
    width, height = 32, 16
    raw, expected = unreal_like_depth(width, height)
    values = buffers.half_floats(raw, channels=4, channel=0)
    assert len(values) == width * height
    assert values[0] == 65504.0

    depth = buffers.prepare_depth(values, width, height)
    assert depth.far == buffers.FP16_MAX == 65504.0
    out = struct.unpack(f"<{width * height}f", depth.data)
    # raw values, not normalised: centimetres survive exactly (fp16 -> fp32 is exact)
    for got, want in zip(out, expected, strict=True):
        assert (math.isinf(got) and math.isinf(want)) or got == want
    assert out[0] == 65504.0 and out[0] >= depth.far          # sky reads as background on the server
    assert depth.background_fraction == pytest.approx((width * height // 4 + 1) / (width * height))
    assert depth.nearest == pytest.approx(150.0 + 37.5 + 1000.0 * (height // 4) / height)   # (1, 4): (0, 4) is inf
    assert 150.0 < depth.farthest < 65504.0

    att = ImageAttachment.raw_depth("depth", width, height, depth.data, far=depth.far)
    assert att.encoding == "raw_f32" and len(att.data) == 4 * width * height and att.far == 65504.0


def test_max_depth_setting_moves_far_nearer_but_never_past_fp16():
    assert buffers.depth_far(0.0) == 65504.0
    assert buffers.depth_far(5000.0) == 5000.0
    assert buffers.depth_far(1e9) == 65504.0
    d = buffers.prepare_depth([100.0, 6000.0, 65504.0, 0.0], 2, 2, max_depth_cm=5000.0)
    assert d.far == 5000.0 and d.background_fraction == 0.75
    assert struct.unpack("<4f", d.data) == (100.0, 6000.0, 65504.0, 0.0)   # values untouched


def test_all_sky_is_a_clear_error():
    with pytest.raises(buffers.CaptureProblem, match="nothing closer than 655.04 m"):
        buffers.prepare_depth([65504.0] * 6, 3, 2)
    with pytest.raises(buffers.CaptureProblem, match="Max Depth"):
        buffers.prepare_depth([float("nan")] * 4, 2, 2)


def test_size_mismatch_is_a_bug_not_a_silent_crop():
    with pytest.raises(ValueError):
        buffers.prepare_depth([1.0] * 5, 2, 2)
    with pytest.raises(ValueError):
        buffers.half_floats(b"\x00" * 6, channels=4)


def test_float32_is_little_endian_everywhere():
    data = buffers.float32_le_bytes(array("f", [1.0, 65504.0]))
    assert data == struct.pack("<2f", 1.0, 65504.0)
    assert sys.byteorder in ("little", "big")


def test_depth_from_linear_colors_takes_red():
    colors = [SimpleNamespace(r=12.5, g=1.0, b=2.0, a=1.0), SimpleNamespace(r=65504.0, g=0, b=0, a=1)]
    assert list(buffers.depth_from_linear_colors(colors)) == [12.5, 65504.0]


def test_rgba8_from_colors_forces_opaque_and_keeps_row_order():
    colors = [SimpleNamespace(r=i, g=2 * i, b=3 * i, a=0) for i in range(6)]   # 3 x 2, top row first
    out = buffers.rgba8_from_colors(colors, 3, 2)
    assert out[:8] == bytes([0, 0, 0, 255, 1, 2, 3, 255])
    assert out[12:16] == bytes([3, 6, 9, 255])                                  # first pixel of row 2
    assert buffers.rgba8_from_colors(colors, 3, 2, opaque=False)[3] == 0
    with pytest.raises(ValueError):
        buffers.rgba8_from_colors(colors, 2, 2)
