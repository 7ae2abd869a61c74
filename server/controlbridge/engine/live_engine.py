"""The live path: streamed frames through a pipeline built once, inputs and output kept on the device.

It shares the one-shot path's parts (the model's pipeline cache, the ControlNet arguments, the LoRA state, the
prompt cache, the depth normalization) and differs where a frame's latency is won:
- no pipeline or scheduler is built per frame (`model.pipelines`, under its own key so a live frame can run
  between two steps of a job without touching that job's scheduler);
- the color image and raw depth go to the device once, as uint8 and float32; crop, resize and the depth
  normalization (`depth_to_control_torch`) happen there; the result becomes uint8 there and crosses back once;
- LoRAs are fused into the weights for the session (no LoRA layers in the frame's compute), base restored
  bitwise when the session's LoRAs change;
- on a CPU device the host is the device: numpy/OpenCV are several times faster than torch's CPU kernels for
  these small image operations (measured in benchmarks/RESULTS.md), so the host implementations run.
Encoding the result (JPEG/WebP) is not done here: the server does it off the device thread.
"""
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Optional, Set, Tuple

import numpy as np
import torch

from controlbridge_protocol import JobSettings

from ..imaging.canny import canny_edges
from ..imaging.codecs import resize_rgb
from ..imaging.depth import depth_to_control_torch
from .generate import (JobInputs, JobResources, active_controlnets, generate, output_size, pipeline_for,
                       prepare_inputs, run_pass, with_estimated_maps)
from .models import LoadedModel
from .resolution import center_crop_box, working_size
from .stream_batch import StreamSessions

LIVE_PIPELINES = "live"     # the pipeline cache's key for the live engine's own pipelines


@dataclass
class LiveOutput:
    image: np.ndarray                 # uint8 HxWx3 at the output size, on the host
    working_size: Tuple[int, int]
    # ms: prepare (inputs to the device), model (the pipeline), output (its images to uint8 at the output size)
    timings: Dict[str, float] = field(default_factory=dict)


class LiveEngine:
    """Renders live frames. One per server (it keeps which sizes were warmed up); thread: the device's."""

    def __init__(self, on_device: Optional[bool] = None):
        # None: image operations on the device unless the device is the CPU (see the module docstring).
        self.on_device = on_device
        self.warmed: Set[tuple] = set()      # (model name, working size, sampler, ControlNets, decoder)
        self.streams = StreamSessions()      # the frames in flight of sessions with stream_batch on

    def warm_up(self, model: LoadedModel, settings: JobSettings, width: int, height: int,
                resources: Optional[JobResources] = None) -> Tuple[Tuple[int, int], float]:
        """Build the pipeline and run two frames of width x height, so compilation / CUDA graph capture and kernel
        choice happen before the artist's first frame. Returns (working size, seconds it took; 0 if warm)."""
        key = self._warm_key(model, settings, width, height)
        size = key[1]
        if key in self.warmed:
            return size, 0.0
        start = time.perf_counter()
        color = np.full((height, width, 3), 128, np.uint8)
        depth = np.linspace(1.0, 10.0, width * height, dtype=np.float32).reshape(height, width)
        # ControlNets fed by a sent map (not depth, canny or an estimator) get a flat one of the right size.
        maps = {n: np.full((height, width, 3), 0.5, np.float32) for n in active_controlnets(settings)
                if n not in ("depth", "canny") and n not in settings.estimate}
        for _ in range(2):     # reduce-overhead compilation records graphs on a later call than the first
            self.render(model, settings, JobInputs(color, depth, None, maps), resources)
        self.warmed.add(key)
        return size, time.perf_counter() - start

    def render(self, model: LoadedModel, settings: JobSettings, inputs: JobInputs,
               resources: Optional[JobResources] = None, is_cancelled: Callable[[], bool] = lambda: False,
               session: Hashable = None) -> LiveOutput:
        """One frame; `settings.seed` resolved. Same pixels as `generate` for inputs already at the working size
        (tested); resizing here is bilinear/bicubic instead of Lanczos, a difference of a few levels.
        With `settings.stream_batch` the frame joins `session`'s stream and the one returned is N-1 frames older."""
        resources = resources or JobResources()
        start = time.perf_counter()
        if model.family == "flux" or settings.hires is not None:
            # FLUX's img2img reads an image tensor differently (packed latents), and a hires pass is a job's
            # work: these frames take the one-shot path, pipelines still cached.
            out = generate(model, settings, inputs, None, is_cancelled, resources)
            return LiveOutput(out.image, out.working_size, {"prepare": 0.0,
                                                            "model": (time.perf_counter() - start) * 1000})
        inputs, _ = with_estimated_maps(settings, inputs, resources)     # as a job does: same maps, same pixels
        pipe = pipeline_for(model, settings, resources, user=LIVE_PIPELINES)
        model.loras.apply(pipe, resources.loras, fuse=True)
        on_device = self.on_device if self.on_device is not None else model.device != "cpu"
        out_w, out_h = output_size(settings, inputs)
        if on_device:
            color, maps, size = _prepare_on_device(model, settings, inputs)
        else:
            color_np, maps_np, size = prepare_inputs(model, settings, inputs, fast=True)
            color = _to_tensor(color_np, model.device)
            maps = {n: _to_tensor(m, model.device) for n, m in maps_np.items()}
        maps = {n: m[0] for n, m in maps.items()}       # 3xHxW: control_arguments adds the batch axis
        prompts = model.prompts.pipeline_arguments(pipe, model.family, settings.prompt, settings.negative_prompt,
                                                   settings.cfg > 1.0, extra_key=tuple(resources.loras))
        prepared = time.perf_counter()
        if settings.stream_batch:
            key = (model.name, size, tuple(resources.loras), json.dumps(settings.to_dict(), sort_keys=True))
            images = self.streams.render(session, key, pipe, model, settings, prompts, color, maps, is_cancelled)
        else:
            images = run_pass(pipe, model, settings, prompts, color, settings.denoise, settings.steps, maps, None,
                              is_cancelled, "", "pt")
        modelled = time.perf_counter()
        image = _to_host_uint8(images, out_w, out_h, on_device)
        done = time.perf_counter()
        return LiveOutput(image, size, {"prepare": (prepared - start) * 1000, "model": (modelled - prepared) * 1000,
                                        "output": (done - modelled) * 1000})

    @staticmethod
    def _warm_key(model, settings, width, height):
        out_w, out_h = settings.width or width, settings.height or height
        size = working_size(out_w, out_h, model.native_resolution, model.size_multiple)
        return (model.name, size, settings.sampler, tuple(active_controlnets(settings)), settings.fast_decode)


def _to_tensor(a: np.ndarray, device: str) -> torch.Tensor:
    """HxWx3 float [0, 1] or uint8 -> 1x3xHxW float32 on the device (no copy on the CPU).
    uint8 crosses to a GPU as is (a quarter of the bytes) and is scaled there. On the CPU numpy scales it, as
    diffusers scales a PIL image: a torch op would first wake torch's sleeping worker threads (~0.1 ms a call)."""
    if a.dtype == np.uint8 and device == "cpu":
        a = a.astype(np.float32)
        a /= np.float32(255.0)          # in place: one new buffer, not two
    t = _host_tensor(a).to(device).permute(2, 0, 1)[None]
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def _host_tensor(a: np.ndarray) -> torch.Tensor:
    """A contiguous host array as a tensor over its memory; a read-only one (raw depth lies over the received
    bytes) is copied, as torch tensors are writable."""
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _resize(t: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """1xCxHxW float resized on the device; antialiased when shrinking (as area/Lanczos filtering is)."""
    if t.shape[-1] == width and t.shape[-2] == height:
        return t
    shrink = width < t.shape[-1]
    return torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear" if shrink else "bicubic",
                                           antialias=shrink, align_corners=False)


def _prepare_on_device(model: LoadedModel, settings: JobSettings, inputs: JobInputs):
    """prepare_inputs' twin on the device: (1x3xHxW color, {name: 1x3xHxW map}, working size), float32."""
    out_w, out_h = output_size(settings, inputs)
    work_w, work_h = working_size(out_w, out_h, model.native_resolution, model.size_multiple)
    h, w = inputs.color.shape[:2]
    x0, y0, x1, y1 = center_crop_box(w, h, out_w / out_h)
    device = model.device
    pinned = device.startswith("cuda")
    # uint8 crosses to the device (a quarter of float32's bytes); the crop is a view, copied on the way.
    upload = _host_tensor(inputs.color[y0:y1, x0:x1])
    color_u8 = (upload.pin_memory() if pinned else upload).to(device, non_blocking=pinned)
    color = _resize(color_u8.permute(2, 0, 1)[None].float() / 255.0, work_w, work_h)
    maps = {}
    for name in active_controlnets(settings):
        if name in inputs.control_maps:
            ready = _host_tensor(inputs.control_maps[name][y0:y1, x0:x1]).to(device)
            maps[name] = _resize(ready.permute(2, 0, 1)[None].float(), work_w, work_h)
        elif name == "depth" and inputs.depth_raw is not None:
            raw = _host_tensor(inputs.depth_raw[y0:y1, x0:x1]).to(device)
            depth = depth_to_control_torch(raw, inputs.depth_far)     # at full resolution, as on the host
            maps[name] = _resize(depth[None, None], work_w, work_h).clamp(0.0, 1.0).expand(1, 3, work_h, work_w)
        elif name == "canny":
            # Canny is OpenCV's, on the host, from the same working-size color as one-shot jobs.
            host_color = resize_rgb(np.ascontiguousarray(inputs.color[y0:y1, x0:x1]), work_w, work_h, fast=True)
            edges = canny_edges(host_color, settings.canny_low, settings.canny_high)
            maps[name] = _to_tensor(np.repeat(edges[:, :, None], 3, axis=2), device)
        else:
            raise KeyError(name)   # the server's validation guarantees every enabled ControlNet has an input
    return color, maps, (work_w, work_h)


def _to_host_uint8(images: torch.Tensor, width: int, height: int, on_device: bool) -> np.ndarray:
    """The pipeline's 1x3xHxW [0, 1] output -> uint8 HxWx3 at the output size; converted before crossing."""
    if on_device:
        images = _resize(images.float(), width, height).clamp(0.0, 1.0)
        return (images[0] * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    # OpenCV on the tensor's memory: a tenth of torch's time for these small per-op dispatches on a CPU.
    import cv2
    planes = cv2.merge(list(np.ascontiguousarray(images[0].float().numpy())))     # HxWx3 float
    cv2.threshold(planes, 0.0, 0.0, cv2.THRESH_TOZERO, dst=planes)    # below 0 -> 0 (the scaling takes |x|)
    return resize_rgb(cv2.convertScaleAbs(planes, alpha=255.0), width, height, fast=True)   # rounds, saturates
