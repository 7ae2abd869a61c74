"""Capture: color and raw depth from the camera's view, at the render size, with the scene left as it was."""
import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Euler, Vector

from conftest import cycles, emission_material, env_or_skip, read_image
from exr_reader import depth_of, read_exr_bytes


def pixel_of(scene, point, width, height):
    """(column, row) of a world point in an image stored top row first."""
    u, v, _ = world_to_camera_view(scene, scene.camera, Vector(point))
    return int(u * width), int((1.0 - v) * height)


def test_depth_and_color_of_a_known_scene(cb, scene, make_cube):
    cube = scene.objects["Cube"]
    cube.data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))
    make_cube("Marker", 0.25, (-0.6, 0.4, -3.25), color=(0.0, 0.0, 1.0))   # front face 3 units away, upper left

    shot = cb.capture.capture(scene, bpy.context.view_layer, cycles())

    assert (shot.width, shot.height) == (96, 64)              # 192x128 at 50 %
    depth = depth_of(shot)
    assert depth.dtype == np.float32 and depth.shape == (64, 96)
    color = np.frombuffer(shot.color, np.uint8).reshape(64, 96, 4)

    col, row = pixel_of(scene, (-0.6, 0.4, -3.0), 96, 64)      # the marker's face centre (top-left quadrant)
    assert row < 32 and col < 48
    assert depth[row, col] == pytest.approx(3.0, abs=1e-4)
    assert color[row, col, 2] > 200 and color[row, col, 0] < 30   # blue: rows are top first, RGB order
    col, row = pixel_of(scene, (0.6, -0.6, -5.0), 96, 64)      # the cube's face, lower right
    assert row > 32 and col > 48
    assert depth[row, col] == pytest.approx(5.0, abs=1e-4)
    assert color[row, col, 0] > 200 and color[row, col, 2] < 30   # red
    # The whole front face sits at 5 (planar camera-space depth, not distance along the ray).
    face = depth[10:54, 60:70]
    assert np.allclose(face, 5.0, atol=1e-4), face
    # Background: at or beyond `far`, which the attachment carries.
    assert shot.far == pytest.approx(scene.camera.data.clip_end)
    assert depth[0, 0] >= shot.far and depth[63, 95] >= shot.far
    atts = {a.name: a for a in shot.attachments()}
    # The depth goes as the EXR file Blender wrote (the server reads its Depth.Z pass with OpenEXR).
    assert atts["depth"].encoding == "exr" and atts["depth"].far == shot.far
    assert atts["depth"].data == shot.depth_exr and atts["depth"].data[:4] == b"\x76\x2f\x31\x01"
    assert atts["color"].encoding == "raw_rgba8" and len(atts["color"].data) == 96 * 64 * 4


def test_depth_matches_ray_casts_from_a_tilted_camera(cb, scene, make_cube):
    cam = scene.camera
    cam.location = (2.0, -3.0, 1.5)
    cam.rotation_mode = "QUATERNION"
    cam.rotation_quaternion = (Vector((0.0, 0.0, -6.0)) - cam.location).to_track_quat("-Z", "Y")
    make_cube("Floor", 1.0, (0.0, 0.0, -9.0)).scale = (8.0, 8.0, 0.1)
    bpy.context.view_layer.update()

    shot = cb.capture.capture(scene, bpy.context.view_layer, cycles())
    depth = depth_of(shot)

    w, h = shot.width, shot.height
    frame = cam.data.view_frame(scene=scene)                 # camera-space corners, Blender's own numbers
    xs, ys, z = [p.x for p in frame], [p.y for p in frame], frame[0].z
    mw = cam.matrix_world.normalized()
    origin = mw.translation
    inv = mw.inverted()
    deps = bpy.context.evaluated_depsgraph_get()
    expected = np.full((h, w), np.inf, np.float32)
    for row in range(h):
        for col in range(w):
            x = min(xs) + (col + 0.5) / w * (max(xs) - min(xs))
            y = max(ys) - (row + 0.5) / h * (max(ys) - min(ys))
            direction = (mw.to_3x3() @ Vector((x, y, z))).normalized()
            hit, loc, *_ = scene.ray_cast(deps, origin, direction)
            if hit:
                expected[row, col] = -(inv @ loc).z
    hit = np.isfinite(expected)
    # Compare away from silhouettes, where a pixel's samples can land on different surfaces.
    interior = hit.copy()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            interior &= np.roll(np.roll(hit, dr, 0), dc, 1)
            interior &= np.abs(np.roll(np.roll(expected, dr, 0), dc, 1) - expected) < 0.5
    assert interior.sum() > 0.3 * w * h
    assert np.allclose(depth[interior], expected[interior], rtol=1e-3, atol=2e-3), \
        np.abs(depth - expected)[interior].max()
    assert (depth[~hit] >= shot.far).all()


def _turn_the_shot(scene, rotation, floor=None):
    """Camera and cube (and `floor`, an object placed in the camera's unturned frame) turned together about the
    origin: the cube's front face still faces the camera head-on, the floor's top is still up in the image."""
    cam = scene.camera
    for obj in (cam, scene.objects["Cube"]) + ((floor,) if floor is not None else ()):
        obj.rotation_mode = "XYZ"
        obj.rotation_euler = rotation
        obj.location = rotation.to_matrix() @ obj.location
    bpy.context.view_layer.update()


def test_normals_go_as_the_world_space_exr_with_the_camera_rotation(cb, scene):
    turn = Euler((0.4, -0.3, 0.9), "XYZ")
    _turn_the_shot(scene, turn)
    shot = cb.capture.capture(scene, bpy.context.view_layer, cycles(normals=True))

    normal = {a.name: a for a in shot.attachments()}["normal"]
    assert (normal.encoding, normal.width, normal.height) == ("exr", 96, 64) and normal.data == shot.normal_exr
    # world_to_camera: the camera's rotation transposed (its rows are the camera's local axes in the world)
    rotation = np.array(turn.to_matrix())
    assert np.allclose(np.array(normal.world_to_camera).reshape(3, 3), rotation.T, atol=1e-6)
    # the file holds the world-space normals as Blender's Normal pass has them, top row first
    channels = read_exr_bytes(shot.normal_exr)
    world = np.stack([next(v for k, v in channels.items() if k.rpartition(".")[2] in axes)
                      for axes in (("R", "X"), ("G", "Y"), ("B", "Z"))], axis=2)
    assert np.allclose(world[32, 48], rotation @ (0.0, 0.0, 1.0), atol=1e-3)      # the face toward the camera
    assert np.allclose(world[0, 0], 0.0)                                          # nothing there: zero


def test_the_server_paints_the_normal_pass_in_normalbae_colours(cb, scene, make_cube):
    """A real server with a normal ControlNet turns the world EXR + rotation into the colours NormalBae paints, for a
    turned camera: the cube's face toward it lavender (128, 128, 255), the floor below mint (128, 255, 128), the
    empty background (no normal, depth beyond far) lavender."""
    from pathlib import Path
    url = env_or_skip("CONTROLBRIDGE_TEST_LIBRARY_SERVER_URL")
    floor = make_cube("Floor", 1.0, (0.0, -2.5, -8.0))        # its top 1.5 below the camera, from 2 to 14 ahead
    floor.scale = (6.0, 1.0, 6.0)
    _turn_the_shot(scene, Euler((0.4, -0.3, 0.9), "XYZ"), floor)
    shot = cb.capture.capture(scene, bpy.context.view_layer, cycles(normals=True))
    protocol = cb.protocol
    settings = protocol.JobSettings(prompt="a cube", seed=1, steps=2, sampler="euler", denoise=1.0,
                                    controlnets={"normal": protocol.ControlNetSettings(1.0, model="tiny-normalbae")})
    with protocol.Client(url) as client:
        result = client.run(settings, shot.attachments(), timeout=120)
    seen = read_image(Path(result.saved_path).with_suffix(".inputs") / "control-normal.png")
    h, w = seen.shape[:2]
    assert np.abs(seen[h // 2, w // 2, :3] - (128, 128, 255)).max() <= 2, seen[h // 2, w // 2]   # the face
    assert np.abs(seen[2, 2, :3] - (128, 128, 255)).max() <= 2, seen[2, 2]                        # background
    assert np.abs(seen[h - 3, 6, :3] - (128, 255, 128)).max() <= 2, seen[h - 3, 6]                # the floor


def _rna_values(struct):
    values = {}
    for prop in struct.bl_rna.properties:
        if prop.is_readonly or prop.type not in {"BOOLEAN", "INT", "FLOAT", "STRING", "ENUM"}:
            continue
        value = getattr(struct, prop.identifier)
        values[prop.identifier] = tuple(value) if hasattr(value, "__len__") and not isinstance(value, str) \
            else value
    return values


def _user_settings(scene):
    vl = scene.view_layers[0]
    r = scene.render
    return {
        "render": _rna_values(r),
        "image_settings": _rna_values(r.image_settings),
        "cycles": _rna_values(scene.cycles),
        "view_layer": _rna_values(vl),
        "view_settings": _rna_values(scene.view_settings),
        "compositor": (scene.compositing_node_group.name if scene.compositing_node_group else None,
                       len(scene.compositing_node_group.nodes) if scene.compositing_node_group else 0),
        "hide_render": {o.name: o.hide_render for o in scene.objects},
    }


def test_user_render_settings_are_unchanged(cb, scene):
    r = scene.render
    r.engine = "BLENDER_EEVEE"
    r.resolution_x, r.resolution_y, r.resolution_percentage = 200, 100, 48
    r.film_transparent = True
    r.use_border, r.border_min_x, r.border_max_x = True, 0.25, 0.5
    r.use_sequencer = True
    r.use_stamp = True
    r.use_compositing = True
    tree = bpy.data.node_groups.new("My Compositing", "CompositorNodeTree")
    tree.nodes.new("CompositorNodeRLayers")
    scene.compositing_node_group = tree
    r.image_settings.file_format = "JPEG"
    r.image_settings.quality = 77
    r.filepath = "//renders/shot_####"
    vl = scene.view_layers[0]
    vl.use_pass_z, vl.use_pass_normal, vl.use_pass_mist = False, False, True
    scene.cycles.samples = 123
    plane = cb.results.place_image_plane(scene, scene.camera, bpy.data.images.new("x", 4, 4), 1.0)
    before = _user_settings(scene)

    shot = cb.capture.capture(scene, vl, cycles(normals=True))

    assert shot.engine == "CYCLES"
    assert (shot.width, shot.height) == (96, 48)       # the whole frame: the render border is ignored
    # The image plane (1 unit in front of the camera) was hidden from the capture; the cube is seen.
    assert depth_of(shot)[24, 48] == pytest.approx(5.0, abs=1e-4)
    after = _user_settings(scene)
    for key in before:
        assert after[key] == before[key], key
    assert r.engine == "BLENDER_EEVEE" and r.image_settings.file_format == "JPEG"
    assert r.filepath == "//renders/shot_####" and plane.hide_render == before["hide_render"][plane.name]


def _saved_pixels(image, scene, path):
    image.save_render(str(path), scene=scene)
    loaded = bpy.data.images.load(str(path))
    px = np.array(loaded.pixels[:]).reshape(loaded.size[1], loaded.size[0], 4)
    bpy.data.images.remove(loaded)
    return px


def test_the_users_last_render_is_kept(cb, scene, make_cube, tmp_path):
    scene.objects["Cube"].data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))
    scene.render.resolution_percentage = 25
    bpy.ops.render.render()                                  # the artist's F12 render: 48x32
    result = next(i for i in bpy.data.images if i.type == "RENDER_RESULT")
    mine = _saved_pixels(result, scene, tmp_path / "before.png")
    scene.render.resolution_percentage = 50
    make_cube("Marker", 0.25, (-0.6, 0.4, -3.25), color=(0.0, 0.0, 1.0))

    cb.capture.capture(scene, None, cycles())

    assert result.render_slots.active_index == 0
    scene.render.resolution_percentage = 25
    assert np.array_equal(_saved_pixels(result, scene, tmp_path / "after.png"), mine)
    assert result.render_slots[-1].name == cb.capture.CAPTURE_SLOT


def test_no_camera_is_a_clear_error(cb, scene):
    scene.camera = None
    with pytest.raises(cb.capture.CaptureError, match="no active camera"):
        cb.capture.capture(scene)

