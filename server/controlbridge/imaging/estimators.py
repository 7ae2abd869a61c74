"""Control maps estimated from the color image, for clients that send only a photo or a sketch.

Optional: the `estimators` extra installs controlnet_aux, which imports torchvision (so it stays out of the
core install) and fetches its weights from the hub (lllyasviel/Annotators) on first use, for users who are
online. Each estimator feeds the ControlNet named by its role.
"""
import importlib.util
import threading
from typing import Dict, Tuple

import numpy as np

ANNOTATORS = "lllyasviel/Annotators"
# estimator name -> (controlnet_aux class, the ControlNet role its map is for)
ESTIMATORS: Dict[str, Tuple[str, str]] = {
    "midas": ("MidasDetector", "depth"),
    "zoe": ("ZoeDetector", "depth"),
    "lineart": ("LineartDetector", "lineart"),
    "softedge": ("HEDdetector", "softedge"),
}
_loaded: Dict[str, object] = {}


class EstimatorUnavailable(RuntimeError):
    """An estimator that cannot load here (its weights are neither local nor reachable): the job fails with
    `unavailable` and this message, not as an internal error."""
_lock = threading.Lock()


def unavailable_reason(name: str):
    """None when `name` can run here, else one line saying what is missing."""
    if name not in ESTIMATORS:
        return f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}"
    if importlib.util.find_spec("controlnet_aux") is None:
        return (f"the {name} estimator needs the optional estimators extra on the server: "
                f"pip install 'controlbridge[estimators]' (controlnet_aux; it needs torchvision, and its weights "
                f"come from the hub, {ANNOTATORS})")
    return None


def estimate(name: str, rgb: np.ndarray) -> np.ndarray:
    """float32 HxWx3 in [0, 1] at the input's size."""
    import controlnet_aux
    from PIL import Image
    with _lock:
        if name not in _loaded:
            try:
                _loaded[name] = getattr(controlnet_aux, ESTIMATORS[name][0]).from_pretrained(ANNOTATORS)
            except OSError as e:   # offline and not cached: huggingface_hub's errors are OSErrors
                raise EstimatorUnavailable(f"the {name} estimator's weights could not be loaded from {ANNOTATORS} "
                                           f"(offline, or not in the hub cache): {e}") from e
    h, w = rgb.shape[:2]
    out = _loaded[name](Image.fromarray(rgb), output_type="pil").convert("RGB").resize((w, h), Image.BILINEAR)
    return np.asarray(out, dtype=np.float32) / 255.0
