"""The game-thread side of a generation: menu actions in, worker events out to the engine. No `unreal` import.

This is the one module that knows about both threads: it runs only on the game thread (menu callbacks and
the Slate post-tick pump call it) and talks to the network exclusively through the Worker's queues. The engine
is reached through a small port object (see EnginePort) that the engine layer implements and tests fake.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from controlbridge_protocol import Accepted, Cancelled, Disconnected, JobError, LiveResult, LiveSkipped, Progress, Result

from . import history, jobs, live, shots
from .buffers import CaptureProblem
from .camera_math import CameraView
from .settings_model import PluginSettings
from .worker import (CancelFailed, HistoryFailed, HistoryImage, HistoryLoaded, LiveFailed, LiveSent, SubmitFailed,
                     Submitted)

VIEWPORT = "viewport"
CINE_CAMERA = "cine_camera"
_FAILED = object()          # what _attempt returns when the action failed (and the artist was told)


class UserError(Exception):
    """Something the user can fix (nothing selected, ...); the message is shown as is."""


class ProgressHandle:
    """Interface of the engine's progress notification (engine_ui.TaskProgress implements it)."""

    def update(self, text: str) -> None: ...
    def cancel_requested(self) -> bool: return False
    def succeed(self, text: str) -> None: ...
    def cancelled(self, text: str) -> None: ...
    def fail(self, text: str) -> None: ...   # one clear error notification


class EnginePort:
    """Interface of the engine layer, as the controller uses it."""

    def resolve_view(self, source: str, settings: PluginSettings) -> CameraView: raise NotImplementedError
    def capture(self, view: CameraView, width: int, height: int, settings: PluginSettings) -> jobs.Capture:
        raise NotImplementedError
    def apply_result(self, job: "PendingJob", result: Result) -> str: raise NotImplementedError
    def show_preview(self, job: "PendingJob", image: Any) -> bool: return False
    def end_preview(self, job: "PendingJob") -> None: ...
    # live mode
    def live_source(self, settings: PluginSettings) -> Any: raise NotImplementedError
    def live_view(self, source: Any, settings: PluginSettings) -> CameraView: raise NotImplementedError
    def live_label(self, source: Any) -> str: return str(source)
    def world_key(self) -> str: return ""
    def live_stop_reason(self, started_in: str) -> Optional[str]: return None
    def level_signature(self) -> Any: return None
    def live_capture(self, view: CameraView, width: int, height: int, settings: PluginSettings) -> jobs.Capture:
        return self.capture(view, width, height, settings)
    def show_live_frame(self, view: CameraView, width: int, height: int, settings: PluginSettings,
                        image: Any) -> bool: raise NotImplementedError
    def end_live(self) -> None: ...
    # Level Sequence shots
    def sequence_cuts(self, settings: PluginSettings) -> Any: raise NotImplementedError   # (name, [Cut], playhead)
    def shot_view(self, cut: Any, frame: int) -> CameraView: raise NotImplementedError
    def set_sequence_frame(self, frame: int) -> None: ...
    def apply_shot_result(self, run: Any, item: Any, result: Result) -> Any: raise NotImplementedError
    def finish_shots(self, run: Any) -> str: raise NotImplementedError   # the contact sheet; a summary
    # history
    def history_view(self, camera_label: str, settings: PluginSettings) -> CameraView: raise NotImplementedError
    def choose_history(self, listing: str) -> Optional[history.HistoryChoice]: raise NotImplementedError
    def apply_history(self, item: Any, choice: history.HistoryChoice, settings: PluginSettings) -> str:
        raise NotImplementedError
    # projection
    def project_last(self, settings: PluginSettings) -> str: raise NotImplementedError
    def remove_projections(self) -> int: return 0
    def begin_progress(self, title: str) -> ProgressHandle: raise NotImplementedError
    def show_error(self, message: str) -> None: raise NotImplementedError
    def log(self, message: str) -> None: ...


@dataclass
class PendingJob:
    ticket: int
    view: CameraView
    width: int
    height: int
    settings: PluginSettings
    job_settings: Any
    handle: ProgressHandle
    request_id: Optional[str] = None
    job_id: Optional[str] = None
    cancel_requested: bool = False
    previews_shown: int = 0
    preview_failed: bool = False
    started: float = field(default_factory=time.monotonic)

    def owns(self, event: Any) -> bool:
        job_id = getattr(event, "job_id", None)
        request_id = getattr(event, "request_id", None)
        if job_id and self.job_id and job_id == self.job_id:
            return True
        if request_id and self.request_id and request_id == self.request_id:
            return True
        return False


class Controller:
    def __init__(self, engine: EnginePort, worker: Any, get_settings: Callable[[], PluginSettings]):
        self.engine = engine
        self.worker = worker
        self.get_settings = get_settings
        self.job: Optional[PendingJob] = None
        self.live: Optional[live.LiveSession] = None
        self.shots: Optional[shots.ShotRun] = None
        self.clock: Callable[[], float] = time.monotonic
        self.last_summary: Optional[str] = None
        self._ticket = 0
        self._in_tick = False

    @property
    def busy(self) -> bool:
        return self.job is not None or self.shots is not None

    # ---- menu actions (game thread) ---------------------------------------------------------

    def generate(self, source: Optional[str], rerun: Any = None) -> bool:
        """Capture `source` (VIEWPORT or CINE_CAMERA) and send the job. With `rerun` (a history entry), capture
        that entry's camera again and send its settings with a new seed. Returns True when a job was sent."""
        if self.busy:
            self._already_running()
            return False
        settings = self.get_settings().validated()
        try:
            if rerun is not None:
                view = self.engine.history_view(history.camera_label(rerun), settings)
                width, height = int(rerun.width), int(rerun.height)
            else:
                view = self.engine.resolve_view(source, settings)
                width, height = jobs.output_size(settings, view)
            job_settings = (history.rerun_settings(rerun, width, height) if rerun is not None
                            else jobs.job_settings(settings, width, height, view.label))
            t0 = time.monotonic()
            capture = self.engine.capture(view, width, height, jobs.capture_settings(settings, job_settings))
            self.engine.log(f"ControlBridge: captured {view.label} at {width}x{height} in "
                            f"{time.monotonic() - t0:.2f}s (background {capture.probe.background_fraction:.0%})")
            images = jobs.attachments(capture)
        except (UserError, CaptureProblem) as e:
            self.engine.show_error(str(e))
            return False
        except Exception as e:  # noqa: BLE001 - a bug must still end in one readable message, not a stack trace
            self.engine.log(traceback.format_exc())
            self.engine.show_error(f"ControlBridge could not capture the view: {type(e).__name__}: {e}")
            return False
        self._ticket += 1
        handle = self.engine.begin_progress(f"ControlBridge: {view.label}")
        handle.update(f"Connecting to {settings.server_url}")
        self.job = PendingJob(self._ticket, view, width, height, settings, job_settings, handle)
        self.worker.submit(self._ticket, settings.server_url, settings.token, job_settings, images)
        return True

    # ---- history (game thread; the server is asked from the worker) ----------------------------

    def open_history(self) -> None:
        settings = self.get_settings().validated()
        self.worker.fetch_history(settings.server_url, settings.token, history.LIMIT)
        self.engine.log(f"ControlBridge: asking {settings.server_url} for its last {history.LIMIT} results")

    def _history_event(self, event: Any) -> bool:
        if isinstance(event, HistoryFailed):
            self.engine.show_error(f"ControlBridge could not read the server's history: {event.message}")
        elif isinstance(event, HistoryLoaded):
            entries = list(event.page.items)
            choice = self.engine.choose_history(history.describe(entries))
            if choice is None:
                return True
            try:
                entry = history.chosen(entries, choice)
            except history.HistoryError as e:
                self.engine.show_error(str(e))
                return True
            if choice.rerun_new_seed:
                self.generate(None, rerun=entry)
            else:
                settings = self.get_settings().validated()
                self.worker.fetch_history_item(settings.server_url, settings.token, entry.job_id, choice)
        elif isinstance(event, HistoryImage):
            summary = self._attempt("re-apply the result", lambda: self.engine.apply_history(
                event.item, event.request, self.get_settings().validated()))
            if summary is not _FAILED:
                self.last_summary = summary
                self.engine.log(f"ControlBridge: re-applied {summary}")
        else:
            return False
        return True

    def _attempt(self, what: str, action: Callable[[], Any]) -> Any:
        """An engine action the artist asked for: its result, or _FAILED once the artist has been told why
        (a UserError in its own words; anything else as 'could not <what>', its traceback in the log)."""
        try:
            return action()
        except UserError as e:
            self.engine.show_error(str(e))
        except Exception as e:  # noqa: BLE001 - a bug must still end in one readable message, not a stack trace
            self.engine.log(traceback.format_exc())
            self.engine.show_error(f"ControlBridge could not {what}: {type(e).__name__}: {e}")
        return _FAILED

    def _already_running(self) -> None:
        self.engine.show_error("A ControlBridge generation is already running. "
                               "Wait for it or use ControlBridge > Cancel.")

    def cancel(self) -> None:
        if self.shots is not None:
            self._end_shots("cancelled", "Cancelled")
            return
        job = self.job
        if job is None:
            self.engine.log("ControlBridge: nothing to cancel")
            return
        if job.cancel_requested:
            return
        job.cancel_requested = True
        # before the server named the job, cancel all of this client's jobs (there is only this one);
        # the worker handles commands in order, so this goes out after the job itself
        self.worker.cancel(job.job_id)
        job.handle.update("Cancelling")

    # ---- projection (game thread) -------------------------------------------------------------

    def project_last(self) -> bool:
        """Project the newest result onto the level from the camera that captured it."""
        summary = self._attempt("project the result",
                                lambda: self.engine.project_last(self.get_settings().validated()))
        if summary is _FAILED:
            return False
        self.engine.log(f"ControlBridge: {summary}")
        return True

    def remove_projections(self) -> int:
        removed = self.engine.remove_projections()
        self.engine.log(f"ControlBridge: removed {removed} projection(s)")
        return removed

    # ---- Level Sequence shots (game thread) --------------------------------------------------

    def generate_shots(self) -> bool:
        """Every camera cut of the open sequence at its start frame (or every Nth frame): same settings and seed,
        textures named after the shots, then a contact sheet."""
        return self._start_shots(render_range=False)

    def render_shot_range(self) -> bool:
        """Every frame of one cut as a numbered image sequence on disk."""
        return self._start_shots(render_range=True)

    def _start_shots(self, render_range: bool) -> bool:
        if self.busy:
            self._already_running()
            return False
        settings = self.get_settings().validated()
        try:
            name, cuts, playhead = self.engine.sequence_cuts(settings)
            if render_range:
                cut = (shots.choose_cut(cuts, settings.shot_range_cut) if settings.shot_range_cut
                       else shots.cut_at(cuts, playhead))
                todo = shots.plan_range(cut)
            else:
                todo = shots.plan_frames(cuts, settings.shot_every_nth)
        except (UserError, shots.ShotError) as e:
            self.engine.show_error(str(e))
            return False
        except Exception as e:  # noqa: BLE001
            self.engine.log(traceback.format_exc())
            self.engine.show_error(f"ControlBridge could not read the Level Sequence: {type(e).__name__}: {e}")
            return False
        what = f"{todo[0][0].name}, {len(todo)} frame(s)" if render_range else f"{name}, {len(todo)} shot frame(s)"
        handle = self.engine.begin_progress(f"ControlBridge: {what}")
        self.shots = shots.ShotRun(name, render_range, shots.batch_seed(settings.seed), playhead, list(todo), handle,
                                   total=len(todo))
        self.engine.log(f"ControlBridge: {what}, seed {self.shots.seed}")
        self._feed_shots()
        return True

    def _feed_shots(self) -> None:
        """Capture and send the next frames while fewer than IN_FLIGHT are on the server."""
        run = self.shots
        while run is not None and run.todo and len(run.in_flight) < shots.IN_FLIGHT and not run.cancel_requested:
            cut, frame = run.todo.pop(0)
            settings = self.get_settings().validated()
            try:
                view = self.engine.shot_view(cut, frame)
                width, height = jobs.output_size(settings, view)
                capture = self.engine.capture(view, width, height, settings)
                job = jobs.job_settings(settings, width, height, cut.name).replace(seed=run.seed)
                images = jobs.attachments(capture)
            except (UserError, CaptureProblem) as e:
                self._end_shots("failed", f"{cut.name} frame {frame}: {e}")
                return
            except Exception as e:  # noqa: BLE001
                self.engine.log(traceback.format_exc())
                self._end_shots("failed", f"{cut.name} frame {frame} could not be captured: {type(e).__name__}: {e}")
                return
            self._ticket += 1
            item = shots.ShotItem(cut, frame, self._ticket, view, width, height)
            run.in_flight.append(item)
            self.worker.submit(item.ticket, settings.server_url, settings.token, job, images)
        if run is not None and run.finished:
            self._finish_shots()

    def _handle_shots(self, event: Any) -> bool:
        """The shots run's share of the events; True when the event was the run's."""
        run = self.shots
        if run is None:
            return False
        if isinstance(event, Disconnected):
            self._end_shots("failed", f"Lost the connection to the ControlBridge server: {event.reason}")
            return True
        item = run.owner_of(event)
        if item is None:
            if isinstance(event, JobError) and event.job_id is None and event.request_id is None:
                self._end_shots("failed", f"The server reported an error: {event.message}")
                return True
            return False
        if isinstance(event, Submitted):
            item.request_id = event.request_id
        elif isinstance(event, SubmitFailed):
            run.in_flight.remove(item)
            self._end_shots("failed", event.message)
        elif isinstance(event, Accepted):
            item.job_id = event.job_id
        elif isinstance(event, Progress):
            run.handle.update(f"{item.cut.name} frame {item.frame} ({len(run.done) + 1}/{run.total}): "
                              f"step {event.step}/{event.total}")
        elif isinstance(event, Result):
            run.in_flight.remove(item)
            try:
                made = self.engine.apply_shot_result(run, item, event)
            except Exception as e:  # noqa: BLE001
                self.engine.log(traceback.format_exc())
                self._end_shots("failed", f"{item.cut.name} frame {item.frame} was generated (saved on the server "
                                          f"at {event.saved_path}) but could not be kept: {type(e).__name__}: {e}")
                return True
            run.done.append((item, made))
            run.handle.update(f"{len(run.done)}/{run.total} done")
            self._feed_shots()
        elif isinstance(event, JobError):
            run.in_flight.remove(item)
            self._end_shots("failed", f"{item.cut.name} frame {item.frame}: the server reported an error: "
                                      f"{event.message}")
        elif isinstance(event, Cancelled):
            self._end_shots("cancelled", "Cancelled on the server")
        return True

    def _finish_shots(self) -> None:
        run = self.shots
        try:
            summary = self.engine.finish_shots(run)
        except Exception as e:  # noqa: BLE001
            self.engine.log(traceback.format_exc())
            self._end_shots("failed", f"The shots were generated but the contact sheet failed: {type(e).__name__}: {e}")
            return
        self._end_shots("ok", f"Done: {summary}")

    def _end_shots(self, how: str, text: str) -> None:
        run, self.shots = self.shots, None
        if run is None:
            return
        # the run's frames still on the server are no longer wanted; a frame the server has not named yet is
        # reached by cancelling this client's jobs (None), which covers the named ones too
        names = [item.job_id for item in run.in_flight]
        for job_id in ([None] if None in names else names):
            self.worker.cancel(job_id)
        try:
            self.engine.set_sequence_frame(run.restore_frame)   # the playhead where the user left it
        except Exception:  # noqa: BLE001
            self.engine.log(traceback.format_exc())
        if how == "ok":
            run.handle.succeed(text)
        elif how == "cancelled":
            run.handle.cancelled(text)
        else:
            run.handle.fail(text)

    # ---- live mode (game thread) -------------------------------------------------------------

    def toggle_live(self) -> bool:
        """Start live mode (following the selected CineCamera, or the viewport), or stop it. True = now on."""
        if self.live is not None:
            self.stop_live("switched off")
            return False
        settings = self.get_settings().validated()
        try:
            source = self.engine.live_source(settings)
            self.engine.live_view(source, settings)       # a camera that cannot be captured fails here, once
        except UserError as e:
            self.engine.show_error(str(e))
            return False
        self.live = live.LiveSession(source, self.engine.world_key(), live.LiveThrottle(settings.live_interval_s))
        self.engine.log(f"ControlBridge: live mode on, following {self.engine.live_label(source)}")
        return True

    def stop_live(self, reason: str, error: bool = False) -> None:
        session, self.live = self.live, None
        if session is None:
            return
        self.worker.stop_live()
        try:
            self.engine.end_live()
        except Exception:  # noqa: BLE001 - stopping must always finish
            self.engine.log(traceback.format_exc())
        message = (f"Live mode stopped: {reason}" + ("" if error else
                   f" ({session.frames_shown} frame(s) shown, {session.skipped} skipped by the server)"))
        if error:
            self.engine.show_error(message)
        else:
            self.engine.log(f"ControlBridge: {message}")

    def _live_tick(self) -> None:
        session = self.live
        reason = self.engine.live_stop_reason(session.world_key)
        if reason:
            self.stop_live(reason)
            return
        now = self.clock()
        if not session.throttle.may_capture(now):
            return
        settings = self.get_settings().validated()
        try:
            view = self.engine.live_view(session.source, settings)
            width, height = live.frame_size(settings, view)
            frame = live.frame_settings(settings, width, height, view.label)
            signature = (live.view_signature(view), self.engine.level_signature(), frame.signature())
            if not session.throttle.due(now, signature):
                return
            try:
                capture = self.engine.live_capture(view, width, height, settings)
            except CaptureProblem as e:   # e.g. looking at the sky for a moment: wait for the next change
                session.throttle.last_signature, session.throttle.last_sent_at = signature, now
                self.engine.log(f"ControlBridge: live frame not sent: {e}")
                return
            images = jobs.attachments(capture)
        except UserError as e:
            self.stop_live(str(e), error=True)
            return
        except Exception as e:  # noqa: BLE001
            self.engine.log(traceback.format_exc())
            self.stop_live(f"the view could not be captured: {type(e).__name__}: {e}", error=True)
            return
        self._ticket += 1
        session.throttle.captured(now, signature, self._ticket)
        session.views[self._ticket] = (view, width, height, settings)
        session.frames_sent += 1
        self.worker.send_live_frame(self._ticket, settings.server_url, settings.token, frame, images)

    def _handle_live(self, event: Any) -> bool:
        """Live mode's share of the events; True when the event was live mode's."""
        session = self.live
        if session is None:
            return isinstance(event, (LiveSent, LiveFailed, LiveResult, LiveSkipped))   # late: drop
        throttle = session.throttle
        if isinstance(event, LiveSent):
            throttle.sent(event.ticket, event.request_id)
            if event.ticket in session.views:
                session.views[event.request_id] = session.views.pop(event.ticket)
            return True
        if isinstance(event, LiveFailed):
            throttle.failed(event.ticket)
            self.stop_live(event.message, error=True)
            return True
        if isinstance(event, LiveResult):
            if throttle.owns(event.request_id):
                throttle.answered(event.request_id)
                view, width, height, settings = session.views.pop(event.request_id)
                session.last_elapsed_ms = event.elapsed_ms
                try:
                    if self.engine.show_live_frame(view, width, height, settings, event.image):
                        session.frames_shown += 1
                except Exception as e:  # noqa: BLE001
                    self.engine.log(traceback.format_exc())
                    self.stop_live(f"a frame could not be shown: {type(e).__name__}: {e}", error=True)
            return True
        if isinstance(event, LiveSkipped):
            if throttle.owns(event.request_id):
                throttle.answered(event.request_id)
                session.views.pop(event.request_id, None)
                session.skipped += 1
            return True
        if isinstance(event, JobError) and throttle.owns(event.request_id):
            self.stop_live(f"the server reported an error: {event.message}", error=True)
            return True
        if isinstance(event, Disconnected):
            # one message: the job's failure says it when a job is running
            self.stop_live(f"lost the connection to the ControlBridge server: {event.reason}", error=not self.busy)
            return not self.busy
        return False

    # ---- Slate post-tick (game thread) ------------------------------------------------------

    def tick(self, delta_seconds: float = 0.0) -> None:
        if self._in_tick:   # a modal dialog opened from here ticks Slate again: do not re-enter
            return
        self._in_tick = True
        try:
            for event in self.worker.drain():
                if not (self._handle_live(event) or self._handle_shots(event) or self._history_event(event)):
                    self._handle(event)
            if self.live is not None:
                self._live_tick()
            job = self.job
            if job is not None and not job.cancel_requested and job.handle.cancel_requested():
                self.cancel()
            if self.shots is not None and self.shots.handle.cancel_requested():
                self.cancel()
        finally:
            self._in_tick = False

    def shutdown(self) -> None:
        self.stop_live("the editor is closing")
        if self.shots is not None:
            self._end_shots("cancelled", "Cancelled: the editor is closing")
        if self.job is not None:
            self.worker.cancel(self.job.job_id)
            self.job.handle.cancelled("Cancelled: the editor is closing")
            self.job = None
        self.worker.stop()

    # ---- events -----------------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        job = self.job
        if isinstance(event, CancelFailed):
            self.engine.log(f"ControlBridge: cancel failed: {event.message}")
            return
        if job is None:
            return   # late events of a finished job
        if isinstance(event, Submitted):
            if event.ticket == job.ticket:
                job.request_id = event.request_id
                job.handle.update("Sent; waiting for the server")
        elif isinstance(event, SubmitFailed):
            if event.ticket == job.ticket:
                self._fail(event.message)
        elif isinstance(event, Accepted):
            if job.owns(event):
                job.job_id = event.job_id
                if not job.cancel_requested:
                    job.handle.update(f"Queued: {event.queue_position} job(s) ahead" if event.queue_position
                                      else "Starting")
        elif isinstance(event, Progress):
            if job.owns(event) and not job.cancel_requested:
                job.handle.update(f"Step {event.step}/{event.total}")
                if event.preview is not None:
                    self._show_preview(job, event.preview)
        elif isinstance(event, Result):
            if job.owns(event):
                self._finish_result(job, event)
        elif isinstance(event, JobError):
            if job.owns(event) or (event.job_id is None and event.request_id is None):
                self._fail(f"The server reported an error: {event.message}")
        elif isinstance(event, Cancelled):
            if job.owns(event) or (job.job_id is None and job.cancel_requested):
                self.job = None
                self._end_preview(job)
                job.handle.cancelled("Cancelled")
        elif isinstance(event, Disconnected):
            self._fail(f"Lost the connection to the ControlBridge server: {event.reason}")

    def _show_preview(self, job: PendingJob, image: Any) -> None:
        if job.preview_failed:
            return
        try:
            if self.engine.show_preview(job, image):
                job.previews_shown += 1
        except Exception:  # noqa: BLE001 - a preview that cannot be shown must not end the job
            job.preview_failed = True
            self.engine.log("ControlBridge: previews are off for this job:\n" + traceback.format_exc())

    def _end_preview(self, job: PendingJob) -> None:
        """A job that ends without a result puts the camera's plane back as it was before its previews."""
        if job.previews_shown:
            try:
                self.engine.end_preview(job)
            except Exception:  # noqa: BLE001
                self.engine.log(traceback.format_exc())

    def _finish_result(self, job: PendingJob, result: Result) -> None:
        self.job = None
        if job.cancel_requested:   # the result crossed the cancel on the wire: the user asked for nothing
            self._end_preview(job)
            job.handle.cancelled("Cancelled")
            return
        try:
            summary = self.engine.apply_result(job, result)
        except Exception as e:  # noqa: BLE001
            self.engine.log(traceback.format_exc())
            job.handle.fail(f"The image was generated (saved on the server at {result.saved_path}) but could not "
                            f"be added to the project: {type(e).__name__}: {e}")
            return
        self.last_summary = summary
        job.handle.succeed(f"Done: {summary}")

    def _fail(self, message: str) -> None:
        job, self.job = self.job, None
        if job is not None:
            self._end_preview(job)
            job.handle.fail(message)
        else:
            self.engine.show_error(message)
