"""The model library through a real server: names, families, LoRAs, LRU loading, batches, hires fix, FLUX."""
import shutil

import numpy as np
import pytest
import torch

from controlbridge_protocol import (Client, ControlNetSettings, ErrorCode, HiresSettings, JobFailed, LoraSettings,
                                   Progress, Result)
from controlbridge.server.outputs import read_job
from helpers import blockout_images, decode_png, quick_settings
from library_layouts import kohya_lora_shapes, write_sparse_safetensors


def write_tiny_lora(tiny_sd15, path, trigger="tinystyle"):
    """A real (peft, non-zero) LoRA for the tiny SD1.5 UNet, with a trigger phrase in its metadata."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15.base, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name)
    save_file(load_file(path), path, metadata={"format": "pt", "modelspec.trigger_phrase": trigger})
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_sd15, tiny_sdxl):
    from controlbridge.engine.upscalers import build_tiny_upscaler
    models = tmp_path_factory.mktemp("ComfyUI") / "models"
    shutil.copytree(tiny_sdxl.base, models / "diffusers" / "tiny-sdxl")
    shutil.copytree(tiny_sd15.controlnets["depth"], models / "controlnet" / "other-depth")
    write_tiny_lora(tiny_sd15, models / "loras" / "tiny_style.safetensors")
    write_sparse_safetensors(models / "loras" / "xl_only.safetensors", kohya_lora_shapes("sdxl"))
    build_tiny_upscaler(models / "upscale_models" / "tiny-x2.safetensors", scale=2)
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / "corrupt.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return models


@pytest.fixture
def library_server(make_server, models_dir):
    return make_server(models_dir=models_dir)


def test_the_welcome_lists_the_library_with_families_and_trigger_words(library_server):
    with Client(library_server.url) as c:
        caps = c.capabilities
    models = {m["name"]: m for m in caps.models}
    assert models["tiny"]["loaded"] and models["tiny-sdxl"]["family"] == "sdxl"
    assert {"tiny-flux"} <= set(models)
    loras = {e["name"]: e for e in caps.library["lora"]}
    assert loras["tiny_style.safetensors"]["trigger_words"] == ["tinystyle"]
    assert loras["xl_only.safetensors"]["family"] == "sdxl"
    assert [e["name"] for e in caps.library["upscaler"]] == ["tiny-x2.safetensors"]
    assert any("corrupt.safetensors" in p["path"] for p in caps.library["problems"])


def test_lora_applies_and_unloading_restores_the_base_pixels(library_server):
    images = blockout_images(96, 64)
    with Client(library_server.url) as c:
        before = decode_png(c.run(quick_settings(), images).image.data)
        styled = decode_png(c.run(quick_settings(loras=[LoraSettings("tiny_style.safetensors", 1.0)]),
                                  images).image.data)
        after = decode_png(c.run(quick_settings(), images).image.data)
    assert not np.array_equal(before, styled)
    assert np.array_equal(before, after)


@pytest.mark.parametrize("settings, code, words", [
    (quick_settings(loras=[LoraSettings("xl_only.safetensors")]), ErrorCode.WRONG_FAMILY, "sdxl lora"),
    (quick_settings(loras=[LoraSettings("../../etc/passwd")]), ErrorCode.UNKNOWN_MODEL, "passwd"),
    (quick_settings(model="corrupt.safetensors"), ErrorCode.UNKNOWN_MODEL, "corrupt.safetensors"),
    (quick_settings(model="tiny-flux", sampler="dpmpp_2m"), ErrorCode.UNKNOWN_SAMPLER, "flow matching"),
    (quick_settings(hires=HiresSettings(upscaler="nope.pth")), ErrorCode.UNKNOWN_MODEL, "nope.pth"),
])
def test_bad_library_names_are_clear_errors_and_the_server_keeps_serving(library_server, settings, code, words):
    with Client(library_server.url) as c:
        with pytest.raises(JobFailed) as info:
            c.run(settings, blockout_images(64, 48), timeout=60)
        assert info.value.code == code and words in str(info.value), str(info.value)
        assert c.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64


def test_models_load_on_demand_and_the_least_recently_used_is_unloaded(make_server, models_dir):
    server = make_server(models_dir=models_dir, memory_budget_gb=1e-9)   # room for one model at a time
    statuses = []
    with Client(server.url) as c:
        result = c.run(quick_settings(model="tiny-sdxl"), blockout_images(96, 64),
                       lambda e: statuses.append(e.status) if isinstance(e, Progress) and e.status else None)
        assert result.settings.model == "tiny-sdxl" and read_job(result.saved_path)["model"]["family"] == "sdxl"
        assert any("loading model tiny-sdxl" in s for s in statuses)
        assert any("unloading model tiny" in s for s in statuses)
        assert server.server.models.loaded_names() == ["tiny-sdxl"]
        c.run(quick_settings(), blockout_images(64, 48))                    # the default comes back
        assert server.server.models.loaded_names() == ["tiny"]


def test_a_named_controlnet_from_the_library(library_server):
    settings = quick_settings()
    settings.controlnets["depth"] = ControlNetSettings(0.8, model="other-depth")
    with Client(library_server.url) as c:
        assert c.run(settings, blockout_images(64, 48)).settings.controlnets["depth"].model == "other-depth"


def test_a_batch_gives_consecutive_seeds_and_one_file_each(library_server):
    with Client(library_server.url) as c:
        request = c.submit(quick_settings(seed=100, batch_size=3), blockout_images(64, 48))
        results = []
        while len(results) < 3:
            event = c.next_event(timeout=60)
            assert event is not None
            if isinstance(event, Result):
                results.append(event)
    assert [r.seed for r in results] == [100, 101, 102] and {r.request_id for r in results} == {request}
    assert len({r.saved_path for r in results}) == 3
    assert all(read_job(r.saved_path)["settings"]["batch_size"] == 1 for r in results)
    assert not np.array_equal(decode_png(results[0].image.data), decode_png(results[1].image.data))


@pytest.mark.parametrize("upscaler", ["lanczos", "latent", "tiny-x2.safetensors"])
def test_hires_fix_second_pass(library_server, upscaler):
    events = []
    with Client(library_server.url) as c:
        result = c.run(quick_settings(hires=HiresSettings(scale=1.5, denoise=0.4, steps=4, upscaler=upscaler)),
                       blockout_images(160, 96), events.append)
    assert (result.image.width, result.image.height) == (160, 96)
    meta = read_job(result.saved_path)
    assert meta["working_size"] == [256, 144]                            # 168x96 x 1.5, multiples of 8
    assert any(isinstance(e, Progress) and "hires fix" in e.status for e in events)


def test_sdxl_and_flux_control_img2img_through_the_server(library_server):
    with Client(library_server.url) as c:
        xl = c.run(quick_settings(model="tiny-sdxl"), blockout_images(96, 64))
        flux = c.run(quick_settings(model="tiny-flux", cfg=3.5, negative_prompt=""), blockout_images(96, 64))
    assert read_job(xl.saved_path)["model"]["family"] == "sdxl"
    assert read_job(flux.saved_path)["model"]["family"] == "flux"
    assert flux.image.width == 96


def test_a_vae_from_the_library(make_server, models_dir, tiny_sd15):
    vae_dir = models_dir / "vae" / "same-as-tiny"
    if not vae_dir.exists():
        shutil.copytree(tiny_sd15.base / "vae", vae_dir)
    server = make_server(models_dir=models_dir)
    with Client(server.url) as c:
        assert "same-as-tiny" in [e["name"] for e in c.capabilities.library["vae"]]
        own = decode_png(c.run(quick_settings(), blockout_images(64, 48)).image.data)
        named = c.run(quick_settings(vae="same-as-tiny"), blockout_images(64, 48))
    assert named.settings.vae == "same-as-tiny"
    assert np.array_equal(own, decode_png(named.image.data))     # the same weights decode the same pixels
