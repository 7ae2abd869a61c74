"""Everything the server is configured with, and the limits it advertises in the welcome."""
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..engine.models import ModelSpec
from ..paths import default_output_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@dataclass
class Limits:
    max_pixels: int = 4096 * 4096          # per image, in and out
    max_side: int = 8192
    max_message_bytes: int = 80 * 2**20    # per websocket frame (a 4096^2 float32 depth is 64 MiB)
    max_steps: int = 150
    max_queued_per_client: int = 64
    max_batch: int = 16
    # Memory one client (or many) can make the server hold; see README "Security".
    max_queued_input_bytes: int = 2 * 2**30     # decoded inputs of every queued job, all clients together
    max_outbox_bytes: int = 256 * 2**20         # messages waiting for one slow reader; beyond it, it is closed
    max_message_attachment_bytes: int = 320 * 2**20   # all attachments one message announces
    attachment_deadline_s: int = 60             # announced attachments must all arrive within this
    max_connections: int = 128
    max_connections_per_address: int = 64       # every local client shares 127.0.0.1

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Optional[str] = None
    # Browser pages send an Origin header; only these may connect. Tools (no Origin) always may.
    allowed_origins: List[str] = field(default_factory=list)
    output_dir: Path = field(default_factory=default_output_dir)
    model: ModelSpec = field(default_factory=ModelSpec)
    limits: Limits = field(default_factory=Limits)
    models_dir: Optional[Path] = None        # an artist's ComfyUI-style models/ folder
    memory_budget_gb: Optional[float] = None  # loaded models beyond this are unloaded, least recently used first
    accelerate: bool = False      # the speed-ups of engine/acceleration.py on CPU too (always on a GPU)
    compile: bool = False         # torch.compile the UNet and ControlNets
    cuda_graphs: bool = False     # ... with CUDA graphs (compile mode reduce-overhead); CUDA devices only
    parallel_controlnets: str = ""   # "streams" (CUDA) or "batched": ControlNets side by side
    shutdown_grace_s: float = 300.0   # on SIGTERM/SIGINT the running job may finish within this
    ray: Optional[str] = None     # "auto" (a local Ray) or a cluster's address: workers as Ray actors
    workers: Optional[int] = None  # how many (default: one per GPU of the cluster)

    def check(self) -> None:
        """Refuse unsafe setups before anything listens."""
        if not self.token and not is_loopback(self.host):
            raise ValueError(f"listening on {self.host} exposes the GPU to the network: "
                             f"set a token with --token (or CONTROLBRIDGE_TOKEN)")
        if self.workers is not None and (self.ray is None or self.workers < 1):
            raise ValueError("--workers needs --ray and at least 1")
        check_output_dir(Path(self.output_dir))


def check_output_dir(path: Path) -> None:
    """Results can be written to `path` (created if absent); ValueError saying why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".controlbridge-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"the output folder {path} is not usable ({e.strerror or e}); choose another with "
                         f"--output-dir") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
