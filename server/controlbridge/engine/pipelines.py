"""Pipelines assembled from a loaded model's shared components, without touching them.

diffusers' `from_pipe` ends with `pipeline.to(dtype)` and defaults that dtype to float32, so one job built
with it silently turned a bf16 model's shared UNet, ControlNets, text encoder and TAESD into float32. Here the
pipeline class is constructed directly from the components (its public constructor): nothing is cast or moved,
and nothing walks the modules, so building one costs well under a millisecond.

Built pipelines are kept in the model's `PipelineCache`, one per (sampler, ControlNet set, decoder, user), so
neither jobs nor live frames construct a pipeline or scheduler per call. A scheduler is safe to reuse: every
pipeline call starts with `set_timesteps`, which resets all of its per-run state (tested: same pixels).
"""
import inspect
from collections import OrderedDict
from typing import Callable, Dict, Hashable, List, Optional

import torch
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

from .models import LoadedModel
from .parallel_controlnets import StackedControlNets, batched, on_side_streams
from .samplers import make_scheduler

_PREFIX = {"sd15": "StableDiffusion", "sdxl": "StableDiffusionXL", "flux": "Flux"}


class SkippingMultiControlNet(MultiControlNetModel):
    """Runs only the ControlNets whose scale this step is not 0 (weight 0, or outside their start/end window).

    The pipeline multiplies a ControlNet's scale by 0 outside its window but still runs it; its residuals are
    then exactly zero, so leaving it out gives the same pixels for a fraction of the cost. Used for one
    ControlNet too, so the skip applies everywhere. When no ControlNet contributes, the UNet runs without
    residuals, which is what zero residuals mean.

    `parallel` (a model's `parallel_controlnets`, `serve --parallel-controlnets`): "streams" or "batched" runs
    two or more active ControlNets side by side (engine/parallel_controlnets.py); "" one after the other.
    """

    def __init__(self, controlnets, parallel: str = "", stacks: Optional[StackedControlNets] = None):
        super().__init__(controlnets)
        self.parallel = parallel
        self._stacks = stacks if stacks is not None else StackedControlNets()
        self._streams: Dict[tuple, "torch.cuda.Stream"] = {}

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, **kwargs):
        def run(image, scale, net):
            return net(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                       controlnet_cond=image, conditioning_scale=scale, **kwargs)

        active = [(image, scale, net) for image, scale, net in zip(controlnet_cond, conditioning_scale, self.nets)
                  if torch.as_tensor(scale).any()]     # a float, or one scale per batch item (stream batch)
        outputs = None
        if len(active) > 1 and self.parallel == "streams" and sample.is_cuda:
            outputs = on_side_streams(active, run, self._streams, sample.device)
        elif len(active) > 1 and self.parallel == "batched":
            outputs = batched(active, self._stacks, sample, timestep, encoder_hidden_states, kwargs)
        if outputs is None:
            outputs = [run(*item) for item in active]
        down, mid = None, None
        for d, m in outputs:
            if down is None:
                down, mid = list(d), m
            else:
                down = [a + b for a, b in zip(down, d)]
                mid = mid + m
        return down, mid


class PipelineCache:
    """A model's built pipelines by key, least recently used dropped beyond `size` (they hold no weights of
    their own, only references to the model's shared components)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.builds = 0                  # pipelines constructed so far (tests count them)
        self._items: "OrderedDict[Hashable, object]" = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], object]):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        pipe = self._items[key] = build()
        self.builds += 1
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return pipe

    def clear(self) -> None:
        self._items.clear()


def new_scheduler(model: LoadedModel, sampler: str):
    if model.family == "flux":     # flow matching: the model's own scheduler, fresh
        return type(model.base.scheduler).from_config(model.base.scheduler.config)
    return make_scheduler(sampler, model.base.scheduler.config)


def build_pipeline(model: LoadedModel, scheduler, vae, controlnets: List[torch.nn.Module]):
    """An img2img pipeline (ControlNet img2img when `controlnets` is not empty) over the shared components."""
    import diffusers
    prefix = _PREFIX[model.family]
    cls = getattr(diffusers, f"{prefix}ControlNetImg2ImgPipeline" if controlnets else f"{prefix}Img2ImgPipeline")
    parameters = inspect.signature(cls.__init__).parameters
    parts = {name: component for name, component in model.base.components.items() if name in parameters}
    parts.update(scheduler=scheduler, vae=vae)
    for key in ("requires_safety_checker", "force_zeros_for_empty_prompt"):   # the base's own choices
        if key in parameters and key in model.base.config:
            parts[key] = model.base.config[key]
    if "safety_checker" in parameters:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if controlnets:
        if model.family == "flux":
            parts["controlnet"] = controlnets[0] if len(controlnets) == 1 else controlnets
        else:
            parts["controlnet"] = SkippingMultiControlNet(controlnets, model.parallel_controlnets,
                                                          model.controlnet_stacks)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def component_report(model: LoadedModel) -> Dict[str, Dict[str, str]]:
    """{component: {"dtype", "device"}} for every module the model holds: what `status` shows a user."""
    modules = {name: m for name, m in model.base.components.items() if isinstance(m, torch.nn.Module)}
    modules.update({f"controlnet:{name}": m for name, m in model.controlnets.items()})
    if model.taesd is not None:
        modules["taesd"] = model.taesd
    modules.update({name: getattr(m, "net", m) for name, m in model.named.items()
                    if isinstance(getattr(m, "net", m), torch.nn.Module)})
    report = {}
    for name, module in modules.items():
        tensors = [t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]
        if tensors:   # every tensor is looked at: a half-upcast module shows as "bfloat16+float32"
            report[name] = {"dtype": "+".join(sorted({str(t.dtype).replace("torch.", "") for t in tensors})),
                            "device": "+".join(sorted({str(t.device) for t in tensors}))}
    return report
