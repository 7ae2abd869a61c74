"""Speed-ups that keep what the model computes (to float tolerance), applied once at load.

- channels_last memory layout for every convolutional module (faster cuDNN kernels on NVIDIA GPUs);
- fused QKV projections in attention (one matmul instead of three);
- optionally torch.compile of the UNet and ControlNets (`--compile`; best with fixed shapes, as in live mode),
  and with CUDA graphs (`--cuda-graphs`: torch's "reduce-overhead" mode, one graph replay per step instead of
  thousands of kernel launches; each frame size is recorded once, which the live session's warm-up does). Fused
  live LoRAs are copied into the weights in place, so recorded graphs keep pointing at the right memory.
  Neither has been measured yet (no GPU here): see benchmarks/RESULTS.md;
- optionally two or more ControlNets side by side, on CUDA streams or batched (`--parallel-controlnets`,
  engine/parallel_controlnets.py), off until a GPU measurement says which pays;
- a warm-up job at start-up, so the first artist's frame does not pay for kernel selection or compilation.
SDPA attention is PyTorch's default in diffusers already. Options that change the output (step caching,
fp8 weights) are not here: they would have to be reported separately and be off by default.
"""
import time
from typing import Callable

import numpy as np
import torch

from .models import LoadedModel


def accelerate(model: LoadedModel, compile_models: bool = False, log: Callable[[str], None] = print,
               cuda_graphs: bool = False, parallel_controlnets: str = "") -> None:
    from .parallel_controlnets import MODES
    if parallel_controlnets not in ("", *MODES):
        raise ValueError(f"--parallel-controlnets is {', '.join(MODES)}, not {parallel_controlnets!r}")
    for flag, wanted in (("--cuda-graphs", cuda_graphs),
                         ("--parallel-controlnets streams", parallel_controlnets == "streams")):
        if wanted and not model.device.startswith("cuda"):
            raise ValueError(f"{flag} needs a CUDA device; this model runs on {model.device}")
    model.parallel_controlnets = parallel_controlnets
    base = model.base
    modules = [base.unet, base.vae, *model.controlnets.values()] + ([model.taesd] if model.taesd else [])
    for module in modules:
        module.to(memory_format=torch.channels_last)
        if hasattr(module, "fuse_qkv_projections"):
            module.fuse_qkv_projections()
    if model.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if compile_models or cuda_graphs:
        mode = "reduce-overhead" if cuda_graphs else "max-autotune-no-cudagraphs"
        log(f"Compiling the UNet and ControlNets (torch.compile, {mode}) ...")
        base.unet = torch.compile(base.unet, mode=mode)
        for name, controlnet in model.controlnets.items():
            model.controlnets[name] = torch.compile(controlnet, mode=mode)
    model.prompts.clear()


def warm_up(model: LoadedModel, log: Callable[[str], None] = print) -> float:
    """One small job through every ControlNet at the native size; returns the seconds it took."""
    from controlbridge_protocol import ControlNetSettings, JobSettings

    from .generate import JobInputs, generate
    size = model.native_resolution
    start = time.perf_counter()
    log(f"Warming up at {size}x{size} ...")
    color = np.full((size, size, 3), 128, np.uint8)
    depth = np.linspace(1.0, 10.0, size * size, dtype=np.float32).reshape(size, size)
    settings = JobSettings(prompt="warm-up", seed=0, steps=2, cfg=5.0, sampler="euler", denoise=1.0,
                           controlnets={name: ControlNetSettings() for name in model.controlnets})
    generate(model, settings, JobInputs(color, depth))
    if model.taesd is not None:
        generate(model, settings.replace(fast_decode=True, cfg=1.0), JobInputs(color, depth))
    seconds = time.perf_counter() - start
    log(f"Warm-up done in {seconds:.1f} s")
    return seconds
