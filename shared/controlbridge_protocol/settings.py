"""The one typed object that holds every setting of a generation job, serialized in one place.

Names follow what ComfyUI users know (seed, steps, cfg, sampler, denoise). The server checks ranges
against its advertised limits; this module checks types, so a malformed job fails with the field's name.
"""
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .errors import ErrorCode, ProtocolError

RANDOM_SEED = -1
MAX_SEED = 2**63 - 1


@dataclass
class ControlNetSettings:
    """One ControlNet's strength and the part of the schedule it acts on (as fractions of the steps)."""

    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    model: Optional[str] = None        # a ControlNet from the server's library; None: the default for this name
    # Which input feeds it: an attachment ("depth", "normal", "color", a sent map); None: the attachment of its
    # own name, canny edges made from the color, `estimate[name]`, or the color image for "tile".
    input: Optional[str] = None
    mode: Optional[str] = None         # a union (ControlNet++) model's control type; None: this ControlNet's name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object, where: str = "controlnet") -> "ControlNetSettings":
        return cls(**typed_fields(cls, d, where))


@dataclass
class LoraSettings:
    """A LoRA from the server's library (name as listed in the welcome) and its strength."""

    name: str
    weight: float = 1.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object, where: str = "lora") -> "LoraSettings":
        values = typed_fields(cls, d, where)
        if "name" not in values:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{where}.name is required")
        return cls(**values)


@dataclass
class HiresSettings:
    """ComfyUI's "hires fix": upscale the first result, then refine it with a low denoise."""

    scale: float = 1.5
    denoise: float = 0.35
    steps: int = 0                     # 0: the job's steps
    upscaler: str = "lanczos"          # "lanczos" (pixels), "latent", or an upscale model from the library

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object, where: str = "hires") -> "HiresSettings":
        return cls(**typed_fields(cls, d, where))


@dataclass
class StyleSettings:
    """Style reference (IP-Adapter): the job's `style` attachment steers the look, so every shot keeps one style."""

    weight: float = 0.6                # 0..2; how strongly the reference image steers the result
    model: Optional[str] = None        # an IP-Adapter from the library's ipadapter/; None: the first that fits
    image_encoder: Optional[str] = None  # a CLIP vision model from clip_vision/; None: the one the adapter needs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object, where: str = "style") -> "StyleSettings":
        return cls(**typed_fields(cls, d, where))


def _default_controlnets() -> Dict[str, ControlNetSettings]:
    return {"depth": ControlNetSettings(), "canny": ControlNetSettings()}


@dataclass
class JobSettings:
    prompt: str
    negative_prompt: str = ""
    seed: int = RANDOM_SEED            # -1: the server picks one and reports it
    steps: int = 20
    cfg: float = 7.0
    sampler: str = "euler_a"
    denoise: float = 0.75              # img2img strength: how much of the color image is changed
    width: Optional[int] = None        # output size; None: the color image's size
    height: Optional[int] = None
    model: Optional[str] = None        # None: the server's default model
    # Which ControlNets act, by name; leave a name out to switch that ControlNet off.
    controlnets: Dict[str, ControlNetSettings] = field(default_factory=_default_controlnets)
    canny_low: int = 100               # OpenCV Canny thresholds, used when the server computes the edges
    canny_high: int = 200
    preview_every: int = 0             # send a preview image every N steps; 0: none
    fast_decode: bool = False          # decode with the tiny autoencoder (TAESD): for live frames, not finals
    result_encoding: str = "png"       # png (lossless, saved the same), jpeg or webp for the wire copy
    filename_prefix: str = ""          # sanitized by the server; never a path
    vae: Optional[str] = None          # a VAE from the server's library; None: the model's own
    loras: List[LoraSettings] = field(default_factory=list)
    batch_size: int = 1                # images from seeds seed, seed+1, ...; each is its own result
    hires: Optional[HiresSettings] = None
    # ControlNet name -> an estimator run on the color image when no such attachment is sent, e.g.
    # {"depth": "midas"} for a photo (offered when the server has the estimators extra).
    estimate: Dict[str, str] = field(default_factory=dict)
    # Live frames only: consecutive frames' steps batched into one model call (more frames/s on a GPU, each shown
    # N-1 frames late for N run steps); needs the ddim or ddim_trailing sampler and cfg 1. Jobs ignore it.
    stream_batch: bool = False
    style: Optional[StyleSettings] = None  # style reference; the image is the job's `style` attachment

    def replace(self, **changes) -> "JobSettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object) -> "JobSettings":
        if not isinstance(d, dict):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "'settings' must be a JSON object")
        d = dict(d)
        nested = {key: d.pop(key) for key in ("controlnets", "loras", "hires", "estimate", "style") if key in d}
        values = typed_fields(cls, d, "settings", skip=set(nested))
        if "controlnets" in nested:
            if not isinstance(nested["controlnets"], dict):
                raise ProtocolError(ErrorCode.BAD_MESSAGE,
                                    "settings.controlnets must be an object of name -> {weight, start, end}")
            values["controlnets"] = {str(name): ControlNetSettings.from_dict(cn, f"settings.controlnets.{name}")
                                     for name, cn in nested["controlnets"].items()}
        if "loras" in nested:
            if not isinstance(nested["loras"], list):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, "settings.loras must be a list of {name, weight}")
            values["loras"] = [LoraSettings.from_dict(x, f"settings.loras[{i}]")
                               for i, x in enumerate(nested["loras"])]
        if "estimate" in nested:
            estimate = nested["estimate"]
            if not isinstance(estimate, dict) or not all(isinstance(v, str) for v in estimate.values()):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, "settings.estimate must map ControlNet names to estimator "
                                                           "names, e.g. {\"depth\": \"midas\"}")
            values["estimate"] = dict(estimate)
        if nested.get("hires") is not None:
            values["hires"] = HiresSettings.from_dict(nested["hires"], "settings.hires")
        if nested.get("style") is not None:
            values["style"] = StyleSettings.from_dict(nested["style"], "settings.style")
        if "prompt" not in values:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "settings.prompt is required (it may be empty)")
        return cls(**values)


_JSON_TYPES = {str: ((str,), "a string"), int: ((int,), "an integer"), float: ((int, float), "a number"),
               bool: ((bool,), "true or false")}


def _json_rule(annotation):
    """(accepted Python types, words for the error) for a field annotated str, int, float or Optional[...]."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        types, words = _JSON_TYPES[inner]
        return types + (type(None),), words + " or null"
    return _JSON_TYPES[annotation]


def _check_text(where: str, text: str) -> None:
    """JSON may carry lone surrogates ("\\ud800") that no UTF-8 text (a tokenizer, a PNG chunk) can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{where} is not valid Unicode text: a lone surrogate "
                                                   f"{text[e.start]!r} at character {e.start}") from None


def typed_fields(cls, d: object, where: str, skip=frozenset(), allow_unknown=False) -> dict:
    """Pick the dataclass's fields out of `d`, checking each value's JSON type.

    Unknown keys are an error (a typo must not become a silent default) unless `allow_unknown`, which
    receivers of server messages use so that an older client can talk to a newer server."""
    if not isinstance(d, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{where} must be a JSON object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(d) - names)
    if unknown and not allow_unknown:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{where}: unknown field(s) {', '.join(unknown)}")
    out = {}
    for name, value in d.items():
        if name not in names:
            continue
        types, words = _json_rule(hints[name])
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{where}.{name} must be {words}, got {value!r}")
        if isinstance(value, str):
            _check_text(f"{where}.{name}", value)
        out[name] = float(value) if hints[name] is float else value
    return out
