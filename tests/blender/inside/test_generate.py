"""Generate through a real server: the image lands in Blender, placed where the artist asked."""
import os

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view

from conftest import cycles, emission_material
from exr_reader import depth_of


def corners_in_camera_view(scene, obj):
    """Each mesh corner as (u, v, distance): u, v in [0, 1] across the camera frame, Blender's own maths."""
    return [tuple(world_to_camera_view(scene, scene.camera, obj.matrix_world @ v.co)) for v in obj.data.vertices]


def assert_on_frustum(scene, plane, distance):
    seen = set()
    for u, v, z in corners_in_camera_view(scene, plane):
        assert z == pytest.approx(distance, rel=1e-5)
        assert min(abs(u), abs(u - 1)) < 1e-5 and min(abs(v), abs(v - 1)) < 1e-5, (u, v)
        seen.add((round(u), round(v)))
    assert seen == {(0, 0), (1, 0), (1, 1), (0, 1)}


def image_pixels(image):
    px = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(image.size[1], image.size[0], 4)


def test_generate_lands_the_image_and_places_it(cb, scene, server_url, use_server, wait_idle):
    use_server(server_url)
    cube = scene.objects["Cube"]
    own = emission_material("artist's material", (0.0, 1.0, 0.0))
    cube.data.materials.append(own)
    cube.select_set(True)
    p = scene.controlbridge
    p.prompt, p.steps, p.randomize_seed = "a red house", 4, True
    p.place_background, p.place_plane, p.plane_distance, p.place_projection = True, True, 7.5, True

    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    st = wait_idle()

    assert st.phase == "finished", st.line
    assert not st.error
    image = bpy.data.images[st.image_name]
    assert tuple(image.size) == (96, 64)                       # the render resolution x percentage
    assert image.packed_file is not None                       # saved with the .blend
    assert image_pixels(image)[..., :3].std() > 0.01           # real pixels (the tiny model makes noise)
    info = cb.results.job_info(image)
    settings = cb.protocol.JobSettings.from_dict(info["settings"])   # enough to re-run it
    assert (settings.prompt, settings.steps, settings.seed) == ("a red house", 4, p.seed)
    assert info["job_id"] in image.name
    assert os.path.isfile(info["saved_path"])
    assert f"seed {p.seed}" in st.line

    # Camera background
    cam = scene.camera.data
    assert cam.show_background_images
    assert [b.image for b in cam.background_images] == [image]

    # Image plane: parented to the camera, corners exactly on the frustum at the chosen distance
    plane = next(o for o in scene.objects if o.get(cb.capture.HELPER_PROP) == "plane")
    assert plane.parent == scene.camera
    assert_on_frustum(scene, plane, 7.5)
    assert plane.active_material.node_tree.nodes["ControlBridge Image"].image == image

    # Projection: the artist's material is still on the mesh; the object shows the projection
    slot = cube.material_slots[0]
    assert slot.link == "OBJECT" and slot.material.get(cb.results.PROJECTION_PROP)
    assert cube.data.materials[0] == own
    nodes = slot.material.node_tree.nodes
    assert nodes["ControlBridge Image"].image == image
    projector = next(n for n in nodes if n.type == "TEX_COORD").object
    assert np.allclose(np.array(projector.matrix_world), np.array(scene.camera.matrix_world), atol=1e-6)
    # ... and can be taken off again
    bpy.context.view_layer.objects.active = cube
    assert bpy.ops.controlbridge.remove_projection() == {"FINISHED"}
    assert cube.material_slots[0].link == "DATA" and cube.material_slots[0].material == own

    # History
    assert [h.image for h in p.history] == [image]
    assert "ControlBridge Preview" not in bpy.data.images      # previews are not left behind

    # Variation: same settings, new seed, one click
    first_seed = p.seed
    assert bpy.ops.controlbridge.variation() == {"FINISHED"}
    st = wait_idle()
    assert st.phase == "finished", st.line
    second = bpy.data.images[st.image_name]
    again = cb.protocol.JobSettings.from_dict(cb.results.job_info(second)["settings"])
    assert again.seed != first_seed and again.replace(seed=first_seed) == settings
    assert len(p.history) == 2 and [b.image for b in cam.background_images] == [second]

    # Load settings back from history
    p.prompt = "something else"
    assert bpy.ops.controlbridge.history_load(index=0) == {"FINISHED"}
    assert p.prompt == "a red house" and p.seed == first_seed and not p.randomize_seed
    # ... and re-apply an older image
    p.place_plane, p.place_projection = False, False
    assert bpy.ops.controlbridge.history_apply(index=0) == {"FINISHED"}
    assert [b.image for b in cam.background_images] == [image]


@pytest.mark.parametrize("kind", ["perspective_shifted", "vertical_fit_scaled_camera", "orthographic"])
def test_image_plane_corners_lie_on_the_frustum(cb, scene, kind):
    cam_obj = scene.camera
    cam_obj.location = (1.0, 2.0, 3.0)
    cam_obj.rotation_euler = (0.3, -0.2, 0.7)
    cam = cam_obj.data
    if kind == "perspective_shifted":
        cam.lens, cam.shift_x, cam.shift_y = 35.0, 0.15, -0.1
    elif kind == "vertical_fit_scaled_camera":
        cam.sensor_fit = "VERTICAL"
        cam_obj.scale = (2.0, 2.0, 2.0)
    else:
        cam.type, cam.ortho_scale = "ORTHO", 4.0
    bpy.context.view_layer.update()
    plane = cb.results.place_image_plane(scene, cam_obj, bpy.data.images.new("img", 8, 8), 3.25)
    bpy.context.view_layer.update()
    assert_on_frustum(scene, plane, 3.25)
    plane = cb.results.place_image_plane(scene, cam_obj, bpy.data.images.new("img2", 8, 8), 12.0)   # reused
    bpy.context.view_layer.update()
    assert_on_frustum(scene, plane, 12.0)
    assert sum(1 for o in scene.objects if o.get(cb.capture.HELPER_PROP) == "plane") == 1


def test_projection_seen_from_the_camera_reproduces_the_image(cb, scene, make_cube):
    """Render the projected material from the capture camera: it must show the image, pixel for pixel."""
    cam_obj = scene.camera
    cam_obj.location = (0.5, -0.5, 0.0)
    cam_obj.rotation_euler = (0.1, 0.05, 0.0)
    cam_obj.data.shift_x = 0.08
    wall = make_cube("Wall", 1.0, (0.0, 0.0, -12.0))
    wall.scale = (12.0, 12.0, 0.1)
    wall.rotation_euler = (0.5, 0.3, 0.0)                    # tilted: needs a perspective-correct mapping
    bpy.context.view_layer.update()
    w, h = 96, 64
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    rgba = np.stack([cols * 255 // (w - 1), rows * 255 // (h - 1), np.full_like(cols, 128),
                     np.full_like(cols, 255)], axis=-1).astype(np.uint8)   # top row first
    image = cb.results.image_from_attachment(cb.protocol.ImageAttachment.raw_rgba8("color", w, h, rgba.tobytes()),
                                             "gradient")
    meta = cb.capture.capture(scene, None, cycles(1)).meta()

    mat = cb.results.project_onto(scene, [wall, scene.objects["Cube"]], image, meta, "gradient")
    cam_obj.location = (3.0, 0.0, 0.0)     # moving the camera afterwards must not move the projection
    bpy.context.view_layer.update()
    cam_obj.location = (0.5, -0.5, 0.0)
    bpy.context.view_layer.update()
    shot = cb.capture.capture(scene, None, cycles(8))

    assert mat is not None
    seen = np.frombuffer(shot.color, np.uint8).reshape(h, w, 4).astype(int)
    covered = depth_of(shot) < shot.far
    inner = covered.copy()
    inner[:2] = inner[-2:] = False
    inner[:, :2] = inner[:, -2:] = False
    assert inner.sum() > 0.8 * w * h
    diff = np.abs(seen[..., :3] - rgba[..., :3].astype(int))[inner]
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, (diff.mean(), diff.max())
