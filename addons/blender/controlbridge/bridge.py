"""The one module that knows both threads.

Worker threads do the blocking network work (connect + handshake, sending a job's images) and hand what
happened to the main thread through a queue. A job is "server first, capture second": the worker connects
and reads the handshake, and only once the server has answered does drain() run the job's capture (on the
main thread, where Blender renders) and start a second worker that sends it. A server that is down, a
wrong URL or a refused token is reported without any render. The Client's own reader thread queues server events. The
main thread takes both in `drain()`, run by `bpy.app.timers` while anything is under way, and only there
touches Blender data (result images, placements, history, capabilities, previews).

Live mode (live.py decides what to send and when, and applies what comes back) uses the same Client:
`live_begin` / `live_send` / `live_end` do the network part on a thread of their own, and drain() hands
the live frames' events to the listener live.py registered.

Headless `bpy` never runs timers: tests call drain() themselves.
"""
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import bpy

from . import history, properties, results
from .vendor.controlbridge_protocol import control_offer
from .vendor.controlbridge_protocol import (Accepted, Cancelled, Client, ControlBridgeError, Disconnected, JobError,
                                            LiveResult, LiveSkipped, Progress, Result)

CONNECT_TIMEOUT = 5.0
POLL_INTERVAL = 0.1
ACTIVE_PHASES = ("connecting", "capturing", "submitting", "queued", "running", "cancelling")


@dataclass
class State:
    """What the panel and the status bar show. `line` is always one line; `error` is set when it failed."""

    phase: str = "idle"        # idle | connecting | capturing | submitting | queued | running | cancelling
    #                            | finished | failed | cancelled
    line: str = ""
    error: str = ""
    step: int = 0
    total: int = 0
    job_id: Optional[str] = None
    image_name: str = ""       # the last result image
    preview_name: str = ""
    server_url: str = ""       # the server we are connected to ("" when not connected)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES


@dataclass
class Job:
    """One generation, from the operator to its placement. Built on the main thread."""

    settings: object            # JobSettings
    scene_name: str
    # Main thread, called once the server has answered: returns (images, meta), the ImageAttachments and
    # capture.Capture.meta() (camera, matrix, frame, size); raises with a one-line message.
    capture: Optional[Callable] = None
    images: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    place_background: bool = True
    place_plane: bool = False
    plane_distance: float = 10.0
    project_objects: list = field(default_factory=list)   # object names, from the selection at submit time
    request_id: Optional[str] = None
    job_id: Optional[str] = None
    cancel_requested: bool = False
    image_name: str = ""        # the result image, once placed
    # Main thread, once, when the job is over (finished, failed or cancelled): on_done(job, state). A batch
    # (every camera) collects its results with it.
    on_done: Optional[Callable] = None


class Busy(Exception):
    pass


_state = State()
_inbox: "queue.Queue" = queue.Queue()
_client: Optional[Client] = None
_client_key = None
_client_lock = threading.Lock()
_connect_lock = threading.Lock()   # one connection attempt at a time (the job worker and the live thread)
_worker: Optional[threading.Thread] = None
_job: Optional[Job] = None
_job_server = None                 # (url, token) of the running job
_queue: list = []                  # jobs that start, one after another, when the running one is over
_live_listener = None              # live.py's main-thread callback (kind, value) -> bool, set while live is on
_live_thread: Optional[threading.Thread] = None   # connecting or sending one live frame


def state() -> State:
    return _state


def busy() -> bool:
    return _state.active or (_worker is not None and _worker.is_alive())


def addon_version() -> str:
    """The version in the blender_manifest.toml shipped beside this file."""
    try:
        with open(os.path.join(os.path.dirname(__file__), "blender_manifest.toml"), encoding="utf-8") as f:
            match = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.MULTILINE)
        return match.group(1) if match else "?"
    except OSError:
        return "?"


def client_name() -> str:
    return f"blender {bpy.app.version_string} / controlbridge-addon {addon_version()}"


# ---- main thread: requests -------------------------------------------------------------------------------

def connect(url: str, token: str) -> None:
    """Connect (or reconnect) in the background and read the server's capabilities."""
    if busy():
        raise Busy("ControlBridge is busy with a job; cancel it first")
    _set(phase="connecting", line=f"Connecting to {url} ...", error="", step=0, total=0)
    _start_worker(url, token, None)


def generate(url: str, token: str, job: Job, then=()) -> None:
    """Check the server in the background, then capture (drain(), main thread), then send in the background;
    progress and the result arrive through drain(). `then`: more jobs, each started when the one before is over
    (whatever its outcome; Cancel drops them)."""
    global _job_server
    if busy():
        raise Busy("ControlBridge is busy with a job; wait for it or cancel it")
    _job_server = (url, token)
    _queue[:] = list(then)
    _begin(job)


def _begin(job: Job) -> None:
    global _job
    url, token = _job_server
    _job = job
    _set(phase="connecting", line=f"Connecting to {url} ...", error="", step=0, total=0, job_id=None)
    _start_worker(url, token, job, _connect_work)


def cancel() -> bool:
    """Cancel the running job. Returns False when there is nothing to cancel."""
    job = _job
    if job is None or not _state.active:
        return False
    _queue.clear()
    job.cancel_requested = True
    _set(phase="cancelling", line="Cancelling ...")
    if job.job_id is not None:
        _send_cancel(job.job_id)
    return True


def show(line: str, error: str = "") -> None:
    """A line for the panel and the status bar from a job's owner (a batch's summary), after its last job."""
    _set(line=_one_line(line), error=_one_line(error) if error else "")


def fail(line: str) -> None:
    """Show an error that happened before a job could start (e.g. in the capture)."""
    _set(phase="failed", line=line, error=line)


def shutdown() -> None:
    """Disconnect and forget everything (add-on disabled)."""
    global _client, _client_key, _job, _live_listener
    _live_listener = None
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)
    with _client_lock:
        client, _client, _client_key = _client, None, None
    if client is not None:
        _close_in_background(client)
    _job = None
    _queue.clear()
    _state.__init__()


def _close_in_background(client) -> None:
    """Client.close() joins its reader thread (up to seconds): never on the main thread."""
    def close():
        try:
            client.close()
        except Exception:
            pass
    threading.Thread(target=close, name="controlbridge-close", daemon=True).start()


# ---- worker thread -----------------------------------------------------------------------------------------

def _start_worker(url, token, job, work=None) -> None:
    global _worker
    _worker = threading.Thread(target=work or _work, args=(url, token or None, job, client_name()),
                               name="controlbridge-submit", daemon=True)
    _worker.start()
    _ensure_timer()


def _ensure_client(url, token, name):
    """(the connected Client for (url, token), whether it is new), connecting when there is none and
    reporting the new connection's welcome. Worker threads only."""
    global _client, _client_key
    key = (url, token)
    with _connect_lock:
        with _client_lock:
            client = _client if _client is not None and _client_key == key and _client.connected else None
        if client is not None:
            return client, False
        with _client_lock:
            old, _client, _client_key = _client, None, None
        if old is not None:
            old.close()
        client = Client(url=url, token=token, client_name=name)
        welcome = client.connect(timeout=CONNECT_TIMEOUT)
        with _client_lock:
            _client, _client_key = client, key
        _inbox.put(("welcome", url, welcome.capabilities))
        return client, True


def _work(url, token, job, name) -> None:
    """Off the main thread: touches only the Client and the inbox, never Blender data."""
    try:
        client, new = _ensure_client(url, token, name)
        if job is None:
            if not new:
                _inbox.put(("welcome", url, client.capabilities))
        else:
            _inbox.put(("submitting", job, None))
            request_id = client.submit(job.settings, job.images)
            _inbox.put(("submitted", job, request_id))
    except ControlBridgeError as exc:
        _inbox.put(("failed", job, _one_line(str(exc))))
    except Exception as exc:  # noqa: BLE001 - a worker must always report how it ended
        _inbox.put(("failed", job, _one_line(f"unexpected error: {type(exc).__name__}: {exc}")))


def _connect_work(url, token, job, name) -> None:
    """Off the main thread: connect and read the handshake before the job's capture is made."""
    try:
        _ensure_client(url, token, name)
        _inbox.put(("connected", job, None))
    except ControlBridgeError as exc:
        _inbox.put(("failed", job, _one_line(str(exc))))
    except Exception as exc:  # noqa: BLE001 - a worker must always report how it ended
        _inbox.put(("failed", job, _one_line(f"unexpected error: {type(exc).__name__}: {exc}")))


def _send_cancel(job_id) -> None:
    client = _client

    def send():
        try:
            if client is not None:
                client.cancel(job_id)
        except ControlBridgeError as exc:
            _inbox.put(("failed", _job, _one_line(f"could not cancel: {exc}")))
    threading.Thread(target=send, name="controlbridge-cancel", daemon=True).start()


# ---- live mode: the network part (what to send and when is live.py's business) -------------------------------

def live_begin(url: str, token: str, listener) -> None:
    """Start listening for live events and connect in the background. `listener(kind, value)` is called on
    the main thread from drain(): ("ready", capabilities), ("sent", frame_id), ("failed", line) and
    ("event", server event); it returns True when it took the event (LiveResult, LiveSkipped, JobError of a
    live frame, Disconnected: the last is passed on to the job too)."""
    global _live_listener
    _live_listener = listener
    _start_live_thread(_live_work, url, token or None, None, None, client_name())


def live_send(url: str, token: str, settings, images) -> None:
    """Send one live frame in the background; its id comes back as ("sent", frame_id)."""
    if live_in_flight():
        raise Busy("the previous live frame is still being sent")
    _start_live_thread(_live_work, url, token or None, settings, images, client_name())


def live_in_flight() -> bool:
    return _live_thread is not None and _live_thread.is_alive()


def live_end() -> None:
    """Stop listening and end the server's live session, after the frame being sent, if any."""
    global _live_listener
    if _live_listener is None:
        return
    _live_listener = None
    client = _client

    def stop():
        try:
            if client is not None and client.connected:
                client.stop_live()
        except ControlBridgeError:
            pass   # the connection is gone: so is the live session
    _start_live_thread(stop)


def _start_live_thread(fn, *args) -> None:
    """Live threads run one after another (each waits for the one before), so a frame, a stop and the next
    session's first frame reach the server in the order they were asked for."""
    global _live_thread
    previous = _live_thread

    def run():
        if previous is not None:
            previous.join()
        fn(*args)
    _live_thread = threading.Thread(target=run, name="controlbridge-live", daemon=True)
    _live_thread.start()
    _ensure_timer()


def _live_work(url, token, settings, images, name) -> None:
    """Off the main thread, like _work: the Client and the inbox only."""
    try:
        client, _new = _ensure_client(url, token, name)
        if settings is None:
            _inbox.put(("live_ready", None, client.capabilities))
        else:
            _inbox.put(("live_sent", None, client.send_live_frame(settings, images)))
    except ControlBridgeError as exc:
        _inbox.put(("live_failed", None, _one_line(str(exc))))
    except Exception as exc:  # noqa: BLE001
        _inbox.put(("live_failed", None, _one_line(f"unexpected error: {type(exc).__name__}: {exc}")))


# ---- main thread: the pump ----------------------------------------------------------------------------------

def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(drain):
        # persistent: keep pumping across file loads (on_load_pre settles the job itself)
        bpy.app.timers.register(drain, first_interval=POLL_INTERVAL, persistent=True)


@bpy.app.handlers.persistent
def on_load_pre(*_args) -> None:
    """Another .blend is being opened: the running job belongs to the file being closed, so cancel it."""
    global _job
    job, _job = _job, None
    _queue.clear()
    if job is not None:
        if job.job_id is not None:
            _send_cancel(job.job_id)
        _set(phase="cancelled", line="Cancelled: another file was opened", error="")


def drain() -> Optional[float]:
    """Apply everything the worker and the server sent since the last call. Main thread only.

    Registered with bpy.app.timers while something is under way; returns the next interval, or None
    (which unregisters the timer) when idle."""
    changed = False
    # Checked before reading the inbox: a worker that has ended has put all its reports there already.
    worker_alive = _worker is not None and _worker.is_alive()
    live_alive = live_in_flight()
    while True:
        try:
            item = _inbox.get_nowait()
        except queue.Empty:
            break
        _handle_worker(*item)
        changed = True
    client = _client
    # While the worker is still sending the job, its request id is unknown here and the server's
    # Accepted could not be matched to it: leave the events queued until the worker has reported.
    # The same holds for a live frame's id, while live_send's thread is still sending it.
    sending = (_job is not None and _job.request_id is None and worker_alive) or live_alive
    if client is not None and not sending:
        for event in client.poll_events():
            changed = True
            if isinstance(event, (LiveResult, LiveSkipped, JobError, Disconnected)) and _live_listener is not None:
                if _live_listener("event", event) and not isinstance(event, Disconnected):
                    continue
            if isinstance(event, (LiveResult, LiveSkipped)):
                continue   # a live frame's answer after live mode was turned off
            _handle_event(event)
    if changed:
        _redraw()
    if busy() or _live_listener is not None or live_in_flight():
        return POLL_INTERVAL
    return None


def _handle_worker(kind, payload, value) -> None:
    global _job
    if kind.startswith("live_"):
        if _live_listener is not None:
            _live_listener(kind[5:], value)
        return
    if kind == "welcome":
        url, caps = payload, value
        _state.server_url = url
        properties.store_capabilities(properties.server_info(), url, caps)
        if _job is None and _state.phase == "connecting":
            _set(phase="idle", line=f"Connected to {url}")
        return
    job = payload
    if job is not None and job is not _job:
        return   # a stale report from a job that is over
    if kind == "connected":
        _capture_and_send(job)
    elif kind == "submitting":
        _set(phase="submitting", line="Sending the capture ...")
    elif kind == "submitted":
        job.request_id = value
        _set(phase="queued", line="Waiting for the server ...")
    elif kind == "failed":
        if job is None and _state.phase != "connecting":
            return
        _end(job, phase="failed", line=value, error=value)


def _capture_and_send(job: Job) -> None:
    """The server answered: capture now (main thread, Blender renders here), then send in the background."""
    global _job
    if job.cancel_requested:
        _end(job, phase="cancelled", line="Cancelled", error="")
        return
    caps = getattr(_client, "capabilities", None)
    job.settings = control_offer.fill_estimators(job.settings, caps)
    missing = control_offer.problems(job.settings, caps)
    if missing:   # before a capture that could take long: the server would refuse the job anyway
        line = _one_line("Not on this server: " + "; ".join(missing))
        _end(job, phase="failed", line=line, error=line)
        return
    _set(phase="capturing", line="Capturing ...")
    try:
        if job.capture is not None:
            job.images, job.meta = job.capture()
    except Exception as exc:  # noqa: BLE001 - CaptureError, ValueError, or Blender's own: one line, no job
        line = _one_line(f"Capture failed: {exc}")
        _end(job, phase="failed", line=line, error=line)
        return
    url, token = _job_server
    _set(phase="submitting", line="Sending the capture ...")
    _start_worker(url, token, job)


def _mine(event) -> bool:
    job = _job
    if job is None:
        return False
    if isinstance(event, Accepted):
        return event.request_id == job.request_id
    if isinstance(event, JobError):
        return (event.request_id is not None and event.request_id == job.request_id) or (
            event.job_id is not None and event.job_id == job.job_id) or (
            event.request_id is None and event.job_id is None)
    return job.job_id is not None and getattr(event, "job_id", None) == job.job_id


def _handle_event(event) -> None:
    global _job, _client, _client_key
    if isinstance(event, Disconnected):
        with _client_lock:
            _client, _client_key = None, None
        _state.server_url = ""
        if _job is not None:
            line = _one_line(f"Lost the connection to the server: {event.reason}")
            _end(_job, phase="failed", line=line, error=line)
        return
    if not _mine(event):
        return
    job = _job
    if isinstance(event, Accepted):
        job.job_id = event.job_id
        _state.job_id = event.job_id
        if job.cancel_requested:
            _send_cancel(job.job_id)
            return
        where = f" (queue position {event.queue_position})" if event.queue_position else ""
        _set(phase="queued", line=f"Queued{where}")
    elif isinstance(event, Progress):
        if job.cancel_requested:
            return
        _set(phase="running", step=event.step, total=event.total, line=f"Step {event.step}/{event.total}")
        if event.preview is not None:
            try:
                image = results.update_preview(event.preview)
                image.preview_ensure()
                _state.preview_name = image.name
            except Exception:
                pass   # a preview that cannot be shown is not worth failing the job
    elif isinstance(event, Result):
        _job = None
        try:
            line = _apply_result(job, event)
        except Exception as exc:  # noqa: BLE001 - report, keep the add-on alive
            line = _one_line(f"The image arrived but could not be placed: {type(exc).__name__}: {exc}")
            _end(job, phase="failed", line=line, error=line)
            return
        _end(job, phase="finished", line=line, step=_state.total, error="")
    elif isinstance(event, JobError):
        line = _one_line(event.message)
        _end(job, phase="failed", line=line, error=line)
    elif isinstance(event, Cancelled):
        _end(job, phase="cancelled", line="Cancelled", error="")


def _end(job: Job, **values) -> None:
    """The job is over: show how, tell its owner, then start the next queued job."""
    global _job
    if _job is job:
        _job = None
    _set(**values)
    if job.on_done is not None:
        try:
            job.on_done(job, _state)
        except Exception as exc:  # noqa: BLE001 - the owner's bookkeeping must not stop the pump
            line = _one_line(f"{type(exc).__name__}: {exc}")
            _set(phase="failed", line=line, error=line)
    if _queue and _job is None:
        _begin(_queue.pop(0))


def _apply_result(job: Job, result) -> str:
    scene = bpy.data.scenes.get(job.scene_name) or bpy.context.scene
    image = results.create_result_image(result, job.meta)
    objects = [o for o in (bpy.data.objects.get(n) for n in job.project_objects) if o is not None]
    results.apply_placements(scene, image, job.meta, background=job.place_background, plane=job.place_plane,
                             plane_distance=job.plane_distance, project=bool(objects), objects=objects)
    history.add(scene, image)
    _state.image_name = job.image_name = image.name
    return f"Done: {image.name} ({image.size[0]}x{image.size[1]}, seed {result.seed})"


# ---- helpers -------------------------------------------------------------------------------------------------

def _set(**values) -> None:
    for key, value in values.items():
        setattr(_state, key, value)
    if not _state.active and _state.preview_name:
        try:
            results.clear_preview()   # the job is over: do not leave the preview in the artist's file
        except Exception:
            pass
        _state.preview_name = ""


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "STATUSBAR", "IMAGE_EDITOR"):
                area.tag_redraw()
