"""Live mode's decisions: when to capture a frame, which answers belong to the session, the frame's settings.
No `unreal` import; the controller runs it from the Slate post-tick pump (never a loop of its own).

A frame is captured only when the view or the level changed since the last frame sent, no sooner than
`interval_s` after it, and while fewer than MAX_IN_FLIGHT frames are unanswered: one rendering and one waiting
on the server keep the GPU busy while the camera moves; more would only be superseded there (the server keeps
the newest waiting frame) after costing a capture and an upload here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, Optional, Tuple

from controlbridge_protocol import JobSettings, presets

from . import camera_math, jobs
from .settings_model import PluginSettings

MAX_IN_FLIGHT = 2
# a view that moved less than this is the same view (float noise of a camera at rest)
LOCATION_STEP_CM = 0.1
ROTATION_STEP_DEG = 0.01


def view_signature(view: camera_math.CameraView) -> Tuple:
    def q(values, step):
        return tuple(int(round(v / step)) for v in values)
    return (view.key, q(view.location, LOCATION_STEP_CM), q(view.rotation, ROTATION_STEP_DEG),
            round(view.hfov_deg, 3), None if view.aspect is None else round(view.aspect, 4))


@dataclass
class LiveThrottle:
    interval_s: float
    max_in_flight: int = MAX_IN_FLIGHT
    last_signature: Optional[Hashable] = None
    last_sent_at: float = -math.inf
    in_flight: Dict[Any, Any] = field(default_factory=dict)   # ticket -> request id (None until sent)

    def may_capture(self, now: float) -> bool:
        """Cheap pre-check before the view is read: time and room on the server."""
        return now - self.last_sent_at >= self.interval_s and len(self.in_flight) < self.max_in_flight

    def due(self, now: float, signature: Hashable) -> bool:
        return self.may_capture(now) and signature != self.last_signature

    def captured(self, now: float, signature: Hashable, ticket: int) -> None:
        self.last_signature, self.last_sent_at = signature, now
        self.in_flight[ticket] = None

    def sent(self, ticket: int, request_id: str) -> None:
        if ticket in self.in_flight:
            self.in_flight[ticket] = request_id

    def owns(self, request_id: Optional[str]) -> bool:
        return request_id is not None and request_id in self.in_flight.values()

    def answered(self, request_id: Optional[str]) -> None:
        for ticket, rid in list(self.in_flight.items()):
            if rid == request_id:
                del self.in_flight[ticket]

    def failed(self, ticket: int) -> None:
        self.in_flight.pop(ticket, None)
        self.last_signature = None   # the view did not reach the server: capture it again


def frame_size(settings: PluginSettings, view: camera_math.CameraView) -> Tuple[int, int]:
    """A live frame keeps the output's aspect with its longest side at most live_max_side."""
    width, height = jobs.output_size(settings, view)
    scale = min(1.0, settings.live_max_side / max(width, height))
    return camera_math.fit_output_size(max(8, int(width * scale)), max(8, int(height * scale)), width / height)


@dataclass(frozen=True)
class LiveRequest:
    """A live frame's settings before the server is known: the artist's settings for this frame size plus live
    mode's choices. The worker resolves it against the server's welcome (resolve), because which sampler and
    decoder a live frame may use depends on what that server offers; the shared preset decides the rest."""

    base: JobSettings
    steps: int
    denoise: float
    sampler: Optional[str]

    def resolve(self, capabilities) -> JobSettings:
        return presets.live_settings(self.base, capabilities, steps=self.steps, denoise=self.denoise,
                                     sampler=self.sampler)

    def signature(self) -> str:
        """Equal for equal requests: a settings change is a reason to send a new frame."""
        return json.dumps([self.base.to_dict(), self.steps, self.denoise, self.sampler], sort_keys=True)


def frame_settings(settings: PluginSettings, width: int, height: int, label: str) -> LiveRequest:
    """The generation settings for one live frame. A fixed seed stays fixed; seed -1 lets the server keep one
    seed for the whole session (stable frames). An empty Live Sampler keeps the artist's sampler, steps, CFG."""
    s = settings.validated()
    return LiveRequest(jobs.job_settings(s, width, height, label), int(s.live_steps), float(s.live_denoise),
                       s.live_sampler or None)


@dataclass
class LiveSession:
    """One live session: what it follows and what it shows."""

    source: Any                       # controller.VIEWPORT or the CineCamera actor it follows
    world_key: str                    # the level it started in: another level ends the session
    throttle: LiveThrottle
    views: Dict[int, camera_math.CameraView] = field(default_factory=dict)   # ticket -> the view captured
    frames_shown: int = 0
    frames_sent: int = 0
    skipped: int = 0
    last_elapsed_ms: float = 0.0
