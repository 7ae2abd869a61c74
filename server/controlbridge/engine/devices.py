"""Pick the device and dtype the model runs in: GPU in half precision, CPU in float32; both overridable."""
from typing import Optional, Tuple

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(requested: Optional[str] = None) -> str:
    if requested and requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: Optional[str] = None) -> Tuple[str, torch.dtype]:
    if requested and requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"unknown dtype {requested!r}; use one of {', '.join(DTYPES)}")
        return requested, DTYPES[requested]
    name = "fp32" if device == "cpu" else "fp16"
    return name, DTYPES[name]
