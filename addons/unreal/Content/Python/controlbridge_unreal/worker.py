"""The network side: one worker thread owns the Client; the game thread talks to it through two queues.

The game thread calls submit()/cancel() (they only enqueue, never block) and drain() from its Slate tick to
take the events that arrived (Submitted, SubmitFailed, the protocol's Accepted/Progress/Result/JobError/
Cancelled/Disconnected). Connecting can take seconds (a server that is down, a wrong host), which is why it
happens here and never on the game thread. No `unreal` import: nothing here may touch the engine.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from controlbridge_protocol import Client, ControlBridgeError, Disconnected, control_offer

from .jobs import check_against_capabilities


@dataclass
class Submitted:
    ticket: int
    request_id: str


@dataclass
class SubmitFailed:
    ticket: int
    message: str


@dataclass
class CancelFailed:
    message: str


@dataclass
class LiveSent:
    ticket: int
    request_id: str


@dataclass
class LiveFailed:
    ticket: int
    message: str


@dataclass
class HistoryLoaded:
    page: Any            # controlbridge_protocol.HistoryPage


@dataclass
class HistoryImage:
    item: Any            # controlbridge_protocol.HistoryItem: the entry and its PNG
    request: Any         # what the game thread asked to do with it, handed back as is


@dataclass
class HistoryFailed:
    message: str


@dataclass
class _History:
    url: str
    token: str
    limit: int


@dataclass
class _HistoryGet:
    url: str
    token: str
    job_id: str
    request: Any


@dataclass
class _Submit:
    ticket: int
    url: str
    token: str
    settings: Any
    images: list


@dataclass
class _Cancel:
    job_id: Optional[str]


@dataclass
class _LiveFrame:
    ticket: int
    url: str
    token: str
    request: Any     # live.LiveRequest
    images: list


class _LiveStop:
    pass


_STOP = object()


class Worker:
    def __init__(self, client_name: str, client_factory: Callable[..., Any] = Client, connect_timeout: float = 5.0,
                 poll_interval: float = 0.05):
        self.client_name = client_name
        self._client_factory = client_factory
        self._connect_timeout = connect_timeout
        self._poll_interval = poll_interval
        self._commands: "queue.Queue[Any]" = queue.Queue()
        self._events: "queue.Queue[Any]" = queue.Queue()
        self._client = None
        self._client_key: Optional[tuple] = None
        self._welcome = None
        self._thread: Optional[threading.Thread] = None

    # ---- game thread ------------------------------------------------------------------------

    @property
    def capabilities(self):
        """The last server's welcome capabilities (None before the first connection); read-only from any thread."""
        return getattr(self._welcome, "capabilities", None)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="controlbridge-unreal-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, ticket: int, url: str, token: str, settings: Any, images: list) -> None:
        self.start()
        self._commands.put(_Submit(ticket, url, token, settings, list(images)))

    def cancel(self, job_id: Optional[str] = None) -> None:
        self._commands.put(_Cancel(job_id))

    def send_live_frame(self, ticket: int, url: str, token: str, request: Any, images: list) -> None:
        self.start()
        self._commands.put(_LiveFrame(ticket, url, token, request, list(images)))

    def stop_live(self) -> None:
        self._commands.put(_LiveStop())

    def fetch_history(self, url: str, token: str, limit: int) -> None:
        self.start()
        self._commands.put(_History(url, token, limit))

    def fetch_history_item(self, url: str, token: str, job_id: str, request: Any = None) -> None:
        self.start()
        self._commands.put(_HistoryGet(url, token, job_id, request))

    def drain(self) -> List[Any]:
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._commands.put(_STOP)
        thread.join(timeout)
        self._thread = None

    # ---- worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    cmd = self._commands.get(timeout=self._poll_interval)
                except queue.Empty:
                    cmd = None
                if cmd is _STOP:
                    return
                if isinstance(cmd, _Submit):
                    self._submit(cmd)
                elif isinstance(cmd, _Cancel):
                    self._cancel(cmd)
                elif isinstance(cmd, _LiveFrame):
                    self._live_frame(cmd)
                elif isinstance(cmd, _LiveStop):
                    self._live_stop()
                elif isinstance(cmd, (_History, _HistoryGet)):
                    self._history(cmd)
                self._pump()
        finally:
            self._drop_client()

    def _pump(self) -> None:
        client = self._client
        if client is None:
            return
        for event in client.poll_events():
            self._events.put(event)
            if isinstance(event, Disconnected):
                self._drop_client()   # the next submit reconnects

    def _ensure_client(self, url: str, token: str):
        key = (url, token or "")
        if self._client is not None and self._client_key == key and self._client.connected:
            return self._client
        self._drop_client()
        client = self._client_factory(url=url, token=token or None, client_name=self.client_name)
        self._welcome = client.connect(timeout=self._connect_timeout)
        self._client, self._client_key = client, key
        return client

    def _submit(self, cmd: _Submit) -> None:
        try:
            client = self._ensure_client(cmd.url, cmd.token)
            caps = self.capabilities
            settings = control_offer.fill_estimators(cmd.settings, caps)
            problem = check_against_capabilities(settings, caps)
            if problem:
                self._events.put(SubmitFailed(cmd.ticket, problem))
                return
            request_id = client.submit(settings, cmd.images)
        except ControlBridgeError as e:
            self._events.put(SubmitFailed(cmd.ticket, _sentence(str(e))))
            return
        except Exception as e:  # noqa: BLE001 - anything else is a bug, but must still reach the user
            self._events.put(SubmitFailed(cmd.ticket, f"Unexpected error while sending the job: {type(e).__name__}: {e}"))
            return
        self._events.put(Submitted(cmd.ticket, request_id))

    def _live_frame(self, cmd: _LiveFrame) -> None:
        try:
            client = self._ensure_client(cmd.url, cmd.token)
            # cmd.request is a live.LiveRequest: the preset needs this server's samplers and decoders
            caps = self.capabilities
            settings = control_offer.fill_estimators(cmd.request.resolve(caps), caps)
            problem = check_against_capabilities(settings, caps)
            if problem:
                self._events.put(LiveFailed(cmd.ticket, problem))
                return
            request_id = client.send_live_frame(settings, cmd.images)
        except ControlBridgeError as e:
            self._events.put(LiveFailed(cmd.ticket, _sentence(str(e))))
            return
        except Exception as e:  # noqa: BLE001 - a bug must still reach the user
            self._events.put(LiveFailed(cmd.ticket, f"Unexpected error while sending a live frame: "
                                                    f"{type(e).__name__}: {e}"))
            return
        self._events.put(LiveSent(cmd.ticket, request_id))

    def _history(self, cmd) -> None:
        """The client waits for the answer here, on the worker thread; a job's events that arrive meanwhile are
        kept by the client for the next poll."""
        try:
            client = self._ensure_client(cmd.url, cmd.token)
            if isinstance(cmd, _History):
                self._events.put(HistoryLoaded(client.history(limit=cmd.limit)))
            else:
                self._events.put(HistoryImage(client.history_item(cmd.job_id), cmd.request))
        except ControlBridgeError as e:
            self._events.put(HistoryFailed(_sentence(str(e))))
        except Exception as e:  # noqa: BLE001 - a bug must still reach the user
            self._events.put(HistoryFailed(f"Unexpected error while reading the history: {type(e).__name__}: {e}"))

    def _live_stop(self) -> None:
        if self._client is None:
            return
        try:
            self._client.stop_live()
        except ControlBridgeError:
            pass   # no connection: the server already ended the session

    def _cancel(self, cmd: _Cancel) -> None:
        if self._client is None:
            return
        try:
            self._client.cancel(cmd.job_id)
        except ControlBridgeError as e:
            self._events.put(CancelFailed(_sentence(str(e))))

    def _drop_client(self) -> None:
        client, self._client, self._client_key = self._client, None, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a dead socket must not kill the worker
                pass


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] if text else "Unknown error"
