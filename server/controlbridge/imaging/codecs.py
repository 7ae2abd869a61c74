"""Attachment bytes <-> numpy arrays, and result encoding. The only place the server decodes or encodes pixels."""
import io
import os
import tempfile
from typing import Dict, Optional

import numpy as np
from PIL import Image, PngImagePlugin

from controlbridge_protocol import ErrorCode, ImageAttachment, ProtocolError

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def _bad(att: ImageAttachment, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_IMAGE, f"attachment '{att.name}' ({att.encoding} {att.width}x{att.height}): {why}")


def _open_encoded(att: ImageAttachment) -> Image.Image:
    """Open an encoded image, checking its real size against the descriptor before decoding the pixels."""
    try:
        img = Image.open(io.BytesIO(att.data))
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data
        raise _bad(att, f"not a decodable image ({e.__class__.__name__})") from None
    if _PIL_FORMATS[att.encoding] != img.format:
        raise _bad(att, f"the bytes are {img.format or 'unknown'}, not {att.encoding}")
    if img.size != (att.width, att.height):
        raise _bad(att, f"the file is {img.size[0]}x{img.size[1]}, the descriptor says {att.width}x{att.height}")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001
        raise _bad(att, f"truncated or corrupt image data ({e})") from None
    return img


def decode_rgb(att: ImageAttachment) -> np.ndarray:
    """uint8 HxWx3 (alpha dropped: renderers write premultiplied color)."""
    if att.encoding == "raw_rgba8":
        import cv2     # its channel drop is ~100x quicker than numpy's strided copy (3 ms at 512x512 here)
        return cv2.cvtColor(np.frombuffer(att.data, np.uint8).reshape(att.height, att.width, 4), cv2.COLOR_RGBA2RGB)
    if att.encoding in ("raw_f32", "exr"):
        raise _bad(att, f"a color image cannot be {att.encoding}; send raw_rgba8, png, jpeg or webp")
    return np.asarray(_open_encoded(att).convert("RGB"))


def decode_scalar(att: ImageAttachment) -> np.ndarray:
    """float32 HxW raw depth in scene units: raw_f32 as is, or the depth channel of an exr file's bytes.
    raw_f32 comes back read-only, over the received bytes: nothing writes raw depth, and a copy costs a live
    frame ~0.1 ms and the job a second copy of its depth in memory."""
    if att.encoding == "exr":
        return _decode_exr(att)
    if att.encoding != "raw_f32":
        raise _bad(att, "expected raw_f32 or exr")
    return np.frombuffer(att.data, "<f4").reshape(att.height, att.width)


def decode_world_normals(att: ImageAttachment) -> np.ndarray:
    """float32 HxWx3: an exr normal attachment's world x, y, z (signed, as the renderer wrote them)."""
    if att.encoding != "exr":
        raise _bad(att, "world-space normals come as exr")
    return _decode_exr(att, read_exr_xyz)


def _decode_exr(att: ImageAttachment, reader=None) -> np.ndarray:
    # OpenEXR's Python API reads only named files: the bytes go through a private temporary file.
    fd, path = tempfile.mkstemp(suffix=".exr", prefix="controlbridge-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(att.data)
        return (reader or read_exr_depth)(path, expect_size=(att.width, att.height))
    except ValueError as e:
        raise _bad(att, str(e)) from None
    finally:
        os.unlink(path)


def read_exr_depth(path, expect_size=None) -> np.ndarray:
    """float32 HxW: an EXR's depth channel (Z / Depth, also Blender's '<layer>.Depth.Z'), else R / Y, else the first.

    With `expect_size` (width, height) the header is checked first, so a small compressed file that claims a
    huge image is refused before its pixels are decoded. Raises ValueError with the reason.
    """
    names = _exr_channel_names(path, expect_size)
    pixels = _read_exr_channels(path, [sorted(names, key=_depth_channel_rank)[0]])[0]
    return pixels if pixels.ndim == 2 else pixels[..., 0].copy()


def read_exr_xyz(path, expect_size=None) -> np.ndarray:
    """float32 HxWx3: an EXR's vector, from channels R, G, B or '<layer>.X/Y/Z' (Blender's passes; a layer named
    like a normal first). Header checked as in read_exr_depth. Raises ValueError with the reason."""
    names = _exr_channel_names(path, expect_size)
    triples = []
    for prefix in sorted({n.rpartition(".")[0] for n in names}, key=lambda p: "normal" not in p.lower()):
        for axes in (("X", "Y", "Z"), ("R", "G", "B")):
            found = [next((n for n in names if n.rpartition(".")[0] == prefix
                           and n.rpartition(".")[2].upper() == axis), None) for axis in axes]
            if None not in found:
                triples.append(found)
    if not triples:
        raise ValueError(f"the EXR has no R, G, B or <layer>.X/Y/Z channels (it has {', '.join(names)})")
    channels = _read_exr_channels(path, triples[0])
    return np.stack([c if c.ndim == 2 else c[..., 0] for c in channels], axis=2)


def _exr_channel_names(path, expect_size) -> list:
    """The channel names of every part, after checking the header (readable, the expected size, some channels).
    Blender writes one part per pass (Combined, Depth, Normal) when it saves more than colour and depth."""
    import OpenEXR
    try:
        with OpenEXR.File(str(path), header_only=True) as exr:   # the headers are gone once the file closes
            sizes, names = set(), []
            for part in exr.parts:
                (x0, y0), (x1, y1) = part.header["dataWindow"]
                sizes.add((int(x1 - x0 + 1), int(y1 - y0 + 1)))
                names += [ch.name for ch in part.header.get("channels", [])]
    except Exception as e:  # noqa: BLE001 - the library raises plain RuntimeErrors
        raise ValueError(f"not a readable EXR ({str(e).splitlines()[0][:200]})") from None
    if expect_size is not None and sizes != {tuple(expect_size)}:
        found = " and ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise ValueError(f"the EXR is {found}, the descriptor says {expect_size[0]}x{expect_size[1]}")
    if not names:
        raise ValueError("the EXR has no channels")
    return names


def _read_exr_channels(path, names) -> list:
    """float32 arrays of the named channels, from whichever part holds them (each HxW, or HxWxN where the library
    groups them)."""
    import OpenEXR
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = {name: ch for part in exr.parts for name, ch in part.channels.items()}
            return [np.asarray(channels[name].pixels, dtype=np.float32) for name in names]
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"truncated or corrupt EXR data ({str(e).splitlines()[0][:200]})") from None


def _depth_channel_rank(name: str) -> int:
    last = name.split(".")[-1].lower()
    if last in ("z", "depth") or name.lower().endswith("depth.z"):
        return 0
    return 1 if last in ("r", "y") else 2


def decode_control_map(att: ImageAttachment) -> np.ndarray:
    """A ready-made control image (8- or 16-bit, gray or color) as float32 HxWx3 in [0, 1]."""
    if att.encoding in ("raw_f32", "exr"):
        raise _bad(att, f"expected an image, not {att.encoding} (raw depth goes in the 'depth' attachment)")
    if att.encoding == "raw_rgba8":
        return decode_rgb(att).astype(np.float32) / 255.0
    img = _open_encoded(att)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def encode_image(rgb: np.ndarray, encoding: str, text: Optional[Dict[str, str]] = None, quality: int = 90) -> bytes:
    """png (with optional text chunks), jpeg or webp bytes from uint8 HxWx3."""
    rgb = np.ascontiguousarray(rgb)
    if encoding == "jpeg":
        # OpenCV's libjpeg-turbo call is ~15% quicker than PIL's at 512x512 (a live frame's last step).
        import cv2
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"OpenCV could not encode a {rgb.shape} image as jpeg")
        return data.tobytes()
    buf = io.BytesIO()
    if encoding == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            info.add_itxt(key, value)
        Image.fromarray(rgb).save(buf, "PNG", pnginfo=info, compress_level=4)
    elif encoding == "webp":
        Image.fromarray(rgb).save(buf, "WEBP", quality=quality)
    else:
        raise ValueError(f"cannot encode results as {encoding!r}")
    return buf.getvalue()


def read_png_text(path) -> Dict[str, str]:
    """Text chunks placed before the pixel data (where ControlBridge writes them), without decoding pixels."""
    with Image.open(path) as img:
        return {k: v for k, v in img.info.items() if isinstance(v, str)}


def to_attachment(name: str, rgb: np.ndarray, encoding: str, text: Optional[Dict[str, str]] = None) -> ImageAttachment:
    h, w = rgb.shape[:2]
    return ImageAttachment.encoded(name, encoding, w, h, encode_image(rgb, encoding, text))


def resize_rgb(rgb: np.ndarray, width: int, height: int, fast: bool = False) -> np.ndarray:
    """uint8 HxWx3 resized: Lanczos for jobs; `fast` (live frames) area/bicubic filtering, ~15x quicker."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    if fast:
        import cv2
        if width >= rgb.shape[1]:
            return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
        # Area filtering, halving first while at least twice too large: OpenCV's 2:1 area path is vectorized, its
        # general one is not (512->128: 0.36 -> 0.20 ms; 1920x1080 -> 680x384: 4.3 -> 2.2 ms here).
        while rgb.shape[1] >= 2 * width and rgb.shape[0] >= 2 * height:
            rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA) if rgb.shape[:2] != (height, width) \
            else rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS))


def resize_map(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float map (HxW or HxWxC) with area/linear filtering, keeping float precision."""
    import cv2
    if values.shape[1] == width and values.shape[0] == height:
        return values
    shrink = width < values.shape[1]
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
