"""Ready-made settings every client shares, so the CLI, Blender and Unreal mean the same by "live".

A live frame should come back in tens of milliseconds on a GPU: a few steps of a few-step sampler at CFG 1
(what LCM-LoRA, Hyper-SD and SD-Turbo models are distilled for), a JPEG back, the tiny decoder when the server
has one, no step previews, one image, no hires pass, no style reference (live frames take none yet). The
artist's prompt, seed, ControlNets, LoRAs, model and output size stay as they are.
"""
from typing import Optional

from .settings import JobSettings

LIVE_STEPS = 4
LIVE_SAMPLER = "lcm"                 # with an LCM-LoRA or LCM model; "euler_a_trailing" for Turbo models


def live_settings(base: JobSettings, capabilities=None, steps: int = LIVE_STEPS, denoise: Optional[float] = None,
                  sampler: Optional[str] = LIVE_SAMPLER) -> JobSettings:
    """`base` made into a live frame's settings. `capabilities` (the server's welcome) decides whether the tiny
    decoder and the sampler are offered; `sampler` None (or one the server lacks) keeps the artist's sampler,
    steps and CFG. `denoise` None keeps the artist's."""
    features = getattr(capabilities, "features", None) or []
    samplers = getattr(capabilities, "samplers", None)
    changes = dict(preview_every=0, result_encoding="jpeg", batch_size=1, hires=None, style=None,
                   fast_decode="fast_decode" in features)
    if sampler is not None and (samplers is None or sampler in samplers):
        changes.update(sampler=sampler, steps=int(steps), cfg=1.0)
    if denoise is not None:
        changes["denoise"] = float(denoise)
    return base.replace(**changes)
