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
    with pytest.raises(ValueError, match="--parallel-controlnets streams needs a CUDA device; this model runs on cpu"):
        accelerate(model, log=lambda m: None, parallel_controlnets="streams")
    with pytest.raises(ValueError, match="--parallel-controlnets is streams, batched, not 'both'"):
        accelerate(model, log=lambda m: None, parallel_controlnets="both")
    assert model.parallel_controlnets == ""


def _two_controlnet_job(model, **changes):
    from controlbridge.demo_scene import render_blockout
    rgba, depth = render_blockout(128, 128)
    settings = quick_settings(steps=3, cfg=2.0, denoise=0.7, **changes)
    return generate(model, settings, JobInputs(rgba[:, :, :3].copy(), depth)).image


@pytest.mark.parametrize("parallel", ["batched", "streams"])
def test_parallel_controlnets_give_the_sequential_pixels(tiny_model, parallel):
    # batched: depth and canny (one architecture) in one vmapped call over their stacked weights, so the depth
    # ControlNet's own forward runs only in the steps after canny's window; streams on a CPU: one after the
    # other (the overlap needs CUDA: the test below, and speed.py row b).
    from controlbridge.engine.generate import pipeline_for
    from controlbridge_protocol import ControlNetSettings
    windows = {"depth": ControlNetSettings(weight=0.8), "canny": ControlNetSettings(weight=1.2, end=0.5)}
    depth_calls, depth = [], tiny_model.controlnets["depth"]
    # (a stack's template is a copy of the module, hooks included: count the module's own calls only)
    hook = depth.register_forward_hook(lambda module, *_: depth_calls.append(1) if module is depth else None)
    try:
        reference = _two_controlnet_job(tiny_model, controlnets=windows)
        sequential_calls, depth_calls[:] = len(depth_calls), []
        tiny_model.parallel_controlnets = parallel
        side_by_side = _two_controlnet_job(tiny_model, controlnets=windows)
        assert pipeline_for(tiny_model, quick_settings()).controlnet.parallel == parallel   # a pipeline of its own
    finally:
        tiny_model.parallel_controlnets = ""
        hook.remove()
    if parallel == "batched":
        assert 0 < len(depth_calls) < sequential_calls, (len(depth_calls), sequential_calls)
    else:
        assert len(depth_calls) == sequential_calls
    assert pipeline_for(tiny_model, quick_settings()).controlnet.parallel == ""
    difference = np.abs(side_by_side.astype(int) - reference.astype(int))
    assert difference.max() <= 1, difference.max()


def test_controlnets_of_different_architectures_are_not_stacked(tiny_model):
    from controlbridge.engine.parallel_controlnets import StackedControlNets
    sdxl = load_model(ModelSpec("tiny-sdxl"), log=lambda m: None)
    assert StackedControlNets().get([tiny_model.controlnets["depth"], sdxl.controlnets["depth"]]) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA streams need a CUDA device")
@pytest.mark.parametrize("parallel", ["streams", "batched"])
def test_parallel_controlnets_on_cuda_give_the_sequential_pixels(parallel):
    model = load_model(ModelSpec("tiny", device="cuda"), log=lambda m: None)
    accelerate(model, log=lambda m: None)
    sequential = _two_controlnet_job(model)
    accelerate(model, log=lambda m: None, parallel_controlnets=parallel)
    side_by_side = _two_controlnet_job(model)
    assert np.abs(side_by_side.astype(int) - sequential.astype(int)).max() <= 1
