"""More ControlNet kinds per job, each fed by the input the job names; union (ControlNet++) models in a mode."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from controlbridge_protocol import Client, ControlNetSettings, ErrorCode, ImageAttachment, JobFailed
from controlbridge.server.outputs import read_job
from helpers import blockout_images, decode_png, live_result, quick_settings

W, H = 64, 48
KINDS = ("lineart", "softedge", "openpose", "tile")


def write_tiny_union(tiny_sdxl, folder: Path) -> Path:
    """A random-weight ControlNet++ (ControlNetUnionModel) for the tiny SDXL: the tiny ControlNet's weights where
    the layouts agree, the union parts (control-type embedding, mode transformer) random and non-zero."""
    from diffusers import ControlNetModel, ControlNetUnionModel
    plain = ControlNetModel.from_pretrained(tiny_sdxl.controlnets["depth"])
    width = plain.config.block_out_channels[0]
    torch.manual_seed(5)
    union = ControlNetUnionModel.from_config(dict(plain.config, num_trans_channel=width, num_trans_head=2,
                                                  num_trans_layer=1, num_proj_channel=width, num_control_type=8))
    union.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():                    # zero-initialised in diffusers: the mode would change nothing
        union.spatial_ch_projs.weight.normal_(0.0, 0.5)
    union.save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_flux_union(folder: Path) -> Path:
    """A random-weight FLUX union ControlNet (num_mode control types) shaped for the tiny FLUX."""
    from controlbridge.library.tiny_families import _FLUX_DIMS, _flux_controlnet
    plain = _flux_controlnet(6)
    torch.manual_seed(6)
    union = type(plain)(in_channels=64, num_mode=7, **_FLUX_DIMS)
    union.load_state_dict(plain.state_dict(), strict=False)   # the tiny one's non-zero output projections
    union.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from controlbridge.engine.tiny_model import ensure_tiny_model
    from controlbridge.library.tiny_families import ensure_tiny_family
    models = tmp_path_factory.mktemp("ComfyUI") / "models"
    for kind in KINDS:   # random weights in each kind's file; the library tells the kind from the name
        shutil.copytree(ensure_tiny_model().controlnets["depth"], models / "controlnet" / f"tiny-{kind}")
    write_tiny_union(ensure_tiny_family("sdxl"), models / "controlnet" / "tiny-union-sdxl")
    write_tiny_flux_union(models / "controlnet" / "tiny-union-flux")
    return models


@pytest.fixture
def kinds_server(make_server, models_dir):
    return make_server(models_dir=models_dir)


def flat_map(name, colours) -> ImageAttachment:
    """A ready-made map of vertical bands, one colour each (their middles survive any resize unchanged)."""
    bands = np.repeat(np.array(colours, np.uint8), -(-W // len(colours)), axis=0)[:W]
    rgba = np.concatenate([np.broadcast_to(bands, (H, W, 3)), np.full((H, W, 1), 255, np.uint8)], axis=2)
    return ImageAttachment.raw_rgba8(name, W, H, np.ascontiguousarray(rgba).tobytes())


def band_middles(image: np.ndarray, n: int):
    h, w = image.shape[:2]
    return [tuple(int(c) for c in image[h // 2, int((i + 0.5) * w / n)]) for i in range(n)]


def controls(result) -> dict:
    path = Path(result.saved_path)
    return {name: np.asarray(Image.open(path.parent / file).convert("RGB"))
            for name, file in read_job(path)["controls"].items()}


def test_each_controlnet_gets_the_input_the_job_names(kinds_server):
    lineart = [(0, 0, 0), (255, 255, 255)]
    pose = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    color, depth = blockout_images(W, H)
    nets = {"depth": ControlNetSettings(1.0),
            "lineart": ControlNetSettings(0.8, model="tiny-lineart"),                        # the 'lineart' map
            "openpose": ControlNetSettings(0.7, 0.1, 0.9, model="tiny-openpose", input="pose"),   # a map by name
            "softedge": ControlNetSettings(0.6, model="tiny-softedge", input="depth"),       # the depth pass
            "tile": ControlNetSettings(0.5, model="tiny-tile")}                              # the color image
    images = [color, depth, flat_map("lineart", lineart), flat_map("pose", pose)]
    with Client(kinds_server.url) as c:
        result = c.run(quick_settings(controlnets=nets), images)
        without_pose = c.run(quick_settings(controlnets={k: v for k, v in nets.items() if k != "openpose"}),
                             images[:3])
    assert result.settings.controlnets["openpose"] == nets["openpose"]       # weight, window and input kept
    seen = controls(result)
    assert set(seen) == set(nets)
    assert band_middles(seen["lineart"], 2) == lineart
    assert band_middles(seen["openpose"], 3) == pose
    assert np.array_equal(seen["softedge"], seen["depth"])                   # the normalized depth pass, as depth's
    work = seen["tile"].shape[1::-1]
    small = np.asarray(Image.fromarray(np.frombuffer(color.data, np.uint8).reshape(H, W, 4)[:, :, :3])
                       .resize(work, Image.BILINEAR), np.int16)
    assert np.abs(seen["tile"].astype(np.int16) - small).mean() < 4          # the color image, downscaled
    assert not np.array_equal(decode_png(result.image.data), decode_png(without_pose.image.data))


@pytest.mark.parametrize("nets, extra, code, words", [
    ({"openpose": ControlNetSettings(model="tiny-openpose", input="pose")}, [], ErrorCode.MISSING_ATTACHMENT, "'pose'"),
    ({"lineart": ControlNetSettings(model="tiny-lineart")}, [], ErrorCode.MISSING_ATTACHMENT, "'lineart'"),
    ({}, ["stray"], ErrorCode.BAD_MESSAGE, "stray feed no ControlNet"),
    ({"tile": ControlNetSettings(model="tiny-tile", mode="tile")}, [], ErrorCode.OUT_OF_RANGE, "union"),
    ({"depth": ControlNetSettings(model="tiny-union-sdxl")}, [], ErrorCode.WRONG_FAMILY, "sdxl"),
])
def test_an_input_or_mode_that_cannot_work_is_a_clear_error(kinds_server, nets, extra, code, words):
    images = blockout_images(W, H) + [flat_map(name, [(9, 9, 9)]) for name in extra]
    with Client(kinds_server.url) as c:
        with pytest.raises(JobFailed) as failed:
            c.run(quick_settings(controlnets=nets), images)
        assert c.run(quick_settings(), blockout_images(W, H)).image.width == W     # and the server keeps serving
    assert failed.value.code == code and words in str(failed.value)


def test_a_union_controlnet_runs_in_the_mode_the_job_names(kinds_server):
    def job(**nets):
        return quick_settings(model="tiny-sdxl", controlnets=nets)

    union = "tiny-union-sdxl"
    with Client(kinds_server.url) as c:
        caps = c.capabilities
        as_depth = c.run(job(depth=ControlNetSettings(1.0, model=union)), blockout_images(W, H))
        again = c.run(job(depth=ControlNetSettings(1.0, model=union, mode="depth")), blockout_images(W, H))
        as_normal = c.run(job(depth=ControlNetSettings(1.0, model=union, mode="normal")), blockout_images(W, H))
        mixed = c.run(job(depth=ControlNetSettings(1.0, model=union), canny=ControlNetSettings(0.8)),
                      blockout_images(W, H))                      # beside the model's own plain canny ControlNet
        with pytest.raises(JobFailed) as failed:
            c.run(job(depth=ControlNetSettings(1.0, model=union, mode="bogus")), blockout_images(W, H))
    assert {"depth", "normal", "tile"} <= set(caps.control["union_modes"]["sdxl"])
    assert {"lineart", "softedge", "normal", "openpose", "tile"} <= set(caps.control["kinds"])
    assert {e["name"]: e.get("variant") for e in caps.library["controlnet"]}[union] == "union"
    pixels = {name: decode_png(r.image.data) for name, r in
              dict(as_depth=as_depth, again=again, as_normal=as_normal, mixed=mixed).items()}
    assert np.array_equal(pixels["as_depth"], pixels["again"])              # the mode defaults to the name
    assert not np.array_equal(pixels["as_depth"], pixels["as_normal"])      # and the mode reaches the network
    assert not np.array_equal(pixels["as_depth"], pixels["mixed"])
    assert failed.value.code == ErrorCode.OUT_OF_RANGE and "openpose" in str(failed.value)


def test_a_flux_union_controlnet_takes_its_mode_beside_a_plain_one(kinds_server):
    def job(**nets):
        return quick_settings(model="tiny-flux", cfg=3.5, negative_prompt="", controlnets=nets)

    union = "tiny-union-flux"
    with Client(kinds_server.url) as c:
        runs = {name: decode_png(c.run(job(**nets), blockout_images(W, H)).image.data) for name, nets in {
            "as_depth": dict(depth=ControlNetSettings(1.0, model=union)),
            "again": dict(depth=ControlNetSettings(1.0, model=union, mode="depth")),
            "as_tile": dict(depth=ControlNetSettings(1.0, model=union, mode="tile")),
            "mixed": dict(depth=ControlNetSettings(1.0, model=union), canny=ControlNetSettings(0.8))}.items()}
        with pytest.raises(JobFailed) as failed:       # FLUX union models have no normal mode
            c.run(job(depth=ControlNetSettings(1.0, model=union, mode="normal")), blockout_images(W, H))
    assert np.array_equal(runs["as_depth"], runs["again"])
    assert not np.array_equal(runs["as_depth"], runs["as_tile"])
    assert not np.array_equal(runs["as_depth"], runs["mixed"])
    assert failed.value.code == ErrorCode.OUT_OF_RANGE and "low_quality" in str(failed.value)


def test_live_frames_feed_each_controlnet_its_named_input(kinds_server):
    live = quick_settings(steps=2, sampler="lcm", cfg=1.0, denoise=0.8, result_encoding="jpeg", controlnets={
        "tile": ControlNetSettings(0.6, model="tiny-tile"),
        "openpose": ControlNetSettings(1.0, model="tiny-openpose", input="pose")})
    color, _ = blockout_images(W, H)
    results = []
    with Client(kinds_server.url) as c:
        for pose in ([(255, 0, 0), (0, 0, 255)], [(0, 0, 255), (255, 0, 0)]):   # only the pose map changes
            results.append(live_result(c, c.send_live_frame(live, [color, flat_map("pose", pose)])).image.data)
    assert results[0] != results[1]                 # the sent map reached the live engine's openpose ControlNet
