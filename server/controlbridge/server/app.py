"""Wiring: load the model, start the device worker, listen. Also a server on a background thread (demo, tests)."""
import asyncio
import threading
from typing import Callable, Optional

from websockets.asyncio.server import serve

from controlbridge_protocol import ENCODINGS, Capabilities, Welcome

from .. import __version__
from ..engine.acceleration import accelerate, warm_up
from ..engine.model_manager import ModelManager, default_budget
from ..engine.models import LoadedModel, load_model
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
            model = load_model(config.model, log)
            if model.device != "cpu" or config.accelerate:
                accelerate(model, config.compile, log)
            if model.device != "cpu":
                warm_up(model, log)
        if config.models_dir is not None and not config.models_dir.is_dir():
            raise ValueError(f"--models-dir {config.models_dir} is not a folder")
        own = own_models_dir()   # the server's own folder is optional: not having one is no problem
        library = scan(default_roots(config.models_dir, own if own.is_dir() else None))
        for problem in library.problems:
            log(f"Model library: skipped {problem.path}: {problem.reason}")
        budget = config.memory_budget_gb * 2**30 if config.memory_budget_gb else default_budget(model.device)
        self.models = ModelManager(model, config.model, library, budget)
        self.scheduler = FairScheduler()
        self.offer = ServerOffer(self.models, config.limits, fast_decode=model.taesd is not None)
        self.history = History(config.output_dir)   # indexes results already in the folder, before we listen
        self.transport = WebsocketTransport(config, self.scheduler, self.offer, self.welcome, self.history)
        self.worker = DeviceWorker(self.models, self.scheduler, config.output_dir, self.transport.emit, self.history)
        self.port: Optional[int] = None

    def welcome(self) -> Welcome:
        """Made per connection: which models are loaded changes while the server runs."""
        capabilities = Capabilities(
            models=self.models.describe_models(), default_model=self.models.default_name,
            controlnets=self.models.default_roles, samplers=list(SAMPLERS), encodings=list(ENCODINGS),
            limits=self.config.limits.to_dict(), token_required=bool(self.config.token),
            features=["live"] + (["fast_decode"] if self.offer.fast_decode else []),
            library=self.models.describe_library())
        return Welcome(server=f"controlbridge {__version__}", capabilities=capabilities)

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"ws://{host}:{self.port}"

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] = lambda: None) -> None:
        self.transport.loop = asyncio.get_running_loop()
        self.worker.start()
        limits = self.config.limits
        try:
            async with serve(self.transport.handle, self.config.host, self.config.port,
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
        finally:
            self.scheduler.close()
            self.worker.join(timeout=30)


def serve_forever(config: ServerConfig, log: Callable[[str], None] = print) -> None:
    server = ControlBridgeServer(config, log=log)

    async def main():
        await server.run(asyncio.Event())

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
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.run(self._stop, self._ready.set)
        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
            self._ready.set()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
