"""Which LoRAs are in a model's shared UNet and text encoder right now, changed only when a job wants others.

Loading a LoRA costs a file read and module surgery, so the loaded set stays until a job asks for a different
one (consecutive jobs or live frames with the same LoRAs load them once). Every job calls `apply` before it
runs, so whatever ran before it does not matter. Two ways to hold them:
- as LoRA layers beside the base weights (jobs): unloading restores the base bitwise;
- fused into the weights (`fuse=True`, live sessions): a frame computes no LoRA layers at all. The base
  weights the fusion changes are copied to host memory first and copied back when the set changes, so the
  base is again restored bitwise (fusing and un-fusing by subtraction would not be, in bf16).
Fused QKV projections (engine/acceleration.py) compute attention from a concatenated copy of to_q/to_k/to_v,
which LoRA layers on those projections never reach: while LoRA layers are present the UNet uses the unfused
attention processors, and the fused copy is rebuilt from the current weights whenever the layers go away.
"""
from dataclasses import dataclass, field
from typing import List, Tuple

import torch

Loras = Tuple[Tuple[str, float], ...]    # (file path, weight), in the job's order


@dataclass
class LoraState:
    loras: Loras = ()
    fused: bool = False                  # the loaded set is fused into the base weights
    loads: int = 0                       # how many times LoRA files were loaded (tests count them)
    _saved: list = field(default_factory=list, repr=False)    # [(tensor, host copy)] the fusion overwrote
    _qkv_fused: bool = False             # the UNet used fused QKV projections before LoRAs came in

    def apply(self, pipe, loras: List[Tuple[str, float]], fuse: bool = False) -> None:
        wanted = tuple((str(path), float(weight)) for path, weight in loras)
        if wanted == self.loras and (fuse == self.fused or not wanted):
            return
        self.remove(pipe)
        if not wanted:
            return
        unet = getattr(pipe, "unet", None)
        self._qkv_fused = unet is not None and _uses_fused_qkv(unet)
        if self._qkv_fused:
            unet.unfuse_qkv_projections()       # back to to_q/to_k/to_v, where the LoRA layers go
        names = [f"lora_{i}" for i in range(len(wanted))]
        for name, (path, _) in zip(names, wanted):
            pipe.load_lora_weights(path, adapter_name=name)
        pipe.set_adapters(names, adapter_weights=[weight for _, weight in wanted])
        if fuse:
            self._saved = [(t, t.detach().to("cpu", copy=True)) for t in _lora_base_tensors(pipe)]
            pipe.fuse_lora(adapter_names=names)
            pipe.unload_lora_weights()          # the fused weights stay; the LoRA layers go
            self._refuse_qkv(pipe)
        self.loras, self.fused = wanted, fuse
        self.loads += 1

    def remove(self, pipe) -> None:
        """Back to the base weights, bitwise."""
        if not self.loras:
            return
        if self.fused:
            with torch.no_grad():
                for tensor, saved in self._saved:
                    tensor.copy_(saved)
            self._saved = []
        else:
            pipe.unload_lora_weights()
        self._refuse_qkv(pipe)
        self.loras, self.fused = (), False

    def _refuse_qkv(self, pipe) -> None:
        if self._qkv_fused:
            pipe.unet.fuse_qkv_projections()    # rebuilt from the weights as they are now


def _uses_fused_qkv(unet) -> bool:
    return any(type(p).__name__.startswith("Fused") for p in unet.attn_processors.values())


def _lora_base_tensors(pipe) -> List[torch.Tensor]:
    """The weights and biases of every layer a loaded LoRA sits on: what fusing overwrites."""
    from peft.tuners.lora import LoraLayer
    tensors = []
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                tensors += [p for p in (base.weight, getattr(base, "bias", None)) if p is not None]
    return tensors
