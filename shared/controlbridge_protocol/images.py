"""How an image travels: a small JSON descriptor in the message, the pixels in a binary frame.

Rows are always top row first. Raw encodings have no header:
- raw_rgba8: 4 bytes per pixel (R, G, B, A), sRGB.
- raw_f32:   one little-endian float32 per pixel (renderer depth in scene units, or any scalar map).
Encoded images (png, jpeg, webp) carry the file bytes; width/height must match the file.
- exr: an OpenEXR file's bytes as the renderer wrote it (scalar depth in scene units: the Z / Depth channel,
  also Blender's '<layer>.Depth.Z', else R / Y, else the first channel); the server decodes it. The `normal`
  attachment may be an exr of WORLD-space normals (R, G, B or '<layer>.X/Y/Z' = world x, y, z, signed) with
  `world_to_camera`, the rotation the server turns them into camera space with.
"""
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

from .errors import ErrorCode, ProtocolError

ENCODED_FORMATS = ("png", "jpeg", "webp", "exr")
RAW_BYTES_PER_PIXEL = {"raw_rgba8": 4, "raw_f32": 4}
ENCODINGS = ENCODED_FORMATS + tuple(RAW_BYTES_PER_PIXEL)
# Encodings that carry raw renderer depth in scene units (the server normalizes it; `far` applies).
SCALAR_ENCODINGS = ("raw_f32", "exr")


@dataclass
class ImageAttachment:
    name: str
    encoding: str
    width: int
    height: int
    data: bytes = field(repr=False)
    # raw depth (raw_f32, exr) only: values at or beyond `far` are background (sky, nothing hit).
    far: Optional[float] = None
    # world-space normals (exr) only: 9 numbers, a row-major 3x3 rotation mapping a world vector to the protocol's
    # camera axes (x right, y up, z toward the camera); its rows are those axes in world coordinates.
    world_to_camera: Optional[Tuple[float, ...]] = None

    @classmethod
    def raw_rgba8(cls, name: str, width: int, height: int, data: bytes) -> "ImageAttachment":
        return cls(name, "raw_rgba8", width, height, bytes(data))

    @classmethod
    def raw_depth(cls, name: str, width: int, height: int, data: bytes, far: Optional[float] = None) -> "ImageAttachment":
        return cls(name, "raw_f32", width, height, bytes(data), far)

    @classmethod
    def exr_depth(cls, name: str, width: int, height: int, data: bytes, far: Optional[float] = None) -> "ImageAttachment":
        """Depth as the EXR file the renderer wrote (no parsing on the client)."""
        return cls(name, "exr", width, height, bytes(data), far)

    @classmethod
    def exr_world_normals(cls, name: str, width: int, height: int, data: bytes,
                          world_to_camera: Sequence[float]) -> "ImageAttachment":
        """World-space normals as the EXR file the renderer wrote; the server turns them into camera space."""
        return cls(name, "exr", width, height, bytes(data), world_to_camera=tuple(float(v) for v in world_to_camera))

    @classmethod
    def encoded(cls, name: str, encoding: str, width: int, height: int, data: bytes) -> "ImageAttachment":
        return cls(name, encoding, width, height, bytes(data))

    @property
    def is_scalar(self) -> bool:
        """Raw values in scene units (depth) rather than a picture."""
        return self.encoding in SCALAR_ENCODINGS

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def descriptor(self) -> dict:
        """The JSON half of the attachment; the binary frame carries `data`."""
        d = {"name": self.name, "encoding": self.encoding, "width": self.width,
             "height": self.height, "bytes": len(self.data)}
        if self.far is not None:
            d["far"] = self.far
        if self.world_to_camera is not None:
            d["world_to_camera"] = list(self.world_to_camera)
        return d

    @classmethod
    def check_descriptor(cls, d: object) -> dict:
        """Validate a descriptor received from the wire; returns it, or raises ProtocolError."""
        if not isinstance(d, dict):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "each attachment descriptor must be a JSON object")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "attachment descriptor needs a 'name' string")
        enc = d.get("encoding")
        if enc not in ENCODINGS:
            raise ProtocolError(ErrorCode.BAD_IMAGE,
                                f"attachment '{name}': unknown encoding {enc!r}; use one of {', '.join(ENCODINGS)}")
        for key in ("width", "height", "bytes"):
            v = d.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "bytes" else 1):
                raise ProtocolError(ErrorCode.BAD_MESSAGE,
                                    f"attachment '{name}': '{key}' must be a positive integer")
        far = d.get("far")
        if far is not None and (not isinstance(far, (int, float)) or isinstance(far, bool)):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"attachment '{name}': 'far' must be a number")
        matrix = d.get("world_to_camera")
        if matrix is not None and (not isinstance(matrix, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in matrix)):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"attachment '{name}': 'world_to_camera' must be a list of "
                                                       f"9 numbers (a row-major 3x3 rotation)")
        if enc in RAW_BYTES_PER_PIXEL:
            expected = d["width"] * d["height"] * RAW_BYTES_PER_PIXEL[enc]
            if d["bytes"] != expected:
                raise ProtocolError(ErrorCode.BAD_IMAGE,
                                    f"attachment '{name}': {enc} {d['width']}x{d['height']} needs {expected} bytes, "
                                    f"descriptor says {d['bytes']}")
        return d

    @classmethod
    def from_descriptor(cls, d: dict, data: bytes) -> "ImageAttachment":
        if len(data) != d["bytes"]:
            raise ProtocolError(ErrorCode.BAD_IMAGE,
                                f"attachment '{d['name']}': expected {d['bytes']} bytes, received {len(data)}")
        far, matrix = d.get("far"), d.get("world_to_camera")
        return cls(d["name"], d["encoding"], d["width"], d["height"], data,
                   float(far) if far is not None else None,
                   tuple(float(v) for v in matrix) if matrix is not None else None)
