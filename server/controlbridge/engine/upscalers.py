"""Upscaler models from `upscale_models/`: the ESRGAN / RealESRGAN RRDBNet family, in plain torch.

The network is reimplemented here (rather than taken from spandrel or basicsr) because those
pull in torchvision. Files are read as safetensors or as weights-only torch checkpoints, so a
model file can never run code. The architecture is recognised from the keys and tensor shapes,
never from the file name, because community upscalers are named freely.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

UPSCALER_EXTENSIONS = (".safetensors", ".pth", ".pt")
SUPPORTED = "ESRGAN / RealESRGAN RRDBNet"
DEFAULT_TILE = 512     # input pixels per tile side: bounds memory at about the cost of a 512x512 image
DEFAULT_OVERLAP = 32   # context added around each tile and cropped away afterwards, so seams don't show


# ----------------------------------------------------------------------------- network

class _ResidualDenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, nf if i == 4 else gc, 3, 1, 1))

    def forward(self, x):
        feats = [x]
        for i in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (_ResidualDenseBlock(nf, gc) for _ in range(3))

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator, with BasicSR's module names.

    The net upsamples x2 `num_upsample` times; BasicSR's x2 / x1 models keep two upsampling
    stages and pixel-unshuffle the input by 2 / 4 first, while old ESRGAN x2 models have a single
    stage and no unshuffle. Both are expressed as scale = 2**num_upsample / unshuffle.
    """

    def __init__(self, in_ch=3, out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4,
                 num_upsample=2):
        super().__init__()
        if scale not in (1, 2, 4, 8) or (2 ** num_upsample) % scale:
            raise ValueError(f"unsupported RRDBNet scale x{scale} with {num_upsample} upsampling stages")
        self.scale, self.unshuffle = scale, 2 ** num_upsample // scale
        self.in_ch, self.out_ch = in_ch, out_ch
        self.num_feat, self.num_block, self.num_grow_ch, self.num_upsample = num_feat, num_block, num_grow_ch, num_upsample
        self.conv_first = nn.Conv2d(in_ch * self.unshuffle ** 2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(_RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for i in range(num_upsample):
            setattr(self, f"conv_up{i + 1}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_ch, 3, 1, 1)

    def forward(self, x):
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.num_upsample):
            up = getattr(self, f"conv_up{i + 1}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


# ----------------------------------------------------------------------------- key layouts

_OLD_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)$")
_OLD_LR = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)$")


def _from_old_esrgan(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Old ESRGAN (`model.N...`, a flattened nn.Sequential) -> BasicSR names.

    model.0 is conv_first, model.1 the shortcut around the RRDB trunk whose last entry is
    conv_body; the convs after it (model.3, .6, ... interleaved with upsample/activation
    modules that hold no weights) are the up convs, then conv_hr, then conv_last.
    """
    out, top = {}, {}
    for k, v in sd.items():
        if m := _OLD_RDB.match(k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := _OLD_LR.match(k):
            out[f"conv_body.{m[2]}"] = v   # the trunk's last entry; RRDBs only have nested keys
        elif m := _OLD_TOP.match(k):
            top.setdefault(int(m[1]), {})[m[2]] = v
        else:
            out[k] = v                     # left for the strict load to reject
    idx = sorted(top)
    if len(idx) < 3 or idx[0] != 0:
        raise KeyError("model.N layout without conv_first / conv_hr / conv_last")
    names = ["conv_first"] + [f"conv_up{i + 1}" for i in range(len(idx) - 3)] + ["conv_hr", "conv_last"]
    for name, i in zip(names, idx):
        for p, v in top[i].items():
            out[f"{name}.{p}"] = v
    return out


def _to_old_esrgan(sd: Dict[str, torch.Tensor], num_upsample: int) -> Dict[str, torch.Tensor]:
    """BasicSR names -> old ESRGAN indices (the inverse of `_from_old_esrgan`, for test models)."""
    nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    top = {"conv_first": 0, "conv_hr": 2 + 3 * num_upsample, "conv_last": 4 + 3 * num_upsample}
    top.update({f"conv_up{i + 1}": 3 + 3 * i for i in range(num_upsample)})
    out = {}
    for k, v in sd.items():
        name, p = k.rsplit(".", 1)
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)$", name):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{p}"] = v
        elif name == "conv_body":
            out[f"model.1.sub.{nb}.{p}"] = v
        else:
            out[f"model.{top[name]}.{p}"] = v
    return out


# xinntao's ESRGAN repo after its 2019 rewrite: BasicSR's structure under older names.
_NEW_ESRGAN_NAMES = (("RRDB_trunk.", "body."), ("trunk_conv.", "conv_body."), ("upconv", "conv_up"),
                     ("HRconv.", "conv_hr."), (".RDB", ".rdb"))


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix not in UPSCALER_EXTENSIONS:
        raise ValueError(f"{path.name}: not an upscaler file (expected {', '.join(UPSCALER_EXTENSIONS)})")
    if not path.is_file():
        raise FileNotFoundError(f"upscaler model not found: {path}")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            # weights_only: a .pth is a pickle, and an unrestricted unpickle runs arbitrary code.
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message tells the user to retry with weights_only=False; say what was refused instead.
        culprit = re.search(r"GLOBAL (\S+)", str(e))
        if culprit is None:
            raise ValueError(f"{path.name}: corrupt or not a PyTorch checkpoint") from None
        raise ValueError(f"{path.name}: refused: it holds pickled Python objects ({culprit[1]}) that could "
                         f"run code when loaded; only plain tensor checkpoints and .safetensors are accepted") from None
    except Exception as e:
        raise ValueError(f"{path.name}: corrupt or not a {suffix} weights file "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for wrapper in ("params_ema", "params", "state_dict"):   # RealESRGAN / BasicSR / Lightning releases
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path.name}: not a state dict of tensors; supported upscalers: {SUPPORTED}")
    return {k.removeprefix("module."): v for k, v in sd.items()}   # DataParallel saves


def _detect(sd: Dict[str, torch.Tensor], name: str):
    """-> (layout, state dict in BasicSR names)."""
    if "model.0.weight" in sd and any(_OLD_RDB.match(k) for k in sd):
        try:
            return "esrgan", _from_old_esrgan(sd)
        except KeyError:
            pass
    elif "conv_first.weight" in sd and any(k.startswith("body.0.rdb1.") for k in sd):
        return "basicsr", sd
    elif "conv_first.weight" in sd and any(k.startswith("RRDB_trunk.0.RDB1.") for k in sd):
        renamed = {}
        for k, v in sd.items():
            for old, new in _NEW_ESRGAN_NAMES:
                k = k.replace(old, new)
            renamed[k] = v
        return "esrgan-v2", renamed
    sample = ", ".join(sorted(sd)[:4])
    raise ValueError(f"{name}: not a supported upscaler model (keys like {sample}); "
                     f"supported architectures: {SUPPORTED}")


def _build_net(sd: Dict[str, torch.Tensor], name: str) -> RRDBNet:
    try:
        first, last = sd["conv_first.weight"], sd["conv_last.weight"]
        num_feat, in_total = first.shape[:2]
        out_ch = last.shape[0]
        num_grow_ch = sd["body.0.rdb1.conv1.weight"].shape[0]
        num_block = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
        num_upsample = sum(1 for k in sd if re.fullmatch(r"conv_up\d+\.weight", k))
    except (KeyError, ValueError, IndexError) as e:
        raise ValueError(f"{name}: incomplete {SUPPORTED} weights (missing {e})") from None
    # Input and output channels are equal (RGB); extra input channels come from pixel-unshuffle.
    unshuffle = {1: 1, 4: 2, 16: 4}.get(in_total // out_ch) if in_total % out_ch == 0 else None
    if out_ch != 3 or unshuffle is None or (2 ** num_upsample) % unshuffle:
        raise ValueError(f"{name}: unsupported RRDBNet variant ({in_total} input / {out_ch} output "
                         f"channels, {num_upsample} upsampling stages); only RGB models are supported")
    net = RRDBNet(3, 3, num_feat, num_block, num_grow_ch, 2 ** num_upsample // unshuffle, num_upsample)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{name}: weights do not fit a {SUPPORTED} (an unsupported variant?): {e}") from None
    return net.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- public API

class Upscaler:
    """A loaded upscaler model; `upscale()` takes and returns HxWx3 uint8 RGB."""

    def __init__(self, net: RRDBNet, name: str = "upscaler", layout: str = "basicsr"):
        self.net, self.name, self.layout = net, name, layout
        self.scale = net.scale
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def __repr__(self):
        n = self.net
        return (f"Upscaler({self.name!r}, {self.layout}, x{self.scale}, feat={n.num_feat}, "
                f"blocks={n.num_block}, grow={n.num_grow_ch}, {self.device}, {self.dtype})")

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Upscaler":
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        self.net.to(self.device, self.dtype)
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
        h, w = rgb.shape[:2]
        s, f = self.scale, self.net.unshuffle
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255)
        # Pixel-unshuffle needs sizes divisible by its factor; pad once for the whole image (not per
        # tile) and align tiles to the factor, so tiling never changes how pixels are grouped.
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
                r = self.net(x[..., cy0:cy1, cx0:cx1].to(self.device, self.dtype))
                r = r[0, :, (y0 - cy0) * s:(y1 - cy0) * s, (x0 - cx0) * s:(x1 - cx0) * s]
                out[y0 * s:y1 * s, x0 * s:x1 * s] = (
                    r.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
                if progress:
                    progress(n, len(boxes))
        return out if not (ph or pw) else np.ascontiguousarray(out[:h * s, :w * s])


def load_upscaler(path) -> Upscaler:
    """Load an ESRGAN / RealESRGAN model file (.safetensors, .pth, .pt) on the CPU in float32.

    Raises ValueError (naming the file) for corrupt, unsafe or unsupported files.
    """
    path = Path(path)
    sd = _read_state_dict(path)
    layout, sd = _detect(sd, path.name)
    return Upscaler(_build_net(sd, path.name), path.stem, layout)


def build_tiny_upscaler(path, scale: int = 4, layout: str = "basicsr", num_feat: int = 8,
                        num_block: int = 1, num_grow_ch: int = 4, seed: int = 0) -> Path:
    """Write a tiny random-weight RRDBNet (deterministic for a seed) for tests and demos.

    layout "basicsr" writes RealESRGAN names (x2 / x1 via pixel-unshuffle), "esrgan" the old
    `model.N` names (x2 / x1 via fewer upsampling stages). A .pth gets RealESRGAN's `params_ema`
    wrapper. Its output is noise, not a sharper image.
    """
    if layout not in ("basicsr", "esrgan"):
        raise ValueError(f"unknown layout {layout!r}; use 'basicsr' or 'esrgan'")
    num_upsample = 2 if layout == "basicsr" else {1: 0, 2: 1, 4: 2, 8: 3}[scale]
    net = RRDBNet(3, 3, num_feat, num_block, num_grow_ch, scale, num_upsample)
    g = torch.Generator().manual_seed(seed)
    # Explicit seeded init (not torch's default init, which may change between versions); the
    # fan-in scaling keeps activations in range so outputs are not all clamped to 0 or 255.
    sd = {}
    for k, v in net.state_dict().items():
        std = (1.0 / v[0].numel()) ** 0.5 if k.endswith("weight") else 0.05
        sd[k] = (torch.randn(v.shape, generator=g) * std).contiguous()
    sd["conv_last.bias"] = sd["conv_last.bias"] + 0.5   # centre the output in [0, 1]
    if layout == "esrgan":
        sd = _to_old_esrgan(sd, num_upsample)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save({"params_ema": sd}, str(path))
    return path
