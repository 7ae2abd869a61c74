"""FLUX as ComfyUI users keep it: the transformer alone (diffusion_models/ or unet/, BFL's key layout, maybe fp8),
the text encoders beside it (text_encoders/ or clip/: clip_l.safetensors, t5xxl_fp16 / t5xxl_fp8_e4m3fn) and
the autoencoder (vae/ae.safetensors). Loaded offline into a FluxPipeline.

The transformer's architecture is read from its own header (depth, widths, guidance input: FLUX.1 [dev] and
[schnell] differ there), on top of the shipped configs/flux/transformer. diffusers' from_single_file converter
assumes the full 3072 width, so the BFL -> diffusers renaming is done here, from one table that also writes the
original layout (the tests need real single files). The text encoders and the autoencoder have fixed
architectures: configs/flux/<component>/ (or <models-dir>/configs/flux/<component>/ where present, for variants).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from .families import DIFFUSION_MODEL, FLUX, TEXT_ENCODER, VAE, NotAModel, detect, read_header
from .scan import LibraryError

T5_TOKENIZER_DIR = "t5-v1_1-xxl"     # <models-dir>/tokenizers/<this>/ : where the T5 tokenizer goes
T5_MAX_LENGTH = 512
COMPANION_FOLDERS = {"clip_l": ("text_encoders", "clip"), "t5xxl": ("text_encoders", "clip"), "ae": ("vae",)}
_COMPANION_FILES = {"clip_l": "clip_l.safetensors", "t5xxl": "t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn)",
                    "ae": "ae.safetensors"}
_COMPANION_WHAT = {"clip_l": "CLIP-L text encoder", "t5xxl": "T5-XXL text encoder", "ae": "FLUX autoencoder (VAE)"}


class MissingCompanion(LibraryError, FileNotFoundError):
    """A FLUX transformer file needs a text encoder or autoencoder that is nowhere in the models folders."""


# ============================================================================================ key layout

# BFL module name -> diffusers module name; parameters keep their name, except norms' "scale" (-> "weight").
_GLOBAL = {"time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
           "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
           "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
           "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
           "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
           "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
           "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out",
           "final_layer.adaLN_modulation.1": "norm_out.linear"}     # (shift, scale) in BFL, (scale, shift) here
_DOUBLE = {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
           "img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
           "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k",
           "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
           "txt_mlp.2": "ff_context.net.2", "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out"}
_SINGLE = {"modulation.lin": "norm.linear", "norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k",
           "linear2": "proj_out"}
# Fused BFL projections -> the diffusers ones, in order (q, k, v [, the single block's MLP input]).
_DOUBLE_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                 "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
_BLOCKS = {"double_blocks": ("transformer_blocks", _DOUBLE, _DOUBLE_FUSED),
           "single_blocks": ("single_transformer_blocks", _SINGLE, _SINGLE_FUSED)}
_SWAPPED = "final_layer.adaLN_modulation.1"


def _swap_halves(t):
    import torch
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def flux_to_diffusers(state: Dict) -> Dict:
    """BFL / ComfyUI FLUX transformer keys (optionally under model.diffusion_model.) -> FluxTransformer2DModel's."""
    state = {k.removeprefix("model.diffusion_model."): v for k, v in state.items()}
    hidden = state["img_in.weight"].shape[0]
    out = {}
    for key, value in state.items():
        name, _, param = key.rpartition(".")
        param = "weight" if param == "scale" else param
        if m := re.fullmatch(r"(double_blocks|single_blocks)\.(\d+)\.(.+)", name):
            prefix, renames, fused = _BLOCKS[m[1]]
            prefix, part = f"{prefix}.{m[2]}.", m[3]
            if part in fused:
                targets = fused[part]     # q, k, v are `hidden` rows each; the single block's MLP gets the rest
                sizes = [hidden] * 3 + ([value.shape[0] - 3 * hidden] if len(targets) == 4 else [])
                for target, chunk in zip(targets, value.split(sizes, dim=0)):
                    out[f"{prefix}{target}.{param}"] = chunk
            elif part in renames:
                out[f"{prefix}{renames[part]}.{param}"] = value
            else:
                raise NotAModel(f"no diffusers name for FLUX transformer key {key!r}")
        elif name in _GLOBAL:
            out[f"{_GLOBAL[name]}.{param}"] = _swap_halves(value) if name == _SWAPPED else value
        else:
            raise NotAModel(f"no diffusers name for FLUX transformer key {key!r}")
    return out


def flux_to_original(state: Dict) -> Dict:
    """FluxTransformer2DModel keys -> BFL's layout (as in flux1-dev.safetensors): the inverse of flux_to_diffusers."""
    import torch
    out, pending = {}, dict(state)
    for block, (prefix, renames, fused) in _BLOCKS.items():
        indices = sorted({int(m[1]) for k in state if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))})
        for i in indices:
            for original, targets in fused.items():
                for param in ("weight", "bias"):
                    parts = [pending.pop(f"{prefix}.{i}.{t}.{param}") for t in targets]
                    out[f"{block}.{i}.{original}.{param}"] = torch.cat(parts, dim=0)
            for original, new in renames.items():
                for param in ("weight", "bias"):
                    if f"{prefix}.{i}.{new}.{param}" in pending:
                        old_param = "scale" if original.endswith("_norm") else param
                        out[f"{block}.{i}.{original}.{old_param}"] = pending.pop(f"{prefix}.{i}.{new}.{param}")
    for original, new in _GLOBAL.items():
        for param in ("weight", "bias"):
            if f"{new}.{param}" in pending:
                value = pending.pop(f"{new}.{param}")
                out[f"{original}.{param}"] = _swap_halves(value) if original == _SWAPPED else value
    if pending:
        raise KeyError(f"no BFL name for {sorted(pending)[:3]}")
    return out


def transformer_config(shapes: Dict, base: Dict) -> Dict:
    """The diffusers config of a BFL-layout FLUX transformer, from its tensor shapes over `base` (FLUX.1-dev)."""
    shapes = {k.removeprefix("model.diffusion_model."): v for k, v in shapes.items()}
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    hidden, in_channels = shapes["img_in.weight"]
    count = lambda block: len({k.split(".")[1] for k in shapes if k.startswith(block + ".")})   # noqa: E731
    # Rotary dimensions per axis (text position, y, x): FLUX.1 splits each head 16/56/56, i.e. 1:7:7, even sizes.
    yx = 2 * ((7 * head_dim // 16) // 2)
    return dict(base, in_channels=in_channels, out_channels=shapes["final_layer.linear.weight"][0],
                num_layers=count("double_blocks"), num_single_layers=count("single_blocks"),
                attention_head_dim=head_dim, num_attention_heads=hidden // head_dim,
                joint_attention_dim=shapes["txt_in.weight"][1],
                pooled_projection_dim=shapes["vector_in.in_layer.weight"][1],
                guidance_embeds="guidance_in.in_layer.weight" in shapes,      # [dev] has it, [schnell] not
                axes_dims_rope=[head_dim - 2 * yx, yx, yx])


# ============================================================================================ reading

def read_state(path, dtype) -> Dict:
    """A safetensors file's tensors in `dtype`, read one at a time (a 12 GB fp8 file never sits in memory beside
    its upcast copy). ComfyUI's "scaled" fp8 files store a per-tensor `<name>.scale_weight` that multiplies the
    weight back to size."""
    from safetensors import safe_open
    out = {}
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for key in f.keys():
            if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
                continue
            value = f.get_tensor(key)
            value = value.to(dtype) if value.is_floating_point() else value
            scale = key.removesuffix(".weight") + ".scale_weight"
            out[key] = value * f.get_tensor(scale).to(dtype) if key.endswith(".weight") and scale in keys else value
    return out


def _empty_module(build):
    """`build()` without allocating its weights (accelerate's init_empty_weights: parameters on the meta device)."""
    from accelerate import init_empty_weights
    with init_empty_weights():
        return build()


def _fill(module, state: Dict, path: Path, what: str, keep_fp32=(), dtype=None):
    """Give an empty module `state`'s tensors; NotAModel naming what is missing or left over."""
    import torch
    try:
        result = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:          # shape mismatches
        detail = re.search(r"size mismatch for [^\n]*", str(e))
        raise NotAModel(f"{path}: its weights do not fit the {what} architecture "
                        f"({detail.group(0) if detail else str(e).splitlines()[0]})") from e
    if hasattr(module, "tie_weights"):
        module.tie_weights()              # T5: encoder.embed_tokens is the shared embedding
    empty = [n for n, p in module.named_parameters() if p.device.type == "meta"]
    if empty or result.unexpected_keys:
        problem = f"{len(empty)} tensors missing, e.g. {empty[0]}" if empty else \
            f"unexpected tensors, e.g. {result.unexpected_keys[0]}"
        raise NotAModel(f"{path}: not a {what} file ({problem})")
    if keep_fp32 and dtype == torch.float16:      # as transformers does for T5 in fp16 (its `wo` overflows)
        for name, param in module.named_parameters():
            if any(part in keep_fp32 for part in name.split(".")):
                param.data = param.data.float()
    return module.eval()


def _config_dir(component: str, models_dirs: Sequence[Path], config_dir: Optional[Path]) -> Path:
    from .single_file import CONFIG_ROOT
    if config_dir is not None:
        return Path(config_dir) / component
    for root in models_dirs:
        folder = Path(root) / "configs" / FLUX / component
        if (folder / "config.json").is_file() or (folder / "scheduler_config.json").is_file():
            return folder
    return CONFIG_ROOT / FLUX / component


def load_transformer(path, dtype, config_dir: Path):
    from diffusers import FluxTransformer2DModel
    path = Path(path)
    config = transformer_config(read_header(path).shapes, dict(FluxTransformer2DModel.load_config(str(config_dir))))
    module = _empty_module(lambda: FluxTransformer2DModel.from_config(config))
    return _fill(module, flux_to_diffusers(read_state(path, dtype)), path, "FLUX transformer")


def load_clip_l(path, dtype, config_dir: Path):
    """ComfyUI's clip_l.safetensors: transformers' CLIP text keys (text_model.*); a stored projection is unused."""
    from transformers import CLIPTextConfig, CLIPTextModel
    path = Path(path)
    module = _empty_module(lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(str(config_dir))))
    wrapped = any(k.startswith("text_model.") for k in module.state_dict())   # flat from transformers 5.6
    state = {}
    for key, value in read_state(path, dtype).items():
        key = re.sub(r"^(text_encoders\.clip_l\.transformer\.|cond_stage_model\.transformer\.)", "", key)
        key = key.removeprefix("text_model.")
        if key.startswith(("embeddings.", "encoder.", "final_layer_norm.")) and not key.endswith("position_ids"):
            state[f"text_model.{key}" if wrapped else key] = value
    return _fill(module, state, path, "CLIP-L text encoder")


def load_t5(path, dtype, config_dir: Path):
    """ComfyUI's t5xxl_*.safetensors: transformers' T5 encoder keys (shared.weight, encoder.*)."""
    from transformers import T5Config, T5EncoderModel
    path = Path(path)
    module = _empty_module(lambda: T5EncoderModel(T5Config.from_pretrained(str(config_dir))))
    state = {k.removeprefix("text_encoders.t5xxl.transformer."): v for k, v in read_state(path, dtype).items()}
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    state.pop("encoder.embed_tokens.weight", None)     # tied to shared.weight
    return _fill(module, state, path, "T5 text encoder",
                 keep_fp32=tuple(T5EncoderModel._keep_in_fp32_modules or ()), dtype=dtype)


def load_ae(path, dtype, config_dir: Path):
    """BFL's ae.safetensors (LDM autoencoder keys) through diffusers' own single-file loader."""
    from diffusers import AutoencoderKL
    path = Path(path)
    try:
        vae = AutoencoderKL.from_single_file(str(path), config=str(config_dir.parent), subfolder=config_dir.name,
                                             local_files_only=True, torch_dtype=dtype)
    except (ValueError, RuntimeError) as e:
        raise NotAModel(f"{path}: its weights do not fit the FLUX autoencoder ({str(e).splitlines()[0]})") from e
    empty = [n for n, p in vae.named_parameters() if p.device.type == "meta"]
    if empty:
        raise NotAModel(f"{path}: not a FLUX autoencoder ({len(empty)} tensors missing, e.g. {empty[0]})")
    return vae


# ============================================================================================ tokenizers

def _is_t5_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()


def t5_tokenizer_search_path(config_dir: Optional[Path], models_dirs: Iterable[Path]) -> List[Path]:
    """Where the T5 tokenizer is looked for, in order."""
    from .single_file import CONFIG_ROOT
    places = [Path(config_dir) / "tokenizer_2"] if config_dir is not None else []
    for models_dir in models_dirs:
        places.append(Path(models_dir) / "tokenizers" / T5_TOKENIZER_DIR)
        # ComfyUI keeps it in its source tree, next to its models/ folder.
        places.append(Path(models_dir).parent / "comfy" / "text_encoders" / "t5_tokenizer")
        places.append(Path(models_dir).parent / "comfy" / "t5_tokenizer")
    places.append(CONFIG_ROOT / "tokenizers" / T5_TOKENIZER_DIR)
    return places


def load_t5_tokenizer(config_dir: Optional[Path], models_dirs: Sequence[Path], checkpoint: Path):
    from transformers import T5TokenizerFast

    from .single_file import MissingTokenizer
    places = t5_tokenizer_search_path(config_dir, models_dirs)
    for place in places:
        if _is_t5_tokenizer(place):
            return T5TokenizerFast.from_pretrained(str(place), model_max_length=T5_MAX_LENGTH)
    listed = "\n  ".join(str(p) for p in places)
    raise MissingTokenizer(
        f"the T5 tokenizer (tokenizer.json or spiece.model) for {checkpoint.name} is missing: FLUX files carry no "
        f"tokenizer. Put the tokenizer_2/ folder of black-forest-labs/FLUX.1-dev (or google/t5-v1_1-xxl's "
        f"tokenizer; a ComfyUI install has it as ComfyUI/comfy/text_encoders/t5_tokenizer) in one of:\n  {listed}")


# ============================================================================================ companions

def find_companions(models_dirs: Sequence[Path]) -> Dict[str, Optional[Path]]:
    """{"clip_l", "t5xxl", "ae": the file to use or None}: the first by name in the models folders (earlier
    folders first), full precision before fp8 (both are loaded in the model's dtype; fp16 is the better copy)."""
    from .scan import scan
    library = scan(models_dirs, folders=("text_encoders", "clip", "vae"))
    found: Dict[str, Optional[Path]] = {}
    for role in ("clip_l", "t5xxl", "ae"):
        if role == "ae":
            fits = [e for e in library.entries if e.kind == VAE and e.families == (FLUX,) and e.path.is_file()]
        else:
            fits = [e for e in library.entries if e.kind == TEXT_ENCODER and e.variant == role]
        order = {Path(r): i for i, r in enumerate(library.roots)}
        root_of = lambda e: next((i for r, i in order.items() if r in e.path.parents), len(order))   # noqa: E731
        fits.sort(key=lambda e: (root_of(e), e.fp8, e.name.lower() != _COMPANION_FILES[role].split()[0],
                                 e.name.lower()))
        found[role] = fits[0].path if fits else None
    return found


def require_companions(checkpoint: Path, models_dirs: Sequence[Path]) -> Dict[str, Path]:
    found = find_companions(models_dirs)
    missing = [role for role, path in found.items() if path is None]
    if missing:
        roots = [Path(r) for r in models_dirs] or [Path("<models-dir>")]
        needs = "; ".join(f"the {_COMPANION_WHAT[r]} ({_COMPANION_FILES[r]}) in "
                          f"{' or '.join(str(roots[0] / f) + '/' for f in COMPANION_FOLDERS[r])}"
                          for r in missing)
        raise MissingCompanion(f"{checkpoint.name} is a FLUX transformer only; it also needs {needs} "
                               f"(looked in {', '.join(str(r) for r in roots)})")
    return found


# ============================================================================================ the pipeline

def load_flux_single_file(path, *, config_dir=None, models_dirs: Sequence = (), dtype=None):
    """A FLUX transformer file plus the text encoders and autoencoder found beside it, as a FluxPipeline, offline.

    config_dir: a diffusers-layout FLUX folder whose component configs (and tokenizers) to use (default: the
    shipped configs/flux/, or <models-dir>/configs/flux/<component>/ where present). dtype: every component's
    dtype after loading (default float32); fp8 files are upcast to it.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from .single_file import load_tokenizers
    path = Path(path)
    detection = detect(path)
    if detection.kind != DIFFUSION_MODEL or detection.family != FLUX:
        raise NotAModel(f"{path}: a {detection.family or 'unknown-family'} {detection.kind}, not a FLUX transformer")
    if detection.variant is not None:
        raise NotAModel(f"{path}: a FLUX.1 {detection.variant} transformer (its input takes extra latents); only "
                        f"text-to-image FLUX transformers load as a base model")
    models_dirs = [Path(d) for d in models_dirs]
    config_dir = Path(config_dir) if config_dir is not None else None
    dtype = dtype or torch.float32
    companions = require_companions(path, models_dirs)
    where = lambda component: _config_dir(component, models_dirs, config_dir)   # noqa: E731
    tokenizer = load_tokenizers("flux", where("text_encoder").parent, models_dirs, path)["tokenizer"]
    tokenizer_2 = load_t5_tokenizer(config_dir, models_dirs, path)
    transformer = load_transformer(path, dtype, where("transformer"))
    scheduler_config = dict(FlowMatchEulerDiscreteScheduler.load_config(str(where("scheduler"))))
    if not transformer.config.guidance_embeds:      # FLUX.1 [schnell]: timestep-distilled, no resolution shift
        scheduler_config.update(use_dynamic_shifting=False, shift=1.0)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(scheduler_config),
                        vae=load_ae(companions["ae"], dtype, where("vae")),
                        text_encoder=load_clip_l(companions["clip_l"], dtype, where("text_encoder")),
                        tokenizer=tokenizer,
                        text_encoder_2=load_t5(companions["t5xxl"], dtype, where("text_encoder_2")),
                        tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ============================================================================================ writing

def save_flux_single_files(pipe, models_dir, name: str = "flux1-dev.safetensors", dtype=None,
                           t5_name: str = "t5xxl_fp16.safetensors") -> Dict[str, Path]:
    """Write a diffusers FluxPipeline the way a ComfyUI user keeps FLUX: diffusion_models/<name> (BFL layout),
    text_encoders/clip_l.safetensors and <t5_name>, vae/ae.safetensors (LDM layout). dtype: e.g. an fp8 dtype."""
    from safetensors.torch import save_file

    from .single_file import clip_to_original, vae_to_original
    vae = pipe.vae
    t5 = {k: v for k, v in pipe.text_encoder_2.state_dict().items() if k != "encoder.embed_tokens.weight"}
    parts = {"diffusion_models/" + name: flux_to_original(pipe.transformer.state_dict()),
             "text_encoders/clip_l.safetensors": clip_to_original(pipe.text_encoder.state_dict()),
             "text_encoders/" + t5_name: t5,
             "vae/ae.safetensors": vae_to_original(vae.state_dict(), len(vae.config.block_out_channels))}
    written = {}
    for role, (relative, state) in zip(("transformer", "clip_l", "t5xxl", "ae"), parts.items()):
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        target = Path(models_dir) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(target))
        written[role] = target
    return written
