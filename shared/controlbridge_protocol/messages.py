"""Every message of protocol v1 as a dataclass; the only place that knows the JSON field names.

A message on the wire is a JSON object with a "type" key, plus an "attachments" list of image descriptors
when it carries images (their bytes follow as binary frames, see framing.py). Receivers are strict about
what clients send (a typo in a setting is an error, not a silent default) and lenient about fields a newer
server adds.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional

from .errors import ErrorCode, ProtocolError
from .images import ImageAttachment
from .settings import JobSettings, typed_fields

PROTOCOL_VERSION = 1


@dataclass
class Capabilities:
    """What a server offers, sent in the welcome: clients read this instead of hard-coding lists."""

    models: List[dict] = field(default_factory=list)       # {"name", "family", "native_resolution"}
    default_model: str = ""
    controlnets: List[str] = field(default_factory=list)   # e.g. ["depth", "canny"]
    samplers: List[str] = field(default_factory=list)
    encodings: List[str] = field(default_factory=list)     # image encodings the server decodes
    limits: Dict[str, int] = field(default_factory=dict)   # max_pixels, max_message_bytes, max_steps, ...
    token_required: bool = False
    features: List[str] = field(default_factory=list)      # "live", "fast_decode", ...
    # The model library: {"controlnet"|"lora"|"vae"|"upscaler": [{"name", "family", ...}], "problems": [...]};
    # LoRAs carry "trigger_words" from their own metadata.
    library: Dict[str, List[dict]] = field(default_factory=dict)
    # {"kinds": ControlNet kinds, "passes": attachments a DCC sends, "union_modes": {family: [...]}, "estimators"}
    control: Dict[str, object] = field(default_factory=dict)
    # Style reference: {"families": [...], "adapters": [{"name", "family", "image_encoder"}],
    # "image_encoders": [{"name", "kind"}]}; adapters empty: none in the library's ipadapter/ folder.
    style: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Capabilities":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Message:
    type: ClassVar[str] = ""
    from_server: ClassVar[bool] = False   # server messages are read leniently (see module doc)

    def attachments(self) -> List[ImageAttachment]:
        return []

    def to_json(self) -> dict:
        d = {"type": self.type}
        d.update(dataclasses.asdict(self))
        return d

    @classmethod
    def from_json(cls, d: dict, attachments: List[ImageAttachment]) -> "Message":
        d = {k: v for k, v in d.items() if k not in ("type", "attachments")}
        return cls(**typed_fields(cls, d, cls.type, allow_unknown=cls.from_server))


# ---- client -> server --------------------------------------------------------------------------

@dataclass
class Hello(Message):
    type: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION
    client: str = ""          # who is speaking, e.g. "blender 4.2 / controlbridge-addon 0.1"


@dataclass
class Generate(Message):
    type: ClassVar[str] = "generate"
    request_id: str = ""      # chosen by the client; echoed in `accepted` and in errors about this request
    settings: Optional[JobSettings] = None
    images: List[ImageAttachment] = field(default_factory=list)

    def attachments(self):
        return list(self.images)

    def to_json(self):
        return {"type": self.type, "request_id": self.request_id, "settings": self.settings.to_dict()}

    @classmethod
    def from_json(cls, d, attachments):
        request_id = d.get("request_id", "")
        if not isinstance(request_id, str):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{cls.type}.request_id must be a string")
        unknown = sorted(set(d) - {"type", "request_id", "settings", "attachments"})
        if unknown:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{cls.type}: unknown field(s) {', '.join(unknown)}")
        if "settings" not in d:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{cls.type} needs a 'settings' object")
        return cls(request_id, JobSettings.from_dict(d["settings"]), list(attachments))


@dataclass
class Cancel(Message):
    type: ClassVar[str] = "cancel"
    job_id: Optional[str] = None   # None: every job of this client


@dataclass
class Ping(Message):
    type: ClassVar[str] = "ping"


# ---- server -> client --------------------------------------------------------------------------

@dataclass
class Welcome(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "welcome"
    protocol: int = PROTOCOL_VERSION
    server: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)

    @classmethod
    def from_json(cls, d, attachments):
        return cls(d.get("protocol", 0), d.get("server", ""), Capabilities.from_dict(d.get("capabilities") or {}))


@dataclass
class Accepted(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "accepted"
    request_id: str = ""
    job_id: str = ""
    queue_position: int = 0   # jobs that will run before this one
    notice: str = ""          # something the client should tell its user, e.g. that the inputs will be cropped


@dataclass
class Progress(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "progress"
    job_id: str = ""
    step: int = 0
    total: int = 0              # 0 with a status: work that is not denoising steps (loading a model, ...)
    preview: Optional[ImageAttachment] = None
    status: str = ""            # what is happening, for a person: "loading model x", "image 2/4, hires fix"

    def attachments(self):
        return [self.preview] if self.preview else []

    def to_json(self):
        return {"type": self.type, "job_id": self.job_id, "step": self.step, "total": self.total,
                "status": self.status}

    @classmethod
    def from_json(cls, d, attachments):
        return cls(d.get("job_id", ""), d.get("step", 0), d.get("total", 0), attachments[0] if attachments else None,
                   d.get("status", ""))


@dataclass
class Result(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "result"
    job_id: str = ""
    request_id: str = ""
    settings: Optional[JobSettings] = None   # everything used, the seed included
    seed: int = 0
    saved_path: str = ""                     # where the server wrote the PNG (already on disk)
    image: Optional[ImageAttachment] = None
    # Saving failed (saved_path empty): why, and where it tried. Keyword-only, so subclasses' fields keep their places.
    save_error: str = field(default="", kw_only=True)
    # Where the server's time went, in ms (see PROTOCOL.md: queued, prepare, model, encode, save, total, ...);
    # absent keys were not measured.
    timings: Dict[str, float] = field(default_factory=dict, kw_only=True)
    worker: str = field(default="", kw_only=True)   # the cluster worker that made it (absent on one device)

    def attachments(self):
        return [self.image]

    def to_json(self):
        d = {"type": self.type, "job_id": self.job_id, "request_id": self.request_id,
             "settings": self.settings.to_dict(), "seed": self.seed, "saved_path": self.saved_path}
        if self.save_error:
            d["save_error"] = self.save_error
        if self.timings:
            d["timings"] = {k: round(float(v), 3) for k, v in self.timings.items()}
        if self.worker:
            d["worker"] = self.worker
        return d

    @classmethod
    def from_json(cls, d, attachments):
        if len(attachments) != 1:
            raise ProtocolError(ErrorCode.MISSING_ATTACHMENT, "a result carries exactly one image")
        timings = d.get("timings") or {}
        if not isinstance(timings, dict) or not all(isinstance(v, (int, float)) for v in timings.values()):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{cls.type}.timings must be an object of numbers")
        return cls(d.get("job_id", ""), d.get("request_id", ""), JobSettings.from_dict(d.get("settings")),
                   d.get("seed", 0), d.get("saved_path", ""), attachments[0], save_error=d.get("save_error", ""),
                   timings={str(k): float(v) for k, v in timings.items()}, worker=str(d.get("worker") or ""))


@dataclass
class JobError(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "error"
    code: str = ErrorCode.INTERNAL
    message: str = ""          # one line a person can act on
    job_id: Optional[str] = None
    request_id: Optional[str] = None


@dataclass
class Cancelled(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "cancelled"
    job_id: str = ""


@dataclass
class Pong(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "pong"
    queued: int = 0            # jobs waiting, all clients together
    running: Optional[str] = None   # the job on the device now, if it is this client's
    your_jobs: List[str] = field(default_factory=list)
    # each loaded model: {"name", "family", "components": {component: {"dtype", "device"}}}
    models: List[dict] = field(default_factory=list)
    # a cluster's workers: {"name", "node", "device", "state", "job", "models", "jobs_done"}; empty on one device
    workers: List[dict] = field(default_factory=list)

    @classmethod
    def from_json(cls, d, attachments):
        return cls(d.get("queued", 0), d.get("running"), list(d.get("your_jobs") or []), list(d.get("models") or []),
                   list(d.get("workers") or []))


# ---- live mode: frames stream in, only the newest unprocessed one is kept, results stream out ---------

@dataclass
class LiveFrame(Generate):
    """A frame of this client's live session; `request_id` names the frame. Not saved to disk."""

    type: ClassVar[str] = "live_frame"


@dataclass
class LiveStart(Message):
    """Announces a live session (optional): its settings and the frames' width and height, so the server builds
    and warms up the live pipeline (compilation, CUDA graphs, kernel choice) before the first frame instead of
    on it. Answered with `live_ready`; frames sent meanwhile wait behind the warm-up."""

    type: ClassVar[str] = "live_start"
    request_id: str = ""
    settings: Optional[JobSettings] = None
    width: int = 0
    height: int = 0

    def to_json(self):
        return {"type": self.type, "request_id": self.request_id, "settings": self.settings.to_dict(),
                "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, d, attachments):
        unknown = sorted(set(d) - {"type", "request_id", "settings", "width", "height", "attachments"})
        if unknown:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"live_start: unknown field(s) {', '.join(unknown)}")
        if "settings" not in d:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "live_start needs a 'settings' object")
        rest = typed_fields(cls, {k: d[k] for k in ("request_id", "width", "height") if k in d}, cls.type)
        return cls(settings=JobSettings.from_dict(d["settings"]), **rest)


@dataclass
class LiveReady(Message):
    """The live pipeline for `live_start` `request_id` is built and warm: `width` x `height` is the working size
    frames render at, `warm_ms` what the warm-up took (0: it was already warm)."""

    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "live_ready"
    request_id: str = ""
    width: int = 0
    height: int = 0
    warm_ms: float = 0.0


@dataclass
class LiveStop(Message):
    """Ends this client's live session: the pending frame is dropped, a running one stops within a step."""

    type: ClassVar[str] = "live_stop"


@dataclass
class LiveResult(Result):
    """The image for a live frame (`request_id`), in the frame's `result_encoding`; `saved_path` is empty."""

    type: ClassVar[str] = "live_result"
    elapsed_ms: float = 0.0     # on the server, from taking the frame to encoding its result
    # timings (from Result), in ms: decode (checking and decoding the frame), queued (waiting for the device),
    # prepare (inputs onto the device), model (the pipeline), output (its images to uint8 at the output size),
    # encode (JPEG/WebP), total (frame read to result ready)

    def to_json(self):
        d = super().to_json()
        d["elapsed_ms"] = self.elapsed_ms
        return d

    @classmethod
    def from_json(cls, d, attachments):
        base = Result.from_json(d, attachments)
        return cls(**{**base.__dict__, "elapsed_ms": d.get("elapsed_ms", 0.0)})


@dataclass
class LiveSkipped(Message):
    """A live frame that will get no result: `unchanged` (same inputs and settings as the last one),
    `superseded` (a newer frame arrived before the device was free) or `stopped`."""

    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "live_skipped"
    request_id: str = ""
    reason: str = ""


# ---- history: this server's saved results, newest first, and one of them with its file --------------

@dataclass
class HistoryEntry:
    """One saved result. Not a message: the items of `history_page` and the entry of `history_item`."""

    job_id: str = ""
    created: str = ""          # ISO time the result was saved (server's local time)
    saved_path: str = ""
    seed: int = 0
    width: int = 0
    height: int = 0
    # A dict, not a JobSettings: results written by another server version may carry fields this client does
    # not know, and that must not make the whole page unreadable. Re-run it with JobSettings.from_dict.
    settings: dict = field(default_factory=dict)
    model: str = ""
    inputs: List[str] = field(default_factory=list)   # names of the inputs kept beside the result

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HistoryEntry":
        if not isinstance(d, dict):   # TypeError: the reader reports a malformed server message
            raise TypeError(f"a history entry must be a JSON object, got {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class HistoryRequest(Message):
    """A page of saved results, newest first; `request_id` (client's choice) is echoed in the answer."""

    type: ClassVar[str] = "history"
    request_id: str = ""
    offset: int = 0
    limit: int = 20            # the server sends at most 100 per page


@dataclass
class HistoryGet(Message):
    """One saved result by job id: its entry and the PNG file."""

    type: ClassVar[str] = "history_get"
    request_id: str = ""
    job_id: str = ""


@dataclass
class HistoryPage(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "history_page"
    request_id: str = ""
    offset: int = 0
    total: int = 0             # saved results in all; the page holds items offset .. offset+len(items)-1
    items: List[HistoryEntry] = field(default_factory=list)

    @classmethod
    def from_json(cls, d, attachments):
        return cls(d.get("request_id", ""), d.get("offset", 0), d.get("total", 0),
                   [HistoryEntry.from_dict(item) for item in d.get("items") or []])


@dataclass
class HistoryItem(Message):
    from_server: ClassVar[bool] = True
    type: ClassVar[str] = "history_item"
    request_id: str = ""
    entry: HistoryEntry = field(default_factory=HistoryEntry)
    image: Optional[ImageAttachment] = None   # png: the saved file's bytes, metadata included

    def attachments(self):
        return [self.image]

    def to_json(self):
        return {"type": self.type, "request_id": self.request_id, "entry": self.entry.to_dict()}

    @classmethod
    def from_json(cls, d, attachments):
        if len(attachments) != 1:
            raise ProtocolError(ErrorCode.MISSING_ATTACHMENT, "a history_item carries exactly one image")
        return cls(d.get("request_id", ""), HistoryEntry.from_dict(d.get("entry") or {}), attachments[0])


CLIENT_MESSAGES = {m.type: m for m in (Hello, Generate, Cancel, Ping, LiveFrame, LiveStart, LiveStop, HistoryRequest,
                                       HistoryGet)}
SERVER_MESSAGES = {m.type: m for m in (Welcome, Accepted, Progress, Result, JobError, Cancelled, Pong,
                                       LiveReady, LiveResult, LiveSkipped, HistoryPage, HistoryItem)}


@dataclass
class Disconnected:
    """Not a wire message: the client library's event for a connection that ended."""

    reason: str = ""
