"""Wiring: load the model, start the device worker, listen. Also a server on a background thread (demo, tests).

Stopping (SIGTERM, SIGINT, or `stop` set): stop listening, end every queued job with a `shutting_down` error,
let the running job finish and be saved (within `shutdown_grace_s`; a second signal, or `force`, cancels it),
deliver what is queued for each client, close with 1001, exit 0.
"""
import asyncio
import errno
import logging
import signal
import socket
import threading
import time
from dataclasses import replace
from typing import Callable, Optional

from websockets.asyncio.server import serve

from controlbridge_protocol import ENCODINGS, Capabilities, Welcome

from .. import __version__
from ..engine.acceleration import accelerate, warm_up
from ..engine.control_inputs import control_capabilities
from ..engine.style_reference import style_capabilities
from ..engine.model_manager import ModelManager, default_budget
from ..engine.models import LoadedModel, load_model
from ..library.hashing import model_file, prefetch
from ..library.scan import default_roots, own_models_dir, scan
from ..engine.samplers import SAMPLERS
from .config import ServerConfig
from .history import History
from .jobs import ServerOffer
from .scheduler import FairScheduler
from .transport import WebsocketTransport
from .worker import DeviceWorker


class ControlBridgeServer:
    def __init__(self, config: ServerConfig, model: Optional[LoadedModel] = None,
                 log: Callable[[str], None] = print):
        config.check()
        self.config = config
        self.log = log
        if model is None:
            check_port_free(config.host, config.port)   # before minutes of model loading
            if config.ray:    # the workers own the devices: the front end's copy only names and checks
                config = replace(config, model=replace(config.model, device="cpu"))
        self.models = load_models(config, model, log)
        prefetch(model_file(self.models, self.models.default_name))   # its sha256 for results, in the background
        model = self.models.get(None, log)
        self.scheduler = FairScheduler()
        self.offer = ServerOffer(self.models, config.limits, fast_decode=model.taesd is not None)
        self.history = History(config.output_dir)   # indexes results already in the folder, before we listen
        self.transport = WebsocketTransport(config, self.scheduler, self.offer, self.welcome, self.history)
        if config.ray:    # workers as Ray actors (controlbridge[cluster]); the rest of the server is the same
            from ..cluster import ClusterWorker
            self.worker = ClusterWorker(self.config, self.models, self.scheduler, self.transport.emit, self.history, log)
            self.transport.workers = self.worker.describe_workers
        else:
            self.worker = DeviceWorker(self.models, self.scheduler, config.output_dir, self.transport.emit,
                                       self.history)
        self.port: Optional[int] = None

    def welcome(self) -> Welcome:
        """Made per connection: which models are loaded changes while the server runs."""
        capabilities = Capabilities(
            models=self.models.describe_models(), default_model=self.models.default_name,
            controlnets=self.models.default_roles, samplers=list(SAMPLERS), encodings=list(ENCODINGS),
            limits=self.config.limits.to_dict(), token_required=bool(self.config.token),
            features=["live"] + (["fast_decode"] if self.offer.fast_decode else []),
            library=self.models.describe_library(), control=control_capabilities(self.models.library.roots),
            style=style_capabilities(self.models.library))
        return Welcome(server=f"controlbridge {__version__}", capabilities=capabilities)

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"ws://{host}:{self.port}"

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] = lambda: None,
                  force: Optional[asyncio.Event] = None) -> None:
        self.transport.loop = asyncio.get_running_loop()
        self.worker.start()
        limits = self.config.limits
        try:
            async with await _listen(self.transport.handle, self.config.host, self.config.port,
                             process_request=self.transport.check_request, max_size=limits.max_message_bytes,
                             max_queue=4, compression=None,
                             # Blender holds the GIL through a capture render, so a client may not answer a
                             # keepalive ping for a while: be patient before calling it dead.
                             ping_interval=30, ping_timeout=120) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.log(f"ControlBridge listening on {self.url}")
                self.log(f"Outputs go to {self.config.output_dir}")
                ready()
                await stop.wait()
                await self._shut_down(server, force or asyncio.Event())
        finally:
            self.scheduler.close()
            self.worker.join(timeout=30)

    async def _shut_down(self, server, force: asyncio.Event) -> None:
        start = time.monotonic()
        self.transport.shutting_down = True
        server.close(close_connections=False)    # no new connections; the open ones get their results
        ended = self.transport.end_queued_jobs("the server is shutting down: this queued job will not run "
                                               "(submit it again when the server is back)")
        grace = self.config.shutdown_grace_s
        was_running = self.scheduler.busy()
        self.log(f"Shutting down: {ended} queued job(s) ended; " + (
            f"the running job may finish (up to {grace:g} s; signal again to stop at once)" if was_running else
            "nothing was running"))
        self.scheduler.close()                   # the worker finishes its job, then takes no other
        finished = asyncio.ensure_future(asyncio.to_thread(self.worker.join, grace))
        forced = cancelled = False
        while not finished.done():
            if force.is_set() and not forced:
                forced = True
                if self.scheduler.busy():     # said only when there is a job to cancel (the demo has none)
                    cancelled = True
                    self.log("Stopping at once: the running job is cancelled")
                for client_id in list(self.transport.connections):
                    self.scheduler.cancel(client_id)
            await asyncio.sleep(0.05)
        if time.monotonic() - start >= grace:
            self.log(f"The running job did not finish within {grace:g} s; stopping without it")
        await self.transport.flush_and_close(10, "server shutting down")
        self.log(f"ControlBridge stopped after {time.monotonic() - start:.1f} s "
                 f"({'running job cancelled' if cancelled else 'running job finished' if was_running else 'idle'}; "
                 f"{ended} queued job(s) ended).")


def load_models(config: ServerConfig, model: Optional[LoadedModel] = None,
                log: Callable[[str], None] = print) -> ModelManager:
    """The default model (loaded, sped up and warmed up on a GPU, unless given) and the model library."""
    if model is None:
        model = load_model(config.model, log)
        if model.device != "cpu" or config.accelerate or config.cuda_graphs or config.parallel_controlnets:
            accelerate(model, config.compile, log, config.cuda_graphs, config.parallel_controlnets)
        if model.device != "cpu":
            warm_up(model, log)
    if config.models_dir is not None and not config.models_dir.is_dir():
        raise ValueError(f"--models-dir {config.models_dir} is not a folder")
    own = own_models_dir()   # the server's own folder is optional: not having one is no problem
    library = scan(default_roots(config.models_dir, own if own.is_dir() else None))
    for problem in library.problems:
        log(f"Model library: skipped {problem.path}: {problem.reason}")
    budget = config.memory_budget_gb * 2**30 if config.memory_budget_gb else default_budget(model.device)
    return ModelManager(model, config.model, library, budget)


async def _listen(*args, **kwargs):
    """websockets' serve(), with a busy port as one clear ValueError."""
    try:
        return await serve(*args, **kwargs)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ValueError(_port_in_use(args[1], args[2])) from None
        raise


def _port_in_use(host: str, port: int) -> str:
    return f"port {port} on {host} is already in use (another ControlBridge server?); choose one with --port"


def check_port_free(host: str, port: int) -> None:
    """ValueError when something listens on host:port already (port 0 is always free)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server will: TIME_WAIT is no conflict
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(_port_in_use(host, port)) from None
            raise


def serve_forever(config: ServerConfig, log: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM or SIGINT (graceful: see the module doc); a second signal stops at once."""
    server = ControlBridgeServer(config, log=log)

    async def main():
        loop = asyncio.get_running_loop()
        stop, force = asyncio.Event(), asyncio.Event()

        def on_signal(name: str) -> None:
            if stop.is_set():
                force.set()
            else:
                log(f"{name} received: stopping")
                stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
            except (NotImplementedError, RuntimeError):   # Windows: Ctrl-C arrives as KeyboardInterrupt
                pass
        await server.run(stop, force=force)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        log("ControlBridge stopped.")


class ServerThread:
    """A server on its own event loop thread, for the demo and tests: start() returns once it listens."""

    def __init__(self, config: ServerConfig, model: Optional[LoadedModel] = None,
                 log: Callable[[str], None] = lambda message: None):
        self.server = ControlBridgeServer(config, model, log)
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self._main, name="controlbridge-server", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout: float = 60) -> "ServerThread":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the server did not start in time")
        if self._error:
            raise self._error
        return self

    def _main(self) -> None:
        async def main():
            self._loop, self._stop, self._force = asyncio.get_running_loop(), asyncio.Event(), asyncio.Event()
            await self.server.run(self._stop, self._ready.set, self._force)
        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
            self._ready.set()

    def stop(self, graceful: bool = False) -> None:
        """Stop the server; `graceful` lets the running job finish (as SIGTERM does), else it is cancelled."""
        if not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            if not graceful:
                self._loop.call_soon_threadsafe(self._force.set)
        self._thread.join(timeout=30 + (self.server.config.shutdown_grace_s if graceful else 0))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
