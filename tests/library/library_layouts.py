"""Real key layouts of each family, and a writer for header-only (sparse) safetensors files.

Family detection reads only names and shapes, so a file with the real header and a hole where the tensor data
would be (a sparse file: no disk used) is, to the detector, the real multi-GB checkpoint.
"""
import json
import struct
from functools import lru_cache
from pathlib import Path

import torch

_DTYPES = {torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2),
           torch.int64: ("I64", 8)}
if hasattr(torch, "float8_e4m3fn"):
    _DTYPES[torch.float8_e4m3fn] = ("F8_E4M3", 1)


def write_sparse_safetensors(path, shapes, dtype="F16", metadata=None, truncate_by=0) -> Path:
    """A valid safetensors header for {name: shape}; the data region is a hole. truncate_by cuts the end off."""
    width = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I64": 8}[dtype]
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = width
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset - truncate_by)
    return path


@lru_cache(maxsize=None)
def real_checkpoint_shapes(family: str):
    """{key: shape} of a real SD1.5 / SDXL checkpoint, from the shipped configs built on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from controlbridge.library.single_file import CONFIG_ROOT, original_state_dict

    root = CONFIG_ROOT / family

    class Parts:
        pass

    parts = Parts()
    with torch.device("meta"):
        parts.unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))
        parts.vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))
        parts.text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
        parts.text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(root / "text_encoder_2")) if family == "sdxl" else None
    state = original_state_dict(parts)
    return {k: tuple(v.shape) for k, v in state.items()}, parts


def flux_original_shapes(prefix="", depth=19, single=38, img_in=64):
    """BFL's FLUX.1 transformer layout (flux1-dev.safetensors): hidden 3072, T5 4096, CLIP 768."""
    h, mlp = 3072, 12288
    s = {"img_in.weight": (h, img_in), "img_in.bias": (h,), "txt_in.weight": (h, 4096), "txt_in.bias": (h,),
         "time_in.in_layer.weight": (h, 256), "time_in.out_layer.weight": (h, h),
         "vector_in.in_layer.weight": (h, 768), "vector_in.out_layer.weight": (h, h),
         "guidance_in.in_layer.weight": (h, 256), "guidance_in.out_layer.weight": (h, h),
         "final_layer.adaLN_modulation.1.weight": (2 * h, h), "final_layer.linear.weight": (64, h)}
    for i in range(depth):
        for side in ("img", "txt"):
            b = f"double_blocks.{i}.{side}_"
            s.update({b + "mod.lin.weight": (6 * h, h), b + "attn.qkv.weight": (3 * h, h),
                      b + "attn.norm.query_norm.scale": (128,), b + "attn.norm.key_norm.scale": (128,),
                      b + "attn.proj.weight": (h, h), b + "mlp.0.weight": (mlp, h), b + "mlp.2.weight": (h, mlp)})
    for i in range(single):
        b = f"single_blocks.{i}."
        s.update({b + "linear1.weight": (3 * h + mlp, h), b + "linear2.weight": (h, h + mlp),
                  b + "norm.query_norm.scale": (128,), b + "norm.key_norm.scale": (128,),
                  b + "modulation.lin.weight": (3 * h, h)})
    return {prefix + k: v for k, v in s.items()}


def sd15_controlnet_original_shapes():
    """lllyasviel's ControlNet 1.1 layout: the SD1.5 UNet encoder under control_model. plus hint/zero convs."""
    unet, _ = real_checkpoint_shapes("sd15")
    s = {k.replace("model.diffusion_model.", "control_model."): v for k, v in unet.items()
         if k.startswith("model.diffusion_model.") and ".output_blocks." not in k and ".out." not in k}
    previous = 3                                    # the hint image's RGB
    for i, ch in zip(range(0, 16, 2), (16, 16, 32, 32, 96, 96, 256, 320)):
        s[f"control_model.input_hint_block.{i}.weight"] = (ch, previous, 3, 3)
        previous = ch
    for i, ch in enumerate([320] * 4 + [640] * 3 + [1280] * 5):
        s[f"control_model.zero_convs.{i}.0.weight"] = (ch, ch, 1, 1)
    s["control_model.middle_block_out.0.weight"] = (1280, 1280, 1, 1)
    return s


def kohya_lora_shapes(family: str, rank=4):
    if family == "sd15":
        return {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (rank, 768),
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, rank),
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": (),
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (rank, 768),
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (768, rank)}
    if family == "sdxl":
        return {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (rank, 2048),
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": (640, rank),
                "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (rank, 768),
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (rank, 1280)}
    return {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (rank, 3072),
            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": (9216, rank),
            "lora_unet_single_blocks_0_linear1.lora_down.weight": (rank, 3072)}


def peft_lora_shapes(family: str, rank=8):
    if family == "flux":
        return {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (rank, 3072),
                "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": (3072, rank),
                "transformer.transformer_blocks.0.attn.add_k_proj.lora_A.weight": (rank, 3072)}
    width, ch = {"sd15": (768, 320), "sdxl": (2048, 640)}[family]
    block = "down_blocks.0" if family == "sd15" else "down_blocks.1"
    key = f"unet.{block}.attentions.0.transformer_blocks.0.attn2.to_k"
    return {f"{key}.lora_A.weight": (rank, width), f"{key}.lora_B.weight": (ch, rank)}
