"""Which models a job may name, and the loaded ones within a memory budget (least recently used unloaded first).

Names a job can send: the server's default model, the embedded tiny models ("tiny", "tiny-sdxl",
"tiny-flux") and everything the model library found (checkpoints/, diffusers/, ... of --models-dir and the
server's own folder). Validation (`family_of`, `resolve`) runs on the event loop and never loads anything;
`get` runs on the device worker and loads, evicting as needed.
"""
import gc
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..library.families import CHECKPOINT, CONTROLNET, DIFFUSION_MODEL, FLUX
from ..library.scan import Entry, Library, LibraryError
from .control_inputs import KINDS
from .union import UnionInMode, is_union
from .models import TINY_MODELS, LoadedModel, ModelSpec, load_controlnet, load_model, model_bytes

TINY_FAMILIES = {"tiny": "sd15", "tiny-sdxl": "sdxl", "tiny-flux": "flux"}
CONTROLNET_ROLES = KINDS


class WrongFamily(LibraryError):
    """A component for another model family than the job's model."""
Status = Callable[[str], None]


class ModelManager:
    def __init__(self, default: LoadedModel, spec: ModelSpec, library: Optional[Library] = None,
                 budget_bytes: Optional[int] = None):
        # Only facts about the default model are kept here, so that unloading it really frees it.
        self.default_name, self.default_family = default.name, default.family
        self.default_roles = sorted(default.controlnets)
        self.spec = spec                       # how the default was loaded; device and dtype of every model
        self.library = library or Library(roots=())
        self.budget_bytes = budget_bytes
        self._loaded: "OrderedDict[str, LoadedModel]" = OrderedDict({default.name: default})
        self._lock = threading.Lock()          # the worker loads; the event loop lists

    # ---- naming and validation (no loading) ----------------------------------------------------------

    def describe_models(self) -> List[dict]:
        with self._lock:
            loaded = dict(self._loaded)
        models = [dict(m.describe(), loaded=True) for m in loaded.values()]
        if self.default_name not in loaded:
            models.append({"name": self.default_name, "family": self.default_family, "loaded": False})
        models += [{"name": n, "family": f, "loaded": False} for n, f in TINY_FAMILIES.items() if n not in loaded]
        models += [dict(e.describe(), loaded=False) for e in self.library.list(CHECKPOINT) if e.name not in loaded]
        return models

    def describe_loaded(self) -> List[dict]:
        """Every loaded model with each component's dtype and device (read from its tensors), for `status`."""
        from .pipelines import component_report
        with self._lock:
            loaded = list(self._loaded.values())
        return [dict(m.describe(), components=component_report(m)) for m in loaded]

    def describe_library(self) -> Dict[str, List[dict]]:
        listing = {kind: [e.describe() for e in self.library.list(kind)]
                   for kind in ("controlnet", "lora", "vae", "upscaler", "text_encoder")}
        listing["problems"] = [p.describe() for p in self.library.problems]
        return listing

    def family_of(self, name: Optional[str]) -> str:
        """The family of the model a job names (LibraryError when there is no such model)."""
        if name is None or name == self.default_name:
            return self.default_family
        if name in TINY_FAMILIES:
            return TINY_FAMILIES[name]
        entry = self.library.resolve(name, CHECKPOINT)
        if entry.family is None:
            raise LibraryError(f"cannot tell which family {name!r} belongs to "
                               f"({', '.join(entry.families) or 'no known layout'})")
        if entry.family == FLUX and entry.kind == DIFFUSION_MODEL and entry.path.is_file():
            # A FLUX transformer file loads with text encoders and an autoencoder from the library: say which one
            # is missing, and where it goes, before the job is accepted rather than when it loads.
            from ..library.flux_single_file import require_companions
            require_companions(entry.path, self.library.roots)
        return entry.family

    def resolve(self, name: str, kind: str, family: str) -> Entry:
        """A library entry of `kind` that fits `family` (LibraryError otherwise, saying why)."""
        entry = self.library.resolve(name, kind)
        if entry.families and family not in entry.families:
            raise WrongFamily(f"{name!r} is a {'/'.join(entry.families)} {kind}; the job's model is {family}")
        return entry

    def controlnet_roles(self, name: Optional[str]) -> List[str]:
        """The ControlNet names (depth, canny, ...) a job may switch on for this model without naming files."""
        if name is None or name == self.default_name:
            return self.default_roles
        if name in TINY_FAMILIES:
            return ["canny", "depth"]
        return sorted(self._library_controlnets(self.family_of(name)))

    def _library_controlnets(self, family: str) -> Dict[str, Path]:
        """The library's ControlNets for a family, by the role their name mentions (the file cannot tell)."""
        roles = {}
        for entry in self.library.list(CONTROLNET):
            for role in CONTROLNET_ROLES:
                # A union model's role is the job's mode, not its file name.
                if role in entry.name.lower() and family in entry.families and entry.variant != "union":
                    roles.setdefault(role, entry.path)
        return roles

    # ---- loading (device worker only) ----------------------------------------------------------------

    def get(self, name: Optional[str], status: Status) -> LoadedModel:
        key = name or self.default_name
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        if key == self.default_name:           # unloaded earlier to make room: load it as at start-up
            spec = ModelSpec(**vars(self.spec))
            estimate = 0
        elif key in TINY_MODELS:
            spec = ModelSpec(model=key, default_controlnets=False)
            estimate = 0
        else:
            entry = self.library.resolve(key, CHECKPOINT)
            family = self.family_of(key)
            controlnets = {role: str(path) for role, path in self._library_controlnets(family).items()}
            spec = ModelSpec(model=str(entry.path), controlnets=controlnets, default_controlnets=False)
            estimate = entry.size
        spec.device, spec.dtype = self.spec.device, self.spec.dtype
        self._make_room(estimate, status)
        status(f"loading model {key} ...")
        model = load_model(spec, log=status, models_dirs=self.library.roots)
        model.name = key
        with self._lock:
            self._loaded[key] = model
        self._make_room(0, status, keep=key)
        return model

    def named_controlnet(self, model: LoadedModel, name: str, status: Status, mode: Optional[str] = None):
        """A library ControlNet; a union one in control `mode` (a wrapper per mode, kept: pipelines are cached by
        their modules' identity)."""
        if name not in model.named:
            status(f"loading ControlNet {name} ...")
            path = self.resolve(name, CONTROLNET, model.family).path
            model.named[name] = load_controlnet(str(path), model.family, model.base.dtype, model.device)
        net = model.named[name]
        if mode is None or not is_union(net):
            return net
        if f"{name}#{mode}" not in model.named:
            model.named[f"{name}#{mode}"] = UnionInMode(net, mode)
        return model.named[f"{name}#{mode}"]

    def named_vae(self, model: LoadedModel, name: str, status: Status):
        key = f"vae:{name}"
        if key not in model.named:
            from diffusers import AutoencoderKL
            status(f"loading VAE {name} ...")
            path = self.resolve(name, "vae", model.family).path
            if path.is_dir():
                vae = AutoencoderKL.from_pretrained(path, dtype=model.base.dtype)
            else:
                from ..library.single_file import CONFIG_ROOT
                vae = AutoencoderKL.from_single_file(str(path), config=str(CONFIG_ROOT / model.family),
                                                     subfolder="vae", local_files_only=True,
                                                     torch_dtype=model.base.dtype)
            model.named[key] = vae.to(model.device) if model.device != "cpu" else vae
        return model.named[key]

    def upscaler(self, name: str, model: LoadedModel, status: Status):
        key = f"upscaler:{name}"
        if key not in model.named:
            from .upscalers import load_upscaler
            status(f"loading upscaler {name} ...")
            model.named[key] = load_upscaler(self.library.resolve(name, "upscaler").path).to(
                model.device, model.base.dtype)
        return model.named[key]

    def style_adapter(self, model: LoadedModel, style, status: Status):
        """The IP-Adapter (and its image encoder) a job's `settings.style` names, or the family's first; loaded
        once per model (the encoder once per model too) and kept in `model.named`."""
        from .style_reference import load_adapter, load_image_encoder, pick_files
        adapter, encoder = pick_files(self.library, model.family, style.model, style.image_encoder)
        key = f"style:{adapter.name}|{encoder.name}"
        if key not in model.named:
            if f"clip_vision:{encoder.name}" not in model.named:
                status(f"loading image encoder {encoder.name} ...")
                model.named[f"clip_vision:{encoder.name}"] = load_image_encoder(encoder.path, model.base.dtype,
                                                                                model.device)
            status(f"loading IP-Adapter {adapter.name} ...")
            model.named[key] = load_adapter(model, adapter.path, model.named[f"clip_vision:{encoder.name}"])
        return model.named[key]

    def loaded_names(self) -> List[str]:
        with self._lock:
            return list(self._loaded)

    def _make_room(self, incoming: int, status: Status, keep: Optional[str] = None) -> None:
        """Unload least recently used models until `incoming` more bytes fit the budget."""
        if self.budget_bytes is None:
            return
        while True:
            with self._lock:
                sizes = {n: model_bytes(m) for n, m in self._loaded.items()}
                if sum(sizes.values()) + incoming <= self.budget_bytes or len(self._loaded) <= (1 if keep else 0):
                    return
                victim = next(n for n in self._loaded if n != keep)
                self._loaded.pop(victim)
            status(f"unloading model {victim} (least recently used) to stay within the memory budget")
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def default_budget(device: str) -> int:
    """Most of the GPU's memory, or half of the machine's RAM on the CPU."""
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory * 0.85)
    try:
        import os
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30
