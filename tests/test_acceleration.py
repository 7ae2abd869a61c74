"""The speed-ups do not change what the model computes, beyond float tolerance."""
import numpy as np
import pytest
import torch

from controlbridge.engine.acceleration import accelerate, warm_up
from controlbridge.engine.generate import JobInputs, generate
from controlbridge.engine.models import ModelSpec, load_model
from helpers import quick_settings


def test_fast_path_switches_keep_the_result(tiny_model):
    from controlbridge.demo_scene import render_blockout
    rgba, depth = render_blockout(160, 96)
    inputs = JobInputs(rgba[:, :, :3].copy(), depth)
    settings = quick_settings(steps=6, cfg=6.0, denoise=0.8)
    reference = generate(tiny_model, settings, inputs).image

    fast = load_model(ModelSpec("tiny"), log=lambda m: None)
    accelerate(fast, log=lambda m: None)
    assert warm_up(fast, log=lambda m: None) > 0
    first = generate(fast, settings, inputs).image           # prompt embeddings computed
    second = generate(fast, settings, inputs).image          # ... and taken from the cache
    assert np.array_equal(first, second)
    diff = np.abs(first.astype(int) - reference.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.max(), diff.mean())


def test_cuda_graphs_on_a_cpu_model_say_they_need_cuda_before_anything_changes():
    model = load_model(ModelSpec("tiny"), log=lambda m: None)
    with pytest.raises(ValueError, match="--cuda-graphs needs a CUDA device; this model runs on cpu"):
        accelerate(model, log=lambda m: None, cuda_graphs=True)
    assert not isinstance(model.base.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert model.base.unet.conv_in.weight.is_contiguous()        # not even the memory layout changed


def test_controlnet_streams_on_a_cpu_model_say_they_need_cuda():
    model = load_model(ModelSpec("tiny"), log=lambda m: None)
    with pytest.raises(ValueError, match="--controlnet-streams needs a CUDA device; this model runs on cpu"):
        accelerate(model, log=lambda m: None, controlnet_streams=True)
    assert not model.controlnet_streams


def _two_controlnet_job(model):
    from controlbridge.demo_scene import render_blockout
    rgba, depth = render_blockout(128, 128)
    return generate(model, quick_settings(steps=3, cfg=1.0, denoise=0.7), JobInputs(rgba[:, :, :3].copy(), depth))


def test_controlnet_streams_keep_the_pixels_and_get_their_own_pipeline(tiny_model):
    # On a CPU the ControlNets then run one after the other: what is checked here is that the switch builds its
    # own pipeline and changes nothing else. The overlap itself needs CUDA (the test below, and speed.py row b).
    reference = _two_controlnet_job(tiny_model).image
    tiny_model.controlnet_streams = True
    try:
        on = _two_controlnet_job(tiny_model)
        from controlbridge.engine.generate import pipeline_for
        assert pipeline_for(tiny_model, quick_settings()).controlnet.side_streams
    finally:
        tiny_model.controlnet_streams = False
    assert not pipeline_for(tiny_model, quick_settings()).controlnet.side_streams
    assert np.array_equal(on.image, reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA streams need a CUDA device")
def test_controlnets_on_cuda_streams_give_the_same_pixels():
    model = load_model(ModelSpec("tiny", device="cuda"), log=lambda m: None)
    sequential = _two_controlnet_job(model).image
    accelerate(model, log=lambda m: None, controlnet_streams=True)
    streamed = _two_controlnet_job(model).image
    accelerate(model, log=lambda m: None)
    again = _two_controlnet_job(model).image
    assert np.abs(streamed.astype(int) - again.astype(int)).max() <= 1
    assert np.abs(sequential.astype(int) - again.astype(int)).max() <= 2     # accelerate's layout changes
