"""The style reference image (IP-Adapter) as the job's `style` attachment, read on the main thread.

The panel names an image datablock or, without one, a PNG/JPEG file. The server takes any PNG or JPEG of any size,
so a file (on disk, or packed into the .blend) goes as its own bytes; an image with no file (generated, painted and
not saved) goes as its pixels (raw RGBA8, sRGB). Live frames never carry it (the server runs styles in jobs only).
"""
import os

import bpy
import numpy as np

from .capture import CaptureError
from .vendor.controlbridge_protocol import ImageAttachment

_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}


def _encoding(data: bytes):
    return next((enc for sig, enc in _SIGNATURES.items() if data.startswith(sig)), None)


def attachments(p) -> list:
    """[the `style` attachment] when the panel's Style Reference is on, else []. CaptureError when nothing usable
    is chosen (one line for the artist)."""
    if not p.use_style:
        return []
    if p.style_image is not None:
        return [_from_image(p.style_image)]
    path = bpy.path.abspath(p.style_path) if p.style_path else ""
    if not path:
        raise CaptureError("Style Reference is on: choose an image or a PNG/JPEG file (or switch it off)")
    if not os.path.isfile(path):
        raise CaptureError(f"the style reference file {path} does not exist")
    image = bpy.data.images.load(path, check_existing=True)
    try:
        return [_from_image(image)]
    finally:
        if image.users == 0:
            bpy.data.images.remove(image)


def _from_image(image) -> ImageAttachment:
    width, height = (int(v) for v in image.size)
    if width == 0 or height == 0:
        raise CaptureError(f"the style image '{image.name}' has no pixels (is its file missing?)")
    data = None
    if image.packed_file is not None:
        data = bytes(image.packed_file.data)
    elif image.source == "FILE" and image.filepath:
        path = bpy.path.abspath(image.filepath)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                data = fh.read()
    encoding = _encoding(data) if data else None
    if encoding is not None:
        return ImageAttachment.encoded("style", encoding, width, height, data)
    return ImageAttachment.raw_rgba8("style", width, height, _pixels_rgba8(image, width, height))


def _pixels_rgba8(image, width: int, height: int) -> bytes:
    px = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(px)
    px = px.reshape(height, width, 4)[::-1]               # Blender's rows are bottom first
    if image.is_float:                                     # float buffers are linear: encode sRGB like a PNG
        rgb = np.clip(px[..., :3], 0.0, 1.0)
        px[..., :3] = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    return np.clip(np.round(px * 255.0), 0, 255).astype(np.uint8).tobytes()
