"""Precision stays what the user chose: no job, LoRA, warm-up or status query changes a shared component."""
import numpy as np
import torch

from controlbridge.engine.acceleration import warm_up
from controlbridge.engine.generate import JobInputs, JobResources, generate
from controlbridge.engine.models import ModelSpec, load_model
from controlbridge.engine.pipelines import component_report
from controlbridge_protocol import ControlNetSettings
from helpers import quick_settings


def dtypes(model):
    return {name: (c["dtype"], c["device"]) for name, c in component_report(model).items()}


def test_a_bf16_model_stays_bf16_through_jobs_loras_and_warm_up(tmp_path):
    model = load_model(ModelSpec("tiny", dtype="bf16"), log=lambda m: None)
    before = dtypes(model)
    assert {"unet", "vae", "text_encoder", "controlnet:depth", "controlnet:canny", "taesd"} <= set(before)
    assert all(d == ("bfloat16", "cpu") for d in before.values()), before

    from controlbridge.demo_scene import render_blockout
    rgba, depth = render_blockout(96, 64)
    inputs = JobInputs(rgba[:, :, :3].copy(), depth)
    both = {"depth": ControlNetSettings(), "canny": ControlNetSettings(weight=0.5)}
    generate(model, quick_settings(steps=2, controlnets=both), inputs)
    generate(model, quick_settings(steps=2, fast_decode=True, cfg=1.0, controlnets=both), inputs)
    warm_up(model, log=lambda m: None)
    from test_lora_state import write_lora
    lora = write_lora(model, tmp_path / "style.safetensors")
    generate(model, quick_settings(steps=2), inputs, resources=JobResources(loras=[(str(lora), 0.8)]))
    generate(model, quick_settings(steps=2), inputs)        # LoRA unloaded again
    model.parallel_controlnets = "batched"                   # over a stacked copy of the ControlNets' weights
    generate(model, quick_settings(steps=2, controlnets=both), inputs)
    assert dtypes(model) == before


def test_a_weight_zero_controlnet_never_runs_and_a_closed_window_skips_steps(tiny_model):
    calls = {"depth": 0, "canny": 0}
    hooks = [tiny_model.controlnets[name].register_forward_hook(
        lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls]
    try:
        from controlbridge.demo_scene import render_blockout
        rgba, depth = render_blockout(96, 64)
        inputs = JobInputs(rgba[:, :, :3].copy(), depth)
        off = quick_settings(steps=4, cfg=1.0, controlnets={"depth": ControlNetSettings(),
                                                            "canny": ControlNetSettings(weight=0.0)})
        with_off = generate(tiny_model, off, inputs).image
        assert calls == {"depth": 4, "canny": 0}
        only_depth = generate(tiny_model, quick_settings(steps=4, cfg=1.0,
                                                         controlnets={"depth": ControlNetSettings()}), inputs).image
        assert np.array_equal(with_off, only_depth)           # weight 0 is the same as switched off

        calls.update(depth=0, canny=0)
        window = quick_settings(steps=4, cfg=1.0, controlnets={"depth": ControlNetSettings(start=0.0, end=0.5),
                                                               "canny": ControlNetSettings()})
        generate(tiny_model, window, inputs)
        assert calls == {"depth": 2, "canny": 4}              # depth only in the first half of the steps
    finally:
        for hook in hooks:
            hook.remove()


def test_the_status_answer_lists_every_component_dtype(server):
    from controlbridge_protocol import Client
    with Client(server.url) as c:
        status = c.status()
    [tiny] = [m for m in status.models if m["name"] == "tiny"]
    assert tiny["components"]["unet"] == {"dtype": "float32", "device": "cpu"}
    assert {"controlnet:depth", "controlnet:canny", "text_encoder", "vae"} <= set(tiny["components"])


def test_controlbridge_status_prints_each_loaded_components_dtype(server, capsys):
    from controlbridge.cli import main
    assert main(["status", "--url", server.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Server {server.url}: 0 job(s) queued; none of your jobs is running")
    lines = [line.split() for line in out.splitlines()]
    assert ["tiny", "(sd15)"] in lines
    assert ["unet", "float32", "cpu"] in lines and ["controlnet:depth", "float32", "cpu"] in lines
