"""Stream batch (StreamDiffusion's idea), an option of a live session: the denoising steps of consecutive frames
run as ONE batched UNet (+ ControlNets) call, one frame out per call.

With N run steps, a session keeps N-1 frames in flight: slot k holds an earlier frame that has had k+1 of its N
steps, with its own control images. Each new frame enters at the first step; one call advances every frame in the
batch by one step, each at its own timestep; the oldest leaves finished and is decoded. On a GPU one batch-N call
costs well under N batch-1 calls at live sizes (launches and small kernels dominate there), so frames per second
rise. The cost is latency: the frame shown is the one sent N-1 frames earlier (a moving camera's image trails by
N-1 frames), so it is off by default and pays only when frames stream continuously.

Each frame follows exactly the one-shot path's trajectory: the same start latents (the pipeline's own
`prepare_latents` with the session seed), the same timesteps and the same DDIM update (the scheduler's own `step`
per frame, stateless for DDIM; other samplers keep per-run state and cannot step frames at different timesteps).
A session's first frame, or the first after its settings changed, runs its N steps one after another, returns
at once, and leaves its intermediate latents as the slots: nothing waits for the stream to fill.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, List, Optional

import torch

from controlbridge_protocol import JobSettings

from .generate import JobCancelled, active_controlnets

SAMPLERS = ("ddim", "ddim_trailing")
MAX_SESSIONS = 8          # live sessions whose frames in flight are kept (least recently used dropped)


def stream_batch_problem(settings: JobSettings, family: str) -> Optional[str]:
    """Why this job cannot use stream batch, in words for the user; None when it can (or does not ask)."""
    if not settings.stream_batch:
        return None
    if family != "sd15":
        return f"stream_batch is available for SD1.5-family models; this one is {family}"
    if settings.sampler not in SAMPLERS:
        return (f"stream_batch steps every frame of the batch at its own timestep, which the {settings.sampler} "
                f"sampler cannot: use {' or '.join(SAMPLERS)}")
    if settings.cfg > 1.0:
        return f"stream_batch needs cfg 1 (few-step live models), not {settings.cfg:g}"
    if settings.hires is not None:
        return "stream_batch has no hires pass"
    return None


@dataclass
class _Slot:
    latents: torch.Tensor            # 1x4xhxw, after `stage` of the N steps
    controls: List[torch.Tensor]     # the frame's control images, one 1x3xHxW per active ControlNet


class StreamSessions:
    """The frames in flight of each live session that asked for stream batch (thread: the device's)."""

    def __init__(self, size: int = MAX_SESSIONS):
        self.size = size
        self._sessions: "OrderedDict[Hashable, tuple]" = OrderedDict()   # session -> (settings key, [_Slot])

    def render(self, session: Hashable, key: Hashable, pipe, model, settings: JobSettings, prompts: dict,
               color: torch.Tensor, maps: dict, is_cancelled: Callable[[], bool] = lambda: False) -> torch.Tensor:
        """One frame in, one frame out (1x3xHxW in [0, 1]): the frame sent N-1 calls ago once the stream is
        full. `key` names everything that shapes a frame; another key starts the stream afresh."""
        held_key, slots = self._sessions.pop(session, (None, []))
        if held_key != key:
            slots = []
        with torch.inference_mode():
            image, slots = _advance(pipe, model, settings, prompts, color, maps, slots, is_cancelled)
        self._sessions[session] = (key, slots)
        while len(self._sessions) > self.size:
            self._sessions.popitem(last=False)
        return image

    def end(self, session: Hashable) -> None:
        self._sessions.pop(session, None)


def _advance(pipe, model, settings, prompts, color, maps, slots, is_cancelled):
    device = color.device
    height, width = color.shape[-2:]
    pipe.scheduler.set_timesteps(settings.steps, device=device)
    timesteps, _ = pipe.get_timesteps(settings.steps, settings.denoise, device)
    n = len(timesteps)
    embeds = prompts["prompt_embeds"]
    # The new frame's start, exactly as the pipeline makes it: VAE encode, then noise from the session seed.
    image = pipe.image_processor.preprocess(color, height=height, width=width).to(dtype=torch.float32)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    latents = pipe.prepare_latents(image, timesteps[:1], 1, 1, embeds.dtype, device, generator)
    names = active_controlnets(settings)
    controls = [pipe.prepare_control_image(image=maps[name][None], width=width, height=height, batch_size=1,
                                           num_images_per_prompt=1, device=device, dtype=pipe.controlnet.dtype,
                                           do_classifier_free_guidance=False, guess_mode=False)
                for name in names] if names else []
    fresh = _Slot(latents, controls)
    if len(slots) != n - 1:           # a new stream: this frame's N steps one after another fill it
        slots, current = [], fresh
        for stage in range(n):
            if is_cancelled():
                raise JobCancelled()
            current = _Slot(_step(pipe, settings, embeds, [current], timesteps[stage:stage + 1], n, stage)[0],
                            controls)
            if stage < n - 1:
                slots.append(current)
        return _decode(pipe, current.latents), slots
    if is_cancelled():
        raise JobCancelled()
    batch = [fresh] + slots           # batch[k] is at step k
    stepped = _step(pipe, settings, embeds, batch, timesteps, n, 0)
    return _decode(pipe, stepped[-1]), [_Slot(x, slot.controls) for x, slot in zip(stepped[:-1], batch[:-1])]


def _step(pipe, settings, embeds, batch, timesteps, n, first_stage) -> List[torch.Tensor]:
    """One UNet (+ ControlNets) call over the batch, batch[k] at timesteps[k] = step first_stage + k of n; each
    latent then takes the scheduler's step from its own timestep."""
    latents = torch.cat([slot.latents for slot in batch])
    size = len(batch)
    hidden = embeds.expand(size, -1, -1)
    down = mid = None
    names = active_controlnets(settings)
    if names:
        scales = []
        for j, name in enumerate(names):
            cn = settings.controlnets[name]
            # diffusers' window rule, per frame: ControlNet j acts at step i when start <= i/n and (i+1)/n <= end
            keep = [1.0 - float(i / n < cn.start or (i + 1) / n > cn.end)
                    for i in range(first_stage, first_stage + size)]
            scale = [cn.weight * k for k in keep]
            scales.append(scale[0] if len(set(scale)) == 1 else
                          torch.tensor(scale, device=latents.device, dtype=latents.dtype).view(-1, 1, 1, 1))
        conds = [torch.cat([slot.controls[j] for slot in batch]) for j in range(len(names))]
        down, mid = pipe.controlnet(latents, timesteps, encoder_hidden_states=hidden, controlnet_cond=conds,
                                    conditioning_scale=scales, guess_mode=False, return_dict=False)
    noise = pipe.unet(latents, timesteps, encoder_hidden_states=hidden, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid, return_dict=False)[0]
    return [pipe.scheduler.step(noise[k:k + 1], timesteps[k], latents[k:k + 1], eta=0.0, return_dict=False)[0]
            for k in range(size)]


def _decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pt")
