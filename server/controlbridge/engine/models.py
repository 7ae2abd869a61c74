"""Loading a base model and its ControlNets once, from the embedded tiny model, a local folder or a hub id."""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from .devices import pick_device, pick_dtype
from .loras import LoraState
from .prompt_cache import PromptCache

TINY = "tiny"

# The ControlNets a user who is online gets when they name a base model but no ControlNets.
DEFAULT_CONTROLNETS = {
    "sd15": {"depth": "lllyasviel/control_v11f1p_sd15_depth", "canny": "lllyasviel/control_v11p_sd15_canny"},
    "sdxl": {"depth": "diffusers/controlnet-depth-sdxl-1.0", "canny": "diffusers/controlnet-canny-sdxl-1.0"},
}
NATIVE_RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 1024}


@dataclass
class ModelSpec:
    """What the server was asked to load (the CLI's --model / --controlnet / --device / --dtype)."""

    model: str = TINY
    controlnets: Dict[str, str] = field(default_factory=dict)   # name -> folder or hub id
    taesd: Optional[str] = None      # tiny autoencoder for fast decoding (e.g. madebyollin/taesd); tiny has its own
    # A user naming a model on the command line gets the family's usual ControlNets by hub id; library
    # models get the library's ControlNets instead (nothing is fetched behind an offline artist's back).
    default_controlnets: bool = True
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
    named: Dict[str, object] = field(default_factory=dict)   # library ControlNets / VAEs loaded for jobs, by name
    loras: LoraState = field(default_factory=LoraState)     # the LoRAs now in the shared UNet / text encoder
    pipelines: "PipelineCache" = field(default_factory=lambda: _pipeline_cache())   # built once, reused by jobs
    parallel_controlnets: str = ""   # "streams" / "batched": ControlNets side by side (engine/parallel_controlnets.py)
    controlnet_stacks: object = field(default_factory=lambda: _controlnet_stacks())   # their weights, for "batched"

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "native_resolution": self.native_resolution}


def _controlnet_stacks():
    from .parallel_controlnets import StackedControlNets
    return StackedControlNets()


def _pipeline_cache():
    from .pipelines import PipelineCache   # pipelines.py imports this module
    return PipelineCache()


TINY_MODELS = ("tiny", "tiny-sdxl", "tiny-flux")


def load_model(spec: ModelSpec, log: Callable[[str], None] = print, models_dirs=()) -> LoadedModel:
    """Load a base model and its ControlNets: a tiny model, a single-file checkpoint, a diffusers folder or a hub id.

    `models_dirs` are where a single-file checkpoint's tokenizers are looked for (the model library's roots).
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # We report loading ourselves; the libraries' per-file progress bars and notices are noise for an artist.
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()

    device = pick_device(spec.device)
    dtype_name, dtype = pick_dtype(device, spec.dtype)
    controlnet_sources = dict(spec.controlnets)
    base_source, name, native, taesd_source = spec.model, _display_name(spec.model), None, spec.taesd
    if spec.model in TINY_MODELS:
        log(f"Preparing the embedded {spec.model} model (random weights: it makes noise, not art) ...")
        tiny = _tiny_paths(spec.model)
        base_source, name, native = str(tiny.base), spec.model, tiny.native_resolution
        for cn_name, path in tiny.controlnets.items():
            controlnet_sources.setdefault(cn_name, str(path))
        if getattr(tiny, "taesd", None):
            taesd_source = spec.taesd or str(tiny.taesd)

    log(f"Loading {name} on {device} ({dtype_name}) ...")
    if base_source.lower().endswith((".safetensors", ".sft")) and os.path.isfile(base_source):
        from ..library.single_file import load_single_file
        base = load_single_file(base_source, models_dirs=models_dirs, dtype=dtype)
    else:
        base = _load_base_pipeline(base_source, dtype)
    family = model_family(base)
    if spec.default_controlnets:
        for cn_name, source in DEFAULT_CONTROLNETS.get(family, {}).items():
            controlnet_sources.setdefault(cn_name, source)
    if device != "cpu":
        base.to(device)
    base.set_progress_bar_config(disable=True)

    controlnets = {}
    for cn_name, source in controlnet_sources.items():
        log(f"Loading the {cn_name} ControlNet from {source} ...")
        controlnets[cn_name] = load_controlnet(source, family, dtype, device)

    taesd = None
    if taesd_source:
        from diffusers import AutoencoderTiny
        log(f"Loading the tiny autoencoder (fast decode) from {taesd_source} ...")
        taesd = AutoencoderTiny.from_pretrained(taesd_source, dtype=dtype)
        if device != "cpu":
            taesd.to(device)

    if family == "flux":          # 2x2 latent packing on top of the VAE's factor
        multiple = base.vae_scale_factor * 2
        # FLUX's autoencoder config states its size class (1024 for FLUX.1); a single file's comes from configs/.
        sample_size = getattr(base.vae.config, "sample_size", None)
        native = native or (sample_size if isinstance(sample_size, int) else None)
    else:
        multiple = base.vae_scale_factor * 2 ** (len(base.unet.config.block_out_channels) - 1)
    return LoadedModel(
        name=name, family=family, native_resolution=native or NATIVE_RESOLUTION[family], size_multiple=multiple,
        base=base, controlnets=controlnets, device=device, dtype_name=dtype_name, taesd=taesd)


def model_family(pipe) -> str:
    if getattr(pipe, "transformer", None) is not None and type(pipe).__name__.startswith("Flux"):
        return "flux"
    return "sdxl" if getattr(pipe.unet.config, "addition_embed_type", None) == "text_time" else "sd15"


def load_controlnet(source: str, family: str, dtype, device):
    """A ControlNet for `family` from a diffusers folder, a hub id or a single original-layout file."""
    from diffusers import ControlNetModel, FluxControlNetModel

    from ..library.families import read_header
    if os.path.isfile(source) and family == "sdxl" and "task_embedding" in read_header(source).shapes:
        from .union import load_union_file   # xinsir's ControlNet++ single file (diffusers layout)
        controlnet = load_union_file(source, dtype)
    elif os.path.isfile(source):       # lllyasviel / ComfyUI single files, with the shipped architecture config
        from ..library.single_file import load_single_file_controlnet
        controlnet = load_single_file_controlnet(source, family, dtype)
    else:
        cls = FluxControlNetModel if family == "flux" else ControlNetModel
        if os.path.isdir(source) and family != "flux" and \
                ControlNetModel.load_config(source).get("_class_name") == "ControlNetUnionModel":
            from diffusers import ControlNetUnionModel   # ControlNet++: one network, a control mode per use
            cls = ControlNetUnionModel
        controlnet = cls.from_pretrained(source, dtype=dtype)
    if device != "cpu":
        controlnet.to(device)
    return controlnet


def model_bytes(model: LoadedModel) -> int:
    """Memory the model's weights take (every distinct module counted once): what the LRU budget adds up."""
    seen, total = set(), 0
    modules = [m for m in model.base.components.values() if isinstance(m, torch.nn.Module)]
    modules += list(model.controlnets.values()) + ([model.taesd] if model.taesd else [])
    modules += [getattr(m, "net", m) for m in model.named.values()]    # an Upscaler wraps its network
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _tiny_paths(name: str):
    if name == "tiny":
        from .tiny_model import ensure_tiny_model
        return ensure_tiny_model()
    from ..library.tiny_families import ensure_tiny_family
    return ensure_tiny_family(name.split("-", 1)[1])


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
