"""The synchronous, thread-friendly client used by the CLI and both add-ons.

A reader thread receives frames and turns them into events (Accepted, Progress, Result, JobError,
Cancelled, Pong, Disconnected) on a queue; the host takes them with poll_events() from its main-thread
timer, or next_event()/run() where blocking is fine. Sends are serialized by a lock, so any thread may
submit or cancel.
"""
import collections
import inspect
import queue
import threading
import time
import uuid
from typing import Callable, List, Optional

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect as ws_connect

from . import framing
from .errors import (AuthenticationFailed, ConnectionFailed, ControlBridgeError, ErrorCode, JobFailed,
                     ProtocolError, ProtocolMismatch)
from .images import ImageAttachment
from .messages import (PROTOCOL_VERSION, SERVER_MESSAGES, Accepted, Cancel, Cancelled, Disconnected, Generate,
                       Hello, HistoryGet, HistoryItem, HistoryPage, HistoryRequest, JobError, LiveFrame, LiveStart,
                       LiveStop, Ping, Pong, Result, Welcome)
from .settings import JobSettings

DEFAULT_URL = "ws://127.0.0.1:8765"
CLIENT_MAX_MESSAGE_BYTES = 256 * 2**20   # results can be large PNGs
CLOSE_MESSAGE_TOO_BIG = 1009


class Client:
    def __init__(self, url: str = DEFAULT_URL, token: Optional[str] = None,
                 client_name: str = "controlbridge-client"):
        self.url = url
        self.token = token or None
        self.client_name = client_name
        self.welcome: Optional[Welcome] = None
        self._ws = None
        self._events: "queue.Queue" = queue.Queue()
        self._stash: collections.deque = collections.deque()   # events set aside by run()/status()
        self._send_lock = threading.Lock()
        self._reader: Optional[threading.Thread] = None

    # ---- connection ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._reader is not None and self._reader.is_alive()

    @property
    def capabilities(self):
        return self.welcome.capabilities if self.welcome else None

    def connect(self, timeout: float = 10.0) -> Welcome:
        """Open the websocket, do the hello/welcome handshake, start the reader thread."""
        self.close()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        options = dict(additional_headers=headers, open_timeout=timeout, max_size=CLIENT_MAX_MESSAGE_BYTES,
                       compression=None,   # images are compressed already; deflate only costs time
                       # The host may hold the GIL for long stretches (a Blender render): generous keepalive.
                       ping_interval=30, ping_timeout=120)
        supported = inspect.signature(ws_connect).parameters   # websockets 13 .. 17 differ here
        if "proxy" in supported:
            options["proxy"] = None         # a local server: never route through a system proxy
        if "legacy" in supported:
            options["legacy"] = True        # a plain connection object, closed by close()
        try:
            ws = ws_connect(self.url, **options)
        except InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode("utf-8", "replace").strip() if e.response.body else ""
            if status == 401:
                raise AuthenticationFailed(f"the server at {self.url} refused the token: "
                                           f"{body or 'a valid token is required'}") from None
            raise ConnectionFailed(f"the server at {self.url} refused the connection "
                                   f"(HTTP {status}{': ' + body if body else ''})") from None
        except InvalidURI:
            raise ConnectionFailed(f"{self.url!r} is not a websocket URL (expected ws://host:port)") from None
        except (OSError, TimeoutError, InvalidHandshake) as e:
            raise ConnectionFailed(f"cannot reach a ControlBridge server at {self.url} ({_reason(e)}); "
                                   f"is `controlbridge serve` running?") from None
        try:
            for frame in framing.encode(Hello(PROTOCOL_VERSION, self.client_name)):
                ws.send(frame)
            welcome = self._read_welcome(ws, timeout)
        except BaseException:
            ws.close()
            raise
        self._ws, self.welcome = ws, welcome
        self._events = queue.Queue()
        self._stash.clear()
        self._reader = threading.Thread(target=self._read_loop, args=(ws,), name="controlbridge-client-reader",
                                        daemon=True)
        self._reader.start()
        return welcome

    def reconnect(self, attempts: int = 5, delay: float = 0.5, timeout: float = 10.0) -> Welcome:
        """connect(), retried with a growing pause: for a server that restarts or is still loading its model."""
        for attempt in range(attempts):
            try:
                return self.connect(timeout)
            except ConnectionFailed:
                if attempt == attempts - 1:
                    raise
                time.sleep(delay * 2 ** attempt)
        raise ConnectionFailed(f"no attempts to reconnect to {self.url}")

    def _read_welcome(self, ws, timeout: float) -> Welcome:
        reader = framing.MessageReader(SERVER_MESSAGES)
        try:
            while True:
                for msg in reader.feed(ws.recv(timeout=timeout)):
                    if isinstance(msg, Welcome):
                        if msg.protocol != PROTOCOL_VERSION:
                            raise ProtocolMismatch(f"server speaks protocol {msg.protocol}, this client "
                                                   f"{PROTOCOL_VERSION}: update the older side")
                        return msg
                    if isinstance(msg, JobError):
                        cls = ProtocolMismatch if msg.code == ErrorCode.PROTOCOL_VERSION else ConnectionFailed
                        raise cls(msg.message)
        except TimeoutError:
            raise ConnectionFailed(f"{self.url} accepted the connection but sent no welcome within {timeout:g}s; "
                                   f"is it a ControlBridge server?") from None
        except ConnectionClosed as e:
            raise ConnectionFailed(f"{self.url} closed the connection during the handshake ({_reason(e)})") from None

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        self._reader = None

    def _read_loop(self, ws) -> None:
        reader = framing.MessageReader(SERVER_MESSAGES)
        try:
            while True:
                for msg in reader.feed(ws.recv()):
                    if isinstance(msg, ProtocolError):   # a server bug: report it, keep reading
                        msg = JobError(msg.code, f"unreadable message from the server: {msg.message}")
                    self._events.put(msg)
        except ConnectionClosed as e:
            self._events.put(Disconnected(_close_reason(e, self.capabilities)))
        except Exception as e:   # noqa: BLE001 - the reader must always report how it ended
            self._events.put(Disconnected(f"connection lost: {_reason(e)}"))

    # ---- requests -----------------------------------------------------------------------------

    def _send(self, message) -> None:
        if self._ws is None:
            raise ConnectionFailed(f"not connected to {self.url}; connect first")
        try:
            with self._send_lock:   # a message and its attachments go out as one unit
                for frame in framing.encode(message):
                    self._ws.send(frame)
        except ConnectionClosed as e:
            raise ConnectionFailed(_close_reason(e, self.capabilities)) from None

    def submit(self, settings: JobSettings, images: List[ImageAttachment]) -> str:
        """Send a job; returns its request id (the Accepted event maps it to a job id)."""
        return self._send_request(Generate, settings, images)

    def send_live_frame(self, settings: JobSettings, images: List[ImageAttachment]) -> str:
        """Send a frame of this client's live session; returns its frame id (LiveResult.request_id).
        Frames may be sent faster than the server renders them: only the newest waiting one is rendered."""
        return self._send_request(LiveFrame, settings, images)

    def start_live(self, settings: JobSettings, width: int, height: int) -> str:
        """Announce a live session of width x height frames: the server warms its live pipeline up for them and
        answers LiveReady (request_id returned here). Optional, but it moves the first frame's compile time
        out of the artist's first camera move."""
        request_id = uuid.uuid4().hex[:12]
        self._send(LiveStart(request_id, settings, int(width), int(height)))
        return request_id

    def stop_live(self) -> None:
        self._send(LiveStop())

    def _send_request(self, message_class, settings: JobSettings, images: List[ImageAttachment]) -> str:
        limits = self.capabilities.limits if self.capabilities else {}
        max_bytes = limits.get("max_message_bytes")
        for image in images:
            if max_bytes and len(image.data) > max_bytes:
                raise ControlBridgeError(f"image '{image.name}' is {len(image.data)} bytes; the server accepts at "
                                         f"most {max_bytes} per message: send a smaller or compressed image")
        request_id = uuid.uuid4().hex[:12]
        self._send(message_class(request_id, settings, list(images)))
        return request_id

    def cancel(self, job_id: Optional[str] = None) -> None:
        """Cancel one job, or every job of this client when job_id is None."""
        self._send(Cancel(job_id))

    # ---- events -------------------------------------------------------------------------------

    def poll_events(self) -> list:
        """Every event received so far, without blocking (for a host's main-thread timer)."""
        out = list(self._stash)
        self._stash.clear()
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def next_event(self, timeout: Optional[float] = None):
        if self._stash:
            return self._stash.popleft()
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def status(self, timeout: float = 10.0) -> Pong:
        """Ask the server for the queue state (ping/pong)."""
        self._send(Ping())
        return self._wait_for(lambda e: isinstance(e, Pong), timeout, "status")

    def history(self, offset: int = 0, limit: int = 20, timeout: float = 10.0) -> HistoryPage:
        """A page of this server's saved results, newest first (the server sends at most 100 per page)."""
        return self._ask(HistoryRequest(uuid.uuid4().hex[:12], offset, limit), HistoryPage, timeout, "history")

    def history_item(self, job_id: str, timeout: float = 10.0) -> HistoryItem:
        """One saved result: its entry (settings as a dict, for JobSettings.from_dict) and the PNG file."""
        return self._ask(HistoryGet(uuid.uuid4().hex[:12], job_id), HistoryItem, timeout, f"history of {job_id}")

    def _ask(self, request, answer_class, timeout, what):
        """Send a request with a request_id; its answer or its error, matched by that id. Everything else
        (a job in flight's events) is stashed for the next poll."""
        self._send(request)
        event = self._wait_for(lambda e: isinstance(e, (answer_class, JobError)) and e.request_id == request.request_id,
                               timeout, what)
        if isinstance(event, JobError):
            raise ControlBridgeError(event.message)
        return event

    def run(self, settings: JobSettings, images: List[ImageAttachment],
            on_event: Optional[Callable[[object], None]] = None, timeout: Optional[float] = None) -> Result:
        """Submit a job and block until its result; raises JobFailed on an error or a cancel."""
        request_id = self.submit(settings, images)
        job_id = None

        def mine(event) -> bool:
            nonlocal job_id
            if isinstance(event, Accepted) and event.request_id == request_id:
                job_id = event.job_id
            elif isinstance(event, JobError) and event.request_id != request_id and (
                    job_id is None or event.job_id != job_id):
                return False
            elif not isinstance(event, (Accepted, Disconnected, JobError)) and (
                    job_id is None or getattr(event, "job_id", None) != job_id):
                return False
            if on_event:
                on_event(event)
            return isinstance(event, (Result, JobError, Cancelled, Disconnected))

        event = self._wait_for(mine, timeout, "the job")
        if isinstance(event, Result):
            return event
        if isinstance(event, JobError):
            raise JobFailed(event.code, event.message, event.job_id)
        if isinstance(event, Cancelled):
            raise JobFailed("cancelled", f"job {event.job_id} was cancelled", event.job_id)
        raise ConnectionFailed(event.reason)

    def _wait_for(self, wanted, timeout, what):
        """Block until an event satisfies `wanted`; others are stashed for the next poll, in order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        skipped = []
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    event = self._events.get(timeout=left)
                except queue.Empty:
                    raise ControlBridgeError(f"timed out after {timeout:g}s waiting for {what}") from None
                if wanted(event):
                    return event
                if isinstance(event, Disconnected):
                    raise ConnectionFailed(event.reason)
                skipped.append(event)
        finally:
            self._stash.extend(skipped)

    def __enter__(self):
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _close_reason(error: ConnectionClosed, capabilities) -> str:
    rcvd = error.rcvd
    if rcvd is not None and rcvd.code == CLOSE_MESSAGE_TOO_BIG:
        limit = (capabilities.limits.get("max_message_bytes") if capabilities else None) or "its limit"
        return f"the server closed the connection: a message was larger than {limit} bytes"
    if rcvd is not None:
        return f"the server closed the connection (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
    return f"connection lost ({_reason(error)})"
