"""One ControlNet img2img job on a loaded model: inputs at the working size in, pixels at the output size out."""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np
import torch
from PIL import Image

from controlbridge_protocol import JobSettings

from ..imaging.canny import canny_edges
from ..imaging.codecs import resize_map, resize_rgb
from ..imaging.depth import depth_to_control
from .models import LoadedModel
from .previews import latent_preview
from .resolution import center_crop_box, working_size
from .samplers import make_scheduler


class JobCancelled(Exception):
    """Raised from the step callback to stop the pipeline within one step."""


@dataclass
class JobInputs:
    """Decoded attachments at the color image's size."""

    color: np.ndarray                          # uint8 HxWx3
    depth_raw: Optional[np.ndarray] = None     # float32 HxW, scene units
    depth_far: Optional[float] = None
    control_maps: Dict[str, np.ndarray] = field(default_factory=dict)   # ready-made maps, float32 HxWx3 in [0, 1]


@dataclass
class JobOutput:
    image: np.ndarray                          # uint8 HxWx3 at the output size
    working_size: tuple
    control_images: Dict[str, np.ndarray]      # uint8 HxWx3 at the working size, as the ControlNets saw them


StepCallback = Callable[[int, int, Optional[np.ndarray]], None]   # (step, total, preview or None)


def output_size(settings: JobSettings, inputs: JobInputs) -> tuple:
    h, w = inputs.color.shape[:2]
    return (settings.width or w, settings.height or h)


def prepare_inputs(model: LoadedModel, settings: JobSettings, inputs: JobInputs):
    """(color at the working size, {controlnet name: float32 HxWx3 map}, working size).

    Color and control maps are cropped to the output's aspect ratio and resized together, so they stay aligned.
    """
    out_w, out_h = output_size(settings, inputs)
    work_w, work_h = working_size(out_w, out_h, model.native_resolution, model.size_multiple)
    h, w = inputs.color.shape[:2]
    x0, y0, x1, y1 = center_crop_box(w, h, out_w / out_h)

    def fit(a):
        return a[y0:y1, x0:x1]

    color = resize_rgb(np.ascontiguousarray(fit(inputs.color)), work_w, work_h)
    maps = {}
    for name in settings.controlnets:
        if name in inputs.control_maps:
            maps[name] = resize_map(np.ascontiguousarray(fit(inputs.control_maps[name])), work_w, work_h)
        elif name == "depth" and inputs.depth_raw is not None:
            # Normalize at full resolution (robust range over every pixel), then resize the map.
            depth = depth_to_control(fit(inputs.depth_raw), inputs.depth_far)
            maps[name] = np.repeat(resize_map(depth, work_w, work_h)[:, :, None], 3, axis=2)
        elif name == "canny":
            # Edges at the working size stay one pixel wide, as the ControlNet expects.
            edges = canny_edges(color, settings.canny_low, settings.canny_high).astype(np.float32) / 255.0
            maps[name] = np.repeat(edges[:, :, None], 3, axis=2)
        else:
            raise KeyError(name)   # the server's validation guarantees every enabled ControlNet has an input
    return color, maps, (work_w, work_h)


def pipeline_for(model: LoadedModel, settings: JobSettings):
    """A pipeline sharing the loaded components, with this job's scheduler and ControlNets (diffusers' from_pipe)."""
    from diffusers import (StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline,
                           StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline)
    parts = {"scheduler": make_scheduler(settings.sampler, model.base.scheduler.config),
             # from_pipe would silently drop a tiny autoencoder, so the VAE is always passed explicitly.
             "vae": model.taesd if settings.fast_decode else model.base.vae}
    names = list(settings.controlnets)
    xl = model.family == "sdxl"
    if not names:
        cls = StableDiffusionXLImg2ImgPipeline if xl else StableDiffusionImg2ImgPipeline
    else:
        cls = StableDiffusionXLControlNetImg2ImgPipeline if xl else StableDiffusionControlNetImg2ImgPipeline
        cns = [model.controlnets[n] for n in names]
        parts["controlnet"] = cns[0] if len(cns) == 1 else cns
    pipe = cls.from_pipe(model.base, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def control_arguments(settings: JobSettings, maps: Dict[str, np.ndarray]) -> dict:
    """The pipeline keyword arguments for the enabled ControlNets (scalars for one, lists for several)."""
    names = list(settings.controlnets)
    if not names:
        return {}
    cns = [settings.controlnets[n] for n in names]
    # One (1, H, W, 3) array per ControlNet: diffusers reads a bare HxWx3 array as a batch of H images.
    args = {"control_image": [maps[n][None] for n in names],
            "controlnet_conditioning_scale": [c.weight for c in cns],
            "control_guidance_start": [c.start for c in cns],
            "control_guidance_end": [c.end for c in cns]}
    if len(names) == 1:
        args = {k: v[0] for k, v in args.items()}
    return args


def generate(model: LoadedModel, settings: JobSettings, inputs: JobInputs,
             on_step: Optional[StepCallback] = None, is_cancelled: Callable[[], bool] = lambda: False) -> JobOutput:
    """Run the job. `settings.seed` must already be resolved (not -1)."""
    color, maps, (work_w, work_h) = prepare_inputs(model, settings, inputs)
    pipe = pipeline_for(model, settings)

    def step_end(pipe_, i, t, tensors):
        if is_cancelled():
            raise JobCancelled()
        if on_step is not None:
            step = i + 1
            want_preview = settings.preview_every > 0 and (step % settings.preview_every == 0)
            preview = latent_preview(tensors["latents"], model.family, model.taesd) if want_preview else None
            on_step(step, pipe_.num_timesteps, preview)
        return {}

    # A CPU generator: the same seed gives the same noise on every device.
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    prompts = model.prompts.pipeline_arguments(pipe, model.family, settings.prompt, settings.negative_prompt,
                                               settings.cfg > 1.0)
    with torch.inference_mode():
        images = pipe(**prompts, image=Image.fromarray(color), strength=settings.denoise,
                      num_inference_steps=settings.steps, guidance_scale=settings.cfg, generator=generator,
                      callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=["latents"],
                      output_type="np", **control_arguments(settings, maps)).images
    if is_cancelled():
        raise JobCancelled()
    pixels = (np.clip(images[0], 0.0, 1.0) * 255.0).round().astype(np.uint8)
    out_w, out_h = output_size(settings, inputs)
    controls = {n: (np.clip(m, 0, 1) * 255).round().astype(np.uint8) for n, m in maps.items()}
    return JobOutput(resize_rgb(pixels, out_w, out_h), (work_w, work_h), controls)
