"""A job from the moment it is accepted: its checked settings, decoded inputs and cancel flag.

`prepare_job` is where every setting and attachment of a `generate` message is checked against what the
server offers; each failure is a ProtocolError with a specific code and a message a person can act on.
"""
import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from controlbridge_protocol import ErrorCode, Generate, ImageAttachment, JobSettings, LiveStart, ProtocolError
from controlbridge_protocol.settings import MAX_SEED, RANDOM_SEED

from ..engine.control_inputs import check_inputs, is_map_name, route
from ..engine.generate import HIRES_BUILTIN, JobInputs
from ..engine.model_manager import ModelManager, WrongFamily
from ..engine.resolution import center_crop_box
from ..library.hashing import model_file, prefetch
from ..library.scan import LibraryError
from ..engine.samplers import SAMPLERS, step_limit
from ..engine.stream_batch import stream_batch_problem
from ..engine.style_reference import MAX_WEIGHT, STYLE_ATTACHMENT, STYLE_FAMILIES, StyleUnavailable, pick_files
from ..engine.union import mode_problem
from ..imaging.codecs import decode_control_map, decode_rgb, decode_scalar, decode_world_normals
from ..imaging.estimators import ESTIMATORS, role_of, unavailable_reason
from ..imaging.normals import (camera_normals_to_bae, camera_vectors_to_bae, world_normals_to_camera,
                               world_to_camera_problem)
from .config import Limits

ATTACHMENT_NAMES = ("color", "depth", "canny", "normal", STYLE_ATTACHMENT)
RESULT_ENCODINGS = ("png", "jpeg", "webp")


@dataclass
class Job:
    id: str
    client_id: str
    request_id: str
    settings: JobSettings              # seed resolved
    inputs: JobInputs
    attachments: Dict[str, ImageAttachment]   # as received, kept beside the result
    cancel_event: threading.Event = field(default_factory=threading.Event)
    live: bool = False                 # a live frame: latest wins, not saved, answered with a LiveResult
    received_at: float = field(default_factory=time.perf_counter)   # the whole message was read
    decode_ms: float = 0.0             # checking and decoding it (prepare_job)
    warm_up: Optional[Tuple[int, int]] = None   # a live_start: warm the live engine up for these frame sizes

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


@dataclass
class ServerOffer:
    """What jobs may ask for: the models (loaded or in the library), and the limits."""

    models: ModelManager
    limits: Limits
    fast_decode: bool = False          # a tiny autoencoder is loaded


def _fail(code: str, message: str) -> ProtocolError:
    return ProtocolError(code, message)


def _check_range(name: str, value, low, high) -> None:
    if not (low <= value <= high):
        raise _fail(ErrorCode.OUT_OF_RANGE, f"{name} is {value}; it must be between {low} and {high}")


def check_settings(s: JobSettings, offer: ServerOffer) -> None:
    check_models(s, offer.models)
    if s.sampler not in SAMPLERS:
        raise _fail(ErrorCode.UNKNOWN_SAMPLER,
                    f"unknown sampler {s.sampler!r}; use one of {', '.join(SAMPLERS)}")
    _check_range("steps", s.steps, 1, offer.limits.max_steps)
    _check_range("denoise", s.denoise, 0.01, 1.0)
    _check_runs_a_step("steps", s.steps, "denoise", s.denoise)
    limit = step_limit(s.sampler, s.denoise)
    if limit is not None and s.steps > limit:
        raise _fail(ErrorCode.OUT_OF_RANGE, f"steps is {s.steps}; the {s.sampler} sampler runs at most {limit} "
                                            f"steps at denoise {s.denoise:g} (it is made for 1-8 steps)")
    _check_range("cfg", s.cfg, 0.0, 30.0)
    if s.seed != RANDOM_SEED:
        _check_range("seed", s.seed, 0, MAX_SEED)
    _check_range("canny_low", s.canny_low, 0, 1000)
    _check_range("canny_high", s.canny_high, s.canny_low, 1000)
    _check_range("preview_every", s.preview_every, 0, offer.limits.max_steps)
    if s.fast_decode and not offer.fast_decode:
        raise _fail(ErrorCode.OUT_OF_RANGE, "fast_decode is not available: this server has no tiny autoencoder "
                                            "(start it with --taesd madebyollin/taesd, or taesdxl for SDXL)")
    if s.result_encoding not in RESULT_ENCODINGS:
        raise _fail(ErrorCode.OUT_OF_RANGE,
                    f"result_encoding {s.result_encoding!r}; use one of {', '.join(RESULT_ENCODINGS)}")
    for name, cn in s.controlnets.items():
        _check_range(f"controlnets.{name}.weight", cn.weight, 0.0, 5.0)
        _check_range(f"controlnets.{name}.start", cn.start, 0.0, 1.0)
        _check_range(f"controlnets.{name}.end", cn.end, cn.start, 1.0)
    _check_range("batch_size", s.batch_size, 1, offer.limits.max_batch)
    for i, lora in enumerate(s.loras):
        _check_range(f"loras[{i}].weight", lora.weight, -5.0, 5.0)
    if s.hires is not None:
        _check_range("hires.scale", s.hires.scale, 1.0, 4.0)
        _check_range("hires.denoise", s.hires.denoise, 0.01, 1.0)
        _check_range("hires.steps", s.hires.steps, 0, offer.limits.max_steps)
        _check_runs_a_step("hires.steps" if s.hires.steps else "steps", s.hires.steps or s.steps, "hires.denoise",
                           s.hires.denoise)
    if s.style is not None:
        _check_range("style.weight", s.style.weight, 0.0, MAX_WEIGHT)
    for role, estimator in s.estimate.items():
        problem = unavailable_reason(estimator, offer.models.library.roots)   # looks at the disk only
        if problem:
            raise _fail(ErrorCode.UNAVAILABLE, problem)
        if role_of(estimator) != role:
            others = [name for name, spec in ESTIMATORS.items() if spec.role == role]
            raise _fail(ErrorCode.OUT_OF_RANGE, f"the {estimator} estimator makes {role_of(estimator)} maps, "
                                                f"not {role}" + (f" (for {role}: {', '.join(others)})" if others
                                                                 else ""))
    if (s.width is None) != (s.height is None):
        raise _fail(ErrorCode.BAD_MESSAGE, "give both width and height for the output size, or neither")
    if s.width is not None:
        _check_size("output size", s.width, s.height, offer.limits)


def check_models(s: JobSettings, models: ModelManager) -> None:
    """Every model, ControlNet, LoRA, VAE and upscaler the job names exists and fits the model's family."""
    try:
        family = models.family_of(s.model)
        roles = models.controlnet_roles(s.model)
        for name, cn in s.controlnets.items():
            variant = None
            if cn.model is not None:
                variant = models.resolve(cn.model, "controlnet", family).variant
            elif name not in roles:
                raise _fail(ErrorCode.UNKNOWN_CONTROLNET,
                            f"no {name!r} ControlNet for model {s.model or models.default_name!r}; it has "
                            f"{', '.join(roles) or 'none'} (or name one from the library in controlnets.{name}.model)")
            problem = mode_problem(name, cn, family, variant)
            if problem:
                raise _fail(ErrorCode.OUT_OF_RANGE, problem)
        for lora in s.loras:
            models.resolve(lora.name, "lora", family)
        if s.vae is not None:
            models.resolve(s.vae, "vae", family)
        if s.hires is not None and s.hires.upscaler not in HIRES_BUILTIN:
            models.library.resolve(s.hires.upscaler, "upscaler")
        if s.style is not None:
            _check_style(s, family, models)
    except WrongFamily as e:
        raise _fail(ErrorCode.WRONG_FAMILY, str(e)) from None
    except LibraryError as e:
        raise _fail(ErrorCode.UNKNOWN_MODEL, str(e)) from None
    if family == "flux" and s.sampler != "euler":
        raise _fail(ErrorCode.UNKNOWN_SAMPLER, f"FLUX models sample with flow matching: use the euler sampler, "
                                               f"not {s.sampler!r}")
    problem = stream_batch_problem(s, family)
    if problem:
        raise _fail(ErrorCode.OUT_OF_RANGE, problem)
    if family == "flux" and s.hires is not None and s.hires.upscaler == "latent":
        raise _fail(ErrorCode.OUT_OF_RANGE, "latent hires upscale is not available for FLUX (its latents are "
                                            "packed); use lanczos or an upscale model")
    # A checkpoint's sha256 (result metadata) is read while the job waits and loads, not on the device thread.
    prefetch(model_file(models, s.model or models.default_name))


def _check_style(s: JobSettings, family: str, models: ModelManager) -> None:
    """The style reference's adapter and image encoder exist and fit the job's model."""
    if family not in STYLE_FAMILIES:
        raise _fail(ErrorCode.WRONG_FAMILY, f"style reference (IP-Adapter) works with SD1.5 and SDXL models; "
                                            f"{s.model or models.default_name!r} is {family}")
    if s.style.model is not None:
        models.resolve(s.style.model, "ipadapter", family)
    if s.style.image_encoder is not None:
        models.library.resolve(s.style.image_encoder, "clip_vision")
    try:
        pick_files(models.library, family, s.style.model, s.style.image_encoder)
    except StyleUnavailable as e:
        raise _fail(ErrorCode.UNAVAILABLE, str(e)) from None


def _check_live_style(s: JobSettings) -> None:
    if s.style is not None:
        raise _fail(ErrorCode.OUT_OF_RANGE, "style reference runs in jobs, not in live frames; leave settings.style "
                                            "out of live frames (the live preset does)")


def _check_runs_a_step(steps_name: str, steps: int, denoise_name: str, denoise: float) -> None:
    """img2img runs int(steps x denoise) steps: none at all fails deep in diffusers, so say it here."""
    if int(steps * denoise) < 1:
        enough = math.ceil(1 / denoise)
        while int(enough * denoise) < 1:     # float rounding: 1 / 0.1 * 0.1 may fall short of 1
            enough += 1
        raise _fail(ErrorCode.OUT_OF_RANGE, f"{steps_name} is {steps}; at {denoise_name} {denoise:g} img2img runs "
                                            f"int(steps x denoise) = 0 steps: use at least {enough} steps")


def _check_size(what: str, width: int, height: int, limits: Limits) -> None:
    if width < 8 or height < 8:
        raise _fail(ErrorCode.OUT_OF_RANGE, f"{what} {width}x{height} is too small (at least 8x8)")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise _fail(ErrorCode.LIMIT_EXCEEDED,
                    f"{what} {width}x{height} is beyond this server's limits "
                    f"({limits.max_side} px per side, {limits.max_pixels} pixels)")


def prepare_warm_up(msg: LiveStart, client_id: str, offer: ServerOffer, seed: int) -> Job:
    """A live_start, checked like a frame's settings; its job carries no inputs (the engine makes its own)."""
    check_settings(msg.settings, offer)
    _check_live_style(msg.settings)
    _check_size("live_start frame size", msg.width, msg.height, offer.limits)
    return Job(id=uuid.uuid4().hex[:10], client_id=client_id, request_id=msg.request_id,
               settings=msg.settings.replace(seed=seed), inputs=None, attachments={}, live=True,
               warm_up=(msg.width, msg.height))


def frame_key(msg: Generate) -> tuple:
    """A live frame's settings and pixels, compared with `==` to the previous frame's so an unchanged frame is not
    rendered again. The dataclasses compare field by field, the attachments' bytes included: holding the bytes
    (which the job holds anyway) and comparing them costs far less than hashing them (memcmp against ~2 ms of
    blake2b for a 512x512 frame), and far less than serializing the settings (~0.1 ms a frame)."""
    return msg.settings, tuple(msg.images)


def prepare_job(msg: Generate, client_id: str, offer: ServerOffer, live: bool = False,
                received_at: Optional[float] = None) -> Job:
    """Check a generate request and decode its images; raises ProtocolError on anything wrong.
    `received_at`: when its message was read (perf_counter), where the job's timings start; default now."""
    started = time.perf_counter()
    s = msg.settings
    check_settings(s, offer)
    if live:
        _check_live_style(s)
    atts: Dict[str, ImageAttachment] = {}
    for att in msg.images:
        if att.name not in ATTACHMENT_NAMES and not is_map_name(att.name):   # other names: ready-made maps
            raise _fail(ErrorCode.BAD_MESSAGE,
                        f"unknown attachment {att.name!r}; expected {', '.join(ATTACHMENT_NAMES)} or a control "
                        f"map's name (lower-case letters, digits and _)")
        _check_size(f"attachment '{att.name}'", att.width, att.height, offer.limits)
        if att.far is not None and not (math.isfinite(att.far) and att.far > 0):
            raise _fail(ErrorCode.OUT_OF_RANGE, f"attachment '{att.name}': far is {att.far}; it must be a positive "
                                                f"distance in scene units (or left out: no background)")
        if att.world_to_camera is not None or (att.name == "normal" and att.encoding == "exr"):
            _check_world_normals(att)
        atts[att.name] = att
    if "color" not in atts:
        raise _fail(ErrorCode.MISSING_ATTACHMENT, "generate needs a 'color' attachment (the camera's image)")
    check_inputs(s, atts)
    color = atts["color"]
    for att in atts.values():
        if att.name != STYLE_ATTACHMENT and (att.width, att.height) != (color.width, color.height):
            raise _fail(ErrorCode.SIZE_MISMATCH,
                        f"'{att.name}' is {att.width}x{att.height} but 'color' is {color.width}x{color.height}; "
                        f"capture every pass at the same resolution")

    inputs = JobInputs(color=decode_rgb(color))
    for name, att in atts.items():
        if name in ("color", "normal"):
            continue
        if name == STYLE_ATTACHMENT:            # the style reference: any size, never a control map
            inputs.style = decode_rgb(att)
            continue
        if name == "depth" and att.is_scalar:   # raw_f32 or exr: raw depth, normalized on the worker
            inputs.depth_raw, inputs.depth_far = decode_scalar(att), att.far
        else:
            inputs.control_maps[name] = decode_control_map(att)
    if "normal" in atts:     # after the depth, which tells world-space normals' background
        inputs.control_maps["normal"] = _normal_map(atts["normal"], inputs)
    route(s, inputs)

    seed = s.seed if s.seed != RANDOM_SEED else secrets.randbelow(2**32)
    return Job(id=uuid.uuid4().hex[:10], client_id=client_id, request_id=msg.request_id,
               settings=s.replace(seed=seed), inputs=inputs, attachments=atts, live=live,
               received_at=started if received_at is None else received_at,
               decode_ms=(time.perf_counter() - started) * 1000)


def _check_world_normals(att: ImageAttachment) -> None:
    """World-space normals: the `normal` attachment as exr, with a world_to_camera rotation."""
    if att.name != "normal":
        raise _fail(ErrorCode.BAD_MESSAGE, f"attachment '{att.name}': world_to_camera belongs to the 'normal' "
                                           f"attachment (world-space normals as exr) only")
    if att.encoding != "exr":
        raise _fail(ErrorCode.BAD_MESSAGE, f"attachment 'normal': world_to_camera comes with world-space normals as "
                                           f"exr, not {att.encoding}; camera-space normals go without it")
    if att.world_to_camera is None:
        raise _fail(ErrorCode.BAD_MESSAGE, "attachment 'normal' is exr (world-space normals) but has no "
                                           "world_to_camera: send the camera's rotation (9 numbers, rows = its right, "
                                           "up and toward-camera axes in world coordinates) so the server can turn "
                                           "them into camera space")
    problem = world_to_camera_problem(att.world_to_camera)
    if problem:
        raise _fail(ErrorCode.OUT_OF_RANGE, f"attachment 'normal': world_to_camera {problem}")


def _normal_map(att: ImageAttachment, inputs: JobInputs):
    """The DCC's normal pass in NormalBae colours: camera-space normals as sent, or world-space normals (exr) turned
    into camera space, the frame's raw depth, when sent, telling the background."""
    if att.world_to_camera is None:
        return camera_normals_to_bae(decode_control_map(att))
    camera = world_normals_to_camera(decode_world_normals(att), att.world_to_camera, inputs.depth_raw,
                                     inputs.depth_far)
    return camera_vectors_to_bae(camera)


def crop_notice(job: Job) -> str:
    """A sentence for the user when the output's aspect differs from the color image's (the inputs get cropped)."""
    s, (h, w) = job.settings, job.inputs.color.shape[:2]
    if s.width is None:
        return ""
    x0, y0, x1, y1 = center_crop_box(w, h, s.width / s.height)
    if (x1 - x0, y1 - y0) == (w, h):
        return ""
    return (f"the output {s.width}x{s.height} has another aspect than the color image {w}x{h}: the inputs are "
            f"centre-cropped to {x1 - x0}x{y1 - y0} first")
