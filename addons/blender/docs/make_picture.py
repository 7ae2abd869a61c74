"""Make addons/blender/docs/result.png: the add-on's loop in one picture, rendered by headless Blender.

    .venv/bin/controlbridge serve --model tiny --port 8765 &      # or any model
    python3 addons/blender/build.py
    .venv-blender/bin/python addons/blender/docs/make_picture.py ws://127.0.0.1:8765 [build/controlbridge_blender-0.1.0.zip]

It installs the built zip into a throwaway Blender user folder, builds a small blockout scene, presses
Generate (capture -> server -> result, with the image plane and the projection onto the selected
meshes), then renders the scene from a second camera with Cycles and puts it beside what was sent
(color, depth) and what came back. The `bpy` module cannot draw Blender's UI, so this is not a
screenshot of the panel.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
_tmp = tempfile.mkdtemp(prefix="controlbridge_picture_")
os.environ["BLENDER_USER_RESOURCES"] = _tmp    # must be set before bpy starts

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from mathutils import Vector  # noqa: E402

MODULE = "bl_ext.user_default.controlbridge"


def material(name, color):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    return mat


def box(name, size, location, color, rotation=0.0):
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=location, rotation=(0, 0, rotation))
    obj = bpy.context.object
    obj.name = name
    obj.scale = size
    obj.data.materials.append(material(name, color))
    return obj


def look_at(obj, target):
    obj.rotation_mode = "QUATERNION"
    obj.rotation_quaternion = (Vector(target) - obj.location).to_track_quat("-Z", "Y")


def image_rgba8(image):
    px = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(px)
    return (np.clip(px.reshape(image.size[1], image.size[0], 4)[::-1], 0, 1) * 255).astype(np.uint8)


def fit(img, height):
    """Nearest-neighbour resize to a given height (keeps the aspect)."""
    h, w = img.shape[:2]
    width = int(round(w * height / h))
    rows = (np.arange(height) * h // height).clip(0, h - 1)
    cols = (np.arange(width) * w // width).clip(0, w - 1)
    return img[rows][:, cols]


def main(url, zip_path):
    assert bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    import importlib
    bridge = importlib.import_module(f"{MODULE}.bridge")
    capture = importlib.import_module(f"{MODULE}.capture")
    bpy.context.preferences.addons[MODULE].preferences.server_url = url

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.55, 0.65, 0.8, 1.0)
    scene.world = world
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.7, 0.2, 0.9)
    scene.collection.objects.link(sun)
    box("Ground", (14, 14, 0.1), (0, 0, -0.05), (0.35, 0.4, 0.3))
    blockout = [box("House", (2.4, 2.0, 1.8), (0, 0, 0.9), (0.8, 0.75, 0.7)),
                box("Roof", (2.6, 1.5, 1.5), (0, 0, 2.0), (0.6, 0.25, 0.2), rotation=0.0),
                box("Shed", (1.2, 1.2, 1.0), (2.3, 0.8, 0.5), (0.7, 0.7, 0.75)),
                box("Tree", (0.6, 0.6, 2.6), (-2.4, 1.2, 1.3), (0.2, 0.45, 0.2))]
    blockout[1].rotation_euler = (0.785, 0, 0)

    shot = bpy.data.objects.new("Shot", bpy.data.cameras.new("Shot"))
    scene.collection.objects.link(shot)
    shot.location = (2.5, -8.0, 2.2)
    look_at(shot, (0.0, 0.0, 1.0))
    shot.data.clip_end = 40.0
    scene.camera = shot
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x, r.resolution_y, r.resolution_percentage = 384, 256, 100
    scene.cycles.samples = 16
    scene.view_settings.view_transform = "Standard"

    bpy.ops.object.select_all(action="DESELECT")
    for obj in blockout:
        obj.select_set(True)
    p = scene.controlbridge
    p.prompt = "a cosy cottage in a meadow, golden hour, detailed"
    p.steps, p.denoise, p.capture_samples = 12, 0.6, 16
    p.place_background, p.place_plane, p.plane_distance, p.place_projection = True, True, 4.0, True

    sent = capture.capture(scene, bpy.context.view_layer, samples=16)   # what Generate sends, for the picture
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    deadline = time.monotonic() + 300
    while bridge.busy() and time.monotonic() < deadline:
        bridge.drain()
        time.sleep(0.05)
    bridge.drain()
    st = bridge.state()
    if st.phase != "finished":
        raise SystemExit(f"generation did not finish: {st.line}")
    result = bpy.data.images[st.image_name]

    overview = bpy.data.objects.new("Overview", bpy.data.cameras.new("Overview"))
    scene.collection.objects.link(overview)
    overview.location = (9.0, -10.5, 6.0)
    look_at(overview, (0.8, -3.5, 1.2))
    overview.data.lens = 32
    scene.camera = overview
    r.resolution_x, r.resolution_y = 768, 512
    scene.cycles.samples = 32
    r.image_settings.file_format = "PNG"
    bpy.ops.render.render()     # a plain render: the image plane in front of the shot camera shows too
    view_path = Path(_tmp) / "overview.png"
    next(i for i in bpy.data.images if i.type == "RENDER_RESULT").save_render(str(view_path), scene=scene)
    bottom = image_rgba8(bpy.data.images.load(str(view_path)))

    color = np.frombuffer(sent.color, np.uint8).reshape(sent.height, sent.width, 4)
    d = sent.depth.copy()
    bg = d >= sent.far
    near, far = np.percentile(d[~bg], [0.5, 99.5])
    inv = np.clip((1 / np.maximum(d, 1e-6) - 1 / far) / (1 / near - 1 / far), 0, 1)
    inv[bg] = 0
    depth_img = np.dstack([(inv * 255).astype(np.uint8)] * 3 + [np.full(d.shape, 255, np.uint8)])
    top_h = 170
    tiles = [fit(color, top_h), fit(depth_img, top_h), fit(image_rgba8(result), top_h)]
    gap = np.full((top_h, 8, 4), 255, np.uint8)
    top = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
    width = max(top.shape[1], bottom.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
    canvas = np.concatenate([pad(top), np.full((8, width, 4), 255, np.uint8), pad(bottom)], axis=0)
    canvas[..., 3] = 255

    out = HERE / "result.png"
    img = bpy.data.images.new("picture", canvas.shape[1], canvas.shape[0])
    img.pixels.foreach_set((canvas[::-1].astype(np.float32) / 255).ravel())
    img.filepath_raw = str(out)
    img.file_format = "PNG"
    img.save()
    print(out)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--"]
    if not args:
        raise SystemExit(__doc__)
    zip_arg = Path(args[1]) if len(args) > 1 else REPO / "build" / "controlbridge_blender-0.1.0.zip"
    main(args[0], zip_arg)
