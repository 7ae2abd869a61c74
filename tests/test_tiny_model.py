import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from controlbridge.engine import tiny_model
from controlbridge.engine.tiny_model import (
    TINY_MODEL_VERSION,
    TinyModelPaths,
    build_tiny_model,
    ensure_tiny_model,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TinyModelPaths:
    return ensure_tiny_model(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def pipe(model):
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline

    controlnets = [ControlNetModel.from_pretrained(model.controlnets[n]) for n in ("depth", "canny")]
    pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
        model.base,
        controlnet=controlnets,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _noise_image(size: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _run(pipe, size, depth, canny, seed=0) -> np.ndarray:
    result = pipe(
        "a photo of a cat in a room, highly detailed",
        negative_prompt="blurry",
        image=_noise_image(size, 1),
        control_image=[depth, canny],
        num_inference_steps=4,
        strength=0.8,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(seed),
    )
    return np.asarray(result.images[0])


def _tensors(root: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(root.rglob("*.safetensors")):
        for key, tensor in load_file(file).items():
            out[f"{file.relative_to(root)}:{key}"] = tensor
    return out


def test_build_is_deterministic(tmp_path):
    a = _tensors(build_tiny_model(tmp_path / "a").root)
    b = _tensors(build_tiny_model(tmp_path / "b").root)
    assert a.keys() == b.keys() and len(a) > 100
    for key in a:
        assert torch.equal(a[key].view(torch.uint8), b[key].view(torch.uint8)), key


def test_build_does_not_disturb_callers_rng(tmp_path):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_tiny_model(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_layout_and_info(model):
    info = json.loads((model.root / "controlbridge_model.json").read_text())
    assert info["version"] == TINY_MODEL_VERSION
    assert info["family"] == "sd15"
    assert info["native_resolution"] == model.native_resolution == 128
    assert model.root.name == TINY_MODEL_VERSION
    assert (model.base / "model_index.json").is_file()
    assert set(model.controlnets) == {"depth", "canny"}


def test_ensure_reuses_cached_model(tmp_path, monkeypatch):
    first = ensure_tiny_model(tmp_path)

    def no_rebuild(target):
        raise AssertionError("rebuilt a complete model")

    monkeypatch.setattr(tiny_model, "build_tiny_model", no_rebuild)
    assert ensure_tiny_model(tmp_path) == first
    # No temp folders are left behind.
    assert [p.name for p in tmp_path.iterdir()] == [TINY_MODEL_VERSION]


def test_ensure_uses_env_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTROLBRIDGE_CACHE_DIR", str(tmp_path / "env"))
    assert ensure_tiny_model().root == tmp_path / "env" / TINY_MODEL_VERSION


def test_ensure_ignores_half_built_leftovers(tmp_path):
    # A crashed build: an old temp folder, which gets cleaned up...
    stale = tmp_path / f".{TINY_MODEL_VERSION}.tmp-crashed"
    (stale / "base").mkdir(parents=True)
    (stale / "base" / "model_index.json").write_text("{}")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    # ...and a fresh one that may belong to a racing process, which is left alone.
    racing = tmp_path / f".{TINY_MODEL_VERSION}.tmp-racing"
    racing.mkdir()

    paths = ensure_tiny_model(tmp_path)
    assert paths.root == tmp_path / TINY_MODEL_VERSION
    assert tiny_model._is_complete(paths.root)
    assert not stale.exists() and racing.exists()


def test_ensure_replaces_incomplete_model_folder(tmp_path):
    (tmp_path / TINY_MODEL_VERSION / "base").mkdir(parents=True)
    paths = ensure_tiny_model(tmp_path)
    assert tiny_model._is_complete(paths.root)


def test_ensure_loses_race_gracefully(tmp_path, monkeypatch):
    real_build = tiny_model.build_tiny_model

    def build_while_another_process_finishes_first(target):
        real_build(tmp_path / TINY_MODEL_VERSION)  # the other process wins the rename
        return real_build(target)

    monkeypatch.setattr(tiny_model, "build_tiny_model", build_while_another_process_finishes_first)
    paths = ensure_tiny_model(tmp_path)
    assert tiny_model._is_complete(paths.root)
    assert [p.name for p in tmp_path.iterdir()] == [TINY_MODEL_VERSION]


def test_tokenizer_handles_arbitrary_prompts(pipe):
    tok = pipe.tokenizer
    ids = tok("Ünïcödé, emoji 🎨 & numbers 3.14 — a photo!").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids[1:-1]
    long = tok("word " * 200, padding="max_length", truncation=True, max_length=tok.model_max_length)
    assert len(long.input_ids) == tok.model_max_length == 77


def test_img2img_with_both_controlnets(pipe, model):
    size = model.native_resolution
    depth, canny = _noise_image(size, 2), _noise_image(size, 3)
    out = _run(pipe, size, depth, canny)
    assert out.shape == (size, size, 3)
    assert np.array_equal(out, _run(pipe, size, depth, canny)), "same seed must give same pixels"
    assert not np.array_equal(out, _run(pipe, size, depth, canny, seed=1))


@pytest.mark.parametrize("which", ["depth", "canny"])
def test_control_image_changes_output(pipe, model, which):
    size = model.native_resolution
    depth, canny = _noise_image(size, 2), _noise_image(size, 3)
    out = _run(pipe, size, depth, canny)
    flat = Image.new("RGB", (size, size), (128, 128, 128))
    changed = _run(pipe, size, flat, canny) if which == "depth" else _run(pipe, size, depth, flat)
    # Random weights leave the output dominated by the seed's noise; the control's share is a
    # pixel level or so on average (a no-op ControlNet gives ~0.001).
    assert np.abs(out.astype(int) - changed.astype(int)).mean() > 0.25
