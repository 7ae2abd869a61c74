"""One-file checkpoints in the original layout: written from diffusers, loaded back offline, same pixels."""
import shutil

import numpy as np
import pytest
import torch
from library_layouts import kohya_lora_shapes, real_checkpoint_shapes, write_sparse_safetensors

from controlbridge.library.families import NotAModel, detect, read_header
from controlbridge.library.single_file import (CONFIG_ROOT, MissingTokenizer, has_fp8, load_single_file,
                                               save_single_file)


def _pixels(pipe, seed=7):
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe("a red house", num_inference_steps=2, height=64, width=64, generator=generator,
                output_type="np").images[0]


def _same_weights(a, b, convert=lambda t: t):
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(a, part, None) is None:
            continue
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys(), part
        for k in sa:
            assert torch.equal(convert(sa[k]), sb[k]), f"{part}.{k}"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to reach the Hub fails the test instead of hanging."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_sd15_round_trip_same_pixels(tmp_path, tiny_sd15, tiny_sd15_pipe):
    path = save_single_file(tiny_sd15_pipe, tmp_path / "tiny.safetensors")
    keys = read_header(path).shapes
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.",
                             "cond_stage_model.transformer.text_model.")) for k in keys)
    assert detect(path).family == "sd15"

    loaded = load_single_file(path, config_dir=tiny_sd15.base)
    loaded.set_progress_bar_config(disable=True)
    _same_weights(tiny_sd15_pipe, loaded)
    assert np.array_equal(_pixels(tiny_sd15_pipe), _pixels(loaded))


def test_sdxl_fp16_round_trip_with_shared_tokenizer(tmp_path, tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl.base)
    path = save_single_file(pipe, tmp_path / "tiny_xl.safetensors", dtype=torch.float16)
    assert set(read_header(path).dtypes.values()) >= {"F16"}
    # A config folder without tokenizers (like the shipped ones) + the tokenizer in the documented place.
    config = tmp_path / "config"
    shutil.copytree(tiny_sdxl.base, config, ignore=shutil.ignore_patterns("*.safetensors", "tokenizer*"))
    models = tmp_path / "models"
    shutil.copytree(tiny_sdxl.base / "tokenizer", models / "tokenizers" / "clip-vit-large-patch14")

    loaded = load_single_file(path, config_dir=config, models_dirs=[models])
    assert loaded.tokenizer_2.pad_token == "!"          # SDXL's second tokenizer pads like OpenCLIP
    _same_weights(pipe, loaded, convert=lambda t: t.half().float())


def test_fp8_checkpoint_loads_upcast(tmp_path, tiny_sd15, tiny_sd15_pipe):
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    path = save_single_file(tiny_sd15_pipe, tmp_path / "tiny_fp8.safetensors", dtype=torch.float8_e4m3fn)
    assert has_fp8(path)
    loaded = load_single_file(path, config_dir=tiny_sd15.base)
    assert loaded.unet.dtype == torch.float32
    _same_weights(tiny_sd15_pipe, loaded, convert=lambda t: t.to(torch.float8_e4m3fn).float()
                  if t.is_floating_point() else t)
    loaded.set_progress_bar_config(disable=True)
    assert np.isfinite(_pixels(loaded)).all()


def test_missing_tokenizer_names_what_and_where(tmp_path):
    # A real-size SD1.5 checkpoint (as a hole) with the shipped configs: the error comes before any weight is read.
    path = write_sparse_safetensors(tmp_path / "real_sd15.safetensors", real_checkpoint_shapes("sd15")[0])
    models = tmp_path / "ComfyUI" / "models"
    models.mkdir(parents=True)
    with pytest.raises(MissingTokenizer) as error:
        load_single_file(path, models_dirs=[models])
    message = str(error.value)
    for expected in ("vocab.json + merges.txt", "real_sd15.safetensors", "openai/clip-vit-large-patch14",
                     str(CONFIG_ROOT / "sd15" / "tokenizer"), str(models / "tokenizers" / "clip-vit-large-patch14"),
                     "comfy/sd1_tokenizer"):
        assert expected in message


def test_tokenizer_found_in_a_comfyui_install(tmp_path, tiny_sd15, tiny_sd15_pipe):
    path = save_single_file(tiny_sd15_pipe, tmp_path / "ComfyUI" / "models" / "checkpoints" / "t.safetensors")
    config = tmp_path / "config"
    shutil.copytree(tiny_sd15.base, config, ignore=shutil.ignore_patterns("*.safetensors", "tokenizer*"))
    shutil.copytree(tiny_sd15.base / "tokenizer", tmp_path / "ComfyUI" / "comfy" / "sd1_tokenizer")
    loaded = load_single_file(path, config_dir=config, models_dirs=[tmp_path / "ComfyUI" / "models"])
    assert len(loaded.tokenizer) == len(tiny_sd15_pipe.tokenizer)
    assert loaded.tokenizer.model_max_length == 77


def test_only_sd_checkpoints_load_as_one_file(tmp_path):
    lora = write_sparse_safetensors(tmp_path / "style.safetensors", kohya_lora_shapes("sd15"))
    with pytest.raises(NotAModel, match="style.safetensors: a sd15 lora, not an SD1.5 or SDXL checkpoint"):
        load_single_file(lora)


@pytest.mark.parametrize("family,marker", [("sd15", "v1"), ("sdxl", "xl_base")])
def test_shipped_configs_match_the_real_layout(family, marker):
    """Real-size models built from configs/<family> (on the meta device), written in the original layout, are
    what diffusers' own single-file code recognises, and its converters map every key back onto the model."""
    from diffusers.loaders import single_file_utils as sfu
    _, parts = real_checkpoint_shapes(family)
    from controlbridge.library.single_file import original_state_dict
    state = original_state_dict(parts)
    assert sfu.infer_diffusers_model_type(state) == marker
    unet = sfu.convert_ldm_unet_checkpoint(state, parts.unet.config)
    assert unet.keys() == parts.unet.state_dict().keys()
    assert all(unet[k].shape == v.shape for k, v in parts.unet.state_dict().items())
    assert sfu.convert_ldm_vae_checkpoint(state, parts.vae.config).keys() == parts.vae.state_dict().keys()
    if family == "sdxl":
        clip_g = sfu.convert_open_clip_checkpoint(parts.text_encoder_2, state, "conditioner.embedders.1.model.")
        assert clip_g.keys() == parts.text_encoder_2.state_dict().keys()


def test_a_checkpoint_that_does_not_fit_the_configs_is_a_clear_error(tmp_path, tiny_sd15, tiny_sd15_pipe):
    # The tiny model against the shipped (real SD1.5) architecture: the error says what does not fit.
    path = save_single_file(tiny_sd15_pipe, tmp_path / "tiny.safetensors")
    shutil.copytree(tiny_sd15.base / "tokenizer", tmp_path / "models" / "tokenizers" / "clip-vit-large-patch14")
    with pytest.raises(NotAModel, match=r"tiny.safetensors: its weights do not fit the sd15 architecture .*"
                                        r"expected shape"):
        load_single_file(path, models_dirs=[tmp_path / "models"])
    inpaint = dict(real_checkpoint_shapes("sd15")[0])
    inpaint["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    with pytest.raises(NotAModel, match="an sd15 inpaint checkpoint"):
        load_single_file(write_sparse_safetensors(tmp_path / "inpaint.safetensors", inpaint))
