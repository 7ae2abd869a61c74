"""The style reference image (IP-Adapter) as the job's `style` attachment. Stdlib only, no `unreal` import.

Settings > Style Image names a PNG/JPEG file or a texture asset (/Game/...); engine_capture exports an asset to PNG
with the engine's own writer. The server takes any PNG or JPEG of any size, so the file's bytes go as they are; only
their size is read here, from the header (Unreal's Python has no image library).
"""

from __future__ import annotations

import os
import struct
from typing import Tuple

from controlbridge_protocol import ImageAttachment

from .buffers import CaptureProblem

FILE = "file"
ASSET = "asset"


def source_kind(text: str) -> str:
    """FILE for an image file on disk, ASSET for a content path (/Game/..., /PluginName/...)."""
    path = text.strip()
    if os.path.isfile(path):
        return FILE
    if path.startswith("/") and not os.path.splitext(path)[1].lower() in (".png", ".jpg", ".jpeg"):
        return ASSET
    raise CaptureProblem(f"Style Image '{path}' is neither an image file nor a texture asset path (/Game/...). "
                         "Fix it in ControlBridge settings, or clear it to generate without a style reference.")


def image_size(data: bytes) -> Tuple[str, int, int]:
    """(encoding, width, height) of a PNG or baseline/progressive JPEG, from its header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # a start-of-frame segment
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", width, height
            i += 2 + length
    raise CaptureProblem("The style image is not a PNG or JPEG file; save it as one, or use a texture asset.")


def read_file(path: str) -> bytes:
    try:
        with open(path.strip(), "rb") as fh:
            return fh.read()
    except OSError as e:
        raise CaptureProblem(f"The style image could not be read: {e}") from None


def attachment(data: bytes) -> ImageAttachment:
    encoding, width, height = image_size(data)
    return ImageAttachment.encoded("style", encoding, width, height, data)
