"""Upscaler models from `upscale_models/`, run through spandrel (the loader ComfyUI uses).

spandrel recognises the architecture (ESRGAN / RealESRGAN, Compact, SwinIR, HAT, DAT, ...) and its
hyperparameters from the keys and tensor shapes, never from the file name, because community
upscalers are named freely. We read the file ourselves, as safetensors or as a weights-only torch
checkpoint, so a model file can never run code, and hand spandrel only the state dict.
spandrel is imported on first use, through `_spandrel()`: it imports torchvision, which a server that loads
no upscaler (the H200 benchmark image has a torchvision of another torch) must not need.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import spandrel

UPSCALER_EXTENSIONS = (".safetensors", ".pth", ".pt")
DEFAULT_TILE = 512     # input pixels per tile side: bounds memory at about the cost of a 512x512 image
DEFAULT_OVERLAP = 32   # context added around each tile and cropped away afterwards, so seams don't show


class UpscalerUnavailable(RuntimeError):
    """An upscaler that cannot load here (a corrupt, unsafe or unsuitable file, or spandrel not installed): the
    job fails with `unavailable` and this message, which names the file and why, not as an internal error."""


def _spandrel():
    """The spandrel module, imported on first use (see the module docstring for why not at import time)."""
    try:
        import spandrel
    except ImportError as e:
        raise UpscalerUnavailable(f"upscaler models need the Python package `spandrel`, which could not be imported "
                                  f"here ({e}); install it with: pip install 'spandrel>=0.4'") from None
    return spandrel


def supported_architectures() -> str:
    """The architectures spandrel can load, for error messages."""
    return ", ".join(sorted(a.architecture.name for a in _spandrel().MAIN_REGISTRY.architectures()))


class Upscaler:
    """A loaded upscaler model; `upscale()` takes and returns HxWx3 uint8 RGB."""

    def __init__(self, model: spandrel.ImageModelDescriptor, name: str = "upscaler"):
        self.model, self.name = model.eval(), name
        self.net = model.model                          # the torch module (what the memory budget counts)
        self.architecture, self.scale = model.architecture.id, model.scale
        self.device, self.dtype = model.device, model.dtype

    def __repr__(self):
        return (f"Upscaler({self.name!r}, {self.architecture} x{self.scale}, {' '.join(self.model.tags)}, "
                f"{self.device}, {self.dtype})")

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Upscaler":
        """Move to the server's device and dtype; a dtype the architecture cannot run in (e.g. fp16 for
        SwinIR) falls back to float32 rather than failing the job."""
        m = self.model
        if (dtype == torch.float16 and not m.supports_half) or (dtype == torch.bfloat16 and not m.supports_bfloat16):
            dtype = torch.float32
        m.to(device, dtype)
        self.device, self.dtype = m.device, m.dtype
        return self

    def upscale(self, rgb: np.ndarray, tile: Optional[int] = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """Upscale by `self.scale`, `tile` input pixels at a time (None / 0: the whole image at once).

        Each tile is run with `overlap` pixels of surrounding context that are cropped off its
        output, so tile borders see the same neighbourhood as in a whole-image pass. `progress(done,
        total)` is called after each tile (it may raise to cancel).
        """
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            raise ValueError(f"upscale expects an HxWx3 uint8 RGB array, got "
                             f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}")
        if self.model.tiling == _spandrel().ModelTiling.INTERNAL:
            tile = None                                 # the model tiles itself; ours would break it
        h, w = rgb.shape[:2]
        s, f = self.scale, self.model.size_requirements.multiple_of
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255)
        # Some models need sizes divisible by a factor (pixel-unshuffle, windows); pad once for the
        # whole image (not per tile) and align tiles to it, so tiling never changes how pixels are grouped.
        ph, pw = -h % f, -w % f
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        H, W = x.shape[-2:]
        tile = max(H, W) if not tile else max(f, tile // f * f)
        overlap = -(-max(0, overlap) // f) * f
        out = np.empty((H * s, W * s, 3), np.uint8)
        boxes = [(y, xx) for y in range(0, H, tile) for xx in range(0, W, tile)]
        with torch.inference_mode():
            for n, (y0, x0) in enumerate(boxes, 1):
                y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
                cy0, cx0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
                cy1, cx1 = min(y1 + overlap, H), min(x1 + overlap, W)
                r = self.model(x[..., cy0:cy1, cx0:cx1].to(self.device, self.dtype))   # clamped to [0, 1]
                r = r[0, :, (y0 - cy0) * s:(y1 - cy0) * s, (x0 - cx0) * s:(x1 - cx0) * s]
                out[y0 * s:y1 * s, x0 * s:x1 * s] = (
                    r.float().mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
                if progress:
                    progress(n, len(boxes))
        return out if not (ph or pw) else np.ascontiguousarray(out[:h * s, :w * s])


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix not in UPSCALER_EXTENSIONS:
        raise UpscalerUnavailable(f"{path.name}: not an upscaler file (expected {', '.join(UPSCALER_EXTENSIONS)})")
    if not path.is_file():
        raise UpscalerUnavailable(f"{path.name}: not found (looked for {path})")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            # weights_only: a .pth is a pickle, and an unrestricted unpickle runs arbitrary code.
            # (spandrel's own file loader is not used: it would try a .pt as TorchScript, which runs code.)
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message tells the user to retry with weights_only=False; say what was refused instead.
        culprit = re.search(r"GLOBAL (\S+)", str(e))
        if culprit is None:
            raise UpscalerUnavailable(f"{path.name}: corrupt or not a PyTorch checkpoint") from None
        raise UpscalerUnavailable(f"{path.name}: refused: it holds pickled Python objects ({culprit[1]}) that "
                                  f"could run code when loaded; only plain tensor checkpoints and .safetensors are "
                                  f"accepted") from None
    except Exception as e:
        raise UpscalerUnavailable(f"{path.name}: corrupt or not a {suffix} weights file "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    # Unwraps params_ema / state_dict / ... and strips module. / netG. prefixes, as spandrel's loader does.
    sd = _spandrel().canonicalize_state_dict(sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UpscalerUnavailable(f"{path.name}: not a state dict of tensors; supported upscaler architectures: "
                                  f"{supported_architectures()}")
    return sd


def load_upscaler(path) -> Upscaler:
    """Load an upscaler model file (.safetensors, .pth, .pt) of any architecture spandrel knows, on
    the CPU in float32.

    Raises UpscalerUnavailable (naming the file) for missing, corrupt, unsafe, unknown or unsuitable files.
    """
    spandrel = _spandrel()
    path = Path(path)
    sd = _read_state_dict(path)
    # What ModelLoader.load_from_state_dict does (first architecture whose detector accepts the keys),
    # step by step so a failure can name the architecture that was recognised.
    arch = next((a.architecture for a in spandrel.MAIN_REGISTRY.architectures("detection")
                 if a.architecture.detect(sd)), None)
    if arch is None:
        sample = ", ".join(sorted(sd)[:4])
        raise UpscalerUnavailable(f"{path.name}: not an upscaler architecture spandrel {spandrel.__version__} "
                                  f"recognises (keys like {sample}); supported: {supported_architectures()}")
    try:
        model = arch.load(sd)
    except Exception as e:   # detected, but the tensors do not fit (truncated file, unknown variant)
        first = str(e).splitlines()[0] if str(e) else ""
        raise UpscalerUnavailable(f"{path.name}: looks like {arch.name} but its weights do not fit that "
                                  f"architecture ({type(e).__name__}: {first[:300]})") from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.purpose == "FaceSR":
        raise UpscalerUnavailable(f"{path.name}: a {arch.name} {model.purpose} model, not an image upscaler")
    if (model.input_channels, model.output_channels) != (3, 3):
        raise UpscalerUnavailable(f"{path.name}: a {arch.name} model for {model.input_channels}-channel images; "
                                  f"only RGB upscalers are supported")
    return Upscaler(model, path.stem)


# ----------------------------------------------------------------------------- tiny test models

def _esrgan(scale: int, num_filters: int = 8, num_blocks: int = 1, shuffle: bool = False):
    # RealESRGAN keeps two x2 stages and pixel-unshuffles the input for x2 / x1; old ESRGAN has log2(scale) stages.
    shuffle_factor = {4: None, 2: 2, 1: 4}[scale] if shuffle else None
    return _spandrel().architectures.ESRGAN.ESRGAN(in_nc=3 * (shuffle_factor or 1) ** 2, num_filters=num_filters,
                                                   num_blocks=num_blocks, scale=4 if shuffle else scale,
                                                   shuffle_factor=shuffle_factor)


def _to_basicsr_names(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """spandrel's ESRGAN names (old ESRGAN's flattened `model.N` Sequential) -> BasicSR / RealESRGAN names."""
    top = sorted({int(k.split(".")[1]) for k in sd if re.match(r"model\.\d+\.(weight|bias)$", k)})
    names = dict(zip(top, ["conv_first"] + [f"conv_up{i + 1}" for i in range(len(top) - 3)] + ["conv_hr", "conv_last"]))
    out = {}
    for k, v in sd.items():
        if m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(\w+)$", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := re.match(r"model\.1\.sub\.\d+\.(\w+)$", k):
            out[f"conv_body.{m[1]}"] = v                # the trunk's last entry
        else:
            out[f"{names[int(k.split('.')[1])]}.{k.rsplit('.', 1)[1]}"] = v
    return out


def _compact(scale: int):
    return _spandrel().architectures.Compact.Compact(num_feat=8, num_conv=2, upscale=scale)


def _swinir(scale: int):
    # window 8, not 7: spandrel takes window 7 for the JPEG models that work in [0, 255].
    return _spandrel().architectures.SwinIR.SwinIR(img_size=16, embed_dim=8, depths=[2], num_heads=[2],
                                                   window_size=8, mlp_ratio=2.0, upscale=scale,
                                                   upsampler="pixelshuffledirect")


TINY_ARCHITECTURES = ("realesrgan", "esrgan", "compact", "swinir")


def build_tiny_upscaler(path, scale: int = 4, arch: str = "realesrgan", seed: int = 0) -> Path:
    """Write a tiny random-weight upscaler (deterministic for a seed) for tests and demos.

    arch "realesrgan": ESRGAN in BasicSR / RealESRGAN names (x2 / x1 via pixel-unshuffle), with
    RealESRGAN's `params_ema` wrapper in a .pth; "esrgan": old ESRGAN `model.N` names; "compact":
    RealESRGAN's SRVGGNetCompact; "swinir": SwinIR. The networks are spandrel's own classes, so
    spandrel detects them as it would the real releases. Their output is noise, not a sharper image.
    """
    build = {"realesrgan": lambda s: _esrgan(s, shuffle=True), "esrgan": _esrgan, "compact": _compact,
             "swinir": _swinir}.get(arch)
    if build is None:
        raise ValueError(f"unknown tiny upscaler {arch!r}; use one of {', '.join(TINY_ARCHITECTURES)}")
    g = torch.Generator().manual_seed(seed)
    # Explicit seeded init (not torch's default init, which may change between versions); the
    # fan-in scaling keeps activations in range so outputs are not all clamped to 0 or 255.
    sd = {}
    for k, v in build(scale).state_dict().items():
        if v.is_floating_point() and not k.endswith("attn_mask"):
            std = 1 / math.sqrt(v[0].numel()) if k.endswith("weight") and v.ndim > 1 else 0.05
            v = torch.randn(v.shape, generator=g) * std
        sd[k] = v.contiguous()
    if arch in ("realesrgan", "esrgan"):
        last = max((k for k in sd if k.endswith(".bias")), key=lambda k: int(k.split(".")[1]))
        sd[last] = sd[last] + 0.5                       # centre the output in [0, 1]
    if arch == "realesrgan":
        sd = _to_basicsr_names(sd)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save({"params_ema": sd} if arch == "realesrgan" else sd, str(path))
    return path
