"""Capture the active camera's view: color (as the artist sees the render), raw depth, optional normals.

The capture path (the same in the interactive UI and headless):
1. Render the view with `bpy.ops.render.render` (blocking) at the scene's render resolution x percentage,
   with the Z pass (and the Normal pass when asked) enabled on the view layer, the compositor and the
   sequencer, stamp and stereo switched off, and no render border. The engine is Cycles (it renders everywhere, also in
   background mode without a GPU) with `capture_samples` samples, unless the artist picks "Scene engine"
   and the scene uses EEVEE (faster in the UI on a GPU; EEVEE cannot render headless, so Cycles is used there).
2. Save the Render Result twice with `Image.save_render`: an uncompressed 8-bit RGBA Targa (the color,
   with the scene's view transform applied, exactly what the artist's render would look like) and a
   32-bit float multilayer EXR (the passes, linear). Both are read back with numpy (exr.py), no
   temporary image datablocks.
3. Restore every setting that was changed, even when the render fails. When a Render Result exists, the
   capture renders into its own render slot ("ControlBridge capture"), so the artist's last render is
   kept in its slot (and the capture can be inspected in the Image Editor).

Depth is sent RAW: Cycles' Z pass is the planar camera-space distance along the view axis, in scene
units, and background pixels are 1e10. `far` is the camera's clip end: nothing nearer than it is
background, and the renderer never returns a hit beyond it. The server normalizes depth.
"""
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import bpy
import numpy as np

from . import exr
from .frustum import Frame, camera_frame, unscaled_matrix
from .vendor.controlbridge_protocol import ImageAttachment

# Objects this add-on creates that must not show in a capture (the image plane sits in front of the camera).
HELPER_PROP = "controlbridge_helper"
EEVEE_ENGINES = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")
CAPTURE_SLOT = "ControlBridge capture"   # the Render Result slot captures go to


class CaptureError(Exception):
    """A capture that cannot be made; str() is one line for the panel."""


@dataclass
class Capture:
    width: int
    height: int
    color: bytes                    # raw RGBA8, sRGB (view transform applied), top row first
    depth: np.ndarray               # float32 (height, width), scene units, top row first
    far: float
    normal: Optional[bytes] = None  # raw RGBA8 camera-space normal map (x right, y up, z to the camera)
    camera_name: str = ""
    camera_matrix: list = field(default_factory=list)  # 4x4 row-major, unscaled world matrix at capture time
    frame: Optional[Frame] = None
    engine: str = ""

    def attachments(self):
        images = [ImageAttachment.raw_rgba8("color", self.width, self.height, self.color),
                  ImageAttachment.raw_depth("depth", self.width, self.height,
                                            self.depth.astype("<f4").tobytes(), far=self.far)]
        if self.normal is not None:
            images.append(ImageAttachment.raw_rgba8("normal", self.width, self.height, self.normal))
        return images

    def meta(self) -> dict:
        """What the result placement needs to know about the view the image was generated from."""
        return {"camera": self.camera_name, "matrix": self.camera_matrix,
                "frame": self.frame.to_dict() if self.frame else None,
                "width": self.width, "height": self.height}


def render_size(scene):
    r = scene.render
    return r.resolution_x * r.resolution_percentage // 100, r.resolution_y * r.resolution_percentage // 100


class TemporarySettings:
    """Set attributes now, put every one back later, in the order they were first set.

    The order matters for Blender's image settings: media_type, then file_format, then the rest."""

    def __init__(self):
        self._saved = []
        self._seen = set()

    def save(self, owner, *attrs):
        """Remember the current values (call before changing anything that changes them as a side effect)."""
        for attr in attrs:
            key = (owner.as_pointer() if hasattr(owner, "as_pointer") else id(owner), attr)
            if key not in self._seen:
                self._seen.add(key)
                self._saved.append((owner, attr, getattr(owner, attr)))

    def set(self, owner, attr, value):
        self.save(owner, attr)
        if getattr(owner, attr) != value:
            setattr(owner, attr, value)

    def restore(self):
        failures = []
        for owner, attr, value in self._saved:
            try:
                if getattr(owner, attr) != value:
                    setattr(owner, attr, value)
            except Exception as exc:  # keep restoring the rest
                failures.append(f"{attr}: {exc}")
        self._saved.clear()
        self._seen.clear()
        if failures:
            raise CaptureError("could not restore render settings: " + "; ".join(failures))


def _set_image_settings(tmp: TemporarySettings, im, media_type, file_format, **values):
    if hasattr(im, "media_type"):  # Blender 5.0+: the media type decides which formats are allowed
        tmp.set(im, "media_type", media_type)
    tmp.set(im, "file_format", file_format)
    for attr, value in values.items():
        tmp.set(im, attr, value)


def _read_tga_rgba(path, width, height) -> np.ndarray:
    with open(path, "rb") as f:
        buf = f.read()
    id_len, cmap_type, img_type = buf[0], buf[1], buf[2]
    w, h, bpp, desc = int.from_bytes(buf[12:14], "little"), int.from_bytes(buf[14:16], "little"), buf[16], buf[17]
    if img_type != 2 or cmap_type != 0 or bpp not in (24, 32) or (w, h) != (width, height):
        raise CaptureError(f"unexpected color capture file ({w}x{h}, type {img_type}, {bpp} bpp)")
    n = 4 if bpp == 32 else 3
    start = 18 + id_len
    px = np.frombuffer(buf, dtype=np.uint8, count=w * h * n, offset=start).reshape(h, w, n)
    if not desc & 0x20:   # origin bottom-left: flip to top row first
        px = px[::-1]
    rgba = np.empty((h, w, 4), dtype=np.uint8)
    rgba[..., 0] = px[..., 2]
    rgba[..., 1] = px[..., 1]
    rgba[..., 2] = px[..., 0]
    rgba[..., 3] = px[..., 3] if n == 4 else 255
    return rgba


def _pass(channels: dict, layer: str, suffix: str) -> np.ndarray:
    exact = f"{layer}.{suffix}"
    if exact in channels:
        return channels[exact]
    for name, arr in channels.items():
        if name.endswith("." + suffix) or name == suffix:
            return arr
    raise CaptureError(f"the render has no {suffix} pass (channels: {', '.join(sorted(channels)) or 'none'})")


def _render_result_image(required=True):
    for image in bpy.data.images:
        if image.type == "RENDER_RESULT":
            return image
    if required:
        raise CaptureError("the render produced no Render Result")
    return None


def capture_engine(scene, choice: str) -> str:
    if choice == "SCENE" and scene.render.engine in EEVEE_ENGINES + ("CYCLES",):
        if scene.render.engine == "CYCLES" or not bpy.app.background:
            return scene.render.engine
    return "CYCLES"


def capture(scene, view_layer=None, *, engine_choice="CYCLES", samples=16, normals=False) -> Capture:
    """Render the scene's active camera and return color + raw depth (+ normals). Leaves the scene as it was."""
    camera = scene.camera
    if camera is None:
        raise CaptureError("The scene has no active camera: add one or set Scene > Camera")
    if camera.type != "CAMERA":
        raise CaptureError(f"The active camera '{camera.name}' is not a camera object")
    view_layer = view_layer or scene.view_layers[0]
    try:
        frame = camera_frame(scene, camera)
    except ValueError as exc:
        raise CaptureError(str(exc)) from None
    width, height = render_size(scene)
    engine = capture_engine(scene, engine_choice)

    tmp = TemporarySettings()
    tmpdir = tempfile.mkdtemp(prefix="controlbridge_capture_")
    r = scene.render
    try:
        tmp.set(r, "engine", engine)
        tmp.set(r, "use_compositing", False)
        tmp.set(r, "use_sequencer", False)
        tmp.set(r, "use_border", False)
        tmp.set(r, "use_stamp", False)        # no metadata burnt into the pixels
        tmp.set(r, "use_multiview", False)    # one view, not a stereo pair
        tmp.set(view_layer, "use_pass_z", True)
        if normals:
            tmp.set(view_layer, "use_pass_normal", True)
        if engine == "CYCLES":
            # A control image needs no denoiser, and Blender builds without OpenImageDenoise fail with it on.
            tmp.set(scene.cycles, "use_denoising", False)
        if engine == "CYCLES" and samples > 0:
            tmp.set(scene.cycles, "samples", int(samples))
        elif engine in EEVEE_ENGINES and samples > 0:
            tmp.set(scene.eevee, "taa_render_samples", int(samples))
        for obj in scene.objects:
            if obj.get(HELPER_PROP) and not obj.hide_render:
                tmp.set(obj, "hide_render", True)

        # Render into a slot of our own, so the artist's last render stays in its slot.
        previous = _render_result_image(required=False)
        if previous is not None:
            slots = previous.render_slots
            tmp.save(slots, "active_index")
            slot = next((s for s in slots if s.name == CAPTURE_SLOT), None) or slots.new(name=CAPTURE_SLOT)
            tmp.set(slots, "active_index", list(slots).index(slot))
        result = bpy.ops.render.render(write_still=False, layer=view_layer.name, scene=scene.name)
        if "FINISHED" not in result:
            raise CaptureError("Blender did not render the capture (is another render running?)")
        rr = _render_result_image()

        im = r.image_settings
        # Changing the media type or the format changes the others: remember them all first, in the
        # order they must be put back.
        tmp.save(im, *[a for a in ("media_type", "file_format", "color_mode", "color_depth", "exr_codec",
                                   "compression", "quality", "color_management") if hasattr(im, a)])
        tmp.set(im, "color_management", "FOLLOW_SCENE")
        exr_path = os.path.join(tmpdir, "passes.exr")
        _set_image_settings(tmp, im, "MULTI_LAYER_IMAGE", "OPEN_EXR_MULTILAYER", color_depth="32", exr_codec="ZIP")
        rr.save_render(exr_path, scene=scene)
        tga_path = os.path.join(tmpdir, "color.tga")
        _set_image_settings(tmp, im, "IMAGE", "TARGA_RAW", color_mode="RGBA")
        rr.save_render(tga_path, scene=scene)

        color = _read_tga_rgba(tga_path, width, height)
        channels = exr.read_exr(exr_path)
        depth = np.ascontiguousarray(_pass(channels, view_layer.name, "Depth.Z"), dtype=np.float32)
        if depth.shape != (height, width):
            raise CaptureError(f"depth pass is {depth.shape[1]}x{depth.shape[0]}, expected {width}x{height}")
        normal = None
        if normals:
            n = np.stack([_pass(channels, view_layer.name, f"Normal.{c}") for c in "XYZ"], axis=-1)
            rot = np.array(unscaled_matrix(camera).to_3x3(), dtype=np.float32)
            n_cam = n @ rot   # rows are world normals: (R^T n)^T = n^T R
            enc = np.clip(np.round((n_cam * 0.5 + 0.5) * 255.0), 0, 255).astype(np.uint8)
            normal = np.concatenate([enc, np.full((height, width, 1), 255, np.uint8)], axis=-1).tobytes()
    finally:
        try:
            tmp.restore()
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    matrix = unscaled_matrix(camera)
    return Capture(width=width, height=height, color=color.tobytes(), depth=depth,
                   far=float(camera.data.clip_end), normal=normal, camera_name=camera.name,
                   camera_matrix=[list(row) for row in matrix], frame=frame, engine=engine)
