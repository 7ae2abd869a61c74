"""Labelled grids of result images: the contact sheet of a batch (every camera) and the A/B view of a camera's last
two results. Main thread; no network.

The grid is composed with numpy from the images' pixels and written as a PNG; the labels are drawn into that
file with Blender's own font (`blf.bind_imbuf` + `blf.draw_buffer`, on the CPU, so it works headless too).
"""
import json
import math
import os
import tempfile

import bpy
import numpy as np

SHEET_PROP = "controlbridge_sheet"    # on a sheet image: its cells (label, image, x, y, width, height), JSON
MARGIN = 8
LABEL_HEIGHT = 24                      # at least; a twentieth of the cell height on large shots


def label_height(cell_h: int) -> int:
    return max(LABEL_HEIGHT, cell_h // 20)
BACKGROUND = (0.12, 0.12, 0.12, 1.0)   # display space


def _pixels_top_first(image) -> np.ndarray:
    w, h = image.size
    px = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(h, w, 4)[::-1]


def build(cells, path: str, name: str, columns: int = 0):
    """cells: [(label, image)]. Writes a labelled grid PNG at `path` and returns it as an image datablock `name`
    (loaded from that file, replacing an older one of that name), its layout in image[SHEET_PROP]."""
    if not cells:
        raise ValueError("nothing to put on a sheet")
    columns = columns or math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    cell_w = max(image.size[0] for _, image in cells)
    cell_h = max(image.size[1] for _, image in cells)
    width = columns * cell_w + (columns + 1) * MARGIN
    label_h = label_height(cell_h)
    height = rows * (cell_h + label_h) + (rows + 1) * MARGIN
    sheet = np.empty((height, width, 4), np.float32)
    sheet[:] = BACKGROUND
    layout = []
    for i, (label, image) in enumerate(cells):
        row, col = divmod(i, columns)
        x = MARGIN + col * (cell_w + MARGIN)
        y = MARGIN + row * (cell_h + label_h + MARGIN)               # from the top
        px = _pixels_top_first(image)
        h, w = px.shape[:2]
        sheet[y:y + h, x:x + w] = px
        sheet[y:y + h, x:x + w, 3] = 1.0
        layout.append({"label": label, "image": image.name, "x": x, "y": y, "width": w, "height": h,
                       "label_y": y + cell_h, "label_height": label_h})
    _write_png(sheet, path)
    _draw_labels(path, layout, height)
    old = bpy.data.images.get(name)
    if old is not None:
        bpy.data.images.remove(old)
    result = bpy.data.images.load(path)
    result.name = name
    result[SHEET_PROP] = json.dumps(layout)
    return result


def _write_png(top_first: np.ndarray, path: str) -> None:
    h, w = top_first.shape[:2]
    image = bpy.data.images.new("ControlBridge sheet (writing)", w, h, alpha=True)
    try:
        image.pixels.foreach_set(np.ascontiguousarray(top_first[::-1]).ravel())
        image.filepath_raw = path
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)


def _draw_labels(path: str, layout, height: int) -> None:
    import blf
    import imbuf
    buf = imbuf.load(path)
    try:
        font = 0
        with blf.bind_imbuf(font, buf):
            blf.color(font, 1.0, 1.0, 1.0, 1.0)
            for cell in layout:
                blf.size(font, round(cell["label_height"] * 0.62))
                # ImBuf rows count from the bottom; the baseline a quarter of the strip above its bottom
                baseline = height - (cell["label_y"] + cell["label_height"] * 3 // 4)
                blf.position(font, cell["x"] + 2, baseline, 0)
                blf.draw_buffer(font, _fit(blf, font, cell["label"], cell["width"] - 4))
        imbuf.write(buf, filepath=path)
    finally:
        buf.free()


def _fit(blf, font, label: str, width: int) -> str:
    """The label within its cell's width: whole, else its first part (the camera's name), else cut short."""
    for text in (label, label.split("  ")[0]):
        if blf.dimensions(font, text)[0] <= width:
            return text
    text = label.split("  ")[0]
    while len(text) > 1 and blf.dimensions(font, text + "...")[0] > width:
        text = text[:-1]
    return text + "..."


def cells_of(image) -> list:
    raw = image.get(SHEET_PROP)
    return json.loads(raw) if raw else []


def folder_beside(paths) -> str:
    """Where a sheet goes: the folder of the results the server saved (when it is on this machine and writable),
    else the .blend's folder, else the temporary folder."""
    for path in paths:
        folder = os.path.dirname(path or "")
        if folder and os.path.isdir(folder) and os.access(folder, os.W_OK):
            return folder
    if bpy.data.filepath:
        return os.path.dirname(bpy.path.abspath(bpy.data.filepath))
    return tempfile.gettempdir()


def show_in_image_editor(image) -> bool:
    """Open `image` in an Image editor of the current window (one that is open, else none: headless has none)."""
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()
                return True
    return False
