"""Two or more ControlNets in one step, run side by side instead of one after the other (`serve
--parallel-controlnets`, off by default). Issue 9 asks which of these pays on a GPU; benchmarks/speed.py row b
measures both beside the sequential run, and no GPU has run it yet (benchmarks/RESULTS.md).

- `streams` (CUDA only): each ControlNet after the first on a CUDA stream of its own, so the small kernels of
  ControlNets at batch 1 can overlap;
- `batched`: ControlNets of one architecture (an SD1.5 depth and canny pair) as one call over their stacked
  weights (torch.func.vmap; convolutions become grouped ones), fewer and larger kernels. The stacked weights are
  a copy: the ControlNets' memory twice, kept per set of ControlNets while the model is loaded.

Each returns [(down residuals, mid residual)] per ControlNet, in order, for SkippingMultiControlNet to sum.
"""
import copy
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Tuple

import torch

MODES = ("streams", "batched")

# (ControlNet input image, its scale, the ControlNet) as SkippingMultiControlNet passes them
Active = Tuple[torch.Tensor, object, torch.nn.Module]
Run = Callable[[torch.Tensor, object, torch.nn.Module], tuple]


def on_side_streams(active: Sequence[Active], run: Run, streams: dict, device) -> List[tuple]:
    """The first ControlNet on the current stream, each other one on a stream of its own (kept in `streams`),
    joined before anything reads their residuals."""
    main = torch.cuda.current_stream(device)
    outputs, side = [], []
    for i, item in enumerate(active[1:], start=1):
        stream = streams.setdefault((str(device), i), torch.cuda.Stream(device))
        stream.wait_stream(main)               # its inputs were written on the main stream
        with torch.cuda.stream(stream):
            outputs.append(run(*item))
        side.append(stream)
    outputs.insert(0, run(*active[0]))         # meanwhile, on the main stream
    for stream in side:
        main.wait_stream(stream)               # the sums read what the side streams wrote
    for down, mid in outputs[1:]:
        for t in (*down, mid):
            t.record_stream(main)              # made on a side stream, used and freed on the main one
    return outputs


class StackedControlNets:
    """Stacked weights per set of ControlNets, built on first use. A set is keyed by the modules themselves
    (held, so an unloaded ControlNet's id cannot come back as another's); the least recent dropped beyond 2."""

    def __init__(self, size: int = 2):
        self.size = size
        self._stacks: "OrderedDict[tuple, tuple]" = OrderedDict()

    def get(self, nets: Sequence[torch.nn.Module]) -> Optional[tuple]:
        """(template module on the meta device, stacked parameters, stacked buffers), or None when the
        ControlNets differ in architecture, dtype or device (they then run one after the other)."""
        key = tuple(nets)
        if key in self._stacks:
            self._stacks.move_to_end(key)
            return self._stacks[key]
        nets = [getattr(n, "_orig_mod", n) for n in nets]    # torch.compile'd ones: their module (run eager)
        first = nets[0]
        if any(type(n) is not type(first) or _architecture(n) != _architecture(first) or n.dtype != first.dtype
               or n.device != first.device for n in nets[1:]):
            return None
        params, buffers = torch.func.stack_module_state(nets)
        template = _structure(first)
        self._stacks[key] = stack = (template, params, buffers)
        if len(self._stacks) > self.size:
            self._stacks.popitem(last=False)
        return stack


def _structure(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module with its tensors on the meta device (functional_call brings the weights): the
    deepcopy is told each tensor's meta stand-in, so the weights are never copied, not even for a moment."""
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in net.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in net.buffers()})
    return copy.deepcopy(net, memo)


def _architecture(net) -> dict:
    """A diffusers model's config without its bookkeeping (where it was loaded from, which version wrote it)."""
    return {k: v for k, v in net.config.items() if not k.startswith("_")}


def batched(active: Sequence[Active], stacks: StackedControlNets, sample, timestep, encoder_hidden_states,
            kwargs: dict) -> Optional[List[tuple]]:
    """All active ControlNets in one vmapped call; None when they cannot be stacked."""
    stack = stacks.get([net for _, _, net in active])
    if stack is None:
        return None
    template, params, buffers = stack
    images = torch.stack([image for image, _, _ in active])
    # a float, or one per batch item (stream batch, shaped Bx1x1x1): every ControlNet's in the same shape
    scales = torch.stack(torch.broadcast_tensors(*[torch.as_tensor(scale, dtype=sample.dtype, device=sample.device)
                                                   for _, scale, _ in active]))

    def one(p, b, image, scale):
        return torch.func.functional_call(template, (p, b), (), {
            "sample": sample, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states,
            "controlnet_cond": image, "conditioning_scale": scale, **kwargs, "return_dict": False})

    down, mid = torch.func.vmap(one)(params, buffers, images, scales)
    return [([d[i] for d in down], mid[i]) for i in range(len(active))]
