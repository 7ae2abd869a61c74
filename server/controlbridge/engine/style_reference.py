"""Style reference (IP-Adapter): a reference image steers a job's look, from ComfyUI's ipadapter/ + clip_vision/.

Loading an IP-Adapter (diffusers' `load_ip_adapter`) swaps the cross-attention processors of the model's SHARED
UNet for ones with the adapter's extra key/value weights, and gives the UNet an image projection. A UNet in that
state demands image embeddings on every call, so it is held that way only while a style job's pipeline runs:
the adapter is loaded once per model (its processors and projection are kept in `model.named`), attached just
before the pipeline call and detached in a `finally` (the very processor objects that were there before go
back), and detached around a live frame that runs between the job's steps. A job without style after a style job
therefore runs the UNet exactly as before.

The reference image is encoded here (CLIP image processor + vision tower, as diffusers' `encode_image` does) and
given to the pipeline as `ip_adapter_image_embeds`, so no pipeline gets an image encoder registered into it.
"""
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from ..library.families import CLIP_VISION, IPADAPTER, NotAModel, read_header

STYLE_ATTACHMENT = "style"        # the job attachment that carries the reference image
STYLE_FAMILIES = ("sd15", "sdxl")
MAX_WEIGHT = 2.0
# The usual pairs, named in the message for a library without one (ComfyUI's file names).
EXAMPLE_FILES = {"sd15": ("ip-adapter_sd15.safetensors", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"),
                 "sdxl": ("ip-adapter_sdxl_vit-h.safetensors", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors")}
# Attention heads of the known CLIP vision towers by width (a file's weights do not say; head size 64 otherwise).
_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}


class StyleUnavailable(LookupError):
    """No IP-Adapter or image encoder in the library for this job; str() says where to put one."""


def encoder_fits(needs: Optional[str], kind: Optional[str]) -> bool:
    """Whether a CLIP vision model of `kind` ("vit-h", "h64-p32") is what an adapter that `needs` it reads."""
    return needs is not None and kind is not None and (needs == kind or needs in kind.split("-"))


def pick_files(library, family: str, adapter: Optional[str] = None, encoder: Optional[str] = None):
    """(adapter entry, image encoder entry) for a job; LibraryError (named but unknown) or StyleUnavailable."""
    if adapter is not None:
        chosen = library.resolve(adapter, IPADAPTER)
    else:
        fitting = [e for e in library.list(IPADAPTER) if family in e.families]
        if not fitting:
            where = ", ".join(str(r / "ipadapter") for r in library.roots) or "the ipadapter/ folder of --models-dir"
            example, example_encoder = EXAMPLE_FILES.get(family, ("an IP-Adapter", "its CLIP vision model"))
            raise StyleUnavailable(f"no {family} IP-Adapter in the model library: put one (e.g. {example}) into "
                                   f"{where} and its image encoder ({example_encoder}) into clip_vision/")
        chosen = fitting[0]
    if chosen.variant is None:
        raise StyleUnavailable(f"{chosen.name!r} reads no CLIP image embedding (a FaceID adapter?); use a plain "
                               f"or plus IP-Adapter")
    if encoder is not None:
        vision = library.resolve(encoder, CLIP_VISION)
        if not encoder_fits(chosen.variant, vision.variant):
            raise StyleUnavailable(f"image encoder {encoder!r} is a {vision.variant} CLIP vision model; "
                                   f"{chosen.name!r} reads {chosen.variant}")
        return chosen, vision
    fitting = [e for e in library.list(CLIP_VISION) if encoder_fits(chosen.variant, e.variant)]
    if not fitting:
        where = ", ".join(str(r / "clip_vision") for r in library.roots)
        raise StyleUnavailable(f"no image encoder for {chosen.name!r} in the library: it reads a {chosen.variant} "
                               f"CLIP vision model (e.g. CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors for vit-h); "
                               f"put it into {where}")
    return chosen, fitting[0]


def style_capabilities(library) -> dict:
    """welcome.capabilities.style: the families it works for and the adapters / encoders in the library."""
    return {"families": list(STYLE_FAMILIES),
            "adapters": [{"name": e.name, "family": e.family, "image_encoder": e.variant}
                         for e in library.list(IPADAPTER)],
            "image_encoders": [{"name": e.name, "kind": e.variant} for e in library.list(CLIP_VISION)]}


# --------------------------------------------------------------------------------------------- loading

@dataclass
class StyleAdapter:
    """An IP-Adapter loaded for one model's UNet, with its image encoder; attached only while a job runs."""

    processors: Dict[str, object]       # attention name -> IP-Adapter processor (cross-attention layers only)
    modules: Dict[str, torch.nn.Module]  # attention name -> the UNet's Attention module it goes into
    projection: torch.nn.Module         # the UNet's encoder_hid_proj while attached
    encoder: torch.nn.Module            # CLIPVisionModelWithProjection
    processor: object                   # CLIPImageProcessor
    hidden_states: bool                 # "plus" adapters read the encoder's penultimate hidden states

    @property
    def net(self):                      # what component_report looks at: the encoder's dtype and device
        return self.encoder


def load_adapter(model, adapter_path, encoder) -> StyleAdapter:
    """Load an IP-Adapter into the model's UNet with diffusers' own loader, keep its parts, and put the UNet back."""
    from diffusers.models.embeddings import ImageProjection
    from transformers import CLIPImageProcessor
    unet = model.base.unet
    processor = CLIPImageProcessor(size=encoder.config.image_size, crop_size=encoder.config.image_size)
    # A throwaway pipeline over the same components, holding the processor, so `load_ip_adapter` registers
    # nothing into the model's own pipelines; it changes the shared UNet, which is put back at once (also when the
    # file does not fit this UNet and loading stops half way).
    holder = type(model.base)(**{**model.base.components, "feature_extractor": processor})
    before = _state(unet)
    try:
        holder.load_ip_adapter(str(adapter_path.parent), subfolder="", weight_name=adapter_path.name,
                               image_encoder_folder=None, local_files_only=True)
        ip = {name: p for name, p in unet.attn_processors.items() if hasattr(p, "scale") and hasattr(p, "to_k_ip")}
        projection = unet.encoder_hid_proj
        modules = {name: _plain(unet).get_submodule(name[:-len(".processor")]) for name in ip}
    except (RuntimeError, ValueError, KeyError, IndexError) as e:
        raise StyleUnavailable(f"IP-Adapter {adapter_path} does not fit model {model.name!r} ({model.family}): "
                               f"{str(e).splitlines()[0][:300]}") from None
    finally:
        _restore(unet, before)
    hidden = not isinstance(projection.image_projection_layers[0], ImageProjection)
    return StyleAdapter(ip, modules, projection, encoder, processor, hidden)


def load_image_encoder(path, dtype, device):
    """A CLIPVisionModelWithProjection from a transformers folder or a single safetensors file (ComfyUI's
    clip_vision/ layout: transformers key names, no config: the config is read off the tensor shapes)."""
    from transformers import CLIPVisionModelWithProjection
    if path.is_dir():
        encoder = CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype, local_files_only=True)
    else:
        from safetensors.torch import load_file
        config = vision_config(read_header(path).shapes)
        state = {k: v for k, v in load_file(str(path)).items() if not k.endswith("position_ids")}
        encoder = CLIPVisionModelWithProjection.from_pretrained(None, config=config, state_dict=state, dtype=dtype)
    return encoder.to(device).eval()


def vision_config(shapes):
    """CLIPVisionConfig for a transformers-layout CLIP vision state dict, from its shapes alone."""
    from transformers import CLIPVisionConfig
    prefix = "vision_model."
    try:
        patch = shapes[prefix + "embeddings.patch_embedding.weight"]
        positions = shapes[prefix + "embeddings.position_embedding.weight"][0]
        hidden = patch[0]
        layers = 1 + max(int(k.split(".")[3]) for k in shapes if k.startswith(prefix + "encoder.layers."))
        intermediate = shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0]
        projection = shapes["visual_projection.weight"][0]
    except (KeyError, ValueError, IndexError) as e:
        raise NotAModel(f"not a CLIP vision model in transformers' layout (missing {e})") from None
    side = math.isqrt(positions - 1) * patch[2]
    heads = _HEADS.get(hidden) or max(1, hidden // 64)
    return CLIPVisionConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                            num_attention_heads=heads, image_size=side, patch_size=patch[2], projection_dim=projection,
                            hidden_act="quick_gelu" if hidden == 1024 else "gelu", layer_norm_eps=1e-5)


# --------------------------------------------------------------------------------------------- a job's style

@dataclass
class JobStyle:
    """One job's style reference: the loaded adapter, the reference image and the weight."""

    adapter: StyleAdapter
    image: np.ndarray                   # uint8 HxWx3, as sent
    weight: float
    _embeds: Dict[bool, torch.Tensor] = field(default_factory=dict, repr=False)
    _saved: List[tuple] = field(default_factory=list, repr=False)   # the UNet's own parts while attached

    def embeds(self, guided: bool) -> torch.Tensor:
        """What the pipeline takes as `ip_adapter_image_embeds[0]`: with CFG the unconditional half first (zeros,
        or the encoding of a black image for plus adapters, as diffusers' `encode_image` makes them)."""
        if guided not in self._embeds:
            enc = self.adapter.encoder
            pixels = self.adapter.processor(Image.fromarray(self.image), return_tensors="pt").pixel_values
            pixels = pixels.to(enc.device, enc.dtype)
            with torch.inference_mode():
                if self.adapter.hidden_states:
                    cond = enc(pixels, output_hidden_states=True).hidden_states[-2]
                    uncond = enc(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
                else:
                    cond = enc(pixels).image_embeds
                    uncond = torch.zeros_like(cond)
            self._embeds[guided] = torch.stack([uncond, cond]) if guided else cond[None]
        return self._embeds[guided]

    def attach(self, unet) -> None:
        """Only the cross-attention layers' processors change (set one by one: walking the whole UNet with
        `set_attn_processor` cost ~10 ms per attach and detach at SD1.5 size), then the projection."""
        if self._saved:
            return
        unet, modules = _plain(unet), self.adapter.modules
        self._saved.append(({name: m.processor for name, m in modules.items()}, unet.encoder_hid_proj,
                            unet.config.encoder_hid_dim_type))
        for name, module in modules.items():
            processor = self.adapter.processors[name]
            processor.scale = [self.weight]
            module.set_processor(processor)
        unet.encoder_hid_proj = self.adapter.projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"     # as diffusers' loader sets it

    def detach(self, unet) -> None:
        if not self._saved:
            return
        processors, projection, kind = self._saved.pop()
        unet = _plain(unet)
        for name, module in self.adapter.modules.items():
            module.set_processor(processors[name])       # the very objects that were there before
        unet.encoder_hid_proj = projection
        unet.config.encoder_hid_dim_type = kind


@contextmanager
def attached(style: Optional[JobStyle], pipe, guided: bool):
    """The pipeline keyword arguments for the style (none without one), with the adapter in the UNet meanwhile."""
    if style is None:
        yield {}
        return
    embeds = style.embeds(guided)
    style.attach(pipe.unet)
    try:
        yield {"ip_adapter_image_embeds": [embeds]}
    finally:
        style.detach(pipe.unet)


@contextmanager
def paused(style: Optional[JobStyle], pipe):
    """The UNet without the adapter for other work between a style job's steps (a live frame), then with it."""
    if style is None or not style._saved:
        yield
        return
    style.detach(pipe.unet)
    try:
        yield
    finally:
        style.attach(pipe.unet)


def _plain(unet):
    """The UNet module itself, also when torch.compile wrapped it (attributes set on the wrapper would be lost)."""
    return getattr(unet, "_orig_mod", unet)


def _state(unet) -> tuple:
    unet = _plain(unet)
    return dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type


def _restore(unet, state) -> None:
    processors, projection, kind = state
    unet = _plain(unet)
    # The projection first: a plus adapter's resampler has attention layers of its own, which count as the UNet's
    # while it is attached.
    unet.encoder_hid_proj = projection
    unet.config.encoder_hid_dim_type = kind
    unet.set_attn_processor(dict(processors))    # set_attn_processor empties the dict it is given
