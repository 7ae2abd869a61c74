"""Capture the active camera's view: color (as the artist sees the render), raw depth, optional normals.

The capture path (the same in the interactive UI and headless):
1. Render the view with `bpy.ops.render.render` (blocking) at the scene's render resolution x percentage,
   with the Z pass (and the Normal pass when asked) enabled on the view layer, the sequencer, stamp and stereo
   switched off, and no render border. The engine is the artist's choice (CaptureOptions.engine): EEVEE
   (the default: fast on a GPU), Workbench (fastest, solid shading) or Cycles ("final quality").
2. Save the Render Result twice with `Image.save_render`: an uncompressed 8-bit RGBA Targa (the color,
   with the scene's view transform applied, exactly what the artist's render would look like) and a
   32-bit float multilayer EXR whose bytes go to the server as they are (the `exr` encoding: the server
   reads the depth channel with OpenEXR; the add-on parses no EXR). Normals, when asked, come from a
   temporary compositor File Output node as a single-layer float EXR of the WORLD-space Normal pass, sent as it
   is with the camera's world_to_camera rotation: the server turns them into camera space (no pixel work here).
3. Film > Transparent: the sky is sent as the artist sees it, the world rendered behind the scene (film
   made opaque for the capture), or composited over an explicit background colour.
4. Restore every setting that was changed, even when the render fails. When a Render Result exists, the
   capture renders into its own render slot ("ControlBridge capture"), so the artist's last render is
   kept in its slot (and the capture can be inspected in the Image Editor).

Depth is sent RAW: the Z pass is the planar camera-space distance along the view axis, in scene units
(Cycles, EEVEE and Workbench alike), and background pixels are at or beyond `far` (Cycles and Workbench
write 1e10, EEVEE just past the clip end). `far` is the camera's clip end. The server normalizes depth.
"""
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import bpy
import numpy as np

from .frustum import Frame, camera_frame, unscaled_matrix
from .vendor.controlbridge_protocol import ImageAttachment

# Objects this add-on creates that must not show in a capture (the image plane sits in front of the camera).
HELPER_PROP = "controlbridge_helper"
EEVEE_ENGINES = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")   # 5.0 / 4.2-4.4
CAPTURE_SLOT = "ControlBridge capture"   # the Render Result slot captures go to


class CaptureError(Exception):
    """A capture that cannot be made; str() is one line for the panel."""


@dataclass
class Capture:
    width: int
    height: int
    color: bytes                    # raw RGBA8, sRGB (view transform applied), top row first, alpha 255
    far: float
    depth: Optional[np.ndarray] = None   # float32 (height, width), scene units, top row first (viewport path)
    depth_exr: Optional[bytes] = None    # or the EXR file Blender wrote, its Depth.Z pass (render path)
    normal_exr: Optional[bytes] = None   # the world-space Normal pass as the EXR the compositor wrote
    world_to_camera: Optional[list] = None   # 9 numbers, row-major: the camera's right, up, backward in world axes
    camera_name: str = ""
    camera_matrix: list = field(default_factory=list)  # 4x4 row-major, unscaled world matrix at capture time
    frame: Optional[Frame] = None
    engine: str = ""

    def attachments(self):
        if self.depth_exr is not None:
            depth = ImageAttachment.exr_depth("depth", self.width, self.height, self.depth_exr, far=self.far)
        else:
            depth = ImageAttachment.raw_depth("depth", self.width, self.height,
                                              self.depth.astype("<f4").tobytes(), far=self.far)
        images = [ImageAttachment.raw_rgba8("color", self.width, self.height, self.color), depth]
        if self.normal_exr is not None:
            images.append(ImageAttachment.exr_world_normals("normal", self.width, self.height, self.normal_exr,
                                                            self.world_to_camera))
        return images

    def meta(self) -> dict:
        """What the result placement needs to know about the view the image was generated from."""
        return {"camera": self.camera_name, "matrix": self.camera_matrix,
                "frame": self.frame.to_dict() if self.frame else None,
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class CaptureOptions:
    """How to capture: the panel's Capture settings (options_from_props), one object for every caller."""
    engine: str = "EEVEE"                  # EEVEE | WORKBENCH | CYCLES (see properties.CAPTURE_ENGINES)
    samples: int = 4                       # EEVEE's render samples
    final_samples: int = 32                # Cycles' samples
    background: str = "WORLD"              # WORLD: the world behind a transparent film | COLOR: background_color
    background_color: tuple = (0.5, 0.5, 0.5)   # display-space (sRGB) 0..1
    normals: bool = False


def options_from_props(p) -> CaptureOptions:
    return CaptureOptions(engine=p.capture_engine, samples=int(p.capture_samples),
                          final_samples=int(p.final_samples), background=p.capture_background,
                          background_color=tuple(p.background_color),
                          normals=bool(p.use_normal))   # the normal pass exists to feed the normal ControlNet


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


def _render_result_image(required=True):
    for image in bpy.data.images:
        if image.type == "RENDER_RESULT":
            return image
    if required:
        raise CaptureError("the render produced no Render Result")
    return None


def engine_id(choice: str) -> str:
    """The render engine identifier for a capture choice, in this Blender version."""
    if choice == "CYCLES":
        return "CYCLES"
    if choice == "WORKBENCH":
        return "BLENDER_WORKBENCH"
    if choice == "EEVEE":
        static = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
        return next((e for e in EEVEE_ENGINES if e in static), EEVEE_ENGINES[0])
    raise CaptureError(f"unknown capture engine '{choice}' (EEVEE, WORKBENCH or CYCLES)")


def _over_background(rgba: np.ndarray, color) -> np.ndarray:
    """Straight-alpha RGBA8 composited over an opaque display-space colour (the 8-bit file's alpha is straight)."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.clip(np.asarray(color, np.float32)[:3], 0.0, 1.0) * 255.0
    out = rgba.copy()
    out[..., :3] = np.clip(np.round(rgba[..., :3] * a + bg * (1.0 - a)), 0, 255).astype(np.uint8)
    return out


def _normal_output(scene, tmp: TemporarySettings, tmpdir: str):
    """A temporary compositor with a File Output node that writes the Normal pass as a single-layer float EXR
    (Blender's image loader reads that one; multilayer passes are not reachable from Python). Returns the
    node group, to be removed after the render."""
    if not hasattr(scene, "compositing_node_group"):
        raise CaptureError("Send Normals needs Blender 5.0 or newer")
    tree = bpy.data.node_groups.new("ControlBridge normals", "CompositorNodeTree")
    layers = tree.nodes.new("CompositorNodeRLayers")
    layers.scene = scene
    out = tree.nodes.new("CompositorNodeOutputFile")
    out.directory = tmpdir + os.sep
    out.file_name = "normal"
    fmt = out.format
    if hasattr(fmt, "media_type"):
        fmt.media_type = "IMAGE"
    fmt.file_format, fmt.color_depth, fmt.exr_codec = "OPEN_EXR", "32", "ZIP"   # lossless: values matter
    out.file_output_items.new("RGBA", "Normal")
    tree.links.new(layers.outputs["Normal"], out.inputs[0])
    tmp.set(scene, "compositing_node_group", tree)
    tmp.set(scene.render, "use_compositing", True)
    return tree


def _read_normal_exr(tmpdir: str) -> bytes:
    """The File Output's EXR of the world-space normals, its bytes as written."""
    path = next((os.path.join(tmpdir, f) for f in sorted(os.listdir(tmpdir)) if f.startswith("normal")), None)
    if path is None:
        raise CaptureError("the compositor wrote no normal pass")
    with open(path, "rb") as f:
        return f.read()


def world_to_camera(camera) -> list:
    """The camera's world rotation transposed, row-major: its local axes in world coordinates are the rows. A Blender
    camera looks down its local -Z with +Y up and +X right, so they are already the protocol's x right, y up,
    z toward the viewer."""
    rotation = unscaled_matrix(camera).to_3x3()
    return [float(rotation[row][axis]) for axis in range(3) for row in range(3)]


def capture(scene, view_layer=None, options: Optional[CaptureOptions] = None, own_slot: bool = True) -> Capture:
    """Render the scene's active camera and return color + raw depth (+ normals). Leaves the scene as it was.

    own_slot: render into the "ControlBridge capture" slot of the Render Result, keeping the artist's last render
    in its slot; False inside a render (the render engine's capture), whose slot must not change under it."""
    options = options or CaptureOptions()
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
    engine = engine_id(options.engine)

    tmp = TemporarySettings()
    tmpdir = tempfile.mkdtemp(prefix="controlbridge_capture_")
    r = scene.render
    normal_tree = None
    try:
        tmp.set(r, "engine", engine)
        tmp.set(r, "use_compositing", False)
        tmp.set(r, "use_sequencer", False)
        tmp.set(r, "use_border", False)
        tmp.set(r, "use_stamp", False)        # no metadata burnt into the pixels
        # ... nor written into the EXR's header: its render time and date would make every capture's bytes
        # differ, and the server recognizes an unchanged live frame by its bytes.
        for prop in r.bl_rna.properties:
            if prop.identifier.startswith("use_stamp_") and prop.identifier != "use_stamp_labels":
                tmp.set(r, prop.identifier, False)
        tmp.set(r, "use_multiview", False)    # one view, not a stereo pair
        # WORLD: render the world behind the scene, as the viewport shows it; COLOR: composited below.
        tmp.set(r, "film_transparent", options.background == "COLOR")
        tmp.set(view_layer, "use_pass_z", True)
        if options.normals:
            tmp.set(view_layer, "use_pass_normal", True)
            normal_tree = _normal_output(scene, tmp, tmpdir)
        if engine == "CYCLES":
            # A control image needs no denoiser, and Blender builds without OpenImageDenoise fail with it on.
            tmp.set(scene.cycles, "use_denoising", False)
            tmp.set(scene.cycles, "samples", max(1, int(options.final_samples)))
        elif engine in EEVEE_ENGINES:
            tmp.set(scene.eevee, "taa_render_samples", max(1, int(options.samples)))
        for obj in scene.objects:
            if obj.get(HELPER_PROP) and not obj.hide_render:
                tmp.set(obj, "hide_render", True)

        # Render into a slot of our own, so the artist's last render stays in its slot.
        previous = _render_result_image(required=False) if own_slot else None
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
        if options.background == "COLOR":
            color = _over_background(color, options.background_color)
        color[..., 3] = 255   # what is sent is opaque: the server drops alpha anyway
        with open(exr_path, "rb") as f:
            depth_exr = f.read()
        normal_exr = _read_normal_exr(tmpdir) if options.normals else None
    finally:
        try:
            tmp.restore()
        finally:
            if normal_tree is not None:
                bpy.data.node_groups.remove(normal_tree)
            shutil.rmtree(tmpdir, ignore_errors=True)

    matrix = unscaled_matrix(camera)
    return Capture(width=width, height=height, color=color.tobytes(), depth_exr=depth_exr,
                   far=float(camera.data.clip_end), normal_exr=normal_exr,
                   world_to_camera=world_to_camera(camera) if normal_exr is not None else None,
                   camera_name=camera.name,
                   camera_matrix=[list(row) for row in matrix], frame=frame, engine=engine)
