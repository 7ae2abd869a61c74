"""Loading a base model and its ControlNets once, from the embedded tiny model, a local folder or a hub id."""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from .devices import pick_device, pick_dtype
from .prompt_cache import PromptCache

TINY = "tiny"

# The ControlNets a user who is online gets when they name a base model but no ControlNets.
DEFAULT_CONTROLNETS = {
    "sd15": {"depth": "lllyasviel/control_v11f1p_sd15_depth", "canny": "lllyasviel/control_v11p_sd15_canny"},
    "sdxl": {"depth": "diffusers/controlnet-depth-sdxl-1.0", "canny": "diffusers/controlnet-canny-sdxl-1.0"},
}
NATIVE_RESOLUTION = {"sd15": 512, "sdxl": 1024}


@dataclass
class ModelSpec:
    """What the server was asked to load (the CLI's --model / --controlnet / --device / --dtype)."""

    model: str = TINY
    controlnets: Dict[str, str] = field(default_factory=dict)   # name -> folder or hub id
    taesd: Optional[str] = None      # tiny autoencoder for fast decoding (e.g. madebyollin/taesd); tiny has its own
    device: Optional[str] = None
    dtype: Optional[str] = None


@dataclass
class LoadedModel:
    name: str
    family: str                  # "sd15" or "sdxl"
    native_resolution: int       # pixel side of the size class the model was trained at
    size_multiple: int           # working sizes are multiples of this
    base: object                 # the text-to-image pipeline that owns the shared components
    controlnets: Dict[str, object]
    device: str
    dtype_name: str
    taesd: Optional[object] = None   # AutoencoderTiny, when fast decoding is available
    prompts: PromptCache = field(default_factory=PromptCache)

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "native_resolution": self.native_resolution}


def load_model(spec: ModelSpec, log: Callable[[str], None] = print) -> LoadedModel:
    from diffusers import ControlNetModel
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # We report loading ourselves; the libraries' per-file progress bars and notices are noise for an artist.
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()

    device = pick_device(spec.device)
    dtype_name, dtype = pick_dtype(device, spec.dtype)
    controlnet_sources = dict(spec.controlnets)
    if spec.model == TINY:
        from .tiny_model import ensure_tiny_model
        log("Preparing the embedded tiny model (random weights: it makes noise, not art) ...")
        tiny = ensure_tiny_model()
        base_source, name, native = str(tiny.base), TINY, tiny.native_resolution
        for cn_name, path in tiny.controlnets.items():
            controlnet_sources.setdefault(cn_name, str(path))
        taesd_source = spec.taesd or str(tiny.taesd)
    else:
        base_source, name, native = spec.model, _display_name(spec.model), None
        taesd_source = spec.taesd

    log(f"Loading {name} on {device} ({dtype_name}) ...")
    base = _load_base_pipeline(base_source, dtype)
    family = "sdxl" if getattr(base.unet.config, "addition_embed_type", None) == "text_time" else "sd15"
    for cn_name, source in DEFAULT_CONTROLNETS[family].items():
        controlnet_sources.setdefault(cn_name, source)
    if device != "cpu":
        base.to(device)
    base.set_progress_bar_config(disable=True)

    controlnets = {}
    for cn_name, source in controlnet_sources.items():
        log(f"Loading the {cn_name} ControlNet from {source} ...")
        controlnets[cn_name] = ControlNetModel.from_pretrained(source, dtype=dtype)
        if device != "cpu":
            controlnets[cn_name].to(device)

    taesd = None
    if taesd_source:
        from diffusers import AutoencoderTiny
        log(f"Loading the tiny autoencoder (fast decode) from {taesd_source} ...")
        taesd = AutoencoderTiny.from_pretrained(taesd_source, dtype=dtype)
        if device != "cpu":
            taesd.to(device)

    vae_factor = base.vae_scale_factor
    unet_downsamples = len(base.unet.config.block_out_channels) - 1
    return LoadedModel(
        name=name, family=family,
        native_resolution=native or NATIVE_RESOLUTION[family],
        size_multiple=vae_factor * 2 ** unet_downsamples,
        base=base, controlnets=controlnets, device=device, dtype_name=dtype_name, taesd=taesd)


def _load_base_pipeline(source: str, dtype: torch.dtype):
    """A folder or hub id in diffusers layout; the safety checker is not loaded (local tool, artist's own input)."""
    from diffusers import DiffusionPipeline
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "model_index.json")):
        raise FileNotFoundError(f"{source} is not a diffusers model folder (no model_index.json)")
    index = DiffusionPipeline.load_config(source)
    extra = {}
    if "safety_checker" in index:
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return DiffusionPipeline.from_pretrained(source, dtype=dtype, **extra)


def _display_name(source: str) -> str:
    path = Path(source)
    return path.name if path.exists() else source
