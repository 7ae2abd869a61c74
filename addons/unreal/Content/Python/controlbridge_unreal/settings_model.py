"""The plugin's settings: one field list, a plain dataclass, JSON persistence. No `unreal` import.

The field list drives everything else: the editable UObject shown in the editor's details view
(`engine_classes.py` declares one `uproperty` per field, checked against this list by the tests),
loading/saving in the project's Saved/ folder, and the job built from it (`jobs.py`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

from controlbridge_protocol import control_offer

SETTINGS_FILE_VERSION = 1
SETTINGS_SUBDIR = "ControlBridge"
SETTINGS_FILENAME = "settings.json"


@dataclass(frozen=True)
class Field:
    name: str
    type: type
    default: Any
    category: str
    tooltip: str
    minimum: float | None = None
    maximum: float | None = None
    multiline: bool = False
    secret: bool = False


CONTROL_KINDS = control_offer.DCC_KINDS   # the kinds a DCC offers the artist, each with the fields below


def control_fields(kind: str, weight: float, what: str, estimator_examples: str = "") -> tuple:
    """One ControlNet's fields: weight (0 = off), the part of the steps it acts on, the server's ControlNet file
    (a union one runs in this kind's mode), and for maps the DCC cannot render (control_offer.ESTIMATED_KINDS),
    the estimator that makes them."""
    out = (Field(f"{kind}_weight", float, weight, "Control", f"{what}: weight; 0 switches it off.", 0.0, 2.0),
           Field(f"{kind}_start", float, 0.0, "Control", f"{kind.capitalize()} ControlNet acts from this fraction "
                 "of the steps.", 0.0, 1.0),
           Field(f"{kind}_end", float, 1.0, "Control", f"{kind.capitalize()} ControlNet acts until this fraction "
                 "of the steps.", 0.0, 1.0),
           Field(f"{kind}_model", str, "", "Control", f"{kind.capitalize()} ControlNet file from the server's "
                 "library (a union / ControlNet++ file runs in this mode); empty = the model's own."))
    if kind in control_offer.ESTIMATED_KINDS:
        out += (Field(f"{kind}_estimator", str, "", "Control", f"Estimator the server runs on the color to make "
                      f"the {kind} map (one it lists, e.g. {estimator_examples}); empty = the server's first for "
                      f"{kind}."),)
    return out


# Per kind (every one of CONTROL_KINDS): the default weight, what the ControlNet follows, and for a kind whose map
# the server's estimator makes from the color, the estimators its tooltip names as examples.
CONTROL_KIND_TEXT = {
    "depth": (1.0, "Depth ControlNet (the capture's SceneDepth)"),
    "canny": (0.5, "Canny (edges of the captured color, made by the server) ControlNet"),
    "normal": (0.0, "Normal ControlNet (the capture's world normals; the server makes them camera-space)"),
    "lineart": (0.0, "Lineart ControlNet (lines the server's estimator draws from the color)", "lineart"),
    "softedge": (0.0, "Soft edge ControlNet (HED/PiDiNet edges the server's estimator makes from the color)",
                 "hed, pidinet"),
    "tile": (0.0, "Tile ControlNet (the captured color itself: keeps its detail)"),
}


FIELDS: tuple[Field, ...] = (
    Field("server_url", str, "ws://127.0.0.1:8765", "Server", "WebSocket address of the ControlBridge server."),
    Field("token", str, "", "Server", "Access token, if the server was started with --token. Stored in Saved/ControlBridge.",
          secret=True),
    Field("model", str, "", "Server", "Model name on the server; empty = the server's default model."),
    Field("prompt", str, "", "Prompt", "What the generated image should show.", multiline=True),
    Field("negative_prompt", str, "", "Prompt", "What it should not show.", multiline=True),
    Field("seed", int, -1, "Sampling", "Random seed; -1 = a new random seed every time.", -1, 2**31 - 1),
    Field("steps", int, 20, "Sampling", "Number of denoising steps.", 1, 150),
    Field("cfg", float, 7.0, "Sampling", "Classifier-free guidance scale.", 0.0, 30.0),
    Field("sampler", str, "euler_a", "Sampling", "Sampler name as listed by the server (e.g. euler_a, dpmpp_2m)."),
    Field("denoise", float, 0.75, "Sampling", "Denoising strength: 0 keeps the capture, 1 ignores its colors.", 0.0, 1.0),
    *(f for kind in CONTROL_KINDS for f in control_fields(kind, *CONTROL_KIND_TEXT[kind])),
    Field("style_image", str, "", "Style", "Style reference (IP-Adapter): a texture asset (e.g. "
          "/Game/Refs/T_Look.T_Look) or a PNG/JPEG file whose look every generation follows; empty = off."),
    Field("style_weight", float, 0.6, "Style", "How strongly the style image steers the result.", 0.0, 2.0),
    Field("width", int, 768, "Output", "Output width in pixels (the capture is rendered at the output size).", 64, 4096),
    Field("height", int, 512, "Output", "Output height in pixels. With 'Match Camera Aspect', the CineCamera's "
          "filmback decides the aspect and the size fits inside Width x Height.", 64, 4096),
    Field("match_camera_aspect", bool, True, "Output", "Use the CineCamera's filmback aspect ratio for the output."),
    Field("viewport_fov", float, 90.0, "Capture", "Horizontal field of view used for 'Generate from viewport' "
          "(the level viewport's FOV is not readable from Python; the editor default is 90).", 5.0, 170.0),
    Field("max_depth_cm", float, 0.0, "Capture", "Depth beyond this distance (cm) counts as background; "
          "0 = only the sky (the 16-bit depth target saturates at 65504 cm).", 0.0, 65504.0),
    Field("capture_post_process", bool, True, "Capture", "Capture with post-processing (tone mapping, exposure, "
          "color grading) as the viewport shows it; off = the flat scene color. Editor helpers (grid, gizmos, "
          "sprites, volumes) are never captured."),
    Field("create_plane", bool, True, "Result", "Show the result on a plane in front of the camera, sized to its view."),
    Field("plane_distance_cm", float, 500.0, "Result", "Distance of the result plane from the camera (cm).", 1.0, 1.0e6),
    Field("projection_reach_cm", float, 10000.0, "Result", "How far from the camera 'Project result onto level' "
          "reaches (cm); surfaces beyond are not painted.", 100.0, 1.0e6),
    Field("live_steps", int, 4, "Live", "Denoising steps of a live frame (few: a frame should take well under a "
          "second; the 'lcm' sampler with an LCM model is made for 4).", 1, 50),
    Field("live_denoise", float, 0.6, "Live", "Denoising strength of a live frame.", 0.0, 1.0),
    Field("live_sampler", str, "lcm", "Live", "Few-step sampler for live frames, used with Live Steps and CFG 1 "
          "when the server offers it (lcm for LCM models/LoRAs, euler_a_trailing for Turbo); empty = the "
          "Sampling settings' sampler, steps and CFG."),
    Field("live_max_side", int, 512, "Live", "Longest side of a live frame in pixels (the camera's aspect is kept).",
          64, 2048),
    Field("live_interval_s", float, 0.25, "Live", "Least time between two live frames (seconds); a frame is only "
          "captured when the camera or the level changed.", 0.05, 10.0),
    Field("shot_sequence", str, "", "Sequence", "Level Sequence asset to take shots from (e.g. "
          "/Game/Cinematics/SEQ_Main.SEQ_Main; it is opened in Sequencer); empty = the one open in Sequencer."),
    Field("shot_every_nth", int, 0, "Sequence", "Generate Level Sequence shots: 0 = each camera cut's start "
          "frame; N = every Nth frame of each cut. Same settings and seed for all.", 0, 10000),
    Field("shot_range_cut", str, "", "Sequence", "Render shot range: the cut to render frame by frame (its number, "
          "shot name or camera label); empty = the cut under Sequencer's playhead."),
)

FIELD_BY_NAME = {f.name: f for f in FIELDS}


def _fields_from_list(cls):
    """Make `cls` a dataclass with one field per FIELDS entry, in that order, with its default: the list is the
    one definition of the settings."""
    clashes = [f.name for f in FIELDS if f.name in vars(cls)]
    if clashes:
        raise TypeError(f"settings fields {clashes} clash with PluginSettings' own attributes")
    cls.__annotations__ = {f.name: f.type for f in FIELDS}
    for f in FIELDS:
        setattr(cls, f.name, f.default)
    return dataclass(cls)


@_fields_from_list
class PluginSettings:
    """The plugin's settings: one attribute per FIELDS entry (`settings.prompt`, `settings.depth_weight`, ...),
    made by `_fields_from_list`. Build one with keyword arguments, or `from_mapping` to coerce and clamp."""

    if TYPE_CHECKING:   # the fields are made at import, from FIELDS; a type checker sees each one as Any
        def __init__(self, **settings: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "PluginSettings":
        """Build from any mapping (JSON, a UObject's properties); unknown keys are ignored, bad values fall back
        to the default, numbers are clamped to the field's range."""
        values = {}
        for f in FIELDS:
            values[f.name] = coerce(f, data.get(f.name, f.default))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def validated(self) -> "PluginSettings":
        return PluginSettings.from_mapping(self.to_dict())


def coerce(f: Field, value: Any) -> Any:
    try:
        if f.type is bool:
            if isinstance(value, str):
                v: Any = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                v = bool(value)
        elif f.type is int:
            if isinstance(value, bool):
                raise TypeError
            v = int(value) if not isinstance(value, float) else int(round(value))
        elif f.type is float:
            if isinstance(value, bool):
                raise TypeError
            v = float(value)
            if not math.isfinite(v):
                raise ValueError
        else:
            v = "" if value is None else str(value)
    except (TypeError, ValueError):
        return f.default
    if f.type in (int, float):
        if f.minimum is not None and v < f.minimum:
            v = f.type(f.minimum)
        if f.maximum is not None and v > f.maximum:
            v = f.type(f.maximum)
    if f.name == "server_url":
        v = v.strip() or f.default
    return v


def settings_path(project_saved_dir: str) -> str:
    return os.path.join(project_saved_dir, SETTINGS_SUBDIR, SETTINGS_FILENAME)


def load(path: str) -> PluginSettings:
    """Settings from `path`; defaults when the file is missing or unreadable (a broken file never blocks the editor)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return PluginSettings()
    if not isinstance(data, dict):
        return PluginSettings()
    body = data.get("settings", data)
    return PluginSettings.from_mapping(body if isinstance(body, dict) else {})


def save(path: str, settings: PluginSettings) -> None:
    """Write atomically (temp file + replace) so a crash never leaves half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = {"version": SETTINGS_FILE_VERSION, "settings": settings.validated().to_dict()}
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def uproperty_meta(f: Field) -> dict:
    """Metadata for the field's `unreal.uproperty` (details view category, tooltip, slider/clamp ranges)."""
    meta = {"Category": f"ControlBridge|{f.category}", "ToolTip": f.tooltip,
            "DisplayName": " ".join(w.capitalize() if w not in ("cfg", "url") else w.upper()
                                    for w in f.name.split("_"))}
    if f.minimum is not None:
        meta["ClampMin"] = meta["UIMin"] = repr(f.minimum)
    if f.maximum is not None:
        meta["ClampMax"] = meta["UIMax"] = repr(f.maximum)
    if f.multiline:
        meta["MultiLine"] = "true"
    if f.secret:
        meta["PasswordField"] = "true"
    return meta


class SettingsStore:
    """The current settings, loaded once from the project's Saved folder and written back on every change."""

    def __init__(self, path: str):
        self.path = path
        self.current = load(path)

    def get(self) -> PluginSettings:
        return self.current

    def set(self, settings: PluginSettings) -> None:
        self.current = settings.validated()
        save(self.path, self.current)
