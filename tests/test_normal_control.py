"""The DCC's normal pass drives a normal ControlNet: camera-space normals in, NormalBae colours to the ControlNet."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from controlbridge_protocol import Client, ControlNetSettings, ImageAttachment
from controlbridge.imaging.normals import camera_normals_to_bae
from controlbridge.server.outputs import read_job
from helpers import blockout_images, quick_settings

# Camera-space unit normals (x right, y up, z toward the camera) and the colour NormalBae paints such a surface
# (Bae et al.'s README figures: a wall facing the camera lavender, a floor mint, the left wall of a corridor teal,
# the right one salmon).
FACING_CAMERA, FLOOR, LEFT_WALL, RIGHT_WALL = (0, 0, 1), (0, 1, 0), (1, 0, 0), (-1, 0, 0)
BAE = {FACING_CAMERA: (128, 128, 255), FLOOR: (128, 255, 128), LEFT_WALL: (0, 128, 128), RIGHT_WALL: (255, 128, 128)}


def corridor_normal_pass(width=64, height=48) -> np.ndarray:
    """A corridor as Blender's capture encodes it ((n + 1) / 2 as RGBA8), with a strip of empty background."""
    n = np.zeros((height, width, 3), np.float32)          # no geometry: Blender's zero normal
    n[height // 6:, :] = FACING_CAMERA
    n[height // 6:, : width // 4] = LEFT_WALL
    n[height // 6:, 3 * width // 4:] = RIGHT_WALL
    n[2 * height // 3:, width // 4: 3 * width // 4] = FLOOR
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
