"""Which input feeds which ControlNet of a job.

A job's `controlnets` names each ControlNet it runs; `ControlNetSettings.input` says what feeds it:
- an attachment: the DCC's passes `depth` (raw depth is normalized) and `normal` (camera-space normals, turned into
  NormalBae colours when decoded), the `color` image itself, or a ready-made map the client sent under its own name
  (`lineart`, `pose`, ...: any lower-case name);
- by default (input null): the attachment named like the ControlNet, else canny edges made from the color (for
  `canny`), the estimator `settings.estimate[name]` run on the color, or the color image (for `tile`).

Routing happens once, when the request is decoded: a ControlNet fed by another name's input gets that map under its
own name in `JobInputs.control_maps` (the same array, not a copy), so the one-shot and live engines, which look a
ControlNet's map up by its name, need nothing else.
"""
import re
from typing import Collection, Optional

import numpy as np

from controlbridge_protocol import ErrorCode, JobSettings, ProtocolError

from ..imaging.depth import depth_to_control
from .style_reference import STYLE_ATTACHMENT

PASSES = ("color", "depth", "normal")          # what a DCC sends about its camera, beside ready-made maps
# The ControlNet kinds the server knows a default input or a library file name for.
KINDS = ("depth", "canny", "normal", "lineart", "softedge", "openpose", "tile", "scribble", "mlsd", "seg")
_MAP_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


def is_map_name(name: str) -> bool:
    """A name a client may send a ready-made control map under (it becomes a file name in the inputs folder)."""
    return bool(_MAP_NAME.match(name))


def source_of(name: str, settings: JobSettings, sent: Collection[str]) -> Optional[str]:
    """The attachment that feeds ControlNet `name`; None when the server makes its map (canny edges, estimator)."""
    cn = settings.controlnets[name]
    if cn.input is not None:
        return cn.input
    if name in sent:       # (raw depth with an estimator named: the engines run the estimator)
        return name
    if name == "canny" or name in settings.estimate:
        return None
    return "color" if name == "tile" else name


def check_inputs(settings: JobSettings, sent: Collection[str]) -> None:
    """Every ControlNet has its input and every sent map feeds a ControlNet; ProtocolError otherwise.
    The `style` attachment is the style reference image, never a map: it comes with `settings.style`."""
    if settings.style is not None and STYLE_ATTACHMENT not in sent:
        raise ProtocolError(ErrorCode.MISSING_ATTACHMENT, "settings.style is set but no 'style' attachment (the "
                                                          "reference image) was sent")
    if settings.style is None and STYLE_ATTACHMENT in sent:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a 'style' attachment is a style reference image: set "
                                                   "settings.style (its weight) to use it, or leave it out")
    used = set()
    for name in settings.controlnets:
        source = source_of(name, settings, sent)
        if source is None:
            continue
        used.add(source)
        if source not in sent:
            if settings.controlnets[name].input is not None:
                message = f"the {name} ControlNet's input is '{source}', but no '{source}' attachment was sent"
            else:
                message = (f"the {name} ControlNet is on but no '{source}' attachment was sent; send one, name "
                           f"another input (controlnets.{name}.input), estimate it (settings.estimate) or switch "
                           f"that ControlNet off")
            raise ProtocolError(ErrorCode.MISSING_ATTACHMENT, message)
    unused = sorted(set(sent) - set(PASSES) - {"canny", STYLE_ATTACHMENT} - used)
    if unused:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"attachment(s) {', '.join(unused)} feed no ControlNet; name them "
                                                   f"in a ControlNet's input, or leave them out")


def route(settings: JobSettings, inputs) -> None:
    """Give each ControlNet fed by another name's input that map under its own name (after decoding)."""
    sent = set(inputs.control_maps) | {"color"} | ({"depth"} if inputs.depth_raw is not None else set())
    for name in settings.controlnets:
        source = source_of(name, settings, sent)
        if source is None or source == name:
            continue                                    # made by the engine, or already under its name
        if source == "color":
            inputs.control_maps[name] = inputs.color.astype(np.float32) / 255.0
        elif source == "depth" and inputs.depth_raw is not None:
            depth = depth_to_control(inputs.depth_raw, inputs.depth_far)
            inputs.control_maps[name] = np.repeat(depth[:, :, None], 3, axis=2)
        else:
            inputs.control_maps[name] = inputs.control_maps[source]


def control_capabilities(roots: Collection = ()) -> dict:
    """What the welcome says about control: kinds, the passes a client may send, union modes, and the estimators
    whose weights are on this machine (`roots`: the model library's; each as {"name", "role"})."""
    from ..imaging.estimators import available, role_of
    from .union import UNION_MODES
    return {"kinds": list(KINDS), "passes": list(PASSES),
            "union_modes": {family: list(modes) for family, modes in UNION_MODES.items()},
            "estimators": [{"name": name, "role": role_of(name)} for name in available(roots)]}
