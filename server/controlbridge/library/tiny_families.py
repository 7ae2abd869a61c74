"""Tiny random-weight SDXL and FLUX models (diffusers folders) with ControlNets, built locally and seeded.

The same idea as engine/tiny_model.py (whose tokenizer, CLIP text encoder, VAE and ControlNet builders are reused):
every part has the real architecture's structure (two text encoders, text-time embedding, 16-channel VAE, packed
latents, rotary axes, ...) at a size where a ControlNet img2img call takes well under a second on a CPU. The
output is noise; what is tested is that each family's pipelines, loaders and file layouts work end to end.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from ..engine import tiny_model as sd15_tiny
from .families import FLUX, SDXL

TINY_FAMILIES_VERSION = "v1"
_MARKER = "controlbridge_model.json"
_SEED = 4321
_LATENT_SIZE = 32
NATIVE_RESOLUTION = _LATENT_SIZE * 4      # the shared tiny VAE downsamples by 4
_CONTROLNET_NAMES = ("depth", "canny")
_CLIP2_HIDDEN = 64    # != text encoder 1 (32): diffusers' single-file loader tells SDXL's two encoders apart by width
_CLIP2_PROJECTION = 32
_TIME_EMBED_DIM = 8


@dataclass(frozen=True)
class TinyFamilyPaths:
    family: str
    root: Path
    base: Path                                       # the diffusers pipeline folder
    controlnets: Dict[str, Path] = field(default_factory=dict)   # {"depth": folder, "canny": folder}
    native_resolution: int = NATIVE_RESOLUTION
    control_transformer: Optional[Path] = None       # FLUX only: a depth/canny-style control transformer

    def __hash__(self) -> int:
        return hash(self.root)


def _paths(family: str, root: Path) -> TinyFamilyPaths:
    return TinyFamilyPaths(family, root, root / "base",
                           {n: root / "controlnets" / n for n in _CONTROLNET_NAMES},
                           control_transformer=root / "control_transformer" if family == FLUX else None)


# --------------------------------------------------------------------------------------------- SDXL

def _sdxl_unet():
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(
        sample_size=_LATENT_SIZE, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),          # SDXL stacks several transformer blocks per attention
        attention_head_dim=(2, 4), norm_num_groups=16, use_linear_projection=True,
        cross_attention_dim=32 + _CLIP2_HIDDEN,       # both encoders' hidden states, concatenated
        addition_embed_type="text_time", addition_time_embed_dim=_TIME_EMBED_DIM,
        # 6 size/crop numbers, each embedded, plus the pooled text embedding of encoder 2
        projection_class_embeddings_input_dim=_TIME_EMBED_DIM * 6 + _CLIP2_PROJECTION,
    )


def _sdxl_text_encoder_2():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    vocab, _ = sd15_tiny._tokenizer_vocab()
    eos = vocab["<|endoftext|>"]
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=_CLIP2_HIDDEN, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=_CLIP2_PROJECTION, max_position_embeddings=77, hidden_act="gelu",
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos)).eval()


def _sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler
    # stable-diffusion-xl-base-1.0's scheduler config.
    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", interpolation_type="linear",
                                  prediction_type="epsilon", steps_offset=1, timestep_spacing="leading")


def _build_sdxl(paths: TinyFamilyPaths) -> None:
    import torch
    from diffusers import StableDiffusionXLPipeline

    torch.manual_seed(_SEED)
    unet = _sdxl_unet()
    torch.manual_seed(_SEED + 1)
    vae = sd15_tiny._build_vae()
    vae.register_to_config(scaling_factor=0.13025)    # SDXL's latent scale
    torch.manual_seed(_SEED + 2)
    text_encoder = sd15_tiny._build_text_encoder()
    torch.manual_seed(_SEED + 3)
    text_encoder_2 = _sdxl_text_encoder_2()
    tokenizer_2 = sd15_tiny._build_tokenizer(paths.base / "tokenizer_2")
    tokenizer_2.pad_token = "!"                      # as SDXL's tokenizer_2: OpenCLIP pads with "!"
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=sd15_tiny._build_tokenizer(paths.base / "tokenizer"), tokenizer_2=tokenizer_2,
        unet=unet, scheduler=_sdxl_scheduler(), force_zeros_for_empty_prompt=True, add_watermarker=False)
    with sd15_tiny._no_transformers_progress_bar():
        pipe.save_pretrained(paths.base, safe_serialization=True)
    sd15_tiny._prefix_text_encoder_keys(paths.base / "text_encoder")
    for i, name in enumerate(_CONTROLNET_NAMES):
        # ControlNetModel.from_unet carries the text-time embedding and widths over from the SDXL UNet.
        sd15_tiny._build_controlnet(unet, _SEED + 10 + i).save_pretrained(paths.controlnets[name],
                                                                        safe_serialization=True)


# --------------------------------------------------------------------------------------------- FLUX

_FLUX_DIMS = dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=32,            # = T5 d_model
                  pooled_projection_dim=32,          # = CLIP hidden size (its pooled output)
                  guidance_embeds=True,              # FLUX.1 [dev]-style distilled guidance
                  axes_dims_rope=(4, 6, 6))          # must add up to attention_head_dim
_T5_WORDS = sd15_tiny._WORDS


def _t5_tokenizer():
    from transformers import T5Tokenizer
    # A Unigram vocabulary built in memory (no sentencepiece file): specials, whole words, then single
    # characters with and without the word-start marker, so any lowercase text tokenizes.
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -3.0) for w in dict.fromkeys(_T5_WORDS)]
    pieces += [("\u2581" + c, -8.0) for c in chars] + [(c, -9.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _t5_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",   # T5 v1.1, as FLUX's T5-XXL
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()


def _flux_vae():
    from diffusers import AutoencoderKL
    n = 3
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=(16, 32, 32), layers_per_block=1,
        latent_channels=16, norm_num_groups=16, sample_size=NATIVE_RESOLUTION,
        scaling_factor=0.3611, shift_factor=0.1159,           # FLUX's ae.safetensors latent normalisation
        use_quant_conv=False, use_post_quant_conv=False, force_upcast=False)


def _flux_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler
    # FLUX.1 [dev]'s scheduler config (resolution-dependent shift).
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096)


def _flux_controlnet(seed: int):
    import torch
    from diffusers import FluxControlNetModel
    torch.manual_seed(seed)
    controlnet = FluxControlNetModel(in_channels=64, **_FLUX_DIMS)
    with torch.no_grad():
        # Its input embedder and output projections start at zero (a no-op ControlNet): make it steer.
        for layer in [controlnet.controlnet_x_embedder, *controlnet.controlnet_blocks,
                      *controlnet.controlnet_single_blocks]:
            layer.weight.normal_(0.0, 0.1)
            layer.bias.normal_(0.0, 0.05)
    return controlnet


def _build_flux(paths: TinyFamilyPaths) -> None:
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    tokenizer_2 = _t5_tokenizer()
    torch.manual_seed(_SEED)
    # 16 latent channels packed 2x2 into 64 per token.
    transformer = FluxTransformer2DModel(in_channels=64, **_FLUX_DIMS)
    torch.manual_seed(_SEED + 1)
    vae = _flux_vae()
    torch.manual_seed(_SEED + 2)
    text_encoder = sd15_tiny._build_text_encoder()
    torch.manual_seed(_SEED + 3)
    text_encoder_2 = _t5_encoder(len(tokenizer_2))
    pipe = FluxPipeline(scheduler=_flux_scheduler(), vae=vae, text_encoder=text_encoder,
                        tokenizer=sd15_tiny._build_tokenizer(paths.base / "tokenizer"),
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
    with sd15_tiny._no_transformers_progress_bar():
        pipe.save_pretrained(paths.base, safe_serialization=True)
    sd15_tiny._prefix_text_encoder_keys(paths.base / "text_encoder")
    for i, name in enumerate(_CONTROLNET_NAMES):
        _flux_controlnet(_SEED + 10 + i).save_pretrained(paths.controlnets[name], safe_serialization=True)
    # FLUX.1 Depth/Canny [dev] style: the control image's latents are concatenated to the input (128 channels).
    torch.manual_seed(_SEED + 20)
    FluxTransformer2DModel(in_channels=128, out_channels=64, **_FLUX_DIMS).save_pretrained(
        paths.control_transformer, safe_serialization=True)


# --------------------------------------------------------------------------------------------- build / cache

_BUILDERS = {SDXL: _build_sdxl, FLUX: _build_flux}


def build_tiny_family(family: str, target) -> TinyFamilyPaths:
    """Build the tiny `family` model ("sdxl" or "flux") into `target`. Same weights every time."""
    import torch
    if family not in _BUILDERS:
        raise ValueError(f"no tiny model for family {family!r} (have: {', '.join(_BUILDERS)}; sd15 is "
                         f"engine/tiny_model.py)")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    paths = _paths(family, target)
    # Module init draws from torch's global RNG: the shared lock keeps concurrent builds from interleaving
    # draws, and fork_rng leaves the caller's RNG state untouched.
    with sd15_tiny._BUILD_LOCK, torch.random.fork_rng(devices=[]):
        _BUILDERS[family](paths)
    info = {"name": f"tiny-{family}", "family": family, "native_resolution": NATIVE_RESOLUTION,
            "version": TINY_FAMILIES_VERSION, "note": "random weights: produces noise, not art"}
    (target / _MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")   # last: marks done
    return paths


def _is_complete(family: str, root: Path) -> bool:
    try:
        info = json.loads((root / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("version") == TINY_FAMILIES_VERSION and info.get("family") == family \
        and (root / "base" / "model_index.json").is_file()


def ensure_tiny_family(family: str, cache_dir=None) -> TinyFamilyPaths:
    """The cached tiny model of `family`, built on first use (into a temp folder renamed into place)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else sd15_tiny.default_cache_dir()
    final = cache_dir / f"tiny-{family}-{TINY_FAMILIES_VERSION}"
    if _is_complete(family, final):
        return _paths(family, final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{family}.tmp-", dir=cache_dir))
    try:
        build_tiny_family(family, tmp)
        if final.exists() and not _is_complete(family, final):
            shutil.rmtree(final, ignore_errors=True)      # damaged by hand: our builds only appear complete
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(family, final):           # another process won the race with a good build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _paths(family, final)
