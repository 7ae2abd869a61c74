"""Shared fixtures: the tiny model loaded once, real servers on 127.0.0.1 (in-process or as a subprocess)."""
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlbridge_protocol import Client

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Build the tiny model once per run, in a private cache (subprocess servers inherit it)."""
    cache = os.environ.get("CONTROLBRIDGE_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("model-cache"))
    os.environ["CONTROLBRIDGE_CACHE_DIR"] = cache
    return Path(cache)


@pytest.fixture(scope="session")
def tiny_model(model_cache):
    from controlbridge.engine.models import ModelSpec, load_model
    return load_model(ModelSpec("tiny"), log=lambda m: None)


@pytest.fixture
def make_server(tiny_model, tmp_path):
    """make_server(**ServerConfig fields) -> a started in-process server on a free port."""
    from controlbridge.server.app import ServerThread
    from controlbridge.server.config import ServerConfig
    started = []

    def make(**overrides):
        overrides.setdefault("output_dir", tmp_path / f"outputs{len(started)}")
        overrides.setdefault("port", 0)
        config = ServerConfig(**overrides)
        server = ServerThread(config, model=tiny_model).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def client(server):
    with Client(server.url, client_name="pytest") as c:
        yield c


@dataclass
class SpawnedServer:
    url: str
    output_dir: Path
    token: str
    process: subprocess.Popen


@pytest.fixture
def spawn_server(tmp_path, model_cache):
    """spawn_server(*extra_args) -> a `controlbridge serve --model tiny` subprocess, stopped at teardown."""
    procs = []

    def spawn(*extra_args) -> SpawnedServer:
        output_dir = tmp_path / f"spawned-outputs{len(procs)}"
        args = [sys.executable, "-m", "controlbridge", "serve", "--model", "tiny", "--host", "127.0.0.1",
                "--port", "0", "--output-dir", str(output_dir), *extra_args]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        deadline = time.monotonic() + 120
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited:\n" + "".join(seen))
            seen.append(line)
            m = re.search(r"listening on (ws://\S+)", line)
            if m:
                token = extra_args[extra_args.index("--token") + 1] if "--token" in extra_args else ""
                return SpawnedServer(m.group(1), output_dir, token, proc)
        raise RuntimeError("server did not start:\n" + "".join(seen))

    yield spawn
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
