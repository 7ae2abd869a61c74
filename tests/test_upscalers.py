"""Upscaler models through spandrel: architectures detected from the weights, scales, tiling, safe loading,
bad files; and the hires fix using them through a real server."""
import pickle
import sys

import numpy as np
import pytest
import spandrel
import torch
from safetensors.torch import load_file, save_file

from controlbridge_protocol import Client, ErrorCode, HiresSettings, JobFailed, Progress
from controlbridge.engine.upscalers import (TINY_ARCHITECTURES, Upscaler, UpscalerUnavailable, build_tiny_upscaler,
                                            load_upscaler)
from controlbridge.server.outputs import read_job
from helpers import blockout_images, decode_png, quick_settings

DETECTED = {"realesrgan": "ESRGAN", "esrgan": "ESRGAN", "compact": "Compact", "swinir": "SwinIR"}


def _image(h=20, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_each_architecture_is_detected_with_its_scale(tmp_path, arch, scale):
    ext = ".pth" if scale == 2 else ".safetensors"
    up = load_upscaler(build_tiny_upscaler(tmp_path / f"m{ext}", scale=scale, arch=arch))
    assert (up.architecture, up.scale) == (DETECTED[arch], scale)
    assert (up.device, up.dtype) == (torch.device("cpu"), torch.float32)
    out = up.upscale(_image(), tile=None)
    assert out.shape == (20 * scale, 24 * scale, 3) and out.dtype == np.uint8
    assert out.std() > 1   # not clamped flat: the tiny model's output is in range


def test_realesrgan_unshuffle_is_detected(tmp_path):
    # RealESRGAN x2 keeps x4's two upsampling stages and pixel-unshuffles its input by 2.
    path = build_tiny_upscaler(tmp_path / "RealESRGAN_x2plus.pth", scale=2)
    assert "params_ema" in torch.load(path, weights_only=True)
    up = load_upscaler(path)
    assert up.scale == 2 and "unshuffle" in up.model.tags and up.net.shuffle_factor == 2


def test_both_esrgan_key_layouts_load_to_the_same_network(tmp_path):
    a = load_upscaler(build_tiny_upscaler(tmp_path / "a.safetensors", arch="realesrgan", seed=3))
    b = load_upscaler(build_tiny_upscaler(tmp_path / "b.pth", arch="esrgan", seed=3))
    assert set(load_file(tmp_path / "a.safetensors")).isdisjoint(torch.load(tmp_path / "b.pth", weights_only=True))
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    img = _image()
    assert np.array_equal(a.upscale(img), b.upscale(img))


def test_deterministic_build(tmp_path):
    img = _image(8, 8)
    outs = [load_upscaler(build_tiny_upscaler(tmp_path / f"{i}.safetensors", arch="compact", seed=7)).upscale(img)
            for i in range(2)]
    assert np.array_equal(*outs)


@pytest.mark.parametrize("arch, scale, max_diff, mean_diff", [
    ("realesrgan", 2, 2, 0.2), ("realesrgan", 4, 2, 0.2), ("esrgan", 2, 2, 0.2), ("compact", 4, 2, 0.2),
    ("swinir", 2, 8, 0.5),   # window attention sees the tile, not the image: close, never exact
])
def test_tiled_matches_untiled(tmp_path, arch, scale, max_diff, mean_diff):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors", scale=scale, arch=arch))
    img = _image(37, 29)   # odd sizes: partial edge tiles, and padding for pixel-unshuffle at x2
    whole = up.upscale(img, tile=None).astype(int)
    calls = []
    tiled = up.upscale(img, tile=12, overlap=8, progress=lambda d, t: calls.append((d, t))).astype(int)
    assert tiled.shape == whole.shape == (37 * scale, 29 * scale, 3)
    diff = np.abs(tiled - whole)
    assert diff.max() <= max_diff and diff.mean() < mean_diff
    assert len(calls) == 4 * 3 and calls[-1] == (12, 12)


def test_device_dtype(tmp_path):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors"))
    ref = up.upscale(_image(8, 8)).astype(int)
    assert up.to("cpu", torch.bfloat16) is up and next(up.net.parameters()).dtype == torch.bfloat16
    assert up.dtype == torch.bfloat16
    assert np.abs(up.upscale(_image(8, 8)).astype(int) - ref).mean() < 8


def test_a_dtype_the_architecture_cannot_run_falls_back_to_float32(tmp_path):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors", arch="swinir"))
    assert not up.model.supports_half
    assert up.to("cpu", torch.float16).dtype == torch.float32
    assert up.upscale(_image(16, 16)).shape == (64, 64, 3)


def test_corrupt_file(tmp_path):
    for name in ("bad.safetensors", "bad.pth"):
        (tmp_path / name).write_bytes(b"\x00not a model at all" * 10)
        with pytest.raises(UpscalerUnavailable, match=f"{name}: corrupt"):
            load_upscaler(tmp_path / name)


def test_unknown_weights_name_what_is_supported(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({"down_blocks.0.conv.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(UpscalerUnavailable, match=r"unet\.safetensors: not an upscaler architecture spandrel") as info:
        load_upscaler(path)
    assert "down_blocks.0.conv.weight" in str(info.value)
    for name in ("ESRGAN", "RealESRGAN Compact", "SwinIR", "HAT", "DAT"):
        assert f" {name}," in str(info.value)


class _Payload:   # a pickled object: weights_only must refuse it without constructing it
    def __reduce__(self):
        return (pytest.fail, ("unpickled an arbitrary object",))


def test_pickled_object_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"params_ema": _Payload()}, fh, protocol=2)
    with pytest.raises(UpscalerUnavailable, match="evil.pth: refused: it holds pickled Python objects"):
        load_upscaler(path)
    torch.save({"conv_first.weight": torch.zeros(1), "note": "a string"}, tmp_path / "mixed.pt")
    with pytest.raises(UpscalerUnavailable, match="mixed.pt: not a state dict of tensors"):
        load_upscaler(tmp_path / "mixed.pt")


def test_detected_but_truncated_weights_refused(tmp_path):
    sd = load_file(build_tiny_upscaler(tmp_path / "m.safetensors"))
    del sd["conv_hr.weight"]
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UpscalerUnavailable, match="partial.safetensors: looks like ESRGAN but its weights do not fit"):
        load_upscaler(tmp_path / "partial.safetensors")


def test_a_grayscale_model_is_refused(tmp_path):
    net = spandrel.architectures.Compact.Compact(num_in_ch=1, num_out_ch=1, num_feat=4, num_conv=1, upscale=2)
    save_file(net.state_dict(), str(tmp_path / "gray.safetensors"))
    with pytest.raises(UpscalerUnavailable, match="gray.safetensors: a RealESRGAN Compact model for 1-channel images"):
        load_upscaler(tmp_path / "gray.safetensors")


def test_without_spandrel_loading_says_which_package_to_install(tmp_path, monkeypatch):
    path = build_tiny_upscaler(tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "spandrel", None)     # what `import spandrel` sees when it is not installed
    with pytest.raises(UpscalerUnavailable, match=r"the Python package `spandrel`.*pip install 'spandrel"):
        load_upscaler(path)


def test_bad_input(tmp_path):
    up = load_upscaler(build_tiny_upscaler(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        up.upscale(np.zeros((8, 8, 4), np.uint8))
    assert isinstance(up, Upscaler) and "ESRGAN x4" in repr(up)


# ----------------------------------------------------------------------------- through a real server

UPSCALERS = ("tiny-realesrgan-x2.pth", "tiny-compact-x4.safetensors")
UNLOADABLE = ("unet.safetensors", "truncated-x4.pth")   # listed (by extension), but not upscalers that load


@pytest.fixture(scope="module")
def upscaler_models(tmp_path_factory):
    models = tmp_path_factory.mktemp("ComfyUI") / "models"
    folder = models / "upscale_models"
    build_tiny_upscaler(folder / UPSCALERS[0], scale=2, arch="realesrgan")
    build_tiny_upscaler(folder / UPSCALERS[1], scale=4, arch="compact")
    save_file({"down_blocks.0.conv.weight": torch.zeros(4, 4, 3, 3)}, str(folder / UNLOADABLE[0]))
    whole = build_tiny_upscaler(folder / UNLOADABLE[1], arch="esrgan").read_bytes()
    (folder / UNLOADABLE[1]).write_bytes(whole[:len(whole) // 2])   # an interrupted download
    return models


def test_hires_fix_with_each_architecture_from_the_library(make_server, upscaler_models, tiny_model):
    server = make_server(models_dir=upscaler_models)
    images = blockout_images(160, 96)
    with Client(server.url) as c:
        assert sorted(e["name"] for e in c.capabilities.library["upscaler"]) == sorted(UPSCALERS + UNLOADABLE)
        plain = decode_png(c.run(quick_settings(hires=HiresSettings(scale=1.5, denoise=0.4, steps=4)), images).image.data)
        for name in UPSCALERS:
            events = []
            result = c.run(quick_settings(hires=HiresSettings(scale=1.5, denoise=0.4, steps=4, upscaler=name)),
                           images, events.append)
            statuses = [e.status for e in events if isinstance(e, Progress)]
            assert any(f"loading upscaler {name}" in s for s in statuses) and any("hires fix" in s for s in statuses)
            assert (result.image.width, result.image.height) == (160, 96)
            assert read_job(result.saved_path)["working_size"] == [256, 144]   # 168x96 x 1.5, multiples of 8
            assert not np.array_equal(decode_png(result.image.data), plain)   # the model's pixels, not lanczos'
    loaded = {name: tiny_model.named[f"upscaler:{name}"] for name in UPSCALERS}   # cached on the model
    assert {name: (u.architecture, u.scale) for name, u in loaded.items()} == {
        UPSCALERS[0]: ("ESRGAN", 2), UPSCALERS[1]: ("Compact", 4)}


@pytest.mark.parametrize("name, why", [(UNLOADABLE[0], "not an upscaler architecture spandrel"),
                                       (UNLOADABLE[1], "corrupt or not a .pth weights file")])
def test_a_listed_upscaler_that_does_not_load_fails_the_job_as_unavailable(make_server, upscaler_models, name, why):
    server = make_server(models_dir=upscaler_models)
    with Client(server.url) as c:
        assert name in [e["name"] for e in c.capabilities.library["upscaler"]]
        with pytest.raises(JobFailed) as info:
            c.run(quick_settings(hires=HiresSettings(upscaler=name)), blockout_images(64, 48), timeout=60)
        assert info.value.code == ErrorCode.UNAVAILABLE
        assert f"{name}: {why}" in str(info.value)
        assert c.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64   # the server serves on
