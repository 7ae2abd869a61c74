"""Upscaler models (ESRGAN / RealESRGAN RRDBNet): loading both key layouts, scales, tiling, bad files."""
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from controlbridge.engine.upscalers import RRDBNet, Upscaler, build_tiny_upscaler, load_upscaler


def _image(h=20, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["basicsr", "esrgan"])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_output_size_and_content(tmp_path, layout, scale):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors", scale=scale, layout=layout))
    assert (up.scale, up.layout) == (scale, layout)
    out = up.upscale(_image(), tile=None)
    assert out.shape == (20 * scale, 24 * scale, 3) and out.dtype == np.uint8
    assert out.std() > 1   # not clamped flat: the tiny model's output is in range


def test_layouts_give_identical_output(tmp_path):
    a = load_upscaler(build_tiny_upscaler(tmp_path / "a.safetensors", layout="basicsr", seed=3))
    b = load_upscaler(build_tiny_upscaler(tmp_path / "b.pth", layout="esrgan", seed=3))
    assert (a.layout, b.layout) == ("basicsr", "esrgan")
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    img = _image()
    assert np.array_equal(a.upscale(img), b.upscale(img))


def test_pth_params_ema_and_architecture_inferred(tmp_path):
    path = build_tiny_upscaler(tmp_path / "RealESRGAN_x2plus.pth", scale=2, num_feat=12, num_block=2, num_grow_ch=6)
    assert "params_ema" in torch.load(path, weights_only=True)
    n = load_upscaler(path).net
    assert (n.scale, n.unshuffle, n.num_feat, n.num_block, n.num_grow_ch) == (2, 2, 12, 2, 6)


def test_deterministic_build(tmp_path):
    img = _image(8, 8)
    outs = [load_upscaler(build_tiny_upscaler(tmp_path / f"{i}.safetensors", seed=7)).upscale(img) for i in range(2)]
    assert np.array_equal(*outs)


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_matches_untiled(tmp_path, scale):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors", scale=scale))
    img = _image(37, 29)   # odd sizes: partial edge tiles, and padding for pixel-unshuffle at x2
    whole = up.upscale(img, tile=None).astype(int)
    calls = []
    tiled = up.upscale(img, tile=12, overlap=8, progress=lambda d, t: calls.append((d, t))).astype(int)
    assert tiled.shape == whole.shape == (37 * scale, 29 * scale, 3)
    assert np.abs(tiled - whole).max() <= 2
    assert len(calls) == 4 * 3 and calls[-1] == (12, 12)


def test_device_dtype(tmp_path):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors"))
    ref = up.upscale(_image(8, 8)).astype(int)
    assert up.to("cpu", torch.bfloat16) is up and next(up.net.parameters()).dtype == torch.bfloat16
    assert np.abs(up.upscale(_image(8, 8)).astype(int) - ref).mean() < 8


def test_corrupt_file(tmp_path):
    for name in ("bad.safetensors", "bad.pth"):
        (tmp_path / name).write_bytes(b"\x00not a model at all" * 10)
        with pytest.raises(ValueError, match=f"{name}: corrupt"):
            load_upscaler(tmp_path / name)


def test_unrelated_safetensors(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({"down_blocks.0.conv.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(ValueError, match=r"unet\.safetensors.*ESRGAN / RealESRGAN RRDBNet"):
        load_upscaler(path)


class _Payload:   # a pickled object: weights_only must refuse it without constructing it
    def __reduce__(self):
        return (pytest.fail, ("unpickled an arbitrary object",))


def test_pickled_object_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"params_ema": _Payload()}, fh, protocol=2)
    with pytest.raises(ValueError, match="evil.pth: refused: it holds pickled Python objects"):
        load_upscaler(path)
    torch.save({"conv_first.weight": torch.zeros(1), "note": "a string"}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="mixed.pt"):
        load_upscaler(tmp_path / "mixed.pt")


def test_truncated_rrdbnet_refused(tmp_path):
    sd = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).state_dict()
    del sd["conv_hr.weight"]
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="partial.safetensors"):
        load_upscaler(tmp_path / "partial.safetensors")


def test_bad_input(tmp_path):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        up.upscale(np.zeros((8, 8, 4), np.uint8))
    assert isinstance(up, Upscaler) and "x4" in repr(up)
