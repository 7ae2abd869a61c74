"""Real jobs through a real server over a real websocket, with the tiny model."""
import json

import numpy as np
import torch
from PIL import Image

from controlbridge_protocol import Accepted, ImageAttachment, Progress, Result
from controlbridge.server.outputs import read_job
from helpers import blockout_images, decode_png, quick_settings


def test_job_round_trip_reports_progress_and_saves_before_announcing(client, server):
    events = []
    result = client.run(quick_settings(steps=6, preview_every=2), blockout_images(), events.append)

    accepted = [e for e in events if isinstance(e, Accepted)]
    progress = [e for e in events if isinstance(e, Progress)]
    assert len(accepted) == 1 and accepted[0].queue_position == 0
    assert [p.step for p in progress] == list(range(1, 7)) and {p.total for p in progress} == {6}
    previews = [p.preview for p in progress if p.preview is not None]
    assert len(previews) == 3 and all(p.encoding == "jpeg" for p in previews)

    assert isinstance(result, Result) and result.seed == 7
    assert (result.image.width, result.image.height) == (160, 96)
    saved = server.server.config.output_dir.resolve()
    path = saved / result.saved_path.split("/")[-1]
    assert path.is_file() and path.read_bytes() == result.image.data   # the announced file is the one on disk
    meta = read_job(path)
    assert meta["settings"]["seed"] == 7 and meta["settings"]["prompt"] == "a house"
    assert set(meta["inputs"]) == {"color", "depth"}
    assert (path.parent / meta["inputs"]["depth"]["file"]).is_file()
    assert "Steps: 6, Sampler: euler" in Image.open(path).text["parameters"]
    t = result.timings                                                   # where the server's time went, in ms
    assert set(t) == {"decode", "queued", "load", "model", "save", "total"} and t["model"] > 0 and t["save"] > 0
    assert sum(v for k, v in t.items() if k != "total") <= t["total"] + 1.0


def test_same_seed_same_pixels_other_seed_other_pixels(client):
    a = decode_png(client.run(quick_settings(seed=11), blockout_images()).image.data)
    b = decode_png(client.run(quick_settings(seed=11), blockout_images()).image.data)
    c = decode_png(client.run(quick_settings(seed=12), blockout_images()).image.data)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_random_seed_is_reported_and_reproduces(client):
    first = client.run(quick_settings(seed=-1), blockout_images())
    assert 0 <= first.seed < 2**32 and first.settings.seed == first.seed
    again = client.run(quick_settings(seed=first.seed), blockout_images())
    assert np.array_equal(decode_png(first.image.data), decode_png(again.image.data))


def test_result_comes_back_at_the_requested_size_whatever_the_aspect(client):
    images = blockout_images(250, 141)            # 1000x563 scaled down: an odd, non-square size
    assert (client.run(quick_settings(), images).image.width, 141) == (250, 141)
    sized = client.run(quick_settings(width=320, height=180), images)
    assert (sized.image.width, sized.image.height) == (320, 180)
    assert decode_png(sized.image.data).shape == (180, 320, 3)


def test_fast_result_encodings(client):
    result = client.run(quick_settings(result_encoding="jpeg"), blockout_images())
    assert result.image.encoding == "jpeg" and result.image.data[:2] == b"\xff\xd8"
    assert result.saved_path.endswith(".png")      # the saved copy stays lossless


def test_server_result_equals_the_diffusers_pipeline_called_directly(client, model_cache, tmp_path):
    """Parity: the server runs the real diffusers ControlNet img2img pipeline, nothing else."""
    from diffusers import ControlNetModel, DPMSolverMultistepScheduler, StableDiffusionControlNetImg2ImgPipeline
    from controlbridge.engine.tiny_model import ensure_tiny_model

    rng = np.random.default_rng(3)
    size = 128                                    # the tiny model's native size: no resizing on either side
    color = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    depth_map = Image.fromarray(np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))).convert("RGB")
    edges = Image.fromarray((rng.random((size, size)) > 0.9).astype(np.uint8) * 255).convert("RGB")

    def png(name, img):
        path = tmp_path / f"{name}.png"
        img.save(path)
        return ImageAttachment.encoded(name, "png", size, size, path.read_bytes())

    settings = quick_settings(seed=1234, steps=5, cfg=6.5, sampler="dpmpp_2m", denoise=0.7,
                              prompt="a red house", negative_prompt="fog")
    settings.controlnets["depth"].weight = 0.8
    settings.controlnets["canny"].end = 0.6
    served = decode_png(client.run(settings, [png("color", color), png("depth", depth_map),
                                              png("canny", edges)]).image.data)

    tiny = ensure_tiny_model()
    controlnets = [ControlNetModel.from_pretrained(tiny.controlnets[n]) for n in ("canny", "depth")]
    pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
        tiny.base, controlnet=controlnets, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++",
                                                             solver_order=2)
    direct = pipe(prompt="a red house", negative_prompt="fog", image=color, control_image=[edges, depth_map],
                  strength=0.7, num_inference_steps=5, guidance_scale=6.5,
                  controlnet_conditioning_scale=[1.0, 0.8], control_guidance_start=[0.0, 0.0],
                  control_guidance_end=[0.6, 1.0], generator=torch.Generator("cpu").manual_seed(1234),
                  output_type="pil").images[0]
    diff = np.abs(served.astype(int) - np.asarray(direct).astype(int))
    assert diff.max() <= 1, f"server and direct pipeline differ by up to {diff.max()} levels"


def test_controlnets_can_be_switched_off_and_change_the_result(client):
    images = blockout_images()
    both = decode_png(client.run(quick_settings(), images).image.data)
    depth_only = quick_settings()
    del depth_only.controlnets["canny"]
    none = quick_settings(controlnets={})
    a = decode_png(client.run(depth_only, images).image.data)
    b = decode_png(client.run(none, images).image.data)
    assert not np.array_equal(both, a) and not np.array_equal(a, b)
    color_only = [img for img in images if img.name == "color"]
    assert client.run(none, color_only).image.width == 160   # plain img2img needs no depth


def test_welcome_lists_what_the_server_offers(client):
    caps = client.capabilities
    assert caps.default_model == "tiny" and caps.models[0]["family"] == "sd15"
    assert caps.controlnets == ["canny", "depth"]
    assert {"euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "lcm"} <= set(caps.samplers)
    assert caps.limits["max_steps"] == 150 and caps.token_required is False
    assert json.loads(json.dumps(caps.to_dict())) == caps.to_dict()


def test_status_ping(client):
    status = client.status()
    assert status.queued == 0 and status.your_jobs == []
