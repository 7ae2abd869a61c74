"""Family and kind detection from file contents: each family's real key layout, tiny real files, bad files."""
import json
import struct

import pytest
from library_layouts import (flux_original_shapes, kohya_lora_shapes, peft_lora_shapes, real_checkpoint_shapes,
                             sd15_controlnet_original_shapes, write_sparse_safetensors)

from controlbridge.library import families as F
from controlbridge.library.families import NotAModel, detect, detect_keys, lora_info, read_lora_info

pytestmark = pytest.mark.filterwarnings("ignore:`FluxPosEmbed` is deprecated:FutureWarning")   # diffusers' own


def test_sd15_checkpoint_in_its_real_layout(tmp_path):
    shapes, _ = real_checkpoint_shapes("sd15")
    # diffusers' own marker keys for SD1.5, with the real shapes (a 2 GB file, written as a hole)
    assert shapes["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert shapes["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] == (77, 768)
    path = write_sparse_safetensors(tmp_path / "any-name-at-all.safetensors", shapes)
    assert detect(path) == F.Detection(F.CHECKPOINT, ("sd15",), "original")


def test_sdxl_checkpoint_in_its_real_layout(tmp_path):
    shapes, _ = real_checkpoint_shapes("sdxl")
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"] == (1280,)
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    # Named like an SD1.5 model on purpose: the name must not matter.
    path = write_sparse_safetensors(tmp_path / "v1-5-pruned.safetensors", shapes)
    assert detect(path) == F.Detection(F.CHECKPOINT, ("sdxl",), "original")


def test_unet_only_and_variants():
    shapes, _ = real_checkpoint_shapes("sd15")
    unet = {k.removeprefix("model.diffusion_model."): v for k, v in shapes.items()
            if k.startswith("model.diffusion_model.")}
    assert detect_keys(unet) == F.Detection(F.DIFFUSION_MODEL, ("sd15",), "original")
    inpaint = dict(shapes, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)})
    assert detect_keys(inpaint).variant == "inpaint"
    xl, _ = real_checkpoint_shapes("sdxl")
    xl_unet = {k: v for k, v in xl.items() if k.startswith("model.diffusion_model.")}
    assert detect_keys(xl_unet) == F.Detection(F.DIFFUSION_MODEL, ("sdxl",), "original")


def test_flux_layouts(tmp_path):
    # BFL's flux1-dev.safetensors: transformer only, no prefix, here in fp8 as many downloads are.
    bfl = write_sparse_safetensors(tmp_path / "flux1-dev.sft", flux_original_shapes(), dtype="F8_E4M3")
    assert detect(bfl) == F.Detection(F.DIFFUSION_MODEL, ("flux",), "original")
    # ComfyUI's all-in-one checkpoint: prefixed transformer + VAE + text encoders.
    bundled = flux_original_shapes("model.diffusion_model.", depth=2, single=2)
    bundled.update({"vae.encoder.conv_in.weight": (128, 3, 3, 3),
                    "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight": (77, 768)})
    assert detect_keys(bundled) == F.Detection(F.CHECKPOINT, ("flux",), "original")
    # FLUX.1 Depth/Canny [dev] take 128 input channels.
    assert detect_keys(flux_original_shapes(depth=1, single=1, img_in=128)).variant == "control"


def test_controlnets(tmp_path, tiny_sd15, tiny_sdxl, tiny_flux):
    original = write_sparse_safetensors(tmp_path / "control_v11f1p_sd15_depth.safetensors",
                                        sd15_controlnet_original_shapes())
    assert detect(original) == F.Detection(F.CONTROLNET, ("sd15",), "original")
    sdxl_diffusers = {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
                      "add_embedding.linear_1.weight": (1280, 2816),
                      "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048)}
    assert detect_keys(sdxl_diffusers) == F.Detection(F.CONTROLNET, ("sdxl",), "diffusers")
    # The tiny models' real files (diffusers layout, tiny widths: decided by structure).
    weights = "diffusion_pytorch_model.safetensors"
    assert detect(tiny_sd15.controlnets["depth"] / weights).families == ("sd15",)
    assert detect(tiny_sdxl.controlnets["depth"] / weights).families == ("sdxl",)
    assert detect(tiny_flux.controlnets["depth"] / weights) == F.Detection(F.CONTROLNET, ("flux",), "diffusers")
    assert detect(tiny_sdxl.controlnets["canny"]).kind == F.CONTROLNET        # the folder itself


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_loras_kohya_and_peft(family):
    assert detect_keys(kohya_lora_shapes(family)) == F.Detection(F.LORA, (family,), "kohya")
    assert detect_keys(peft_lora_shapes(family)) == F.Detection(F.LORA, (family,), "peft")


def test_peft_lora_written_by_diffusers(tmp_path, tiny_sd15):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_sd15.base / "unet")
    unet.add_adapter(LoraConfig(r=4, target_modules=["to_k", "to_q", "to_v"], init_lora_weights=False))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(unet))
    detection = detect(tmp_path / "pytorch_lora_weights.safetensors")
    # Tiny widths name no family; a real SD1.5 LoRA's 768-wide keys would (see test_loras_kohya_and_peft).
    assert (detection.kind, detection.layout) == (F.LORA, "peft")


def test_vaes(tmp_path, tiny_flux):
    from diffusers import AutoencoderKL

    from controlbridge.library.single_file import vae_to_original
    shapes, _ = real_checkpoint_shapes("sd15")
    vae = {k.removeprefix("first_stage_model."): v for k, v in shapes.items() if k.startswith("first_stage_model.")}
    # The SD VAE's architecture is shared by SD1.5 and SDXL: both families fit.
    assert detect_keys(vae) == F.Detection(F.VAE, ("sd15", "sdxl"), "original")
    # FLUX's ae.safetensors: 16 latent channels (the tiny FLUX VAE written in the original layout).
    flux_vae = AutoencoderKL.from_pretrained(tiny_flux.base / "vae")
    state = vae_to_original(flux_vae.state_dict(), len(flux_vae.config.block_out_channels))
    path = write_sparse_safetensors(tmp_path / "ae.safetensors", {k: tuple(v.shape) for k, v in state.items()})
    assert detect(path) == F.Detection(F.VAE, ("flux",), "original")


def test_diffusers_folders(tiny_sd15, tiny_sdxl, tiny_flux):
    assert detect(tiny_sd15.base) == F.Detection(F.CHECKPOINT, ("sd15",), "diffusers")
    assert detect(tiny_sdxl.base) == F.Detection(F.CHECKPOINT, ("sdxl",), "diffusers")
    assert detect(tiny_flux.base) == F.Detection(F.CHECKPOINT, ("flux",), "diffusers")
    assert detect(tiny_flux.control_transformer) == F.Detection(F.DIFFUSION_MODEL, ("flux",), "diffusers", "control")


def test_bad_files_are_clear_errors(tmp_path):
    png = tmp_path / "model.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    with pytest.raises(NotAModel, match=r"model.safetensors: not a safetensors file \(header .*PNG image"):
        detect(png)

    truncated = write_sparse_safetensors(tmp_path / "half.safetensors", kohya_lora_shapes("sd15"), truncate_by=100)
    with pytest.raises(NotAModel, match="half.safetensors: truncated safetensors file"):
        detect(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 10) + b"{not json}")
    with pytest.raises(NotAModel, match="garbage.safetensors: not a safetensors file \\(header is not valid JSON"):
        detect(garbage)

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(NotAModel, match="not a safetensors file"):
        detect(empty)

    other = write_sparse_safetensors(tmp_path / "classifier.safetensors", {"fc.weight": (10, 10)})
    with pytest.raises(NotAModel, match="classifier.safetensors: not a known model layout"):
        detect(other)

    with pytest.raises(NotAModel, match="not a diffusers folder"):
        detect(tmp_path)
    assert issubclass(NotAModel, ValueError)


def test_lora_trigger_words(tmp_path):
    metadata = {
        "modelspec.trigger_phrase": "zx_style, Painterly",
        "ss_output_name": "zx_style_v2",
        # two kohya datasets; counts add up across them, ties keep caption order
        "ss_tag_frequency": json.dumps({"10_zx": {"zx_style": 40, "1girl": 12, "outdoors": 12, "painterly": 3},
                                        "5_extra": {"1girl": 8, "sky": 2}}),
    }
    path = write_sparse_safetensors(tmp_path / "lora.safetensors", kohya_lora_shapes("sdxl"), metadata=metadata)
    info = read_lora_info(path, max_tags=3)
    assert info.trigger_words == ("zx_style", "Painterly", "1girl", "outdoors")
    assert info.output_name == "zx_style_v2"
    assert info.tag_counts[:2] == (("zx_style", 40), ("1girl", 20))
    # Missing or malformed metadata gives no words, never an error.
    assert lora_info({"ss_tag_frequency": "{broken"}) == F.LoraInfo((), None, ())
    assert lora_info({}).trigger_words == ()
