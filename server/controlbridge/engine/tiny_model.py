"""A tiny, randomly initialised SD1.5-style model with depth and canny ControlNets.

It is built locally (no downloads) and is small enough that a full ControlNet img2img
call takes well under a second on a CPU, so the whole server can be exercised in tests
and demos without real weights. Its output is noise, not art.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..paths import user_cache_dir

TINY_MODEL_VERSION = "tiny-v2"   # v2: adds the tiny autoencoder (TAESD) for fast decoding

_SEED = 1234
_MARKER = "controlbridge_model.json"
_VAE_CHANNELS = (16, 32, 32)  # 3 blocks -> 2 downsamples -> VAE scale factor 4
_VAE_SCALE = 2 ** (len(_VAE_CHANNELS) - 1)
_LATENT_SIZE = 32
NATIVE_RESOLUTION = _LATENT_SIZE * _VAE_SCALE  # 128
_CONTROLNET_NAMES = ("depth", "canny")
# A temp build folder older than this belongs to a crashed process, not a racing one.
_STALE_TMP_S = 15 * 60
_BUILD_LOCK = threading.Lock()

_UNET_CONFIG = dict(
    sample_size=_LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=16,
)

# Common prompt words get whole-word tokens; everything else falls back to byte-level chars.
_WORDS = (
    "a an the of and in on with at to photo picture render painting of "
    "cat dog man woman house room city tree forest sky mountain car light "
    "red green blue white black dark bright detailed realistic style high quality"
).split()


@dataclass(frozen=True)
class TinyModelPaths:
    root: Path  # the folder holding everything below
    base: Path  # diffusers StableDiffusionPipeline folder (unet, vae, text_encoder, tokenizer, scheduler)
    controlnets: dict[str, Path]  # {"depth": <ControlNetModel folder>, "canny": <folder>}
    taesd: Path  # AutoencoderTiny folder: the fast decoder for live frames and previews
    native_resolution: int  # square side in pixels the tiny model is meant to run at

    def __hash__(self) -> int:
        # The generated hash would fail on the dict field; root identifies the model anyway.
        return hash(self.root)


def _paths(root: Path) -> TinyModelPaths:
    return TinyModelPaths(
        root=root,
        base=root / "base",
        controlnets={name: root / "controlnets" / name for name in _CONTROLNET_NAMES},
        taesd=root / "taesd",
        native_resolution=NATIVE_RESOLUTION,
    )


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for raw bytes (same table as GPT-2)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def _tokenizer_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-shaped vocab: every byte char alone and as word end ("x</w>"), so any text
    tokenizes, plus left-to-right merge chains for a few whole words, then the specials."""
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(_WORDS):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merge = (left, right)
            left += right
            if merge not in merges:
                merges.append(merge)
                tokens.append(left)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def _build_tokenizer(target: Path):
    from transformers import CLIPTokenizer

    vocab, merges = _tokenizer_vocab()
    # transformers 5 takes the vocab/merges themselves (merges as (left, right) tuples, not
    # "left right" strings); the old vocab_file=/merges_file= keywords are silently ignored
    # and yield a 3-token vocab.
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    # transformers 5 saves only tokenizer.json; the slow CLIPTokenizer of transformers 4
    # needs vocab.json + merges.txt, so write those too.
    target.mkdir(parents=True, exist_ok=True)
    (target / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (target / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tokenizer


def _build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = _tokenizer_vocab()
    eos = vocab["<|endoftext|>"]
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=32,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        # A real eos id (not the legacy 2) makes pooling look for the actual eos token.
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModel(config).eval()


def _build_vae():
    from diffusers import AutoencoderKL

    n = len(_VAE_CHANNELS)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=_VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=NATIVE_RESOLUTION,
        force_upcast=False,  # fp32-only tiny model; avoids a per-call upcast warning
    )


def _build_taesd():
    from diffusers import AutoencoderTiny

    # Same latent layout and scale factor (len - 1 stride-2 stages) as the tiny VAE.
    n = len(_VAE_CHANNELS)
    return AutoencoderTiny(
        encoder_block_out_channels=(16,) * n,
        decoder_block_out_channels=(16,) * n,
        num_encoder_blocks=(1,) * n,
        num_decoder_blocks=(1,) * n,
        latent_channels=4,
    )


def _build_scheduler():
    from diffusers import PNDMScheduler

    # SD1.5's own scheduler config.
    return PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _build_controlnet(unet, seed: int):
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    # Two entries after conv_in = two stride-2 convs: must equal the VAE scale factor.
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(8, 16, 16), load_weights_from_unet=False
    )
    with torch.no_grad():
        # A fresh ControlNet's output convs are zero-initialised, making it a no-op: give them
        # small random weights so it really steers the UNet.
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, 0.1)
            conv.bias.normal_(0.0, 0.05)
        # The default init shrinks the signal through the embedding's conv stack, so the
        # control image would barely register; variance-preserving init keeps it comparable
        # to the latent features it is added to.
        embedding = controlnet.controlnet_cond_embedding
        for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        embedding.conv_out.weight.mul_(2.0)
        embedding.conv_out.bias.normal_(0.0, 0.05)
    return controlnet


def _prefix_text_encoder_keys(folder: Path) -> None:
    """transformers 5 saves CLIPTextModel keys without the "text_model." prefix, which
    transformers 4 silently skips (leaving random weights). Real SD1.5 checkpoints use the
    prefix and both versions load it, so store it that way."""
    from safetensors.torch import load_file, save_file

    file = folder / "model.safetensors"
    state = load_file(file)
    if not all(k.startswith("text_model.") for k in state):
        state = {f"text_model.{k}": v for k, v in state.items()}
        save_file(state, file, metadata={"format": "pt"})


@contextmanager
def _no_transformers_progress_bar():
    # save_pretrained in transformers 5 shows a "Writing model shards" bar even for one tiny file.
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def build_tiny_model(target: Path) -> TinyModelPaths:
    """Build the tiny model into `target` (created if needed). Same weights every time."""
    import torch

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    paths = _paths(target)
    # Module init draws from torch's global RNG: the lock keeps concurrent builds in one
    # process from interleaving draws, and fork_rng leaves the caller's RNG state untouched.
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        _build_into(paths)

    # Written last: its presence marks a finished build.
    info = {
        "name": "tiny",
        "family": "sd15",
        "native_resolution": NATIVE_RESOLUTION,
        "version": TINY_MODEL_VERSION,
        "note": "random weights: produces noise, not art",
    }
    (target / _MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return paths


def _build_into(paths: TinyModelPaths) -> None:
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    # Re-seed before every component so each one is reproducible on its own.
    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(**_UNET_CONFIG)
    torch.manual_seed(_SEED + 1)
    vae = _build_vae()
    torch.manual_seed(_SEED + 2)
    text_encoder = _build_text_encoder()

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_build_tokenizer(paths.base / "tokenizer"),
        unet=unet,
        scheduler=_build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with _no_transformers_progress_bar():
        pipe.save_pretrained(paths.base, safe_serialization=True)
    _prefix_text_encoder_keys(paths.base / "text_encoder")

    for i, name in enumerate(_CONTROLNET_NAMES):
        controlnet = _build_controlnet(unet, _SEED + 10 + i)
        controlnet.save_pretrained(paths.controlnets[name], safe_serialization=True)
    torch.manual_seed(_SEED + 20)
    _build_taesd().save_pretrained(paths.taesd, safe_serialization=True)


def _is_complete(root: Path) -> bool:
    paths = _paths(root)
    try:
        info = json.loads((root / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if info.get("version") != TINY_MODEL_VERSION:
        return False
    base = paths.base
    required = [
        base / "model_index.json",
        base / "unet" / "config.json",
        base / "unet" / "diffusion_pytorch_model.safetensors",
        base / "vae" / "config.json",
        base / "vae" / "diffusion_pytorch_model.safetensors",
        base / "text_encoder" / "config.json",
        base / "text_encoder" / "model.safetensors",
        base / "tokenizer" / "tokenizer.json",
        base / "scheduler" / "scheduler_config.json",
    ]
    for folder in [*paths.controlnets.values(), paths.taesd]:
        required += [folder / "config.json", folder / "diffusion_pytorch_model.safetensors"]
    return all(p.is_file() for p in required)


def default_cache_dir() -> Path:
    return user_cache_dir()


def _remove_stale_tmp(cache_dir: Path) -> None:
    cutoff = time.time() - _STALE_TMP_S
    for tmp in cache_dir.glob(f".{TINY_MODEL_VERSION}.tmp-*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def ensure_tiny_model(cache_dir: Path | None = None) -> TinyModelPaths:
    """Return the cached tiny model, building it on first use.

    The build goes to a private temp folder that is renamed into place in one step, so a
    half-built model is never visible and racing processes both end with a valid one.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / TINY_MODEL_VERSION
    if _is_complete(final):
        return _paths(final)

    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_VERSION}.tmp-", dir=cache_dir))
    try:
        build_tiny_model(tmp)
        if final.exists() and not _is_complete(final):
            # Damaged by hand (our builds only ever appear complete): move it aside, then drop it.
            trash = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_VERSION}.tmp-", dir=cache_dir))
            try:
                os.replace(final, trash / "old")
            except OSError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its build in first; use that one.
            if not _is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _paths(final)
