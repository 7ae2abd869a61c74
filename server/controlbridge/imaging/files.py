"""Image and depth files on disk -> attachments, for the CLI (add-ons capture their own)."""
from pathlib import Path

import numpy as np
from PIL import Image

from controlbridge_protocol import ImageAttachment

from .codecs import encode_image, read_exr_depth

_SENT_AS_IS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}


def image_file_attachment(name: str, path: Path) -> ImageAttachment:
    """An image file sent as its own bytes when the wire knows its format (no re-encoding), else as PNG."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            fmt, (w, h) = img.format, img.size
            if fmt not in _SENT_AS_IS:
                rgb = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: not an image this tool can read ({e})") from None
    if fmt in _SENT_AS_IS:
        return ImageAttachment.encoded(name, _SENT_AS_IS[fmt], w, h, path.read_bytes())
    return ImageAttachment.encoded(name, "png", w, h, encode_image(rgb, "png"))


def depth_file_attachment(path: Path, far=None) -> ImageAttachment:
    """Depth from a file.

    .npy (float32) and .exr (first channel) hold raw renderer depth in scene units: the server normalizes it.
    .png (8- or 16-bit) is taken as a ready-made depth map (near bright), as ComfyUI users keep them.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix == ".npy":
        depth = np.load(path)
    elif suffix == ".exr":
        try:
            depth = read_exr_depth(path)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    elif suffix == ".png":
        return image_file_attachment("depth", path)
    else:
        raise ValueError(f"{path}: depth must be .npy (float32), .exr or a 16-bit .png depth map")
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim == 3 and depth.shape[-1] <= 4 < min(depth.shape[:2]):   # (H, W, channels): the first channel
        depth = depth[..., 0]
    elif depth.ndim == 3 and depth.shape[0] == 1:                          # (1, H, W)
        depth = depth[0]
    if depth.ndim != 2:
        raise ValueError(f"{path}: expected a depth buffer of shape (height, width), got shape {depth.shape}")
    h, w = depth.shape
    return ImageAttachment.raw_depth("depth", w, h, depth.astype("<f4").tobytes(), far)
