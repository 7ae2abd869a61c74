"""Where a generated image goes in the scene. Main thread only; no network, no threads.

- an image datablock, always: packed into the .blend, named after the job, with the job's settings
  stored on it (`image["controlbridge"]`) so it can be re-run;
- the camera's background image (seen in camera view);
- an image plane parented to the camera, its corners exactly on the camera's frustum at a distance;
- a projection material on meshes: the image mapped through the camera's projection, as the camera was
  when the shot was captured (a frozen "projector" empty holds that view);
- live mode's one image (`CB Live`), its pixels replaced in place by every live result, shown as the
  camera background and on the image plane.
"""
import json

import bpy
import numpy as np
from mathutils import Matrix

from .capture import HELPER_PROP
from .frustum import Frame, camera_frame

JOB_PROP = "controlbridge"                 # on result images: job id, seed, settings (JSON), capture view
PROJECTION_PROP = "controlbridge_projection"  # on objects and materials made by project_onto
PREVIEW_IMAGE = "ControlBridge Preview"
LIVE_PROP = "controlbridge_live"           # on the live image: frame id, seed, settings (JSON)
LIVE_IMAGE = "CB Live"


# --- images -----------------------------------------------------------------------------------------

def image_from_attachment(att, name: str):
    """A new Blender image holding `att`: png/jpeg/webp bytes are packed as they are (no temporary file),
    raw_rgba8 (top row first) is copied into a generated image and packed."""
    if att.encoding in ("png", "jpeg", "webp"):
        image = bpy.data.images.new(name, 1, 1)
        image.pack(data=att.data, data_len=len(att.data))
        image.source = "FILE"
        ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[att.encoding]
        # Where "Unpack" would write it; set after packing so Blender does not look for the file.
        image.filepath_raw = f"//controlbridge/{bpy.path.clean_name(name)}.{ext}"
    elif att.encoding == "raw_rgba8":
        image = bpy.data.images.new(name, att.width, att.height, alpha=True)
        px = np.frombuffer(att.data, dtype=np.uint8).reshape(att.height, att.width, 4)[::-1]
        image.pixels.foreach_set((px.astype(np.float32) / 255.0).ravel())
        image.update()
        image.pack()
    else:
        raise ValueError(f"cannot show an image encoded as {att.encoding}")
    if tuple(image.size) != (att.width, att.height):
        size = tuple(image.size)
        bpy.data.images.remove(image)
        raise ValueError(f"the {att.encoding} image decodes to {size[0]}x{size[1]}, "
                         f"the server said {att.width}x{att.height}")
    return image


def create_result_image(result, meta: dict):
    """The image datablock for a finished job, with everything needed to re-run it stored on it."""
    image = image_from_attachment(result.image, f"CB {result.job_id}"[:63])
    image[JOB_PROP] = {
        "job_id": str(result.job_id),
        "seed": int(result.seed),
        "settings": json.dumps(result.settings.replace(seed=int(result.seed)).to_dict()),
        "saved_path": str(result.saved_path or ""),
        "capture": json.dumps(meta),
    }
    return image


def job_info(image) -> dict:
    """What create_result_image stored: {"job_id", "seed", "settings": dict, "saved_path", "capture": dict}."""
    raw = image.get(JOB_PROP)
    if raw is None:
        return {}
    info = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    for key in ("settings", "capture"):
        if isinstance(info.get(key), str):
            info[key] = json.loads(info[key])
    return info


def update_preview(att):
    """Show a progress preview: one image datablock, replaced by each new preview."""
    old = bpy.data.images.get(PREVIEW_IMAGE)
    if old is not None:
        bpy.data.images.remove(old)
    return image_from_attachment(att, PREVIEW_IMAGE)


def clear_preview():
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is not None:
        bpy.data.images.remove(image)


# --- camera background --------------------------------------------------------------------------------

def set_camera_background(camera_object, image, alpha: float = 1.0):
    """Show `image` as the camera's background image, replacing the one this add-on set before."""
    cam = camera_object.data
    bg = next((b for b in cam.background_images
               if b.image is not None and (JOB_PROP in b.image or LIVE_PROP in b.image)), None)
    if bg is None:
        bg = cam.background_images.new()
    bg.source = "IMAGE"
    bg.image = image
    bg.alpha = alpha
    bg.frame_method = "FIT"
    bg.display_depth = "FRONT"
    bg.show_background_image = True
    cam.show_background_images = True
    return bg


# --- image plane --------------------------------------------------------------------------------------

def _emission_material(name: str):
    mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    if mat.node_tree is None:   # Blender < 5: materials get a node tree on request
        mat.use_nodes = True
    mat[HELPER_PROP] = mat.node_tree[HELPER_PROP] = "plane"   # live mode ignores changes to its own helpers
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (300, 0)
    emission = nodes.new("ShaderNodeEmission")
    emission.location = (100, 0)
    tex = nodes.new("ShaderNodeTexImage")
    tex.name = tex.label = "ControlBridge Image"
    tex.location = (-200, 0)
    links.new(tex.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], out.inputs["Surface"])
    return mat, tex


def place_image_plane(scene, camera_object, image, distance: float):
    """An image plane parented to the camera with its corners exactly on the view frustum at `distance`.

    One plane per camera, updated in place by later generations."""
    if distance <= 0:
        raise ValueError("the image plane distance must be positive")
    frame = camera_frame(scene, camera_object)
    name = f"CB Plane {camera_object.name}"[:63]
    obj = next((o for o in bpy.data.objects if o.get(HELPER_PROP) == "plane" and o.parent == camera_object), None)
    corners = frame.corners(distance)
    if obj is None:
        mesh = bpy.data.meshes.new(name)
        obj = bpy.data.objects.new(name, mesh)
        scene.collection.objects.link(obj)
        obj[HELPER_PROP] = mesh[HELPER_PROP] = "plane"
        obj.hide_render = not _helpers_in_render(scene)   # a card in front of the camera: not in F12 renders
    else:
        mesh = obj.data
        mesh.clear_geometry()
        if obj.name not in scene.objects:
            scene.collection.objects.link(obj)
    mesh.from_pydata([tuple(c) for c in corners], [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap") if not mesh.uv_layers else mesh.uv_layers[0]
    for loop, co in zip(uv.data, ((0, 0), (1, 0), (1, 1), (0, 1))):
        loop.uv = co
    mesh.update()
    obj.parent = camera_object
    obj.matrix_parent_inverse = Matrix.Identity(4)
    sx, sy, sz = camera_object.matrix_world.to_scale()
    obj.matrix_basis = Matrix.Diagonal((1 / sx, 1 / sy, 1 / sz, 1.0))   # undo the camera's scale, if any
    obj["controlbridge_distance"] = float(distance)
    obj["controlbridge_frame"] = frame.to_dict()
    mat, tex = _emission_material(name)
    tex.image = image
    tex.extension = "CLIP"
    if not mesh.materials:
        mesh.materials.append(mat)
    else:
        mesh.materials[0] = mat
    obj.visible_shadow = False
    return obj


# --- projection ---------------------------------------------------------------------------------------

def _math(nodes, links, op, a, b=None, c=None, location=(0, 0)):
    node = nodes.new("ShaderNodeMath")
    node.operation = op
    node.location = location
    for i, value in enumerate((a, b, c)):
        if value is None:
            continue
        if isinstance(value, (int, float)):
            node.inputs[i].default_value = float(value)
        else:
            links.new(value, node.inputs[i])
    return node.outputs[0]


def projection_material(name: str, image, projector, frame: Frame):
    """A material that maps `image` through the camera projection of `projector` (an object placed where
    the camera was). Unlit (emission), so seen from that camera the surface reproduces the image."""
    mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    if mat.node_tree is None:   # Blender < 5: materials get a node tree on request
        mat.use_nodes = True
    mat[PROJECTION_PROP] = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    coords = nodes.new("ShaderNodeTexCoord")
    coords.object = projector
    coords.location = (-1200, 0)
    sep = nodes.new("ShaderNodeSeparateXYZ")
    sep.location = (-1000, 0)
    links.new(coords.outputs["Object"], sep.inputs[0])
    x, y, z = sep.outputs[0], sep.outputs[1], sep.outputs[2]
    if frame.ortho:
        px, py = x, y
    else:   # perspective divide: the point's position on the frame at distance 1
        depth = _math(nodes, links, "MULTIPLY", z, -1.0, location=(-800, -200))
        px = _math(nodes, links, "DIVIDE", x, depth, location=(-600, 100))
        py = _math(nodes, links, "DIVIDE", y, depth, location=(-600, -100))
    sx, sy = 1.0 / (frame.x1 - frame.x0), 1.0 / (frame.y1 - frame.y0)
    u = _math(nodes, links, "MULTIPLY_ADD", px, sx, -frame.x0 * sx, location=(-400, 100))
    v = _math(nodes, links, "MULTIPLY_ADD", py, sy, -frame.y0 * sy, location=(-400, -100))
    # Behind the projector: push the coordinate outside the image so nothing is projected there.
    behind = _math(nodes, links, "GREATER_THAN", z, 0.0, location=(-600, -300))
    u = _math(nodes, links, "MULTIPLY_ADD", behind, 1.0e4, u, location=(-200, 100))
    uv = nodes.new("ShaderNodeCombineXYZ")
    uv.location = (0, 0)
    links.new(u, uv.inputs[0])
    links.new(v, uv.inputs[1])
    tex = nodes.new("ShaderNodeTexImage")
    tex.name = tex.label = "ControlBridge Image"
    tex.image = image
    tex.extension = "CLIP"
    tex.location = (200, 0)
    links.new(uv.outputs[0], tex.inputs["Vector"])
    emission = nodes.new("ShaderNodeEmission")
    emission.location = (500, 0)
    links.new(tex.outputs["Color"], emission.inputs["Color"])
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (700, 0)
    links.new(emission.outputs["Emission"], out.inputs["Surface"])
    return mat


def _helpers_in_render(scene) -> bool:
    p = getattr(scene, "controlbridge", None)
    return bool(p is not None and p.helpers_in_render)


def set_helpers_in_render(scene, shown: bool) -> None:
    """The panel's Helpers in Renders switch: every plane and projector of the scene follows it."""
    for obj in scene.objects:
        if obj.get(HELPER_PROP) and obj.hide_render == shown:
            obj.hide_render = not shown


def make_projector(scene, name: str, matrix):
    """An empty frozen where the camera was at capture time (the projection stays put if the camera moves)."""
    obj = bpy.data.objects.get(name)
    if obj is None:
        obj = bpy.data.objects.new(name, None)
        obj.empty_display_type = "SINGLE_ARROW"
        obj.empty_display_size = 0.5
        scene.collection.objects.link(obj)
        obj.hide_render = not _helpers_in_render(scene)
    obj[HELPER_PROP] = "projector"
    obj.matrix_world = Matrix(matrix)
    return obj


def project_onto(scene, objects, image, meta: dict, name: str):
    """Texture `objects` (meshes) with `image` projected from the captured camera view.

    The artist's own materials are not touched: each material slot is switched to an object-level link
    that holds the projection (the mesh keeps its materials; remove_projection switches back)."""
    meshes = [o for o in objects if o.type == "MESH" and not o.get(HELPER_PROP)]
    if not meshes:
        return None
    frame = Frame.from_dict(meta["frame"])
    projector = make_projector(scene, f"CB Projector {name}"[:63], meta["matrix"])
    mat = projection_material(f"CB Projection {name}"[:63], image, projector, frame)
    for obj in meshes:
        if not obj.material_slots:
            obj.data.materials.append(None)
        for slot in obj.material_slots:
            slot.link = "OBJECT"
            slot.material = mat
        obj[PROJECTION_PROP] = mat.name
    return mat


def remove_projection(obj) -> bool:
    if PROJECTION_PROP not in obj:
        return False
    for slot in obj.material_slots:
        if slot.link == "OBJECT" and slot.material is not None and slot.material.get(PROJECTION_PROP):
            slot.material = None
            slot.link = "DATA"
    del obj[PROJECTION_PROP]
    return True


# --- live mode -----------------------------------------------------------------------------------------

def live_image():
    return next((i for i in bpy.data.images if LIVE_PROP in i), None)


def update_live_image(att, info: dict):
    """Put a live result into the one live image: the same datablock every time, its pixels replaced.

    The encoded bytes replace the packed file and the decoded buffers are freed, so Blender decodes the
    new bytes on the next use. Image.reload() would do the same but tags every shaded object for a
    depsgraph update, which live mode would take for a change in the scene (and capture again)."""
    image = live_image()
    if image is None:
        image = image_from_attachment(att, LIVE_IMAGE)
    elif att.encoding in ("png", "jpeg", "webp"):
        image.pack(data=att.data, data_len=len(att.data))
        image.buffers_free()
    else:   # live frames ask for jpeg
        raise ValueError(f"cannot show a live image encoded as {att.encoding}")
    if tuple(image.size) != (att.width, att.height):
        raise ValueError(f"the live image decodes to {image.size[0]}x{image.size[1]}, "
                         f"the server said {att.width}x{att.height}")
    image[LIVE_PROP] = info
    image.update()   # the viewport's GPU texture follows
    return image


def show_live(scene, camera_object, image, *, background=True, plane=False, plane_distance=10.0):
    """Show the live image on the camera background and the image plane. Only what is missing or stale is
    set: after the first frame nothing changes but the pixels, so the scene is not tagged for updates."""
    if background:
        cam = camera_object.data
        if not cam.show_background_images or not any(b.image == image for b in cam.background_images):
            set_camera_background(camera_object, image)
    if plane:
        obj = next((o for o in bpy.data.objects if o.get(HELPER_PROP) == "plane" and o.parent == camera_object),
                   None)
        stored = obj.get("controlbridge_frame") if obj is not None else None
        tex = obj.active_material.node_tree.nodes.get("ControlBridge Image") \
            if obj is not None and obj.active_material and obj.active_material.node_tree else None
        if tex is None or obj.name not in scene.objects or obj.get("controlbridge_distance") != float(plane_distance) \
                or stored is None or stored.to_dict() != camera_frame(scene, camera_object).to_dict():
            place_image_plane(scene, camera_object, image, plane_distance)
        elif tex.image != image:
            tex.image = image


# --- everything at once ---------------------------------------------------------------------------------

def apply_placements(scene, image, meta: dict, *, background=True, plane=False, plane_distance=10.0,
                     project=False, objects=()):
    """Put a result image where the artist asked. Returns a list of one-line notes of what was done."""
    done = []
    camera = bpy.data.objects.get(meta.get("camera") or "") or scene.camera
    if background and camera is not None and camera.type == "CAMERA":
        set_camera_background(camera, image)
        done.append(f"background of {camera.name}")
    if plane and camera is not None and camera.type == "CAMERA":
        obj = place_image_plane(scene, camera, image, plane_distance)
        done.append(f"plane {obj.name}")
    if project and meta.get("frame"):
        mat = project_onto(scene, objects, image, meta, image.name)
        if mat is not None:
            done.append(f"projected with {mat.name}")
    return done
