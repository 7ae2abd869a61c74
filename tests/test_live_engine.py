"""The live engine: pipelines built once, the same pixels as one-shot jobs, precision and LoRAs that stay put."""
import numpy as np
import pytest
import torch

from controlbridge.engine.generate import JobInputs, JobResources, generate
from controlbridge.engine.live_engine import LiveEngine
from controlbridge.engine.models import ModelSpec, load_model
from controlbridge.engine.pipelines import component_report
from controlbridge.engine.samplers import SAMPLERS
from helpers import quick_settings
from test_lora_state import write_lora

LIVE = dict(steps=4, denoise=0.6, cfg=1.0, sampler="euler")


@pytest.fixture(scope="module")
def model():
    return load_model(ModelSpec("tiny"), log=lambda m: None)


def scene(width, height, shift=0):
    from controlbridge.demo_scene import render_blockout
    rgba, depth = render_blockout(width, height)
    return JobInputs(np.roll(rgba[:, :, :3], shift, axis=1).copy(), np.roll(depth, shift, axis=1).copy())


def test_live_frames_and_jobs_build_each_pipeline_once(model):
    engine, settings = LiveEngine(), quick_settings(**LIVE)
    model.pipelines.clear()
    before = model.pipelines.builds
    frames = [engine.render(model, settings, scene(128, 128, shift)).image for shift in range(5)]
    assert model.pipelines.builds == before + 1                      # one pipeline for five frames
    assert not np.array_equal(frames[0], frames[4])                  # and they are five different frames
    for seed in (1, 2, 3):
        generate(model, quick_settings(steps=3, seed=seed), scene(96, 64))
    assert model.pipelines.builds == before + 2                      # one more for three jobs


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_a_reused_pipeline_gives_a_fresh_ones_pixels(model, sampler):
    settings = quick_settings(steps=4, sampler=sampler, seed=5, denoise=0.8)
    reused = [generate(model, settings, scene(96, 64)).image for _ in range(2)]
    model.pipelines.clear()                                          # a freshly built pipeline and scheduler
    fresh = generate(model, settings, scene(96, 64)).image
    assert np.array_equal(reused[0], reused[1]) and np.array_equal(reused[1], fresh)


@pytest.mark.parametrize("on_device", [False, True], ids=["host-ops", "device-ops"])
def test_live_pixels_match_the_one_shot_path_at_the_working_size(model, on_device):
    # The tiny model works at 128x128: a 128x128 frame needs no resize; on the device path the depth
    # normalization is torch's (equal to numpy's to 1e-6).
    settings = quick_settings(**LIVE, seed=11)
    inputs = scene(128, 128)
    one_shot = generate(model, settings, inputs).image.astype(int)
    live = LiveEngine(on_device=on_device).render(model, settings, inputs).image.astype(int)
    assert live.shape == one_shot.shape == (128, 128, 3)
    # Float rounding (a tensor instead of a PIL image into the pipeline) moves a handful of values by one level.
    difference = np.abs(live - one_shot)
    assert difference.max() <= 1 and difference.mean() < 0.01, (difference.max(), difference.mean())


@pytest.mark.parametrize("on_device", [False, True], ids=["host-ops", "device-ops"])
def test_live_pixels_with_resizing_stay_within_a_few_levels_of_one_shot(model, on_device):
    # 320x180 in, 320x180 out: crop-free, the model works at 168x96 and the result is scaled up; live frames
    # use bilinear/bicubic (fast) filters where jobs use Lanczos.
    settings = quick_settings(**LIVE, seed=11)
    inputs = scene(320, 180)
    one_shot = generate(model, settings, inputs).image.astype(float)
    live = LiveEngine(on_device=on_device).render(model, settings, inputs)
    assert live.image.shape == (180, 320, 3)
    difference = np.abs(live.image.astype(float) - one_shot)
    assert difference.mean() < 3.0, difference.mean()
    assert set(live.timings) == {"prepare", "model", "output"} and live.timings["model"] > 0


@pytest.mark.parametrize("size, working", [((512, 512), (128, 128)), ((1920, 1080), (680, 384))])
def test_live_frames_shrink_with_an_area_filter(size, working):
    # What the model sees of a live frame: fine detail averages to its mean (no aliasing, as a point or
    # bilinear sample would give), and a smooth image keeps its values, at integer and fractional factors.
    import cv2
    from controlbridge.imaging.codecs import resize_rgb
    (w, h), (ww, wh) = size, working
    checker = ((np.indices((h, w)).sum(axis=0) % 2) * 255).astype(np.uint8)
    shrunk = resize_rgb(np.repeat(checker[:, :, None], 3, axis=2), ww, wh, fast=True)
    assert shrunk.shape == (wh, ww, 3) and np.abs(shrunk.astype(int) - 127.5).max() <= 1.5
    ramp = np.broadcast_to(np.linspace(0, 255, w)[None, :, None], (h, w, 3)).round().astype(np.uint8)
    area = cv2.resize(ramp, (ww, wh), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(resize_rgb(ramp, ww, wh, fast=True).astype(int) - area).max() <= 1


def test_precision_survives_the_live_path_and_its_fused_loras(tmp_path):
    model = load_model(ModelSpec("tiny", dtype="bf16"), log=lambda m: None)
    lora = JobResources(loras=[(str(write_lora(model, tmp_path / "a.safetensors")), 0.8)])
    engine = LiveEngine()
    engine.warm_up(model, quick_settings(**LIVE), 160, 96)
    for shift in range(2):
        engine.render(model, quick_settings(**LIVE), scene(160, 96, shift), lora)
    engine.render(model, quick_settings(**LIVE, fast_decode=True), scene(160, 96))
    dtypes = {name: c["dtype"] for name, c in component_report(model).items()}
    assert set(dtypes.values()) == {"bfloat16"}, dtypes


def test_fused_live_loras_load_once_match_unfused_and_restore_the_base_bitwise(model, tmp_path):
    original = {k: v.clone() for k, v in model.base.unet.state_dict().items()}
    lora = JobResources(loras=[(str(write_lora(model, tmp_path / "b.safetensors")), 1.0)])
    settings, inputs = quick_settings(**LIVE, seed=3), scene(128, 128)
    plain = generate(model, settings, inputs).image.astype(int)
    layered = generate(model, settings, inputs, resources=lora).image.astype(int)     # LoRA layers (a job)
    loads = model.loras.loads
    engine = LiveEngine()
    fused = [engine.render(model, settings, inputs, lora).image.astype(int) for _ in range(3)]
    assert model.loras.fused and model.loras.loads == loads + 1       # fused once for the whole session
    lora_effect = np.abs(layered - plain).mean()
    assert lora_effect > 0.5                                          # the LoRA does change the frame
    assert np.abs(fused[0] - layered).mean() < lora_effect / 5        # and fusing computes the same LoRA
    engine.render(model, settings, inputs)                            # the session drops its LoRA
    assert all(torch.equal(original[k], v) for k, v in model.base.unet.state_dict().items())
    assert np.array_equal(generate(model, settings, inputs).image.astype(int), plain)


def test_loras_take_effect_with_fused_qkv_projections(tmp_path):
    # Acceleration fuses to_q/to_k/to_v into one projection; a LoRA on to_q/to_v must still change the image
    # exactly as it does without acceleration, and leave the accelerated base as it was.
    from controlbridge.engine.acceleration import accelerate
    plain_model = load_model(ModelSpec("tiny"), log=lambda m: None)
    fast_model = load_model(ModelSpec("tiny"), log=lambda m: None)
    accelerate(fast_model, log=lambda m: None)
    path = str(write_lora(plain_model, tmp_path / "c.safetensors"))
    settings, inputs = quick_settings(steps=3, seed=4), scene(96, 64)
    base_fast = generate(fast_model, settings, inputs).image.astype(int)
    for fuse in (False, True):
        lora = JobResources(loras=[(path, 1.0)])
        if fuse:      # the live path resizes differently from the one-shot path: compare live with live
            want = LiveEngine().render(plain_model, settings, inputs, lora).image.astype(int)
            got = LiveEngine().render(fast_model, settings, inputs, lora).image.astype(int)
            base = LiveEngine().render(fast_model, settings, inputs).image.astype(int)
        else:
            want = generate(plain_model, settings, inputs, resources=lora).image.astype(int)
            got = generate(fast_model, settings, inputs, resources=lora).image.astype(int)
            base = base_fast
        lora_effect = np.abs(want - base).mean()
        assert lora_effect > 0.5 and np.abs(got - want).mean() < lora_effect / 5, fuse
        assert np.array_equal(generate(fast_model, settings, inputs).image.astype(int), base_fast)
