"""FLUX as ComfyUI users keep it: diffusion_models/flux1-dev.safetensors (BFL layout) with text_encoders/clip_l +
t5xxl and vae/ae, loaded offline; detection from headers; real server jobs naming the transformer file."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from controlbridge_protocol import Client, ErrorCode, JobFailed
from controlbridge.library.families import DIFFUSION_MODEL, FLUX, TEXT_ENCODER, VAE, Detection, detect_keys
from controlbridge.library.flux_single_file import (MissingCompanion, flux_to_diffusers, flux_to_original,
                                                    load_flux_single_file, save_flux_single_files,
                                                    transformer_config)
from controlbridge.library.single_file import CONFIG_ROOT, clip_to_original, load_single_file
from controlbridge.server.outputs import read_job
from helpers import blockout_images, quick_settings
from library_layouts import flux_original_shapes

TRANSFORMER = "flux1-dev.safetensors"


@pytest.fixture(scope="module")
def tiny_flux_pipe(tiny_flux):
    from diffusers import FluxPipeline
    pipe = FluxPipeline.from_pretrained(tiny_flux.base)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def comfy_models(root: Path, pipe, tiny_flux, dtype=None, t5_name="t5xxl_fp16.safetensors", skip=()) -> Path:
    """A ComfyUI models/ folder holding the tiny FLUX as single files, its tokenizers where the docs say, the
    tiny text encoders' and autoencoder's architecture in configs/flux/ (the transformer's is read from its file),
    and the tiny FLUX ControlNets."""
    models = root / "models"
    written = save_flux_single_files(pipe, models, TRANSFORMER, dtype=dtype, t5_name=t5_name)
    for role in skip:
        written[role].unlink()
    shutil.copytree(tiny_flux.base / "tokenizer", models / "tokenizers" / "clip-vit-large-patch14")
    shutil.copytree(tiny_flux.base / "tokenizer_2", models / "tokenizers" / "t5-v1_1-xxl")
    for component in ("text_encoder", "text_encoder_2", "vae"):
        shutil.copytree(tiny_flux.base / component, models / "configs" / "flux" / component,
                        ignore=shutil.ignore_patterns("*.safetensors"))
    for name, folder in tiny_flux.controlnets.items():
        shutil.copytree(folder, models / "controlnet" / f"flux-{name}")
    return models


def pixels(pipe):
    return pipe("a house", num_inference_steps=2, height=64, width=64, guidance_scale=3.5, output_type="np",
                generator=torch.Generator().manual_seed(1)).images[0]


# ------------------------------------------------------------------------------------------- headers only

def real_clip_l_shapes():
    from transformers import CLIPTextConfig, CLIPTextModel
    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIG_ROOT / "flux" / "text_encoder"))
    return {k: tuple(v.shape) for k, v in clip_to_original(model.state_dict()).items()}


def real_t5xxl_shapes():
    from transformers import T5Config, T5EncoderModel
    with torch.device("meta"):
        model = T5EncoderModel(T5Config.from_pretrained(CONFIG_ROOT / "flux" / "text_encoder_2"))
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def test_comfyui_flux_files_are_told_apart_by_their_headers():
    assert real_t5xxl_shapes()["shared.weight"] == (32128, 4096)
    assert detect_keys(real_t5xxl_shapes()) == Detection(TEXT_ENCODER, (FLUX,), "transformers", "t5xxl")
    umt5 = dict(real_t5xxl_shapes(), **{"encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight":
                                        (32, 64)})                  # Wan's umt5_xxl: not FLUX's
    assert detect_keys(umt5) == Detection(TEXT_ENCODER, (), "transformers", "umt5")
    clip = detect_keys(real_clip_l_shapes())
    assert (clip.kind, clip.families, clip.variant) == (TEXT_ENCODER, (FLUX,), "clip_l")
    transformer = detect_keys(flux_original_shapes())
    assert (transformer.kind, transformer.family, transformer.variant) == (DIFFUSION_MODEL, FLUX, None)


def test_the_shipped_configs_fit_bfls_layouts():
    """The full-size transformer built from the config read off flux1-dev's header takes exactly the converted
    weights' names and shapes; the shipped autoencoder, written as BFL's ae.safetensors, is a FLUX VAE diffusers converts back."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from diffusers.loaders import single_file_utils as sfu

    from controlbridge.library.single_file import vae_to_original
    shapes = flux_original_shapes()
    config = transformer_config(shapes, dict(FluxTransformer2DModel.load_config(CONFIG_ROOT / "flux" / "transformer")))
    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(config)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIG_ROOT / "flux" / "vae"))
    converted = flux_to_diffusers({k: torch.empty(v, device="meta") for k, v in shapes.items()})
    expected = {k: tuple(v.shape) for k, v in transformer.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: expected[k] for k in converted}
    assert {k for k in expected if k.endswith(".weight")} <= converted.keys()   # the sample lists few biases
    ae = vae_to_original(vae.state_dict(), len(vae.config.block_out_channels))
    assert detect_keys({k: tuple(v.shape) for k, v in ae.items()}) == Detection(VAE, (FLUX,), "original")
    assert sfu.convert_ldm_vae_checkpoint(ae, vae.config).keys() == vae.state_dict().keys()


def test_the_transformer_architecture_is_read_from_its_header():
    base = dict(__import__("json").loads((CONFIG_ROOT / "flux" / "transformer" / "config.json").read_text()))
    dev = transformer_config(flux_original_shapes(), base)
    assert dev == base | {"out_channels": 64}                     # flux1-dev: exactly the shipped config
    schnell = {k: v for k, v in flux_original_shapes("model.diffusion_model.").items() if "guidance_in" not in k}
    assert transformer_config(schnell, base)["guidance_embeds"] is False
    lite = transformer_config(flux_original_shapes(depth=8), base)   # e.g. Flux.1 Lite: fewer double blocks
    assert (lite["num_layers"], lite["num_single_layers"]) == (8, 38)


def test_the_bfl_layout_round_trips_every_tensor(tiny_flux_pipe):
    state = tiny_flux_pipe.transformer.state_dict()
    original = flux_to_original(state)
    assert "double_blocks.0.img_attn.qkv.weight" in original and "single_blocks.0.linear1.weight" in original
    back = flux_to_diffusers({f"model.diffusion_model.{k}": v for k, v in original.items()})
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


# ------------------------------------------------------------------------------------------- loading

def test_single_files_load_offline_with_the_same_pixels(tmp_path, tiny_flux, tiny_flux_pipe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = comfy_models(tmp_path, tiny_flux_pipe, tiny_flux)
    pipe = load_single_file(models / "diffusion_models" / TRANSFORMER, models_dirs=[models])
    assert type(pipe).__name__ == "FluxPipeline"
    np.testing.assert_allclose(pixels(pipe), pixels(tiny_flux_pipe), atol=1e-5)


def test_fp8_files_are_upcast_to_the_chosen_dtype(tmp_path, tiny_flux, tiny_flux_pipe):
    models = comfy_models(tmp_path, tiny_flux_pipe, tiny_flux, dtype=torch.float8_e4m3fn,
                          t5_name="t5xxl_fp8_e4m3fn.safetensors")
    pipe = load_flux_single_file(models / "diffusion_models" / TRANSFORMER, models_dirs=[models],
                                 dtype=torch.bfloat16)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert {p.dtype for p in getattr(pipe, name).parameters()} == {torch.bfloat16}, name
    assert np.isfinite(pixels(pipe)).all()


def test_scaled_fp8_weights_are_scaled_back(tmp_path):
    """ComfyUI's *_fp8_scaled files: weight in fp8 times a per-tensor scale_weight; a scaled_fp8 marker."""
    from safetensors.torch import save_file

    from controlbridge.library.flux_single_file import read_state
    stored = (torch.randn(4, 4) * 8).to(torch.float8_e4m3fn)
    save_file({"a.weight": stored, "a.scale_weight": torch.tensor(0.25), "a.bias": torch.ones(4),
               "scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}, str(tmp_path / "scaled.safetensors"))
    state = read_state(tmp_path / "scaled.safetensors", torch.bfloat16)
    assert set(state) == {"a.weight", "a.bias"} and state["a.weight"].dtype == torch.bfloat16
    assert torch.equal(state["a.weight"], stored.to(torch.bfloat16) * 0.25)


def test_a_full_precision_companion_is_preferred_over_fp8(tmp_path, tiny_flux, tiny_flux_pipe):
    from controlbridge.library.flux_single_file import find_companions
    models = comfy_models(tmp_path, tiny_flux_pipe, tiny_flux)
    fp8 = models / "clip" / "a_t5xxl_fp8_e4m3fn.safetensors"        # sorts first, other folder: still second
    fp8.parent.mkdir()
    shutil.copy(models / "text_encoders" / "t5xxl_fp16.safetensors", fp8)
    from safetensors.torch import load_file, save_file
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in load_file(fp8).items()}, str(fp8))
    found = find_companions([models])
    assert found["t5xxl"].name == "t5xxl_fp16.safetensors" and found["clip_l"].name == "clip_l.safetensors"
    (models / "text_encoders" / "t5xxl_fp16.safetensors").unlink()
    assert find_companions([models])["t5xxl"] == fp8


def test_a_missing_companion_is_named_with_its_folder(tmp_path, tiny_flux, tiny_flux_pipe):
    models = comfy_models(tmp_path, tiny_flux_pipe, tiny_flux, skip=("ae",))
    with pytest.raises(MissingCompanion, match=r"FLUX autoencoder \(VAE\) \(ae.safetensors\) in .*/models/vae/"):
        load_flux_single_file(models / "diffusion_models" / TRANSFORMER, models_dirs=[models])


# ------------------------------------------------------------------------------------------- a real server

@pytest.fixture(scope="module")
def flux_models(tmp_path_factory, tiny_flux, tiny_flux_pipe):
    return comfy_models(tmp_path_factory.mktemp("ComfyUI"), tiny_flux_pipe, tiny_flux)


def test_a_job_naming_the_transformer_file_runs_flux_with_its_controlnets(make_server, flux_models):
    server = make_server(models_dir=flux_models)
    with Client(server.url) as c:
        listed = {m["name"]: m for m in c.capabilities.models}
        assert listed[TRANSFORMER]["family"] == FLUX and listed[TRANSFORMER]["kind"] == DIFFUSION_MODEL
        encoders = {e["name"]: e.get("variant") for e in c.capabilities.library["text_encoder"]}
        assert encoders == {"clip_l.safetensors": "clip_l", "t5xxl_fp16.safetensors": "t5xxl"}
        assert [v["name"] for v in c.capabilities.library["vae"]] == ["ae.safetensors"]
        result = c.run(quick_settings(model=TRANSFORMER, cfg=3.5, negative_prompt=""), blockout_images(96, 64))
    assert (result.image.width, result.image.height) == (96, 64)
    job = read_job(result.saved_path)
    assert job["model"]["name"] == TRANSFORMER and job["model"]["family"] == FLUX
    assert set(job["controls"]) == {"depth", "canny"}                # the library's FLUX ControlNets ran


def test_a_missing_t5_is_refused_naming_the_folder(make_server, tmp_path, tiny_flux, tiny_flux_pipe):
    models = comfy_models(tmp_path, tiny_flux_pipe, tiny_flux, skip=("t5xxl",))
    server = make_server(models_dir=models)
    with Client(server.url) as c:
        with pytest.raises(JobFailed) as failed:
            c.run(quick_settings(model=TRANSFORMER, cfg=3.5, negative_prompt=""), blockout_images(64, 64))
        assert failed.value.code == ErrorCode.UNKNOWN_MODEL
        assert "T5-XXL text encoder" in str(failed.value) and str(models / "text_encoders") in str(failed.value)
        assert c.run(quick_settings(), blockout_images(64, 64)).image.width == 64     # the server keeps serving
