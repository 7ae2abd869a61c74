"""Tests only: read the EXR files the add-on's capture sends (numpy only; Blender's Python has no OpenEXR).

The add-on itself parses no EXR (the server decodes the `exr` depth with OpenEXR). The tests still check the
depth per pixel against ray casts, so they read Blender's multilayer file with this independent reader:
scanline files with compression NONE, ZIPS or ZIP, single-part or multi-part, HALF/FLOAT/UINT channels.
"""
import struct
import zlib

import numpy as np

_MAGIC = 20000630
_PIXEL_DTYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
_LINES_PER_BLOCK = {0: 1, 2: 1, 3: 16}   # NONE, ZIPS, ZIP
_COMPRESSION_NAMES = {0: "NONE", 1: "RLE", 2: "ZIPS", 3: "ZIP", 4: "PIZ", 5: "PXR24", 6: "B44", 7: "B44A",
                      8: "DWAA", 9: "DWAB"}


class ExrError(ValueError):
    pass


def _read_cstr(buf, pos):
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("latin-1"), end + 1


def _parse_channels(value):
    chans, pos = [], 0
    while value[pos] != 0:
        name, pos = _read_cstr(value, pos)
        ptype, _linear, xs, ys = struct.unpack_from("<iB3xii", value, pos)
        pos += 16
        chans.append((name, ptype, xs, ys))
    return chans


def _parse_header(buf, pos):
    attrs = {}
    while buf[pos] != 0:
        name, pos = _read_cstr(buf, pos)
        atype, pos = _read_cstr(buf, pos)
        (size,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        value = buf[pos:pos + size]
        pos += size
        if atype == "chlist":
            attrs[name] = _parse_channels(value)
        elif atype == "box2i":
            attrs[name] = struct.unpack("<4i", value)
        elif atype in ("compression", "lineOrder"):
            attrs[name] = value[0]
        elif atype == "int":
            attrs[name] = struct.unpack("<i", value)[0]
        elif atype == "string":
            attrs[name] = value.decode("utf-8", "replace")
        else:
            attrs[name] = value
    return attrs, pos + 1


def _undo_zip(data, expected):
    raw = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
    if raw.size != expected:
        raise ExrError("EXR: ZIP block decompressed to the wrong size")
    # Undo the predictor, then the interleave of even/odd bytes.
    t = ((np.cumsum(np.concatenate(([raw[0]], raw[1:].astype(np.int64) - 128)))) & 0xFF).astype(np.uint8)
    half = (expected + 1) // 2
    out = np.empty(expected, dtype=np.uint8)
    out[0::2] = t[:half]
    out[1::2] = t[half:]
    return out.tobytes()


def depth_of(shot) -> np.ndarray:
    """The depth a capture sends, as float32 (height, width): its EXR's Depth.Z pass, or the viewport's array."""
    if shot.depth_exr is None:
        return shot.depth
    channels = read_exr_bytes(shot.depth_exr)
    return next(v for k, v in channels.items() if k.endswith("Depth.Z"))


def read_exr(path):
    with open(path, "rb") as f:
        return read_exr_bytes(f.read(), path)


def read_exr_bytes(buf, path="EXR"):
    """Read a scanline EXR file. Returns {channel name: float32 array (height, width)}, top row first."""
    magic, version = struct.unpack_from("<ii", buf, 0)
    if magic != _MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file")
    flags = version & ~0xFF
    if flags & 0x200 or flags & 0x800:   # single-part tiled, or deep data
        raise ExrError(f"{path}: tiled or deep EXR files are not supported")
    multipart = bool(flags & 0x1000)
    pos = 8
    headers = []
    while True:
        attrs, pos = _parse_header(buf, pos)
        headers.append(attrs)
        if not multipart or buf[pos] == 0:
            if multipart:
                pos += 1
            break
    tables = []
    for h in headers:
        x0, y0, x1, y1 = h["dataWindow"]
        comp = h.get("compression", 0)
        if comp not in _LINES_PER_BLOCK:
            raise ExrError(f"{path}: EXR compression {_COMPRESSION_NAMES.get(comp, comp)} is not supported "
                           "(use NONE, ZIPS or ZIP)")
        count = h.get("chunkCount") or -(-(y1 - y0 + 1) // _LINES_PER_BLOCK[comp])
        tables.append(struct.unpack_from(f"<{count}Q", buf, pos))
        pos += 8 * count
    out = {}
    for part, (h, offsets) in enumerate(zip(headers, tables)):
        x0, y0, x1, y1 = h["dataWindow"]
        width, height = x1 - x0 + 1, y1 - y0 + 1
        chans = sorted(h["channels"], key=lambda c: c[0])
        if any(c[2] != 1 or c[3] != 1 for c in chans):
            raise ExrError(f"{path}: subsampled channels are not supported")
        comp = h.get("compression", 0)
        lines = _LINES_PER_BLOCK[comp]
        planes = {name: np.zeros((height, width), dtype=np.float32) for name, *_ in chans}
        for off in offsets:
            p = off
            if multipart:
                p += 4
            y, size = struct.unpack_from("<ii", buf, p)
            data = buf[p + 8:p + 8 + size]
            nlines = min(lines, y1 - y + 1)
            line_bytes = sum(width * _PIXEL_DTYPES[c[1]].itemsize for c in chans)
            expected = line_bytes * nlines
            if size < expected:
                data = _undo_zip(data, expected)
            q = 0
            for row in range(nlines):
                r = y - y0 + row
                for name, ptype, _xs, _ys in chans:
                    dt = _PIXEL_DTYPES[ptype]
                    n = width * dt.itemsize
                    planes[name][r] = np.frombuffer(data, dtype=dt, count=width, offset=q)
                    q += n
        for name, arr in planes.items():
            out[name] = arr
    return out


def header_channels(path):
    with open(path, "rb") as f:
        buf = f.read(65536)
    attrs, _ = _parse_header(buf, 8)
    return attrs
