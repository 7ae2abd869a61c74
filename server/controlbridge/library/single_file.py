"""One-file checkpoints in the original (LDM / "A1111 / ComfyUI") key layout: write them, and load them offline.

Loading uses diffusers' own `from_single_file(path, config=<local diffusers config folder>)`: the file holds the
weights, the small JSON configs shipped under `configs/<family>/` hold the architecture. Without `config=`,
diffusers fetches configs from the Hub, even with `local_files_only=True`, so we always pass it.

A single file carries no tokenizer, so we find one on disk (see `find_clip_tokenizer`) and hand it in; if none is
there, the error names what is missing and where it usually comes from.

Writing exists because diffusers ships no diffusers -> original converter and the tests need real single files;
the mapping below is the exact inverse of diffusers' `convert_ldm_*` functions for SD1.5 and SDXL.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

from .families import CHECKPOINT, DIFFUSION_MODEL, FLUX, SD15, SDXL, NotAModel, detect, read_header

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
CLIP_TOKENIZER_DIR = "clip-vit-large-patch14"   # <models-dir>/tokenizers/<this>/ : the documented place
CLIP_MAX_LENGTH = 77
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
_FP8 = ("F8_E4M3", "F8_E5M2")


class MissingTokenizer(FileNotFoundError):
    """A single-file checkpoint needs a tokenizer that is nowhere on disk."""


# ============================================================================================ writing

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_UNET_LAYERS = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
                "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(rest)


def unet_to_original(state: Dict, layers_per_block: int) -> Dict:
    """Diffusers UNet2DConditionModel keys -> LDM `openaimodel` keys (without the model.diffusion_model. prefix)."""
    per_block = layers_per_block + 1      # LDM numbers every resnet/attention pair and each resampler in one list
    up_has_attention = {m.group(1) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for key, value in state.items():
        name, _, param = key.rpartition(".")
        if name in _UNET_LAYERS:
            out[f"{_UNET_LAYERS[name]}.{param}"] = value
            continue
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", key):
            block, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if part == "downsamplers":        # ...downsamplers.0.conv.weight
                out[f"input_blocks.{1 + block * per_block + layers_per_block}.0.op.{rest.split('.', 1)[1]}"] = value
            elif part == "resnets":
                out[f"input_blocks.{1 + block * per_block + j}.0.{_resnet(rest)}"] = value
            else:
                out[f"input_blocks.{1 + block * per_block + j}.1.{rest}"] = value
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            part, j, rest = m[1], int(m[2]), m[3]
            if part == "resnets":             # resnet, attention, resnet -> middle_block.0, .1, .2
                out[f"middle_block.{2 * j}.{_resnet(rest)}"] = value
            else:
                out[f"middle_block.1.{rest}"] = value
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", key):
            block, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if part == "upsamplers":          # after the attention when the block has one
                slot = 2 if m[1] in up_has_attention else 1
                out[f"output_blocks.{block * per_block + layers_per_block}.{slot}.{rest}"] = value
            elif part == "resnets":
                out[f"output_blocks.{block * per_block + j}.0.{_resnet(rest)}"] = value
            else:
                out[f"output_blocks.{block * per_block + j}.1.{rest}"] = value
        else:
            raise KeyError(f"no original-layout name for UNet key {key!r}")
    return out


CONTROLNET_PREFIX = "control_model."
_CONTROLNET_ONLY = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")


def controlnet_to_original(state: Dict, layers_per_block: int) -> Dict:
    """Diffusers ControlNetModel keys -> lllyasviel's layout (with control_model.): the UNet encoder, the hint
    block (a Sequential of convs with SiLUs between: conv_in .0, blocks .2 .4 ..., conv_out last) and zero convs."""
    unet_part = {k: v for k, v in state.items() if not k.startswith(_CONTROLNET_ONLY)}
    out = {CONTROLNET_PREFIX + k: v for k, v in unet_to_original(unet_part, layers_per_block).items()}
    blocks = {int(m[1]) for k in state if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))}
    for key, value in state.items():
        name, _, param = key.rpartition(".")
        if name == "controlnet_cond_embedding.conv_in":
            slot = "input_hint_block.0"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", name):
            slot = f"input_hint_block.{2 * (int(m[1]) + 1)}"
        elif name == "controlnet_cond_embedding.conv_out":
            slot = f"input_hint_block.{2 * (len(blocks) + 1)}"
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", name):
            slot = f"zero_convs.{m[1]}.0"
        elif name == "controlnet_mid_block":
            slot = "middle_block_out.0"
        else:
            continue
        out[f"{CONTROLNET_PREFIX}{slot}.{param}"] = value
    return out


def load_single_file_controlnet(path, family: str, dtype=None):
    """An SD1.5 / SDXL ControlNet saved as one original-layout file, loaded offline with the shipped config."""
    import torch
    from diffusers import ControlNetModel
    path = Path(path)
    if family not in (SD15, SDXL):
        raise NotAModel(f"{path}: single-file {family} ControlNets are not supported; use its diffusers folder")
    config_dir = CONFIG_ROOT / family / "controlnet"
    try:
        controlnet = ControlNetModel.from_single_file(str(path), config=str(config_dir), local_files_only=True,
                                                      torch_dtype=dtype or torch.float32)
    except (ValueError, RuntimeError) as e:
        raise NotAModel(f"{path}: its weights do not fit the {family} ControlNet architecture "
                        f"({str(e).splitlines()[0]})") from e
    empty = [n for n, p in controlnet.named_parameters() if p.device.type == "meta"]
    if empty:
        raise NotAModel(f"{path}: the ControlNet weights are incomplete ({len(empty)} tensors missing, "
                        f"e.g. {empty[0]})")
    return controlnet


_VAE_ATTENTION = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                  ("to_out.0.", "proj_out."))


def vae_to_original(state: Dict, num_blocks: int) -> Dict:
    """Diffusers AutoencoderKL keys -> LDM keys (without first_stage_model.)."""
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        # The decoder's up blocks are numbered from the bottom in LDM, from the top in diffusers.
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{num_blocks - 1 - int(m[1])}.block.", new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.", new)
        new = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda m: f".mid.block_{int(m[1]) + 1}.", new)
        if ".mid_block.attentions.0." in new:
            new = new.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for diffusers_name, ldm_name in _VAE_ATTENTION:
                new = new.replace(".attn_1." + diffusers_name, ".attn_1." + ldm_name)
            if value.ndim == 2:               # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out[new] = value
    return out


def clip_to_original(state: Dict) -> Dict:
    """transformers CLIPTextModel keys -> the HF layout LDM embeds (`text_model.` included, no prefix)."""
    import torch
    # transformers >= 5.6 drops the text_model. wrapper of CLIPTextModel; real checkpoints keep it.
    out = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}
    # Real checkpoints also carry the position_ids buffer that newer transformers no longer saves.
    length = out["text_model.embeddings.position_embedding.weight"].shape[0]
    out.setdefault("text_model.embeddings.position_ids", torch.arange(length)[None])
    return out


def open_clip_to_original(state: Dict) -> Dict:
    """CLIPTextModelWithProjection keys -> OpenCLIP keys (SDXL's second text encoder), fused q/k/v included."""
    import torch
    state = {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}
    out = {"token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
           "positional_embedding": state.pop("embeddings.position_embedding.weight"),
           "ln_final.weight": state.pop("final_layer_norm.weight"),
           "ln_final.bias": state.pop("final_layer_norm.bias"),
           "text_projection": state.pop("text_projection.weight").T.contiguous(),   # OpenCLIP computes x @ P
           "logit_scale": torch.tensor(4.6052)}   # ln(100): OpenCLIP's contrastive temperature, unused here
    layers = sorted({int(m[1]) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{param}"] = torch.cat(
                [state.pop(f"{src}self_attn.{p}_proj.{param}") for p in "qkv"])
            for old, new in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                             ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[f"{dst}{new}.{param}"] = state.pop(f"{src}{old}.{param}")
    if state:
        raise KeyError(f"no OpenCLIP name for {sorted(state)[:3]}")
    return out


def original_state_dict(pipe) -> Dict:
    """The whole SD1.5 or SDXL pipeline as one state dict in the original checkpoint layout."""
    def add(prefix, part):
        out.update({prefix + k: v for k, v in part.items()})

    out: Dict = {}
    unet, vae = pipe.unet, pipe.vae
    add(UNET_PREFIX, unet_to_original(unet.state_dict(), unet.config.layers_per_block))
    add(VAE_PREFIX, vae_to_original(vae.state_dict(), len(vae.config.block_out_channels)))
    if getattr(pipe, "text_encoder_2", None) is not None:
        add(SDXL_CLIP_PREFIX.removesuffix("text_model."), clip_to_original(pipe.text_encoder.state_dict()))
        add(SDXL_OPENCLIP_PREFIX, open_clip_to_original(pipe.text_encoder_2.state_dict()))
    else:
        add(SD15_CLIP_PREFIX.removesuffix("text_model."), clip_to_original(pipe.text_encoder.state_dict()))
    return out


def save_single_file(pipe, path, dtype=None, metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write an SD1.5/SDXL diffusers pipeline as one original-layout .safetensors (dtype: e.g. torch.float16)."""
    from safetensors.torch import save_file
    state = original_state_dict(pipe)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata=metadata or {})
    return path


# ============================================================================================ loading

def _is_clip_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or \
        ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())


def tokenizer_search_path(config_dir: Path, models_dirs: Iterable[Path], subfolder: str = "tokenizer"):
    """Where a CLIP tokenizer is looked for, in order."""
    places = [Path(config_dir) / subfolder]
    for models_dir in models_dirs:
        models_dir = Path(models_dir)
        places.append(models_dir / "tokenizers" / CLIP_TOKENIZER_DIR)
        # ComfyUI keeps the same CLIP-L tokenizer in its source tree, next to its models/ folder.
        places.append(models_dir.parent / "comfy" / "sd1_tokenizer")
    places.append(CONFIG_ROOT / "tokenizers" / CLIP_TOKENIZER_DIR)
    return places


def find_clip_tokenizer(config_dir: Path, models_dirs: Iterable[Path], checkpoint: Path,
                        subfolder: str = "tokenizer") -> Path:
    places = tokenizer_search_path(config_dir, models_dirs, subfolder)
    for place in places:
        if _is_clip_tokenizer(place):
            return place
    listed = "\n  ".join(str(p) for p in places)
    raise MissingTokenizer(
        f"the CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json) is not in {checkpoint}: single-file "
        f"checkpoints carry no tokenizer. Put the tokenizer/ folder of openai/clip-vit-large-patch14 (the same "
        f"files are in the tokenizer/ folder of stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0, and in a "
        f"ComfyUI install as ComfyUI/comfy/sd1_tokenizer) in one of:\n  {listed}")


def load_tokenizers(family: str, config_dir: Path, models_dirs: Sequence[Path], checkpoint: Path) -> Dict:
    """{"tokenizer": ..., ["tokenizer_2": ...]} as the pipeline wants them."""
    from transformers import CLIPTokenizer
    found = find_clip_tokenizer(config_dir, models_dirs, checkpoint)
    # Without a tokenizer_config.json the length defaults to "unlimited" (and ComfyUI's says 8192); SD's CLIP is 77.
    tokenizers = {"tokenizer": CLIPTokenizer.from_pretrained(str(found), model_max_length=CLIP_MAX_LENGTH)}
    if family == SDXL:
        own = Path(config_dir) / "tokenizer_2"
        if _is_clip_tokenizer(own):
            tokenizers["tokenizer_2"] = CLIPTokenizer.from_pretrained(str(own), model_max_length=CLIP_MAX_LENGTH)
        else:
            # SDXL's second tokenizer is the same BPE vocabulary; OpenCLIP pads with "!" (id 0), not <|endoftext|>.
            tokenizers["tokenizer_2"] = CLIPTokenizer.from_pretrained(
                str(found), model_max_length=CLIP_MAX_LENGTH, pad_token="!")
    return tokenizers


def check_config_dir(family: str, config_dir: Path) -> None:
    needed = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
              "text_encoder/config.json"] + (["text_encoder_2/config.json"] if family == SDXL else [])
    missing = [n for n in needed if not (Path(config_dir) / n).is_file()]
    if missing:
        raise FileNotFoundError(f"the {family} architecture config folder {config_dir} lacks {', '.join(missing)}")


def load_single_file(path, *, config_dir=None, models_dirs: Sequence = (), dtype=None, family: Optional[str] = None):
    """An SD1.5 or SDXL single-file checkpoint, or a FLUX transformer file with its text encoders and autoencoder
    found in `models_dirs` (see flux_single_file), as a text-to-image pipeline, with no network access.

    config_dir: a diffusers-layout folder of JSON configs (default: the shipped configs/<family>/). A diffusers
    model folder works too, its tokenizers included. models_dirs: where to look for a tokenizer (see
    tokenizer_search_path). dtype: the weights' dtype after loading (default float32); fp8 files are upcast to it.
    """
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(path)
    detection = detect(path)
    family = family or detection.family
    if detection.kind == DIFFUSION_MODEL and family == FLUX:     # ComfyUI's FLUX: the transformer + companions
        from .flux_single_file import load_flux_single_file
        return load_flux_single_file(path, config_dir=config_dir, models_dirs=models_dirs, dtype=dtype)
    if detection.kind != CHECKPOINT or family not in (SD15, SDXL):
        what = f"a {detection.family or 'unknown-family'} {detection.kind}"
        raise NotAModel(f"{path}: {what}, not an SD1.5 or SDXL checkpoint that loads as one file "
                        f"(UNet, VAE and text encoders together)")
    if detection.variant in ("inpaint", "refiner"):
        raise NotAModel(f"{path}: an {family} {detection.variant} checkpoint; only base models load as one file")
    config_dir = Path(config_dir) if config_dir else CONFIG_ROOT / family
    check_config_dir(family, config_dir)
    tokenizers = load_tokenizers(family, config_dir, [Path(d) for d in models_dirs], path)
    dtype = dtype or torch.float32
    cls = StableDiffusionXLPipeline if family == SDXL else StableDiffusionPipeline
    # No safety checker (a local tool on the artist's own input) and no invisible watermark (not installed).
    extra = {"add_watermarker": False} if family == SDXL else \
        {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    try:
        pipe = cls.from_single_file(str(path), config=str(config_dir), local_files_only=True, torch_dtype=dtype,
                                    **tokenizers, **extra)
    except (ValueError, RuntimeError) as e:
        # diffusers' shape-mismatch text suggests loader flags that would only hide the problem; keep the facts.
        detail = re.search(r"\S+ expected shape .*?, but got [^.]*", str(e))
        raise NotAModel(f"{path}: its weights do not fit the {family} architecture in {config_dir} "
                        f"({detail.group(0) if detail else str(e).splitlines()[0]})") from e
    _check_loaded(pipe, path)
    return pipe


def _check_loaded(pipe, path: Path) -> None:
    """diffusers leaves parameters it found no weights for on the meta device; say so now, not mid-job."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        empty = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if empty:
            raise NotAModel(f"{path}: the {name} weights are incomplete ({len(empty)} tensors missing, "
                            f"e.g. {empty[0]}); the file does not match the {name} architecture")


def has_fp8(path) -> bool:
    """Whether the file stores float8 weights (loaded by upcasting; useful to show in a model list)."""
    return any(d in _FP8 for d in read_header(path).dtypes.values())
