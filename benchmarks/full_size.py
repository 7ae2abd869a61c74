"""Models for the benchmark rows: full-size SD1.5 / SDXL architectures with random weights, or the tiny ones.

Speed does not depend on the weights' values, so the real architectures are built from the configs in
benchmarks/configs/ directly on the device, in the requested dtype, without downloading anything. Every call
builds a NEW, independent copy: the stock rows get their own, so nothing our engine does to its modules
(channels_last, fused QKV, compilation) can leak into what the stock pipeline measures.
"""
import json
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent / "configs"
TINY_NAME = {"sd15": "tiny", "sdxl": "tiny-sdxl"}


def config(family: str, name: str) -> dict:
    d = json.loads((CONFIGS / family / f"{name}.json").read_text())
    return {k: v for k, v in d.items() if not k.startswith("_")}


def build_model(family: str, device: str, dtype: torch.dtype, tiny: bool):
    """A fresh LoadedModel (depth and canny ControlNets; TAESD for SD1.5) on `device` in `dtype`."""
    if tiny:
        from controlbridge.engine.models import ModelSpec, load_model
        name = TINY_NAME[family]
        return load_model(ModelSpec(name, device=device, dtype=dtype_name(dtype), default_controlnets=False),
                          log=lambda message: None)
    return build_full_size(family, device, dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def build_full_size(family: str, device: str, dtype: torch.dtype):
    """The real architecture with random weights, created directly on the device."""
    from diffusers import (AutoencoderKL, AutoencoderTiny, ControlNetModel, EulerDiscreteScheduler,
                           StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from controlbridge.engine.models import NATIVE_RESOLUTION, LoadedModel
    from controlbridge.engine.tiny_model import ensure_tiny_model
    tokenizer = CLIPTokenizer.from_pretrained(ensure_tiny_model().base / "tokenizer")   # ids < vocab: fine
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(config(family, "unet"))
        vae = AutoencoderKL.from_config(config(family, "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**config(family, "text_encoder")))
        cn_channels = config(family, "controlnet")["conditioning_embedding_out_channels"]
        controlnets = {n: ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cn_channels)
                       for n in ("depth", "canny")}
        taesd = AutoencoderTiny(**config(family, "taesd")) if family == "sd15" else None
        scheduler = EulerDiscreteScheduler.from_config(config(family, "scheduler"))
        if family == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config(family, "text_encoder_2")))
            base = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                             tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                             scheduler=scheduler)
        else:
            base = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                           scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    for module in [unet, vae, text_encoder, *controlnets.values()] + ([taesd] if taesd else []) + \
            ([text_encoder_2] if family == "sdxl" else []):
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    base.set_progress_bar_config(disable=True)
    return LoadedModel(name=f"{family}-random", family=family, native_resolution=NATIVE_RESOLUTION[family],
                       size_multiple=64, base=base, controlnets=controlnets, device=device,
                       dtype_name=dtype_name(dtype), taesd=taesd)


def module_dtypes(modules: dict) -> str:
    """The dtypes read back from every floating-point tensor of `modules`: 'bfloat16' when all agree, else
    each module's own (a silent upcast shows here, e.g. 'unet=float32 vae=bfloat16')."""
    per_module = {}
    for name, module in modules.items():
        module = getattr(module, "_orig_mod", module)          # torch.compile's wrapper
        kinds = {str(t.dtype).replace("torch.", "") for t in [*module.parameters(), *module.buffers()]
                 if t.is_floating_point()}
        if kinds:
            per_module[name] = "+".join(sorted(kinds))
    if len(set(per_module.values())) == 1:
        return next(iter(per_module.values()))
    return " ".join(f"{n}={d}" for n, d in sorted(per_module.items()))
