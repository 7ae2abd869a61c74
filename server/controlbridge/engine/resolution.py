"""Where the model works: its native size class with the request's aspect ratio, rounded to what it accepts."""
import math
from typing import Tuple


def working_size(out_width: int, out_height: int, native: int, multiple: int) -> Tuple[int, int]:
    """(width, height) with about native**2 pixels and the aspect ratio of the output, multiples of `multiple`.

    SD1.5 (native 512): 1280x720 -> 704x384; SDXL (1024): 1280x720 -> 1344x768, ComfyUI-style buckets.
    """
    aspect = out_width / out_height
    w = math.sqrt(native * native * aspect)
    h = w / aspect
    return (max(multiple, int(round(w / multiple)) * multiple), max(multiple, int(round(h / multiple)) * multiple))


def center_crop_box(width: int, height: int, aspect: float) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the largest centered box of `aspect` inside width x height."""
    if abs(width / height - aspect) < 1e-3:
        return 0, 0, width, height
    if width / height > aspect:
        w = int(round(height * aspect))
        x0 = (width - w) // 2
        return x0, 0, x0 + w, height
    h = int(round(width / aspect))
    y0 = (height - h) // 2
    return 0, y0, width, y0 + h
