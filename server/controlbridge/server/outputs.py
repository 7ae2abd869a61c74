"""Writing every result and its inputs to the output folder, with the full settings in the PNG.

Layout, one job:  <output_dir>/<prefix>_<date>-<time>_<seed>_<job>.png        the result
                  <output_dir>/<same stem>.inputs/color.png|.jpg|.webp|.npy ... the inputs as received
                  <output_dir>/<same stem>.inputs/control-<name>.png       what each ControlNet saw
                  <output_dir>/<same stem>.inputs/estimated-<name>.png     an estimator's map (color's size)
The inputs folder is written first and the result PNG last (atomically), so a PNG that exists is complete,
and both are on disk before the result is announced. Nothing a client sends becomes a path.
"""
import datetime
import importlib.metadata
import io
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from PIL import Image

from controlbridge_protocol import ImageAttachment, JobSettings

from ..imaging.codecs import encode_image, read_png_text
from ..library.hashing import known_sha256
from .comfy_graph import comfy_prompt

METADATA_KEY = "controlbridge"        # PNG text chunk with the job as JSON
A1111_KEY = "parameters"              # the line other tools (A1111, Civitai) read
COMFY_KEY = "prompt"                  # the job as a ComfyUI API graph: dropping the PNG on ComfyUI opens it
METADATA_FORMAT = 1
_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "exr": ".exr", "raw_rgba8": ".png", "raw_f32": ".npy"}


@dataclass
class SavedJob:
    path: Path                  # the result PNG
    metadata: dict


def safe_prefix(prefix: str) -> str:
    """A client's filename prefix reduced to a plain file-name fragment (never a path)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", prefix or "").strip("_")[:48]
    return cleaned or "controlbridge"


def save_job(output_dir: Path, job_id: str, settings: JobSettings, model, out, attachments: Dict[str, ImageAttachment],
             model_path: Optional[Path] = None) -> SavedJob:
    """`model` is the LoadedModel that ran the job, `out` its JobOutput; OSError when the folder is unusable."""
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = f"{safe_prefix(settings.filename_prefix)}_{stamp}_{settings.seed}_{job_id}"
    result_path = _inside(output_dir, output_dir / f"{stem}.png")
    inputs_dir = _inside(output_dir, inputs_folder(result_path))
    inputs_dir.mkdir()
    inputs = save_inputs(inputs_dir, attachments)
    metadata = job_metadata(job_id, settings, model, out, inputs, model_path)
    # What each ControlNet saw (working size), as ComfyUI shows a preprocessor's output: for checking, not re-runs.
    for name, pixels in out.control_images.items():
        path = _inside(inputs_dir, inputs_dir / f"control-{safe_prefix(name)}.png")
        _write_atomic(path, encode_image(pixels, "png"))
        metadata.setdefault("controls", {})[name] = f"{inputs_dir.name}/{path.name}"
    # Each estimator's map at the color image's size: what a re-run where that estimator is missing sends instead.
    for name, pixels in getattr(out, "estimated", {}).items():
        path = _inside(inputs_dir, inputs_dir / f"estimated-{safe_prefix(name)}.png")
        _write_atomic(path, encode_image(pixels, "png"))
        metadata.setdefault("estimated", {})[name] = {
            "estimator": settings.estimate.get(name), "file": f"{inputs_dir.name}/{path.name}",
            "width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
    _write_atomic(result_path, _png(out.image, settings, metadata))
    return SavedJob(result_path, metadata)


def inputs_folder(png_path: Path) -> Path:
    """Where a result's inputs are kept: `<stem>.inputs/` beside it (the server's copy and a client's copy alike)."""
    png_path = Path(png_path)
    return png_path.with_name(f"{png_path.stem}.inputs")


def save_inputs(inputs_dir: Path, attachments: Dict[str, ImageAttachment]) -> dict:
    """The attachments as received, one file each in `inputs_dir`; their metadata entries (name -> file...)."""
    inputs_dir = Path(inputs_dir)
    inputs_dir.mkdir(exist_ok=True)
    inputs = {}
    for name, att in attachments.items():
        path = inputs_dir / f"{name}{_EXTENSIONS[att.encoding]}"
        _write_atomic(path, _input_bytes(att))
        inputs[name] = {"file": f"{inputs_dir.name}/{path.name}", "encoding": att.encoding,
                        "width": att.width, "height": att.height, "far": att.far}
        if att.world_to_camera is not None:      # world-space normals: the rotation that makes them camera-space
            inputs[name]["world_to_camera"] = list(att.world_to_camera)
    return inputs


def result_png(settings: JobSettings, model, out) -> bytes:
    """The result PNG with its settings embedded, for a client when saving it failed (no inputs on disk)."""
    return _png(out.image, settings, job_metadata("", settings, model, out, {}, None))


def job_metadata(job_id: str, settings: JobSettings, model, out, inputs: dict, model_path: Optional[Path]) -> dict:
    described = dict(model.describe(), device=str(model.device), dtype=model.dtype_name,
                     sha256=known_sha256(model_path))
    return {"format": METADATA_FORMAT, "job_id": job_id, "created": datetime.datetime.now().isoformat(),
            "settings": settings.to_dict(), "model": described, "working_size": list(out.working_size),
            "size": [int(out.image.shape[1]), int(out.image.shape[0])], "inputs": inputs,
            "software": software_versions()}


def software_versions() -> dict:
    from .. import __version__
    found = {"controlbridge": __version__, "python": platform.python_version()}
    for package in ("torch", "diffusers", "transformers"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def _png(image: np.ndarray, settings: JobSettings, metadata: dict) -> bytes:
    text = {METADATA_KEY: json.dumps(metadata), A1111_KEY: a1111_parameters(settings, metadata["model"], image.shape),
            COMFY_KEY: json.dumps(comfy_prompt(settings, metadata))}
    return encode_image(image, "png", text)


def read_job(png_path: Path) -> dict:
    """The metadata ControlBridge embedded in a result PNG (ValueError if it is not one of ours)."""
    text = read_png_text(png_path)
    if METADATA_KEY not in text:
        raise ValueError(f"{png_path} has no ControlBridge settings (was it written by ControlBridge?)")
    return json.loads(text[METADATA_KEY])


def load_input(png_path: Path, entry: dict) -> ImageAttachment:
    """An input kept beside a result, as the attachment that was originally sent."""
    # Beside this copy first (a client's `-o` copy keeps them under its own name), then where the server put them.
    beside = inputs_folder(Path(png_path).resolve()) / Path(entry["file"]).name
    server = Path(png_path).resolve().parent / entry["file"]
    path = next((p for p in (beside, server) if p.is_file()), None)
    if path is None:
        where = beside if beside == server else f"{beside} (beside it) or {server} (the server's layout)"
        raise FileNotFoundError(f"input '{Path(entry['file']).stem}' of {png_path} is missing: expected at {where}; "
                                f"the job cannot be re-run without it")
    encoding, w, h = entry["encoding"], entry["width"], entry["height"]
    name = Path(entry["file"]).stem
    if encoding == "raw_f32":
        return ImageAttachment.raw_depth(name, w, h, np.load(path).astype("<f4").tobytes(), entry.get("far"))
    if encoding == "raw_rgba8":
        with Image.open(path) as img:
            return ImageAttachment.raw_rgba8(name, w, h, img.convert("RGBA").tobytes())
    matrix = entry.get("world_to_camera")
    return ImageAttachment(name, encoding, w, h, path.read_bytes(), entry.get("far"),      # exr keeps its far
                           world_to_camera=tuple(matrix) if matrix is not None else None)  # and its rotation


def a1111_parameters(settings: JobSettings, model: dict, shape) -> str:
    lines = [settings.prompt]
    if settings.negative_prompt:
        lines.append(f"Negative prompt: {settings.negative_prompt}")
    cns = ", ".join(f"{n} {c.weight:g} ({c.start:g}-{c.end:g})" for n, c in settings.controlnets.items())
    lines.append(f"Steps: {settings.steps}, Sampler: {settings.sampler}, CFG scale: {settings.cfg:g}, "
                 f"Seed: {settings.seed}, Size: {shape[1]}x{shape[0]}, Model: {model.get('name')}, "
                 f"Denoising strength: {settings.denoise:g}, ControlNet: {cns or 'none'}"
                 + (f", Model hash: {model['sha256'][:10]}" if model.get("sha256") else ""))   # A1111's short hash
    return "\n".join(lines)


def _input_bytes(att: ImageAttachment) -> bytes:
    buf = io.BytesIO()
    if att.encoding == "raw_f32":
        np.save(buf, np.frombuffer(att.data, "<f4").reshape(att.height, att.width))
        return buf.getvalue()
    if att.encoding == "raw_rgba8":
        Image.frombytes("RGBA", (att.width, att.height), att.data).save(buf, "PNG")
        return buf.getvalue()
    return att.data


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if resolved.parent != root:
        raise ValueError(f"refusing to write {resolved}: outside the output folder {root}")
    return resolved


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
