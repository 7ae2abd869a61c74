"""The websocket side: who may connect, the hello handshake, reading requests, delivering events.

Security, checked before the websocket opens: a browser Origin not on the allow-list is refused (a web
page must not drive a local GPU server; `Origin: null` is refused too), a Host header that is not a
loopback name is refused while listening on loopback (DNS rebinding), and a token, when set, is required
as `Authorization: Bearer <token>`.
"""
import asyncio
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Callable, Dict, Optional

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from controlbridge_protocol import (PROTOCOL_VERSION, RANDOM_SEED, Accepted, Cancel, Cancelled, ErrorCode, Generate,
                                   Hello, HistoryGet, HistoryItem, HistoryPage, HistoryRequest, ImageAttachment,
                                   JobError, LiveFrame, LiveSkipped, LiveStop, Ping, Pong, Progress, ProtocolError,
                                   Welcome)
from controlbridge_protocol.framing import MessageReader, encode
from controlbridge_protocol.messages import CLIENT_MESSAGES

from .config import ServerConfig, is_loopback
from .history import History
from .jobs import ServerOffer, frame_fingerprint, prepare_job
from .scheduler import FairScheduler

log = logging.getLogger("controlbridge.transport")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
PREVIEW_BACKLOG = 8     # when this many messages wait for a slow client, previews are dropped


@dataclass
class Connection:
    id: str
    ws: ServerConnection
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    client_name: str = ""
    greeted: bool = False
    live_fingerprint: Optional[str] = None   # the newest live frame that was or will be rendered
    live_seed: Optional[int] = None          # a live session's fixed seed, when frames ask for a random one


class WebsocketTransport:
    def __init__(self, config: ServerConfig, scheduler: FairScheduler, offer: ServerOffer,
                 welcome: Callable[[], Welcome],
                 history: History):
        self.config = config
        self.history = history
        self.scheduler = scheduler
        self.offer = offer
        self.welcome = welcome
        self.connections: Dict[str, Connection] = {}
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    # ---- before the websocket opens -----------------------------------------------------------

    def check_request(self, connection: ServerConnection, request):
        headers = request.headers
        origin = headers.get("Origin")
        if origin is not None and origin not in self.config.allowed_origins:
            log.warning("refused a connection from web origin %r", origin)
            return connection.respond(HTTPStatus.FORBIDDEN,
                                      f"web origin {origin!r} is not allowed (see --allow-origin)\n")
        if is_loopback(self.config.host):
            host = (headers.get("Host") or "").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in LOOPBACK_NAMES:
                return connection.respond(HTTPStatus.FORBIDDEN, f"host {host!r} is not this machine\n")
        if self.config.token:
            given = headers.get("Authorization", "")
            expected = f"Bearer {self.config.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                why = "wrong token" if given else "this server requires a token"
                return connection.respond(HTTPStatus.UNAUTHORIZED, f"{why}\n")
        return None

    # ---- one connection -----------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        conn = Connection(uuid.uuid4().hex[:8], ws)
        self.connections[conn.id] = conn
        sender = asyncio.create_task(self._send_loop(conn))
        reader = MessageReader(CLIENT_MESSAGES)
        try:
            async for frame in ws:
                for item in reader.feed(frame):
                    try:
                        await self._dispatch(conn, item)
                    except Exception as e:  # noqa: BLE001 - a bug in one request must not drop the client
                        log.exception("request from %s failed", conn.client_name or conn.id)
                        self._send(conn, JobError(ErrorCode.INTERNAL, f"the server failed on this request: {e}",
                                                  None, getattr(item, "request_id", None)))
        except ConnectionClosed:
            pass
        finally:
            del self.connections[conn.id]
            self.scheduler.forget(conn.id)   # a client that left takes its jobs with it
            log.info("client %s left", conn.client_name or conn.id)
            sender.cancel()

    async def _send_loop(self, conn: Connection) -> None:
        try:
            while True:
                message = await conn.outbox.get()
                for frame in encode(message):     # one message and its attachments, nothing in between
                    await conn.ws.send(frame)
        except ConnectionClosed:
            pass

    def _send(self, conn: Connection, message) -> None:
        if isinstance(message, Progress) and message.preview is not None and conn.outbox.qsize() >= PREVIEW_BACKLOG:
            message = Progress(message.job_id, message.step, message.total, None, message.status)   # no previews for a slow client
        conn.outbox.put_nowait(message)

    def emit(self, client_id: str, message) -> None:
        """Thread-safe delivery, for the device worker."""
        self.loop.call_soon_threadsafe(self._deliver, client_id, message)

    def _deliver(self, client_id: str, message) -> None:
        conn = self.connections.get(client_id)
        if conn is not None:
            self._send(conn, message)

    async def _dispatch(self, conn: Connection, item) -> None:
        if isinstance(item, ProtocolError):
            self._send(conn, JobError(item.code, item.message, None, item.request_id))
        elif isinstance(item, Hello):
            await self._hello(conn, item)
        elif not conn.greeted:
            self._send(conn, JobError(ErrorCode.NOT_READY, "say hello first: the first message must be 'hello'"))
        elif isinstance(item, LiveFrame):          # a Generate subclass: test it first
            await self._live_frame(conn, item)
        elif isinstance(item, LiveStop):
            self._live_stop(conn)
        elif isinstance(item, Generate):
            await self._generate(conn, item)
        elif isinstance(item, Cancel):
            self._cancel(conn, item)
        elif isinstance(item, Ping):
            self._send(conn, Pong(**self.scheduler.snapshot(conn.id)))
        elif isinstance(item, HistoryRequest):
            self._history_page(conn, item)
        elif isinstance(item, HistoryGet):
            await self._history_get(conn, item)

    async def _hello(self, conn: Connection, hello: Hello) -> None:
        if hello.protocol != PROTOCOL_VERSION:
            self._send(conn, JobError(ErrorCode.PROTOCOL_VERSION,
                                      f"this server speaks ControlBridge protocol {PROTOCOL_VERSION}, the client "
                                      f"speaks {hello.protocol}: update the older of the two"))
            await asyncio.sleep(0.05)   # let the sender flush the error before closing
            await conn.ws.close(1008, "protocol version mismatch")
            return
        conn.client_name, conn.greeted = hello.client, True
        log.info("client %s connected: %s", conn.id, hello.client or "(unnamed)")
        self._send(conn, self.welcome())

    async def _generate(self, conn: Connection, msg: Generate) -> None:
        if self.scheduler.queued_for(conn.id) >= self.offer.limits.max_queued_per_client:
            self._send(conn, JobError(ErrorCode.LIMIT_EXCEEDED,
                                      f"{self.offer.limits.max_queued_per_client} jobs already queued for this "
                                      f"client; wait for some to finish", None, msg.request_id))
            return
        try:
            # Decoding images takes milliseconds: off the loop, so other clients are not held up.
            job = await asyncio.to_thread(prepare_job, msg, conn.id, self.offer)
        except ProtocolError as e:
            self._send(conn, JobError(e.code, e.message, None, msg.request_id))
            return
        if conn.id not in self.connections:
            return
        position = self.scheduler.submit(job)
        self._send(conn, Accepted(msg.request_id, job.id, position))   # before the worker can report progress

    async def _live_frame(self, conn: Connection, msg: LiveFrame) -> None:
        if msg.settings.seed == RANDOM_SEED:
            # A fixed seed for the whole session keeps consecutive frames stable.
            conn.live_seed = conn.live_seed if conn.live_seed is not None else secrets.randbelow(2**32)
            msg.settings = msg.settings.replace(seed=conn.live_seed)
        fingerprint = await asyncio.to_thread(frame_fingerprint, msg)
        if fingerprint == conn.live_fingerprint:
            self._send(conn, LiveSkipped(msg.request_id, "unchanged"))
            return
        try:
            job = await asyncio.to_thread(prepare_job, msg, conn.id, self.offer, True)
        except ProtocolError as e:
            self._send(conn, JobError(e.code, e.message, None, msg.request_id))
            return
        if conn.id not in self.connections:
            return
        conn.live_fingerprint = fingerprint
        _, superseded = self.scheduler.submit_live(job)
        if superseded is not None:
            self._send(conn, LiveSkipped(superseded.request_id, "superseded"))

    def _live_stop(self, conn: Connection) -> None:
        conn.live_fingerprint = conn.live_seed = None
        for job in self.scheduler.cancel_live(conn.id):
            self._send(conn, LiveSkipped(job.request_id, "stopped"))

    def _history_page(self, conn: Connection, msg: HistoryRequest) -> None:
        if msg.offset < 0 or msg.limit < 1:
            self._send(conn, JobError(ErrorCode.OUT_OF_RANGE, f"history needs offset >= 0 and limit >= 1, got "
                                      f"offset {msg.offset}, limit {msg.limit}", None, msg.request_id))
            return
        total, items = self.history.page(msg.offset, msg.limit)
        self._send(conn, HistoryPage(msg.request_id, msg.offset, total, items))

    async def _history_get(self, conn: Connection, msg: HistoryGet) -> None:
        # Errors leave job_id empty: the id may be a job still in flight, whose own failure this is not.
        entry = self.history.get(msg.job_id)   # looked up, never turned into a path
        if entry is None:
            self._send(conn, JobError(ErrorCode.UNKNOWN_JOB, f"no saved result of job {msg.job_id!r} on this server "
                                      f"(see 'history' for the ids)", None, msg.request_id))
            return
        try:
            data = await asyncio.to_thread(Path(entry.saved_path).read_bytes)   # disk I/O off the event loop
        except OSError:
            self.history.forget(entry.job_id)
            self._send(conn, JobError(ErrorCode.UNKNOWN_JOB, f"the result of job {msg.job_id!r} is no longer in the "
                                      f"output folder ({entry.saved_path})", None, msg.request_id))
            return
        image = ImageAttachment.encoded("image", "png", entry.width, entry.height, data)
        self._send(conn, HistoryItem(msg.request_id, entry, image))

    def _cancel(self, conn: Connection, msg: Cancel) -> None:
        if msg.job_id is not None and not self.scheduler.knows(conn.id, msg.job_id):
            self._send(conn, JobError(ErrorCode.UNKNOWN_JOB,
                                      f"no queued or running job {msg.job_id!r} of this client "
                                      f"(finished already?)", msg.job_id))
            return
        for job in self.scheduler.cancel(conn.id, msg.job_id):
            self._send(conn, Cancelled(job.id))
