"""The DCC's normal pass drives a normal ControlNet: camera-space normals (or world-space normals as exr with the
camera's world_to_camera rotation, which the server turns into camera space) in, NormalBae colours to the ControlNet."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from controlbridge_protocol import Client, ControlNetSettings, ErrorCode, ImageAttachment, JobFailed
from controlbridge.imaging.normals import camera_normals_to_bae
from controlbridge.server.outputs import read_job
from helpers import blockout_images, quick_settings

# Camera-space unit normals (x right, y up, z toward the camera) and the colour NormalBae paints such a surface
# (Bae et al.'s README figures: a wall facing the camera lavender, a floor mint, the left wall of a corridor teal,
# the right one salmon).
FACING_CAMERA, FLOOR, LEFT_WALL, RIGHT_WALL = (0, 0, 1), (0, 1, 0), (1, 0, 0), (-1, 0, 0)
BAE = {FACING_CAMERA: (128, 128, 255), FLOOR: (128, 255, 128), LEFT_WALL: (0, 128, 128), RIGHT_WALL: (255, 128, 128)}


def corridor_normals(width=64, height=48) -> np.ndarray:
    """A corridor's camera-space unit normals (float32 HxWx3), with a strip of empty background (zero vector)."""
    n = np.zeros((height, width, 3), np.float32)          # no geometry: Blender's zero normal
    n[height // 6:, :] = FACING_CAMERA
    n[height // 6:, : width // 4] = LEFT_WALL
    n[height // 6:, 3 * width // 4:] = RIGHT_WALL
    n[2 * height // 3:, width // 4: 3 * width // 4] = FLOOR
    return n


def corridor_normal_pass(width=64, height=48) -> np.ndarray:
    """The corridor as a camera-space client encodes it ((n + 1) / 2 as RGBA8)."""
    n = corridor_normals(width, height)
    enc = np.clip(np.round((n * 0.5 + 0.5) * 255.0), 0, 255).astype(np.uint8)
    return np.concatenate([enc, np.full((height, width, 1), 255, np.uint8)], axis=2)


def regions(image: np.ndarray) -> dict:
    """The colour at the middle of each region of the corridor (any size: the layout is proportional)."""
    h, w = image.shape[:2]
    at = {"background": (h // 12, w // 2), FACING_CAMERA: (h * 5 // 12, w // 2), LEFT_WALL: (h // 2, w // 8),
          RIGHT_WALL: (h // 2, w * 7 // 8), FLOOR: (h * 5 // 6, w // 2)}
    return {k: tuple(int(c) for c in image[y, x, :3]) for k, (y, x) in at.items()}


def close(a, b, tolerance=2):
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


def test_the_conversion_paints_each_direction_as_normalbae_does():
    bae = (camera_normals_to_bae(corridor_normal_pass()[:, :, :3] / 255.0) * 255).round().astype(np.uint8)
    seen = regions(bae)
    for direction, colour in BAE.items():
        assert close(seen[direction], colour), (direction, seen[direction], colour)
    assert close(seen["background"], BAE[FACING_CAMERA])   # empty background reads as facing the camera


@pytest.fixture
def normal_server(make_server, tmp_path, tiny_model):
    from controlbridge.engine.tiny_model import ensure_tiny_model
    models = tmp_path / "models"
    # Random weights with the normal ControlNet's shape; its name gives the role, as control_v11p_sd15_normalbae's does.
    shutil.copytree(ensure_tiny_model().controlnets["depth"], models / "controlnet" / "tiny-normalbae")
    return make_server(models_dir=models)


def test_the_normal_pass_feeds_a_normal_controlnet_in_normalbae_colours(normal_server):
    w, h = 64, 48
    color = blockout_images(w, h)[0]
    normal = ImageAttachment.raw_rgba8("normal", w, h, corridor_normal_pass(w, h).tobytes())
    settings = quick_settings(controlnets={"normal": ControlNetSettings(1.0, model="tiny-normalbae")})
    with Client(normal_server.url) as c:
        result = c.run(settings, [color, normal])
        off = c.run(settings.replace(controlnets={"normal": ControlNetSettings(0.0, model="tiny-normalbae")}),
                    [color, normal])
    job = read_job(result.saved_path)
    seen = regions(np.asarray(Image.open(Path(result.saved_path).parent / job["controls"]["normal"]).convert("RGB")))
    for direction, colour in BAE.items():
        assert close(seen[direction], colour, 3), (direction, seen[direction], colour)
    assert result.image.data != off.image.data            # the normal ControlNet acted on the image


# ---------------------------------------------------------------- world-space normals (exr + world_to_camera)

def rotation(yaw, pitch, roll) -> np.ndarray:
    """A right-handed world_to_camera rotation (rows: the camera's right, up, toward-camera axes in the world)."""
    (cy, sy), (cp, sp), (cr, sr) = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (yaw, pitch, roll)]
    about_z = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    about_y = np.array([[cr, 0, sr], [0, 1, 0], [-sr, 0, cr]])
    return about_y @ about_x @ about_z


# Six cameras: level, turned, looking down, tilted and rolled, upside down, and an Unreal one (a left-handed world:
# looking along world +Y, its right is world -X, up +Z, toward the camera -Y; determinant -1).
ORIENTATIONS = {"level": rotation(0, 0, 0), "turned": rotation(90, 0, 0), "looking_down": rotation(0, -80, 0),
                "tilted_rolled": rotation(35, 20, -25), "upside_down": rotation(180, 0, 180),
                "unreal_left_handed": np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])}


def exr_file(tmp_path, channels: dict) -> bytes:
    import OpenEXR
    path = tmp_path / "normal.exr"
    with OpenEXR.File({"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}, channels) as f:
        f.write(str(path))
    return path.read_bytes()


def world_normal_exr(tmp_path, camera_normals: np.ndarray, world_to_camera: np.ndarray, blender_names=False):
    """What a renderer's normal pass holds for these camera-space normals: n_world = R^T n_camera, as float RGB
    (Unreal's export) or '<layer>.Normal.X/Y/Z' (Blender's)."""
    world = (camera_normals @ world_to_camera).astype(np.float32)
    if blender_names:
        return exr_file(tmp_path, {f"ViewLayer.Normal.{a}": world[..., i].copy() for i, a in enumerate("XYZ")})
    return exr_file(tmp_path, {"RGB": world})


def control_map(result) -> np.ndarray:
    job = read_job(result.saved_path)
    return np.asarray(Image.open(Path(result.saved_path).parent / job["controls"]["normal"]).convert("RGB")).astype(int)


@pytest.fixture
def normal_client(normal_server):
    with Client(normal_server.url) as c:
        yield c


NORMAL_SETTINGS = quick_settings(steps=2, controlnets={"normal": ControlNetSettings(1.0, model="tiny-normalbae")})


def test_world_normals_give_the_map_camera_space_normals_gave_for_every_camera(normal_client, tmp_path):
    w, h = 64, 48
    color = blockout_images(w, h)[0]
    camera_space = ImageAttachment.raw_rgba8("normal", w, h, corridor_normal_pass(w, h).tobytes())
    expected = control_map(normal_client.run(NORMAL_SETTINGS, [color, camera_space]))
    for name, matrix in ORIENTATIONS.items():
        exr = world_normal_exr(tmp_path, corridor_normals(w, h), matrix, blender_names=name == "tilted_rolled")
        world = ImageAttachment.exr_world_normals("normal", w, h, exr, matrix.ravel().tolist())
        seen = control_map(normal_client.run(NORMAL_SETTINGS, [color, world]))
        # the same map, but for 8-bit encoding: the camera-space pass's 128 is not exactly 0
        assert np.abs(seen - expected).max() <= 1, name
        for direction, colour in BAE.items():
            assert close(regions(seen)[direction], colour, 1), (name, direction)
        assert close(regions(seen)["background"], BAE[FACING_CAMERA], 1), name   # the zero vector


def test_world_normals_take_their_background_from_the_raw_depth(normal_client, tmp_path):
    """Unreal's GBuffer writes a normal for the sky too: where the depth is background (here beyond `far`, and
    not finite) the normal is the zero vector, whatever the pass says; without raw depth it stays."""
    w, h = 64, 48
    color = blockout_images(w, h)[0]
    matrix = ORIENTATIONS["tilted_rolled"]
    normals = corridor_normals(w, h)
    normals[: h // 6] = RIGHT_WALL                          # the sky's normal: not zero
    depth = np.full((h, w), 500.0, np.float32)
    depth[: h // 12] = 9000.0                               # at far
    depth[h // 12: h // 6] = np.nan
    exr = world_normal_exr(tmp_path, normals, matrix)
    world = ImageAttachment.exr_world_normals("normal", w, h, exr, matrix.ravel().tolist())
    raw = ImageAttachment.raw_depth("depth", w, h, depth.tobytes(), far=9000.0)
    settings = NORMAL_SETTINGS.replace(controlnets={**NORMAL_SETTINGS.controlnets, "depth": ControlNetSettings(0.5)})
    with_depth = control_map(normal_client.run(settings, [color, raw, world]))
    assert close(with_depth[1, w // 2], BAE[FACING_CAMERA], 1)               # at far
    assert close(with_depth[h // 8, w // 2], BAE[FACING_CAMERA], 1)          # NaN depth
    assert close(regions(with_depth)[FLOOR], BAE[FLOOR], 1)                  # geometry is kept
    without_depth = control_map(normal_client.run(NORMAL_SETTINGS, [color, world]))
    assert close(without_depth[1, w // 2], BAE[RIGHT_WALL], 1)


@pytest.mark.parametrize("case, code, words", [
    ("eight_numbers", ErrorCode.OUT_OF_RANGE, "world_to_camera has 8 numbers; it needs 9"),
    ("scaled", ErrorCode.OUT_OF_RANGE, "world_to_camera is not a rotation: row 0 . row 0 is 4"),
    ("sheared", ErrorCode.OUT_OF_RANGE, "world_to_camera is not a rotation: row 0 . row 1 is 0.5"),
    ("not_finite", ErrorCode.OUT_OF_RANGE, "world_to_camera has a number that is not finite"),
    ("not_numbers", ErrorCode.BAD_MESSAGE, "'world_to_camera' must be a list of 9 numbers"),
    ("exr_without_matrix", ErrorCode.BAD_MESSAGE, "attachment 'normal' is exr (world-space normals) but has no "
                                                  "world_to_camera"),
    ("matrix_on_png", ErrorCode.BAD_MESSAGE, "world_to_camera comes with world-space normals as exr, not raw_rgba8"),
    ("matrix_on_depth", ErrorCode.BAD_MESSAGE, "attachment 'depth': world_to_camera belongs to the 'normal'"),
    ("no_vector_channels", ErrorCode.BAD_IMAGE, "the EXR has no R, G, B or <layer>.X/Y/Z channels (it has Z)"),
])
def test_bad_world_normals_are_a_clear_error(normal_client, tmp_path, case, code, words):
    w, h = 32, 24
    color, depth = blockout_images(w, h)
    exr = world_normal_exr(tmp_path, corridor_normals(w, h), np.eye(3))
    identity = np.eye(3).ravel().tolist()
    normal = {
        "eight_numbers": ImageAttachment.exr_world_normals("normal", w, h, exr, identity[:8]),
        "scaled": ImageAttachment.exr_world_normals("normal", w, h, exr, (2 * np.eye(3)).ravel().tolist()),
        "sheared": ImageAttachment.exr_world_normals("normal", w, h, exr, [1, 0, 0, 0.5, 1, 0, 0, 0, 1]),
        "not_finite": ImageAttachment.exr_world_normals("normal", w, h, exr, [math.nan] + identity[1:]),
        "not_numbers": ImageAttachment("normal", "exr", w, h, exr, world_to_camera=("a",) * 9),
        "exr_without_matrix": ImageAttachment.encoded("normal", "exr", w, h, exr),
        "matrix_on_png": ImageAttachment("normal", "raw_rgba8", w, h, corridor_normal_pass(w, h).tobytes(),
                                         world_to_camera=tuple(identity)),
        "matrix_on_depth": ImageAttachment.exr_world_normals("normal", w, h, exr, identity),
        "no_vector_channels": ImageAttachment.exr_world_normals(
            "normal", w, h, exr_file(tmp_path, {"Z": np.ones((h, w), np.float32)}), identity),
    }[case]
    images = [color, normal]
    if case == "matrix_on_depth":
        images = [color, ImageAttachment("depth", "raw_f32", w, h, depth.data, world_to_camera=tuple(identity)),
                  ImageAttachment.exr_world_normals("normal", w, h, exr, identity)]
    with pytest.raises(JobFailed) as failed:
        normal_client.run(NORMAL_SETTINGS, images)
    assert failed.value.code == code and words in str(failed.value), str(failed.value)
    assert normal_client.run(NORMAL_SETTINGS.replace(controlnets={}), [color]).image    # the server keeps serving


def test_blenders_multi_part_exr_gives_the_depth_that_marks_the_background(normal_client, tmp_path):
    """With its Normal pass on, Blender saves one EXR part per pass (Combined first): the depth is read from its
    part, so the world normals' background is where that depth is at or beyond far."""
    import OpenEXR
    w, h = 64, 48
    color = blockout_images(w, h)[0]
    matrix = ORIENTATIONS["looking_down"]
    normals = corridor_normals(w, h)
    normals[: h // 6] = LEFT_WALL                           # not zero: only the depth says it is background
    depth = np.full((h, w), 5.0, np.float32)
    depth[: h // 6] = 1e10                                  # Blender's "nothing hit"
    world = (normals @ matrix).astype(np.float32)

    def part(name, channels):
        return OpenEXR.Part({"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}, channels, name)
    path = tmp_path / "passes.exr"
    with OpenEXR.File([part("ViewLayer.Combined", {f"ViewLayer.Combined.{c}": np.zeros((h, w), np.float16)
                                                   for c in "RGBA"}),
                       part("ViewLayer.Depth", {"ViewLayer.Depth.Z": depth}),
                       part("ViewLayer.Normal", {f"ViewLayer.Normal.{a}": world[..., i].copy()
                                                 for i, a in enumerate("XYZ")})]) as f:
        f.write(str(path))
    passes = path.read_bytes()
    images = [color, ImageAttachment.exr_depth("depth", w, h, passes, far=100.0),
              ImageAttachment.exr_world_normals("normal", w, h, passes, matrix.ravel().tolist())]
    seen = control_map(normal_client.run(NORMAL_SETTINGS, images))
    assert close(seen[2, w // 2], BAE[FACING_CAMERA], 1)                      # background by the depth part
    for direction in (LEFT_WALL, RIGHT_WALL, FLOOR, FACING_CAMERA):
        assert close(regions(seen)[direction], BAE[direction], 1), direction


def test_a_job_with_world_normals_reruns_from_its_saved_inputs(normal_client, tmp_path):
    # The saved inputs keep the exr's world_to_camera: re-running the job from its PNG (CLI --from-png, history)
    # sends the same world normals with their rotation and gives the same pixels.
    from controlbridge.server.outputs import load_input
    from controlbridge_protocol import JobSettings
    w, h = 64, 48
    matrix = ORIENTATIONS["tilted_rolled"]
    world = ImageAttachment.exr_world_normals("normal", w, h, world_normal_exr(tmp_path, corridor_normals(w, h),
                                                                               matrix), matrix.ravel().tolist())
    first = normal_client.run(NORMAL_SETTINGS.replace(seed=7), [blockout_images(w, h)[0], world])
    job = read_job(first.saved_path)
    assert job["inputs"]["normal"]["world_to_camera"] == pytest.approx(matrix.ravel().tolist())
    inputs = [load_input(Path(first.saved_path), entry) for entry in job["inputs"].values()]
    again = normal_client.run(JobSettings.from_dict(job["settings"]), inputs)
    assert np.array_equal(np.asarray(Image.open(first.saved_path)), np.asarray(Image.open(again.saved_path)))
