"""List the models in ComfyUI-style folders, and turn the name a job sends back into a file, safely.

Layout (each root; the server passes the artist's --models-dir and its own folder, first match wins):

    checkpoints/  diffusion_models/  unet/  controlnet/  loras/  vae/  upscale_models/  diffusers/
    ipadapter/  clip_vision/

A name is the path relative to its subfolder with "/" separators ("sdxl/juggernaut.safetensors"); a diffusers
model is a folder (model_index.json or config.json inside) and its name is the folder's. Files that cannot be
read are listed as problems with the reason, never raised: one bad download must not hide the rest.

Containment: the subfolder itself may be a symlink (artists move models to a big drive), but nothing inside it
may lead out of it. Names with "..", absolute paths, drive letters or control characters are refused outright.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import families as fam
from .families import (CHECKPOINT, CLIP_VISION, CONTROLNET, DIFFUSION_MODEL, IPADAPTER, LORA, UPSCALER, VAE,
                       NotAModel, detect_diffusers_folder, lora_info, read_header)

# Subfolder -> the kind its files are expected to be (a file's own header has the last word).
SUBFOLDERS: Dict[str, str] = {
    "checkpoints": CHECKPOINT, "diffusion_models": DIFFUSION_MODEL, "unet": DIFFUSION_MODEL,
    "controlnet": CONTROLNET, "loras": LORA, "vae": VAE, "upscale_models": UPSCALER, "diffusers": CHECKPOINT,
    "ipadapter": IPADAPTER, "clip_vision": CLIP_VISION,
    "text_encoders": fam.TEXT_ENCODER, "clip": fam.TEXT_ENCODER,    # FLUX's clip_l / t5xxl beside a transformer
}
# What a job may ask for -> the detected kinds that satisfy it (a UNet-only file is a base model too).
REQUEST_KINDS: Dict[str, Tuple[str, ...]] = {
    CHECKPOINT: (CHECKPOINT, DIFFUSION_MODEL), CONTROLNET: (CONTROLNET,), LORA: (LORA,), VAE: (VAE,),
    UPSCALER: (UPSCALER,), IPADAPTER: (IPADAPTER,), CLIP_VISION: (CLIP_VISION,),
}
_PICKLE = (".ckpt", ".pt", ".pth", ".bin")
_OTHER_WEIGHTS = (".gguf", ".onnx")
MAX_NAME_LENGTH = 1024


class LibraryError(Exception):
    """Base of the errors a job's model request can get; str() is meant for the artist."""


class UnsafeName(LibraryError, ValueError):
    pass


class ModelNotFound(LibraryError, LookupError):
    pass


class WrongKind(LibraryError, ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    name: str                       # what a job sends: relative to the subfolder, "/"-separated
    kind: str                       # detected: checkpoint, diffusion_model, controlnet, lora, vae, upscaler
    path: Path
    folder: str                     # the subfolder it was found in ("checkpoints", "loras", ...)
    families: Tuple[str, ...]       # families it works with (empty: unknown)
    size: int                       # bytes (a folder: all its files)
    layout: str                     # "original", "diffusers", "kohya", "peft", "xlabs", "pickle"
    variant: Optional[str] = None
    fp8: bool = False
    trigger_words: Tuple[str, ...] = ()   # LoRAs: from their metadata
    output_name: Optional[str] = None     # LoRAs: kohya's ss_output_name

    @property
    def family(self) -> Optional[str]:
        return self.families[0] if len(self.families) == 1 else None

    def describe(self) -> dict:
        """A JSON-ready summary for the handshake."""
        out = {"name": self.name, "kind": self.kind, "family": self.family, "families": list(self.families),
               "size": self.size, "layout": self.layout}
        if self.variant:
            out["variant"] = self.variant
        if self.fp8:
            out["fp8"] = True
        if self.kind == LORA:
            out["trigger_words"] = list(self.trigger_words)
            if self.output_name:
                out["output_name"] = self.output_name
        return out


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str

    def describe(self) -> dict:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class Library:
    roots: Tuple[Path, ...]
    entries: List[Entry] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)

    def list(self, kind: Optional[str] = None) -> List[Entry]:
        wanted = REQUEST_KINDS.get(kind, (kind,)) if kind else None
        return [e for e in self.entries if wanted is None or e.kind in wanted]

    def resolve(self, name: str, kind: str) -> Entry:
        """The entry a job means by `name`; UnsafeName, ModelNotFound or WrongKind with a clear message."""
        if kind not in REQUEST_KINDS:
            raise ValueError(f"unknown model kind {kind!r} (one of {', '.join(REQUEST_KINDS)})")
        clean = check_name(name)
        wanted = REQUEST_KINDS[kind]
        same_name = [e for e in self.entries if e.name == clean]
        for entry in same_name:
            if entry.kind in wanted:
                return entry
        # Not in the last scan: it may have been added since. Look on disk, same containment rules.
        for root in self.roots:
            for folder, expected in SUBFOLDERS.items():
                if expected not in wanted and folder != "diffusers":
                    continue
                entry = _entry_at(root, folder, clean)
                if entry is not None and entry.kind in wanted:
                    return entry         # not added to entries: a rescan lists it (no shared mutation here)
        if same_name:
            e = same_name[0]
            what = " ".join(filter(None, [e.family, e.kind]))
            raise WrongKind(f"{clean!r} is a {what} (in {e.folder}/), not a {kind}")
        known = sorted(e.name for e in self.list(kind))
        where = ", ".join(str(r) for r in self.roots)
        hint = f"; {kind}s here: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}" if known else \
            f"; no {kind} found in {where}" if where else \
            "; this server has no models folder (start it with --models-dir, e.g. your ComfyUI models/)"
        raise ModelNotFound(f"no {kind} named {clean!r}{hint}")


# --------------------------------------------------------------------------------------------- names

def check_name(name) -> str:
    """The normalised relative name, or UnsafeName. Windows separators are accepted and turned into "/"."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafeName(f"model name {name!r} is empty or not text")
    if len(name) > MAX_NAME_LENGTH or re.search(r"[\x00-\x1f\x7f]", name):
        raise UnsafeName(f"model name {name[:80]!r} is too long or has control characters")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or PureWindowsPath(name).drive or PurePosixPath(unified).is_absolute():
        raise UnsafeName(f"model name {name!r} is an absolute path; send the name relative to the models folder")
    parts = unified.split("/")
    if any(p in ("", ".", "..") for p in parts) or any(":" in p for p in parts):
        raise UnsafeName(f"model name {name!r} may not contain '..', '.', empty parts or ':'")
    return "/".join(parts)


def _inside(path: Path, base: Path) -> bool:
    """Whether `path` really (symlinks resolved) lies inside the real `base`."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(base))
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------- scanning

def scan(roots: Iterable, folders: Sequence[str] = tuple(SUBFOLDERS)) -> Library:
    """Scan each root's subfolders. Earlier roots win a name clash; the later file is reported as shadowed."""
    library = Library(tuple(Path(r) for r in roots))
    seen: Dict[Tuple[str, str], Entry] = {}
    for root in library.roots:
        if not root.is_dir():
            library.problems.append(Problem(root, "models folder not found"))
            continue
        for folder in folders:
            base = root / folder
            if not base.is_dir():
                continue
            for entry_or_problem in _scan_folder(base, folder):
                if isinstance(entry_or_problem, Problem):
                    library.problems.append(entry_or_problem)
                    continue
                entry = entry_or_problem
                group = CHECKPOINT if entry.kind == DIFFUSION_MODEL else entry.kind
                if (group, entry.name) in seen:
                    library.problems.append(Problem(entry.path, f"shadowed by {seen[group, entry.name].path}"))
                    continue
                seen[group, entry.name] = entry
                library.entries.append(entry)
    library.entries.sort(key=lambda e: (e.kind, e.name.lower()))
    return library


def _scan_folder(base: Path, folder: str):
    real_base = os.path.realpath(base)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        dirnames.sort()
        for d in list(dirnames):
            sub = here / d
            if d.startswith("."):
                dirnames.remove(d)
            elif (sub / "model_index.json").is_file() or (sub / "config.json").is_file():
                dirnames.remove(d)             # a diffusers model folder: one entry, not a tree to walk
                yield _folder_entry(sub, base, folder)
            elif sub.is_symlink():
                dirnames.remove(d)             # os.walk would not follow it; say why it is not listed
                if not _inside(sub, real_base):
                    yield Problem(sub, f"symlink points outside {base}; not listed")
        for f in sorted(filenames):
            if f.startswith("."):
                continue                       # macOS ._ files, .DS_Store, partial downloads
            path = here / f
            if not _inside(path, real_base):
                yield Problem(path, f"symlink points outside {base}; not listed")
                continue
            result = _file_entry(path, base, folder)
            if result is not None:
                yield result


def _name(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _file_entry(path: Path, base: Path, folder: str):
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
    except OSError as e:
        return Problem(path, f"cannot be read ({e.strerror or e})")
    if suffix in fam.SAFETENSORS_SUFFIXES:
        return _safetensors_entry(path, base, folder, size)
    if suffix in _PICKLE:
        if folder == "upscale_models":
            # ESRGAN-style upscalers are nearly all .pth; listed, to be loaded with weights_only=True.
            return Entry(_name(path, base), UPSCALER, path, folder, (), size, "pickle")
        return Problem(path, f"{suffix} (pickle) files are not loaded: they can run code when opened; "
                             f"use the .safetensors version")
    if suffix in _OTHER_WEIGHTS:
        return Problem(path, f"{suffix} models are not supported")
    return None                                # previews, .txt, .yaml, "put_models_here" placeholders


def _safetensors_entry(path: Path, base: Path, folder: str, size: int):
    try:
        header = read_header(path)
        if folder == "upscale_models":
            return Entry(_name(path, base), UPSCALER, path, folder, (), size, "safetensors")
        detection = fam.detect_keys(header.shapes, header.metadata)
    except NotAModel as e:
        reason = str(e)
        return Problem(path, reason if reason.startswith(str(path)) else f"{path}: {reason}")
    info = lora_info(header.metadata) if detection.kind == LORA else None
    return Entry(_name(path, base), detection.kind, path, folder, detection.families, size, detection.layout,
                 detection.variant, fp8=any(d.startswith("F8") for d in header.dtypes.values()),
                 trigger_words=info.trigger_words if info else (), output_name=info.output_name if info else None)


def _folder_entry(path: Path, base: Path, folder: str):
    if not _inside(path, base):
        return Problem(path, f"symlink points outside {base}; not listed")
    try:
        detection = detect_diffusers_folder(path)
    except NotAModel as e:
        return Problem(path, str(e))
    size = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            try:
                size += (Path(dirpath) / f).stat().st_size
            except OSError:
                pass
    return Entry(_name(path, base), detection.kind, path, folder, detection.families, size, "diffusers",
                 detection.variant)


def _entry_at(root: Path, folder: str, name: str) -> Optional[Entry]:
    """The entry for `name` under root/folder if it exists and stays inside; None otherwise."""
    base = root / folder
    path = base / name
    if not base.is_dir() or not path.exists() or not _inside(path, base):
        return None
    result = _folder_entry(path, base, folder) if path.is_dir() else _file_entry(path, base, folder)
    return result if isinstance(result, Entry) else None


def default_roots(models_dir: Optional[Path], own_dir: Path) -> List[Path]:
    """The artist's folder first (their names win), then the server's own."""
    return [Path(p) for p in (models_dir, own_dir) if p is not None]


def own_models_dir() -> Path:
    """The server's own models folder, same layout (e.g. where tokenizers/ and downloaded models go)."""
    from ..paths import user_data_dir
    return user_data_dir() / "models"
