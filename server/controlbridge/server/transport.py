"""The websocket side: who may connect, the hello handshake, reading requests, delivering events.

Security, checked before the websocket opens: a browser Origin not on the allow-list is refused (a web
page must not drive a local GPU server; `Origin: null` is refused too), a Host header that is not a
loopback name is refused while listening on loopback (DNS rebinding), and a token, when set, is required
as `Authorization: Bearer <token>`. Each of these headers may appear once.

Memory bounds (all in `welcome.limits`): connections in total and per address, a byte budget for the inputs of
every queued job together, a bounded outbox per client (a slow reader loses previews first, then is closed with
1008) and a deadline for attachments a message announced.
"""
import asyncio
import hmac
import logging
import re
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Callable, Dict, Optional

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from controlbridge_protocol import (PROTOCOL_VERSION, RANDOM_SEED, Accepted, Cancel, Cancelled, ErrorCode, Generate,
                                   Hello, HistoryGet, HistoryItem, HistoryPage, HistoryRequest, ImageAttachment,
                                   JobError, LiveFrame, LiveSkipped, LiveStart, LiveStop, Ping, Pong, Progress, ProtocolError,
                                   Welcome)
from controlbridge_protocol.framing import MessageReader, encode
from controlbridge_protocol.messages import CLIENT_MESSAGES

from .budget import InputBudget, job_input_bytes
from .config import ServerConfig, is_loopback
from .history import History
from .jobs import ServerOffer, crop_notice, frame_key, prepare_job, prepare_warm_up
from .scheduler import FairScheduler

log = logging.getLogger("controlbridge.transport")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
PREVIEW_BACKLOG = 8     # when this many messages wait for a slow client, previews are dropped
# RFC 3986 host [":" port]: a name or IPv4 address, or an IPv6 address in brackets. Nothing else (no "user@").
HOST_HEADER = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:[0-9]{1,5})?$")
SINGLE_HEADERS = ("Host", "Origin", "Authorization")
MESSAGE_OVERHEAD = 1024   # bytes a queued message is counted beyond its attachments (its JSON, bookkeeping)


def message_bytes(message) -> int:
    return MESSAGE_OVERHEAD + sum(len(a.data) for a in message.attachments())


@dataclass
class Connection:
    id: str
    ws: ServerConnection
    outbox: deque = field(default_factory=deque)        # (message, bytes) waiting to be sent
    outbox_bytes: int = 0                               # counted until the message is written
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False                               # dropped for not reading: send nothing more
    client_name: str = ""
    greeted: bool = False
    live_key: Optional[tuple] = None         # the newest live frame that was or will be rendered
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
        self.budget = InputBudget(config.limits.max_queued_input_bytes)
        self.shutting_down = False
        self.peak_outbox_bytes = 0       # the most any one client had waiting (for tests and the soak)
        self.workers: Callable[[], list] = list   # a cluster's workers, for `status` (none on one device)

    # ---- before the websocket opens -----------------------------------------------------------

    def check_request(self, connection: ServerConnection, request):
        headers = request.headers
        for name in SINGLE_HEADERS:
            if len(headers.get_all(name)) > 1:
                return connection.respond(HTTPStatus.BAD_REQUEST, f"more than one {name} header\n")
        if self.shutting_down:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down\n")
        origin = headers.get("Origin")
        if origin is not None and origin not in self.config.allowed_origins:
            log.warning("refused a connection from web origin %r", origin)
            return connection.respond(HTTPStatus.FORBIDDEN,
                                      f"web origin {origin!r} is not allowed (see --allow-origin)\n")
        host = (headers.get("Host") or "").lower()
        parsed = HOST_HEADER.match(host)
        if parsed is None:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"malformed Host header {host!r}\n")
        if is_loopback(self.config.host) and parsed.group(1) not in LOOPBACK_NAMES:
            return connection.respond(HTTPStatus.FORBIDDEN, f"host {host!r} is not this machine\n")
        if self.config.token:
            given = headers.get("Authorization", "")
            expected = f"Bearer {self.config.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                why = "wrong token" if given else "this server requires a token"
                return connection.respond(HTTPStatus.UNAUTHORIZED, f"{why}\n")
        return self._check_connection_limits(connection)

    def _check_connection_limits(self, connection: ServerConnection):
        """Every TCP connection the server holds counts, handshakes in progress included."""
        limits = self.config.limits
        others = [c for c in connection.server.all_connections if c is not connection]
        if len(others) >= limits.max_connections:
            log.warning("refused a connection: %d open (limit)", len(others))
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"this server already has {len(others)} "
                                      f"connections (its limit is {limits.max_connections}); try again later\n")
        address = _address(connection)
        same = sum(1 for c in others if _address(c) == address)
        if same >= limits.max_connections_per_address:
            log.warning("refused a connection from %s: %d open from there (limit)", address, same)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"{same} connections from {address} already (the limit per address is "
                                      f"{limits.max_connections_per_address})\n")
        return None

    # ---- one connection -----------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        conn = Connection(uuid.uuid4().hex[:8], ws)
        self.connections[conn.id] = conn
        log.info("connection %s opened from %s", conn.id, _address(ws),
                 extra={"fields": {"event": "connection_opened", "connection": conn.id, "address": _address(ws)}})
        sender = asyncio.create_task(self._send_loop(conn))
        limits = self.config.limits
        reader = MessageReader(CLIENT_MESSAGES, max_attachment_bytes=limits.max_message_attachment_bytes)
        deadline = None
        try:
            while True:
                # Attachments a message announced must all arrive in time, or what came of them is dropped.
                if reader.waiting_for_attachments and deadline is None:
                    deadline = self.loop.time() + limits.attachment_deadline_s
                elif not reader.waiting_for_attachments:
                    deadline = None
                try:
                    frame = await asyncio.wait_for(ws.recv(), None if deadline is None
                                                   else max(0.0, deadline - self.loop.time()))
                    items = reader.feed(frame)
                    read_at = time.perf_counter()      # a job's timings start here: its message is read
                except asyncio.TimeoutError:
                    log.warning("client %s: announced attachments overdue, dropped", conn.client_name or conn.id)
                    items = reader.give_up_waiting(f"within {limits.attachment_deadline_s} s")
                    read_at = time.perf_counter()
                    deadline = None
                for item in items:
                    try:
                        await self._dispatch(conn, item, read_at)
                    except Exception as e:  # noqa: BLE001 - a bug in one request must not drop the client
                        log.exception("request from %s failed", conn.client_name or conn.id)
                        self._send(conn, JobError(ErrorCode.INTERNAL, f"the server failed on this request: {e}",
                                                  None, getattr(item, "request_id", None)))
        except ConnectionClosed:
            pass
        finally:
            del self.connections[conn.id]
            self.scheduler.forget(conn.id)   # a client that left takes its jobs with it
            log.info("connection %s closed (%s)", conn.id, conn.client_name or "unnamed client",
                     extra={"fields": {"event": "connection_closed", "connection": conn.id, "client": conn.client_name}})
            sender.cancel()

    async def _send_loop(self, conn: Connection) -> None:
        try:
            while True:
                while not conn.outbox:
                    conn.outbox_ready.clear()
                    await conn.outbox_ready.wait()
                message, size = conn.outbox.popleft()
                try:
                    for frame in encode(message):     # one message and its attachments, nothing in between
                        await conn.ws.send(frame)
                finally:
                    conn.outbox_bytes -= size
        except ConnectionClosed:
            pass

    def _send(self, conn: Connection, message) -> None:
        if conn.closing:
            return
        limit = self.config.limits.max_outbox_bytes
        if isinstance(message, Progress) and message.preview is not None and (
                len(conn.outbox) >= PREVIEW_BACKLOG or conn.outbox_bytes + message_bytes(message) > limit // 2):
            message = Progress(message.job_id, message.step, message.total, None, message.status)   # no previews for a slow client
        size = message_bytes(message)
        if conn.outbox_bytes + size > limit:
            self._drop_slow_reader(conn, size)
            return
        conn.outbox.append((message, size))
        conn.outbox_bytes += size
        self.peak_outbox_bytes = max(self.peak_outbox_bytes, conn.outbox_bytes)
        conn.outbox_ready.set()

    def _drop_slow_reader(self, conn: Connection, size: int) -> None:
        mib = (conn.outbox_bytes + size) / 2**20
        limit_mib = self.config.limits.max_outbox_bytes / 2**20
        log.warning("closing client %s: it is not reading (%.0f MiB waiting, limit %.0f MiB)",
                    conn.client_name or conn.id, mib, limit_mib)
        conn.closing = True
        conn.outbox.clear()          # frees the messages now; the one being written finishes or fails
        self.scheduler.cancel(conn.id)
        # A close reason is at most 123 bytes.
        asyncio.ensure_future(conn.ws.close(1008, f"not reading: {mib:.0f} MiB waiting, limit {limit_mib:.0f} MiB"))

    async def flush_and_close(self, timeout: float, reason: str) -> None:
        """At shutdown: give every client a moment to receive what is queued for it, then close with 1001."""
        loop = self.loop
        end = loop.time() + timeout
        while any(c.outbox or c.outbox_bytes > 0 for c in self.connections.values()) and loop.time() < end:
            await asyncio.sleep(0.05)
        await asyncio.gather(*(c.ws.close(1001, reason) for c in list(self.connections.values())),
                             return_exceptions=True)

    def end_queued_jobs(self, why: str) -> int:
        """At shutdown: every queued job ends with a `shutting_down` error saying why; returns how many."""
        ended = 0
        for conn in list(self.connections.values()):
            for job_id in self.scheduler.snapshot(conn.id)["your_jobs"]:   # queued ones; the running job finishes
                for job in self.scheduler.cancel(conn.id, job_id):
                    ended += 1
                    if job.live:
                        self._send(conn, LiveSkipped(job.request_id, "stopped"))
                    else:
                        self._send(conn, JobError(ErrorCode.SHUTTING_DOWN, why, job.id, job.request_id))
        return ended

    def emit(self, client_id: str, message) -> None:
        """Thread-safe delivery, for the device worker."""
        self.loop.call_soon_threadsafe(self._deliver, client_id, message)

    def _deliver(self, client_id: str, message) -> None:
        conn = self.connections.get(client_id)
        if conn is not None:
            self._send(conn, message)

    async def _dispatch(self, conn: Connection, item, read_at: float) -> None:
        if isinstance(item, ProtocolError):
            self._send(conn, JobError(item.code, item.message, None, item.request_id))
        elif isinstance(item, Hello):
            await self._hello(conn, item)
        elif not conn.greeted:
            self._send(conn, JobError(ErrorCode.NOT_READY, "say hello first: the first message must be 'hello'"))
        elif isinstance(item, LiveFrame):          # a Generate subclass: test it first
            await self._live_frame(conn, item, read_at)
        elif isinstance(item, LiveStart):
            self._live_start(conn, item)
        elif isinstance(item, LiveStop):
            self._live_stop(conn)
        elif isinstance(item, Generate):
            await self._generate(conn, item, read_at)
        elif isinstance(item, Cancel):
            self._cancel(conn, item)
        elif isinstance(item, Ping):
            self._send(conn, Pong(**self.scheduler.snapshot(conn.id), models=self.offer.models.describe_loaded(),
                                  workers=self.workers()))
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

    async def _generate(self, conn: Connection, msg: Generate, read_at: float) -> None:
        if self._refuse_while_stopping(conn, msg):
            return
        if self.scheduler.queued_for(conn.id) >= self.offer.limits.max_queued_per_client:
            self._send(conn, JobError(ErrorCode.LIMIT_EXCEEDED,
                                      f"{self.offer.limits.max_queued_per_client} jobs already queued for this "
                                      f"client; wait for some to finish", None, msg.request_id))
            return
        if not self._room_for(conn, msg, sum(len(a.data) for a in msg.images)):   # before decoding anything
            return
        try:
            # Decoding images takes milliseconds: off the loop, so other clients are not held up.
            job = await asyncio.to_thread(prepare_job, msg, conn.id, self.offer, received_at=read_at)
        except ProtocolError as e:
            self._send(conn, JobError(e.code, e.message, None, msg.request_id))
            return
        if conn.id not in self.connections or conn.closing:
            return
        if not self._reserve(job, lambda message: self._send(conn, message)):
            return
        position = self.scheduler.submit(job)
        # before the worker can report progress
        self._send(conn, Accepted(msg.request_id, job.id, position, crop_notice(job)))

    def _refuse_while_stopping(self, conn: Connection, msg: Generate) -> bool:
        if self.shutting_down:
            self._send(conn, JobError(ErrorCode.SHUTTING_DOWN, "the server is shutting down and takes no new jobs",
                                      None, msg.request_id))
        return self.shutting_down

    def _room_for(self, conn: Connection, msg: Generate, nbytes: int) -> bool:
        if self.budget.room_for(nbytes):
            return True
        self._send(conn, JobError(ErrorCode.LIMIT_EXCEEDED, self._budget_full(nbytes), None, msg.request_id))
        return False

    def _reserve(self, job, reply: Callable[[object], None]) -> bool:
        """Book a decoded job's bytes, or `reply` that the server is full. Thread-safe."""
        nbytes = job_input_bytes(job)
        if self.budget.reserve(job, nbytes):
            return True
        reply(JobError(ErrorCode.LIMIT_EXCEEDED, self._budget_full(nbytes), None, job.request_id))
        return False

    def _budget_full(self, nbytes: int) -> str:
        return (f"the server is full: queued jobs hold {self.budget.used / 2**20:.0f} MiB of inputs, this one needs "
                f"{nbytes / 2**20:.1f} MiB more and the limit is {self.budget.limit / 2**20:.0f} MiB; "
                f"try again when some jobs have finished")

    async def _live_frame(self, conn: Connection, msg: LiveFrame, read_at: float) -> None:
        if self._refuse_while_stopping(conn, msg):
            return
        if msg.settings.seed == RANDOM_SEED:
            # A fixed seed for the whole session keeps consecutive frames stable.
            conn.live_seed = conn.live_seed if conn.live_seed is not None else secrets.randbelow(2**32)
            msg.settings = msg.settings.replace(seed=conn.live_seed)
        key = frame_key(msg)            # cheap (bytes compared, not hashed): stays on the loop
        if key == conn.live_key:
            self._send(conn, LiveSkipped(msg.request_id, "unchanged"))
            return
        await asyncio.to_thread(self._queue_live_frame, conn, msg, key, read_at)

    def _queue_live_frame(self, conn: Connection, msg: LiveFrame, key: tuple, read_at: float) -> None:
        """On a decoding thread: check and decode a frame, book its bytes and queue it, replying through `emit`.
        The device takes the frame from here, not after a hop back to the loop (~0.1 ms a frame). This
        connection's next message waits for it on the loop, so its frames still queue in order."""
        def reply(message):
            self.emit(conn.id, message)
        try:
            job = prepare_job(msg, conn.id, self.offer, True, received_at=read_at)
        except ProtocolError as e:
            reply(JobError(e.code, e.message, None, msg.request_id))
            return
        if conn.id not in self.connections or conn.closing or not self._reserve(job, reply):
            return
        conn.live_key = key
        _, superseded = self.scheduler.submit_live(job)
        if superseded is not None:
            reply(LiveSkipped(superseded.request_id, "superseded"))

    def _live_start(self, conn: Connection, msg: LiveStart) -> None:
        if self._refuse_while_stopping(conn, msg):
            return
        if msg.settings.seed == RANDOM_SEED:
            conn.live_seed = conn.live_seed if conn.live_seed is not None else secrets.randbelow(2**32)
        try:
            job = prepare_warm_up(msg, conn.id, self.offer, conn.live_seed if conn.live_seed is not None
                                  else msg.settings.seed)
        except ProtocolError as e:
            self._send(conn, JobError(e.code, e.message, None, msg.request_id))
            return
        # Holds no inputs, and a newer frame replaces it while it waits: nothing to reserve.
        _, superseded = self.scheduler.submit_live(job)
        if superseded is not None:
            self._send(conn, LiveSkipped(superseded.request_id, "superseded"))

    def _live_stop(self, conn: Connection) -> None:
        conn.live_key = conn.live_seed = None
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
        if conn.closing:
            return
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


def _address(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"
