"""Which model family and kind a file is, from its contents, never from its name.

A `.safetensors` file starts with 8 bytes (little-endian header length) and a JSON header naming every tensor
with its dtype, shape and byte range, plus an optional `__metadata__` string map. Key names and a few shapes
identify the layout (original LDM, diffusers, kohya, peft) and the family; no tensor is ever read, so a scan of
a disk full of multi-GB checkpoints costs one small read per file.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

SD15, SDXL, FLUX, SD2 = "sd15", "sdxl", "flux", "sd2"
SUPPORTED_FAMILIES = (SD15, SDXL, FLUX)   # SD2 is recognised so it can be named in an error, not run

CHECKPOINT = "checkpoint"            # everything to generate: UNet/transformer + VAE (+ text encoders)
DIFFUSION_MODEL = "diffusion_model"  # UNet or transformer only (ComfyUI's diffusion_models/ and unet/ folders)
CONTROLNET = "controlnet"
LORA = "lora"
VAE = "vae"
UPSCALER = "upscaler"                # listed by the scan from upscale_models/, never detected from keys
TEXT_ENCODER = "text_encoder"        # a text encoder alone (ComfyUI's text_encoders/ and clip/): clip_l, t5xxl
IPADAPTER = "ipadapter"              # IP-Adapter (style reference): image projection + extra attention weights
CLIP_VISION = "clip_vision"          # the image encoder an IP-Adapter reads the reference image with

# safetensors itself refuses headers over 100 MB; a bigger "header" means the file is something else.
MAX_HEADER_BYTES = 100 * 1024 * 1024
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")   # BFL shipped FLUX as .sft

# Cross-attention width (text embedding size) of the real models: the surest family signal in a UNet or LoRA.
_CONTEXT_WIDTH = {768: SD15, 1024: SD2, 2048: SDXL}
# The first bytes of files that turn up renamed or mis-saved as .safetensors, for a helpful message.
_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"PK\x03\x04": "a zip / PyTorch .ckpt file",
          b"\x80\x02": "a Python pickle", b"GGUF": "a GGUF file", b"<": "an HTML/XML page (a failed download?)",
          b"{": "a JSON file"}


class NotAModel(ValueError):
    """The file is not a readable safetensors model (corrupt, truncated, another format, unknown layout)."""


@dataclass(frozen=True)
class Header:
    shapes: Dict[str, Tuple[int, ...]]     # tensor name -> shape
    dtypes: Dict[str, str]                 # tensor name -> safetensors dtype ("F16", "F8_E4M3", ...)
    metadata: Dict[str, str]               # the __metadata__ map (kohya training info, modelspec, ...)


@dataclass(frozen=True)
class Detection:
    kind: str                      # CHECKPOINT, DIFFUSION_MODEL, CONTROLNET, LORA, VAE
    families: Tuple[str, ...]      # the families this works with; a 4-channel VAE fits both sd15 and sdxl
    layout: str                    # "original", "diffusers", "kohya", "peft", "xlabs"
    variant: Optional[str] = None  # "inpaint", "refiner", "union", "control" (FLUX depth/canny), "fill"

    @property
    def family(self) -> Optional[str]:
        """The one family, or None when the file fits several or none could be told."""
        return self.families[0] if len(self.families) == 1 else None

    def fits(self, family: str) -> bool:
        return family in self.families


# --------------------------------------------------------------------------------------------- header

def read_header(path) -> Header:
    """Parse a safetensors header without loading any tensor; NotAModel with the reason if it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise NotAModel(f"{path}: not a safetensors file (only {size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length < 2 or length > min(MAX_HEADER_BYTES, size - 8):
                raise NotAModel(f"{path}: not a safetensors file (header length {length} does not fit in a "
                                f"{size}-byte file{_sniff(head)})")
            raw = f.read(length)
    except OSError as e:
        raise NotAModel(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise NotAModel(f"{path}: not a safetensors file (header is not valid JSON: {e}{_sniff(head)})") from e

    metadata = header.pop("__metadata__", None) or {}
    shapes, dtypes, data_end = {}, {}, 0
    for name, info in header.items():
        try:
            shapes[name] = tuple(int(d) for d in info["shape"])
            dtypes[name] = str(info["dtype"])
            data_end = max(data_end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as e:
            raise NotAModel(f"{path}: corrupt safetensors header (entry {name!r}: {e!r})") from e
    available = size - 8 - length
    if data_end > available:
        # The most common corruption in practice: an interrupted download.
        raise NotAModel(f"{path}: truncated safetensors file (the header promises {data_end} bytes of tensor "
                        f"data, the file holds {available}); download it again")
    if not isinstance(metadata, dict):
        metadata = {}
    return Header(shapes, dtypes, {str(k): str(v) for k, v in metadata.items()})


def _sniff(head: bytes) -> str:
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return f"; it looks like {what}"
    return ""


# --------------------------------------------------------------------------------------------- detection

def detect(path) -> Detection:
    """Family and kind of a `.safetensors` file or a diffusers folder."""
    path = Path(path)
    if path.is_dir():
        return detect_diffusers_folder(path)
    header = read_header(path)
    try:
        return detect_keys(header.shapes, header.metadata)
    except NotAModel as e:
        raise NotAModel(f"{path}: {e}") from None


def detect_keys(shapes: Mapping[str, Tuple[int, ...]], metadata: Optional[Mapping[str, str]] = None) -> Detection:
    """The rules, on tensor names and shapes alone (so tests and callers can use them without a file)."""
    metadata = metadata or {}
    if not shapes:
        raise NotAModel("holds no tensors")
    keys = list(shapes)
    has = lambda fragment: any(fragment in k for k in keys)          # noqa: E731
    starts = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731

    if _is_lora(keys):
        return _lora(shapes, metadata)
    if starts("image_proj.") and starts("ip_adapter."):
        return _ip_adapter(shapes, metadata)
    if "vision_model.embeddings.patch_embedding.weight" in shapes:
        return Detection(CLIP_VISION, (), "transformers", clip_vision_kind(
            shapes["vision_model.embeddings.patch_embedding.weight"][0],
            (shapes.get("visual_projection.weight") or (0,))[0]))

    # ControlNets first: XLabs FLUX ControlNets contain double_blocks, ComfyUI SD ones a whole UNet encoder.
    # (controlnet_blocks + transformer_blocks alone would also match SD3 ControlNets.)
    if has("controlnet_x_embedder.") or (has("controlnet_blocks.") and has("double_blocks.")):
        return Detection(CONTROLNET, (FLUX,), "diffusers" if has("controlnet_x_embedder.") else "xlabs",
                         "union" if has("controlnet_mode_embedder.") else None)
    if has("input_hint_block.") or starts("control_model."):
        return Detection(CONTROLNET, (_unet_family(shapes, label_emb=has("label_emb.")),), "original")
    if has("controlnet_cond_embedding."):
        union = has("task_embedding") or has("control_add_embedding.")
        return Detection(CONTROLNET, (_unet_family(shapes, label_emb=has("add_embedding.")),), "diffusers",
                         "union" if union else None)

    bundled = starts("first_stage_model.") or starts("vae.") or starts("cond_stage_model.") \
        or starts("conditioner.") or starts("text_encoders.")
    kind = CHECKPOINT if bundled else DIFFUSION_MODEL

    # FLUX: BFL's original layout (optionally under model.diffusion_model.) or a diffusers transformer file.
    if has("double_blocks.") and has("single_blocks."):
        return Detection(kind, (FLUX,), "original", _flux_variant(_first(shapes, "img_in.weight")))
    if has("single_transformer_blocks.") and has("x_embedder."):
        return Detection(DIFFUSION_MODEL, (FLUX,), "diffusers", _flux_variant(_first(shapes, "x_embedder.weight")))

    # Stable Diffusion UNet in the original LDM layout (model.diffusion_model.* in a checkpoint, bare in a
    # ComfyUI-saved UNet).
    if has("input_blocks.0.0.weight") and has("time_embed.0.weight"):
        if starts("cond_stage_model.model."):
            family = SD2                   # OpenCLIP-H text encoder
        elif starts("conditioner.") or has("label_emb.0.0.weight"):
            family = SDXL
        else:
            family = _unet_family(shapes, label_emb=False)
        variant = None
        if (_first(shapes, "input_blocks.0.0.weight") or (0, 4))[1] == 9:
            variant = "inpaint"
        elif family == SDXL and (starts("conditioner.embedders.0.model.")
                                 or (_first(shapes, "label_emb.0.0.weight") or (0, 0))[1] == 2560):
            variant = "refiner"            # OpenCLIP-G only, aesthetic-score conditioning
        return Detection(kind, (family,), "original", variant)
    if has("conv_in.weight") and has("time_embedding.linear_1.") and has("down_blocks."):
        return Detection(DIFFUSION_MODEL, (_unet_family(shapes, label_emb=has("add_embedding.")),), "diffusers")

    # A text encoder on its own, transformers' keys (ComfyUI's clip_l / t5xxl files for FLUX); before the VAE
    # rule, since a T5 file's keys are all encoder.*.
    if has("SelfAttention.q.weight") and has("encoder.block.0."):
        # UMT5 (Wan's umt5_xxl) has a relative position bias in every block; T5 v1.1 (FLUX's t5xxl) in the first.
        umt5 = has("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.")
        return Detection(TEXT_ENCODER, () if umt5 else (FLUX,), "transformers", "umt5" if umt5 else "t5xxl")
    if has("embeddings.token_embedding.weight") and has("encoder.layers.0.self_attn.q_proj.weight"):
        width = (_first(shapes, "embeddings.token_embedding.weight") or (0, 0))[1]
        return Detection(TEXT_ENCODER, () if width == 1280 else (FLUX,), "transformers",
                         "clip_g" if width == 1280 else "clip_l")
    # A VAE on its own: encoder/decoder (+ quant convs), original or diffusers names, maybe prefixed.
    stripped = [re.sub(r"^(first_stage_model|vae)\.", "", k) for k in keys]
    if all(k.split(".")[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv") for k in stripped):
        conv_out = _first(shapes, "encoder.conv_out.weight")
        latent = conv_out[0] // 2 if conv_out else None   # the encoder predicts mean and log-variance
        families = (FLUX,) if latent == 16 else (SD15, SDXL) if latent == 4 else ()
        layout = "diffusers" if any(".down_blocks." in k for k in keys) else "original"
        return Detection(VAE, families, layout)

    sample = ", ".join(sorted(keys)[:3])
    raise NotAModel(f"not a known model layout (SD1.5, SDXL or FLUX checkpoint, ControlNet, LoRA, VAE); "
                    f"first keys: {sample}")


def _first(shapes, suffix):
    """Shape of the first tensor whose name ends with `suffix` (any prefix), or None."""
    for k, shape in shapes.items():
        if k == suffix or k.endswith("." + suffix):
            return shape
    return None


def _context_width(shapes) -> Optional[int]:
    """Input width of a cross-attention key projection: the text embedding size the model was trained on."""
    for k, shape in shapes.items():
        if k.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


def _unet_family(shapes, label_emb: bool) -> str:
    # SD1.5 has no added (label/text-time) embedding; SDXL always has one.
    width = _context_width(shapes)
    if width in _CONTEXT_WIDTH:
        return _CONTEXT_WIDTH[width]
    return SDXL if label_emb else SD15


def _flux_variant(img_in) -> Optional[str]:
    # FLUX.1 Depth/Canny [dev] take the control latents concatenated (128 channels), Fill adds a mask (384).
    channels = img_in[1] if img_in and len(img_in) == 2 else 64
    return {128: "control", 384: "fill"}.get(channels)


# --------------------------------------------------------------------------------------------- IP-Adapter

# CLIP vision towers by (hidden size, projection size); IP-Adapters read one of them (ComfyUI's clip_vision/).
_CLIP_VISION_KINDS = {(1280, 1024): "vit-h", (1664, 1280): "vit-bigg", (1024, 768): "vit-l"}


def clip_vision_kind(hidden: int, projection: int) -> str:
    """A CLIP vision model's name for its size ("vit-h"), or "h<hidden>-p<projection>" for other sizes."""
    return _CLIP_VISION_KINDS.get((hidden, projection), f"h{hidden}-p{projection}")


def _ip_adapter(shapes, metadata) -> Detection:
    """ComfyUI's single-file IP-Adapter: `image_proj.*` (image embedding -> tokens) and `ip_adapter.N.to_k_ip`
    / `to_v_ip` (the added cross-attention). Variant: the image encoder it needs, by the embedding it reads
    (the projected embedding for plain adapters, the hidden states for "plus" ones)."""
    width = next((shape[1] for k, shape in shapes.items() if k.endswith(".to_k_ip.weight") and len(shape) == 2), None)
    family = _CONTEXT_WIDTH.get(width) or _declared_family(metadata)
    if "image_proj.proj.weight" in shapes:                 # plain: proj(embedding) -> tokens x width
        embedding = shapes["image_proj.proj.weight"][1]
        needs = next((kind for (h, p), kind in _CLIP_VISION_KINDS.items() if p == embedding), f"p{embedding}")
    elif "image_proj.proj_in.weight" in shapes:            # plus: a resampler over the hidden states
        hidden = shapes["image_proj.proj_in.weight"][1]
        needs = next((kind for (h, p), kind in _CLIP_VISION_KINDS.items() if h == hidden), f"h{hidden}")
    else:
        needs = None                                       # FaceID and others: no CLIP image encoder
    return Detection(IPADAPTER, (family,) if family in (SD15, SDXL, FLUX, SD2) else (), "original", needs)


# --------------------------------------------------------------------------------------------- LoRA

_LORA_MARKERS = (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.",
                 "_lora.down.", ".hada_w1_a", ".lokr_w1")


def _is_lora(keys) -> bool:
    return any(m in k for k in keys for m in _LORA_MARKERS) or any(k.startswith("lora_unet_") for k in keys)


def _lora(shapes, metadata) -> Detection:
    keys = list(shapes)
    has = lambda fragment: any(fragment in k for k in keys)   # noqa: E731
    layout = "kohya" if any(k.startswith(("lora_unet_", "lora_te")) for k in keys) else "peft"
    return Detection(LORA, tuple(f for f in [_lora_family(shapes, metadata, has)] if f), layout)


def _lora_family(shapes, metadata, has) -> Optional[str]:
    if has("double_blocks") or has("single_blocks") or has("single_transformer_blocks"):
        return FLUX
    # The down/A matrix of a cross-attention key projection is (rank, text width): decisive for real files.
    for k, shape in shapes.items():
        if re.search(r"attn2[._]to_k(\.lora_down|\.lora_A|_lora\.down|\.lora\.down)", k) and len(shape) == 2:
            if shape[1] in _CONTEXT_WIDTH:
                return _CONTEXT_WIDTH[shape[1]]
            break
    # Structure: SDXL has two text encoders, and kohya's sd-scripts name SDXL UNet modules the LDM way.
    if has("lora_te1_") or has("lora_te2_") or has("text_encoder_2.") or \
            any(k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block"))
                for k in shapes):
        return SDXL
    declared = _declared_family(metadata)
    if declared:
        return declared
    if has("lora_te_") or has("text_encoder.") or any(k.startswith("lora_unet_down_blocks") for k in shapes):
        return SD15
    return None


def _declared_family(metadata) -> Optional[str]:
    """What the trainer wrote (modelspec.architecture, kohya's ss_base_model_version); a fallback only."""
    text = f"{metadata.get('modelspec.architecture', '')} {metadata.get('ss_base_model_version', '')}".lower()
    if "flux" in text:
        return FLUX
    if "xl" in text:
        return SDXL
    if "v1" in text or "sd_1" in text:
        return SD15
    if "v2" in text:
        return SD2
    return None


@dataclass(frozen=True)
class LoraInfo:
    trigger_words: Tuple[str, ...]      # the declared trigger phrase first, then the most frequent training tags
    output_name: Optional[str]          # kohya's ss_output_name: the name it was trained under
    tag_counts: Tuple[Tuple[str, int], ...] = ()   # (tag, count), most frequent first


def lora_info(metadata: Mapping[str, str], max_tags: int = 8) -> LoraInfo:
    """Trigger words from a LoRA's own metadata; missing or malformed fields just give fewer words."""
    words: List[str] = []
    phrase = metadata.get("modelspec.trigger_phrase") or ""
    words += [w.strip() for w in phrase.split(",") if w.strip()]

    counts: Dict[str, int] = {}
    try:
        # kohya: {"<repeats>_<dataset dir>": {"tag": count, ...}, ...}, tags in caption order.
        for tags in json.loads(metadata.get("ss_tag_frequency") or "{}").values():
            for tag, n in (tags or {}).items():
                tag = str(tag).strip()
                if tag:
                    counts[tag] = counts.get(tag, 0) + int(n)
    except (ValueError, TypeError, AttributeError):
        counts = {}
    # Stable sort: ties keep caption order, and the trigger word is usually the first tag of every caption.
    ranked = tuple(sorted(counts.items(), key=lambda item: -item[1]))
    words += [tag for tag, _ in ranked[:max_tags]]

    seen, unique = set(), []
    for w in words:
        if w.lower() not in seen:
            seen.add(w.lower())
            unique.append(w)
    output_name = (metadata.get("ss_output_name") or "").strip() or None
    return LoraInfo(tuple(unique), output_name, ranked)


def read_lora_info(path, max_tags: int = 8) -> LoraInfo:
    return lora_info(read_header(path).metadata, max_tags)


# --------------------------------------------------------------------------------------------- diffusers folders

_PIPELINE_FAMILIES = (("StableDiffusionXL", SDXL), ("Flux", FLUX), ("StableDiffusion", SD15))


def detect_diffusers_folder(path) -> Detection:
    """A diffusers pipeline folder (model_index.json) or a single-model folder (config.json)."""
    path = Path(path)
    index = _read_json(path / "model_index.json")
    if index is not None:
        cls = str(index.get("_class_name", ""))
        family = next((f for prefix, f in _PIPELINE_FAMILIES if cls.startswith(prefix)), None)
        if family is None:
            raise NotAModel(f"{path}: a diffusers {cls or 'pipeline'} folder, not an SD1.5, SDXL or FLUX one")
        if family == SD15 and (_read_json(path / "unet" / "config.json") or {}).get("cross_attention_dim") == 1024:
            family = SD2
        return Detection(CHECKPOINT, (family,), "diffusers")
    config = _read_json(path / "config.json")
    if config is None:
        raise NotAModel(f"{path}: not a diffusers folder (no model_index.json or config.json)")
    if config.get("model_type") == "clip_vision_model":      # transformers' CLIPVisionModelWithProjection folder
        return Detection(CLIP_VISION, (), "transformers",
                         clip_vision_kind(config.get("hidden_size", 768), config.get("projection_dim", 512)))
    cls = str(config.get("_class_name", ""))
    width = config.get("cross_attention_dim")
    sd_family = SDXL if config.get("addition_embed_type") == "text_time" else \
        _CONTEXT_WIDTH.get(width if isinstance(width, int) else -1, SD15)
    if cls in ("ControlNetModel", "ControlNetUnionModel"):
        return Detection(CONTROLNET, (sd_family,), "diffusers", "union" if "Union" in cls else None)
    if cls.startswith("FluxControlNet") or cls.startswith("FluxMultiControlNet"):
        return Detection(CONTROLNET, (FLUX,), "diffusers", "union" if config.get("num_mode") else None)
    if cls == "UNet2DConditionModel":
        return Detection(DIFFUSION_MODEL, (sd_family,), "diffusers")
    if cls == "FluxTransformer2DModel":
        return Detection(DIFFUSION_MODEL, (FLUX,), "diffusers",
                         _flux_variant((0, config.get("in_channels", 64))))
    if cls == "AutoencoderKL":
        latent = config.get("latent_channels", 4)
        return Detection(VAE, (FLUX,) if latent == 16 else (SD15, SDXL) if latent == 4 else (), "diffusers")
    raise NotAModel(f"{path}: a diffusers {cls or 'model'} folder, not a kind the library uses")


def _read_json(file: Path):
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise NotAModel(f"{file}: unreadable JSON ({e})") from e
    if not isinstance(data, dict):
        raise NotAModel(f"{file}: not a JSON object")
    return data


def is_safetensors_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in SAFETENSORS_SUFFIXES
