"""Which LoRAs are in a model's shared UNet and text encoder right now, changed only when a job wants others.

Loading a LoRA costs a file read and module surgery, so the loaded set stays until a job asks for a different
one (consecutive jobs or live frames with the same LoRAs load them once). LoRA layers sit beside the base
weights, so unloading restores the base bitwise. Every job calls `apply` before it runs, so whatever ran
before it does not matter.
"""
from dataclasses import dataclass
from typing import List, Tuple

Loras = Tuple[Tuple[str, float], ...]    # (file path, weight), in the job's order


@dataclass
class LoraState:
    loras: Loras = ()
    loads: int = 0                       # how many times LoRA files were loaded (tests count them)

    def apply(self, pipe, loras: List[Tuple[str, float]]) -> None:
        wanted = tuple((str(path), float(weight)) for path, weight in loras)
        if wanted == self.loras:
            return
        if self.loras:
            pipe.unload_lora_weights()
            self.loras = ()
        if not wanted:
            return
        names = [f"lora_{i}" for i in range(len(wanted))]
        for name, (path, _) in zip(names, wanted):
            pipe.load_lora_weights(path, adapter_name=name)
        pipe.set_adapters(names, adapter_weights=[weight for _, weight in wanted])
        self.loras = wanted
        self.loads += 1
