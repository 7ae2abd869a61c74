"""One ControlNet img2img job on a loaded model: inputs at the working size in, pixels at the output size out."""
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from controlbridge_protocol import JobSettings

from ..imaging.canny import canny_edges
from ..imaging.codecs import resize_map, resize_rgb
from ..imaging.depth import depth_to_control
from .models import LoadedModel
from .pipelines import build_pipeline, new_scheduler
from .previews import latent_preview
from .union import flux_control_mode
from .resolution import center_crop_box, working_size
from .style_reference import JobStyle, attached, paused


class JobCancelled(Exception):
    """Raised from the step callback to stop the pipeline within one step."""


@dataclass
class JobInputs:
    """Decoded attachments at the color image's size."""

    color: np.ndarray                          # uint8 HxWx3
    depth_raw: Optional[np.ndarray] = None     # float32 HxW, scene units
    depth_far: Optional[float] = None
    control_maps: Dict[str, np.ndarray] = field(default_factory=dict)   # ready-made maps, float32 HxWx3 in [0, 1]
    style: Optional[np.ndarray] = None         # the style reference image, uint8 HxWx3 at its own size


@dataclass
class JobOutput:
    image: np.ndarray                          # uint8 HxWx3 at the output size
    working_size: tuple
    control_images: Dict[str, np.ndarray]      # uint8 HxWx3 at the working size, as the ControlNets saw them
    # ControlNet name -> the map its estimator made from the color image, uint8 HxWx3 at the color's size: kept with
    # the job's inputs, so the job can be re-run with it as a ready-made map where the estimator is missing.
    estimated: Dict[str, np.ndarray] = field(default_factory=dict)


StepCallback = Callable[[int, int, Optional[np.ndarray], str], None]   # (step, total, preview or None, stage)


def output_size(settings: JobSettings, inputs: JobInputs) -> tuple:
    h, w = inputs.color.shape[:2]
    return (settings.width or w, settings.height or h)


@dataclass
class JobResources:
    """What a job uses beyond the model's defaults, resolved from the library by the worker."""

    controlnets: Dict[str, object] = field(default_factory=dict)   # name -> ControlNet module (else the default)
    vae: Optional[object] = None
    loras: List[Tuple[str, float]] = field(default_factory=list)     # (file path, weight)
    upscaler: Optional[object] = None                                # engine.upscalers.Upscaler for hires
    style: Optional[object] = None                                   # style_reference.StyleAdapter
    estimators: Dict[str, object] = field(default_factory=dict)     # ControlNet name -> estimators.Estimator


HIRES_BUILTIN = ("lanczos", "latent")


def prepare_inputs(model: LoadedModel, settings: JobSettings, inputs: JobInputs, size: Optional[tuple] = None,
                   fast: bool = False):
    """(color at the working size, {controlnet name: float32 HxWx3 map}, working size).

    Color and control maps are cropped to the output's aspect ratio and resized together, so they stay aligned.
    `size` overrides the working size (the hires pass); `fast` resizes the color as live frames do.
    """
    out_w, out_h = output_size(settings, inputs)
    work_w, work_h = size or working_size(out_w, out_h, model.native_resolution, model.size_multiple)
    h, w = inputs.color.shape[:2]
    x0, y0, x1, y1 = center_crop_box(w, h, out_w / out_h)

    def fit(a):
        return a[y0:y1, x0:x1]

    color = resize_rgb(np.ascontiguousarray(fit(inputs.color)), work_w, work_h, fast)
    maps = {}
    for name in active_controlnets(settings):
        if name in inputs.control_maps:     # sent, routed, or estimated (with_estimated_maps)
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


def active_controlnets(settings: JobSettings) -> List[str]:
    """The ControlNets a job runs: a weight of 0 switches one off entirely (no map, no compute)."""
    return [name for name, cn in settings.controlnets.items() if cn.weight > 0]


def pipeline_for(model: LoadedModel, settings: JobSettings, resources: Optional[JobResources] = None,
                 user: str = "job"):
    """The pipeline over the shared components with this job's scheduler, VAE and ControlNets; casts nothing.

    Built once per combination and kept in `model.pipelines`. `user` keeps the live engine's pipelines (and
    so their schedulers' state) apart from the job whose steps a live frame may run between.
    """
    resources = resources or JobResources()
    vae = model.taesd if settings.fast_decode else (resources.vae or model.base.vae)
    controlnets = [resources.controlnets.get(n) or model.controlnets[n] for n in active_controlnets(settings)]
    # The modules themselves are the key (by identity): a cached pipeline holds them, so ids cannot be reused.
    key = (user, settings.sampler, tuple(id(cn) for cn in controlnets), id(vae), model.parallel_controlnets)
    return model.pipelines.get(key, lambda: build_pipeline(model, new_scheduler(model, settings.sampler), vae,
                                                           controlnets))


def control_arguments(settings: JobSettings, maps: Dict[str, np.ndarray], family: str = "sd15") -> dict:
    """The pipeline keyword arguments for the active ControlNets: lists, one entry per ControlNet.

    Each map goes as a float (1, H, W, 3) array in [0, 1]: diffusers reads a bare HxWx3 array as a batch of H
    images. FLUX takes a lone ControlNet's arguments as scalars.
    """
    names = active_controlnets(settings)
    if not names:
        return {}
    cns = [settings.controlnets[n] for n in names]
    args = {"control_image": [maps[n][None] for n in names],
            "controlnet_conditioning_scale": [c.weight for c in cns],
            "control_guidance_start": [c.start for c in cns],
            "control_guidance_end": [c.end for c in cns]}
    if family == "flux":
        # A union ControlNet's control type (plain ones ignore theirs); the list is required for several.
        args["control_mode"] = [flux_control_mode(n, settings.controlnets[n]) for n in names]
        if len(names) == 1:
            args = {k: v[0] for k, v in args.items()}
    return args


def generate(model: LoadedModel, settings: JobSettings, inputs: JobInputs,
             on_step: Optional[StepCallback] = None, is_cancelled: Callable[[], bool] = lambda: False,
             resources: Optional[JobResources] = None,
             between_steps: Optional[Callable[[], None]] = None) -> JobOutput:
    """Run the job (and its hires pass). `settings.seed` must already be resolved (not -1).

    `between_steps` is called at every step boundary, a safe point where other work (a live frame) may use the
    device and the shared components: this job's scheduler, noise generator and latents are its own, and its
    LoRAs are put back before the next step, so the job's pixels are those of an uninterrupted run."""
    resources = resources or JobResources()
    inputs, estimated = with_estimated_maps(settings, inputs, resources)
    color, maps, size = prepare_inputs(model, settings, inputs)
    pipe = pipeline_for(model, settings, resources)
    hires = settings.hires
    model.loras.apply(pipe, resources.loras)
    style = None if settings.style is None else JobStyle(resources.style, inputs.style, settings.style.weight)
    if between_steps is not None:
        other_work = between_steps

        def between_steps():
            with paused(style, pipe):                   # a live frame runs on the UNet without the adapter
                other_work()
                model.loras.apply(pipe, resources.loras)     # a live frame may have fused its own in
    prompts = model.prompts.pipeline_arguments(pipe, model.family, settings.prompt, settings.negative_prompt,
                                               settings.cfg > 1.0, extra_key=tuple(resources.loras))
    first = run_pass(pipe, model, settings, prompts, Image.fromarray(color), settings.denoise, settings.steps, maps,
                     on_step, is_cancelled, "", "latent" if hires and hires.upscaler == "latent" else "np",
                     between_steps, style)
    if hires is not None:
        size = (_round(size[0] * hires.scale, model.size_multiple), _round(size[1] * hires.scale,
                                                                            model.size_multiple))
        _, maps, _ = prepare_inputs(model, settings, inputs, size)
        if hires.upscaler == "latent":
            factor = model.base.vae_scale_factor
            start = torch.nn.functional.interpolate(first, size=(size[1] // factor, size[0] // factor),
                                                    mode="bilinear")
        else:
            pixels = _to_uint8(first)
            if resources.upscaler is not None:
                pixels = resources.upscaler.upscale(pixels)
            start = Image.fromarray(resize_rgb(pixels, *size))
        first = run_pass(pipe, model, settings, prompts, start, hires.denoise, hires.steps or settings.steps, maps,
                         on_step, is_cancelled, "hires fix", "np", between_steps, style)
    out_w, out_h = output_size(settings, inputs)
    controls = {n: (np.clip(m, 0, 1) * 255).round().astype(np.uint8) for n, m in maps.items()}
    return JobOutput(resize_rgb(_to_uint8(first), out_w, out_h), size, controls,
                     {n: (m * 255).round().astype(np.uint8) for n, m in estimated.items()})


def with_estimated_maps(settings: JobSettings, inputs: JobInputs, resources: JobResources):
    """(inputs with each estimated map among its control maps, {ControlNet name: that float32 HxWx3 map}).

    The one place estimators run, for jobs and live frames alike: on the color image at its own size (the detectors
    look at 512 on the short side whatever they get), before the crop and resize that every map then shares with
    the color. Not for a ControlNet a sent (or routed) map feeds: that map wins. The estimators come loaded in
    `resources` (the worker loads them with the job's other library components)."""
    maps = {}
    for name in active_controlnets(settings):
        if name in settings.estimate and name not in inputs.control_maps:
            maps[name] = resources.estimators[name](inputs.color)
    if not maps:
        return inputs, maps
    return replace(inputs, control_maps={**inputs.control_maps, **maps}), maps


def run_pass(pipe, model, settings, prompts, image, strength, steps, maps, on_step, is_cancelled, stage, output_type,
             between_steps=None, style: Optional[JobStyle] = None):
    """One pass of the pipeline; returns float images (np) or latents. `style`: its adapter is in the UNet
    during this pass only."""

    # FLUX pipelines default to 1024² whatever the image: give them the working size (also to unpack previews).
    size = {"width": image.width, "height": image.height} if model.family == "flux" and \
        isinstance(image, Image.Image) else {}

    def step_end(pipe_, i, t, tensors):
        if is_cancelled():
            raise JobCancelled()
        if on_step is not None:
            step = i + 1
            want_preview = settings.preview_every > 0 and step % settings.preview_every == 0 and \
                (size or model.family != "flux")     # packed FLUX latents unpack only at a known size
            preview = latent_preview(tensors["latents"], model.family, model.taesd,
                                     (size["width"], size["height"]) if size else None,
                                     pipe_.vae_scale_factor) if want_preview else None
            on_step(step, pipe_.num_timesteps, preview, stage)
        if between_steps is not None and i + 1 < pipe_.num_timesteps:
            between_steps()
        return {}

    # A CPU generator: the same seed gives the same noise on every device.
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    with torch.inference_mode(), attached(style, pipe, settings.cfg > 1.0) as style_arguments:
        out = pipe(**prompts, image=image, strength=strength, num_inference_steps=steps,
                   guidance_scale=settings.cfg, generator=generator,
                   callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=["latents"],
                   output_type=output_type, **size, **control_arguments(settings, maps, model.family),
                   **style_arguments).images
    if is_cancelled():
        raise JobCancelled()
    return out


def _to_uint8(images) -> np.ndarray:
    return (np.clip(images[0], 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _round(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)
