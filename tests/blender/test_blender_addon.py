"""The Blender add-on, tested as it lives in reality.

The add-on zip is built with addons/blender/build.py, then a separate Python environment with the `bpy`
module (Blender 5.0 headless; `.venv-blender`, see README) runs the tests in tests/blender/inside as a
subprocess: they install the zip the way a user installs an extension (into a temporary Blender user
folder) and talk over real websockets to real `controlbridge serve --model tiny` processes started here.

The Blender Python is $CONTROLBRIDGE_BLENDER_PYTHON, else <repo>/.venv-blender/bin/python. Without it the
test is skipped, unless CONTROLBRIDGE_REQUIRE_BLENDER=1 (CI), where it fails.
"""
import importlib.util
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSIDE = Path(__file__).resolve().parent / "inside"
BUILD_SCRIPT = REPO / "addons" / "blender" / "build.py"
INSIDE_TIMEOUT_S = 600


def blender_python() -> Path:
    configured = os.environ.get("CONTROLBRIDGE_BLENDER_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-blender" / "bin" / "python"
    if path.is_file() and os.access(path, os.X_OK):
        return path
    reason = (f"no Blender Python at {path} (create it: python3 -m venv .venv-blender && "
              f".venv-blender/bin/pip install bpy==5.0.1 pytest; or set CONTROLBRIDGE_BLENDER_PYTHON)")
    if os.environ.get("CONTROLBRIDGE_REQUIRE_BLENDER") == "1":
        pytest.fail(reason + " and CONTROLBRIDGE_REQUIRE_BLENDER=1")
    pytest.skip(reason)


def build_zip(output_dir: Path) -> Path:
    spec = importlib.util.spec_from_file_location("controlbridge_blender_build", BUILD_SCRIPT)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    # The websockets wheel is cached in build/wheels, like `dev.py build-blender` does.
    return build.build(output_dir, wheel_cache=REPO / "build" / "wheels")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keep_log(server) -> list:
    """Read the server's output as it comes (a full pipe would stall the server); shown if the test fails."""
    lines = []

    def read():
        for line in server.process.stdout:
            lines.append(line)
    threading.Thread(target=read, daemon=True).start()
    return lines


def library_models(models: Path) -> Path:
    """A models folder whose library has a normal ControlNet (the tiny depth one's random weights; the library
    tells the kind from the file name, as from control_v11p_sd15_normalbae's) and a tiny IP-Adapter with its
    image encoder (style reference)."""
    import shutil
    from controlbridge.engine.tiny_model import ensure_tiny_model
    from test_style_reference import write_adapter_file, write_encoder_file
    shutil.copytree(ensure_tiny_model().controlnets["depth"], models / "controlnet" / "tiny-normalbae")
    write_adapter_file(ensure_tiny_model().base, "sd15", models / "ipadapter" / "ip-adapter_tiny_sd15.safetensors")
    write_encoder_file(models / "clip_vision" / "tiny-clip-vision.safetensors")
    return models


def test_blender_addon(spawn_server, tmp_path):
    python = blender_python()
    zip_path = build_zip(tmp_path / "build")
    server = spawn_server()
    token_server = spawn_server("--token", "right-token")
    library_server = spawn_server("--models-dir", str(library_models(tmp_path / "models")))
    keep_log(library_server)
    server_log = keep_log(server)
    keep_log(token_server)
    down_url = f"ws://127.0.0.1:{free_port()}"   # nothing listens there

    user_resources, home = tmp_path / "blender-user", tmp_path / "home"
    user_resources.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({
        "BLENDER_USER_RESOURCES": str(user_resources),   # install into a throwaway Blender user folder
        "HOME": str(home),
        "CONTROLBRIDGE_ADDON_ZIP": str(zip_path),
        "CONTROLBRIDGE_TEST_SERVER_URL": server.url,
        "CONTROLBRIDGE_TEST_OUTPUT_DIR": str(server.output_dir),
        "CONTROLBRIDGE_TEST_TOKEN_SERVER_URL": token_server.url,
        "CONTROLBRIDGE_TEST_TOKEN": token_server.token,
        "CONTROLBRIDGE_TEST_DOWN_URL": down_url,
        "CONTROLBRIDGE_TEST_LIBRARY_SERVER_URL": library_server.url,
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    cmd = [str(python), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c", str(INSIDE / "pytest.ini"),
           "--rootdir", str(INSIDE), "--confcutdir", str(INSIDE), str(INSIDE)]
    if os.environ.get("CONTROLBRIDGE_BLENDER_K"):   # a developer's subset: -k for the in-Blender tests
        cmd += ["-k", os.environ["CONTROLBRIDGE_BLENDER_K"]]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=INSIDE_TIMEOUT_S)
    sys.stdout.write(proc.stdout)   # shown by pytest -rA / on failure
    assert proc.returncode == 0, (f"the in-Blender tests failed (exit {proc.returncode}):\n{proc.stdout}\n"
                                  f"server log (last lines):\n{''.join(server_log[-60:])}")
    assert " passed" in proc.stdout and " skipped" not in proc.stdout, proc.stdout
