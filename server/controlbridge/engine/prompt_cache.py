"""Text-encoder results kept per prompt: live frames repeat the same prompt, so encode it once.

The embeddings are exactly what the pipeline would compute itself, so results do not change. Whatever
changes the text encoder (a LoRA on it) must call clear().
"""
from collections import OrderedDict

import torch


class PromptCache:
    def __init__(self, size: int = 32):
        self.size = size
        self._entries: "OrderedDict[tuple, dict]" = OrderedDict()

    def clear(self) -> None:
        self._entries.clear()

    def pipeline_arguments(self, pipe, family: str, prompt: str, negative: str, guided: bool,
                           extra_key: tuple = ()) -> dict:
        """prompt_embeds & co. for `pipe.__call__`, from the cache or computed now. `extra_key` names whatever
        else changes the text encoder for this call (the job's LoRAs)."""
        key = (family, prompt, negative, guided, extra_key)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        with torch.inference_mode():
            if family == "flux":     # distilled guidance: no negative prompt, no unconditional pass
                encoded = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=pipe._execution_device)
            else:
                encoded = pipe.encode_prompt(prompt=prompt, device=pipe._execution_device, num_images_per_prompt=1,
                                             do_classifier_free_guidance=guided, negative_prompt=negative)
        names = {"sdxl": ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                          "negative_pooled_prompt_embeds"],
                 "flux": ["prompt_embeds", "pooled_prompt_embeds"]}.get(family,
                                                                        ["prompt_embeds", "negative_prompt_embeds"])
        args = {name: value for name, value in zip(names, encoded) if value is not None}
        self._entries[key] = args
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return args
