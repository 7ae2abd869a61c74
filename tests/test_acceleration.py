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
