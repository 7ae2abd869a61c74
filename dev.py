#!/usr/bin/env python3
"""Project entry point for a fresh checkout: sets up the environments, then runs what you ask.

    python3 dev.py demo            the demo job on the embedded tiny model (README quick start)
    python3 dev.py test [ARGS]     the whole test suite, Blender add-on included (what CI runs)
    python3 dev.py build-blender   the installable Blender extension zip, in build/
    python3 dev.py build-unreal    the Unreal plugin folder, in build/unreal/ControlBridge

Environments: .venv (the server, CLI and tests; torch first, on its own, so pip picks the right build)
and .venv-blender (the `bpy` module: Blender's own Python world, which pins numpy below 2).
Each is (re)installed only when its requirements changed.
"""
import hashlib
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# torch and its matching torchvision, installed first on their own so pip picks the right builds. torchvision is
# needed by controlnet_aux (the estimators) and spandrel (the upscalers). On these x86_64 machines the pair is a
# local CUDA build that also runs on the CPU; on a user's Linux box the same line gives the CUDA build.
TORCH = {"aarch64": ["torch==2.9.1", "torchvision==0.24.1"]}.get(
    platform.machine().lower(), ["torch==2.14.1", "torchvision==0.29.1"])
BLENDER_REQUIREMENTS = ["bpy==5.0.1", "pytest>=8"]
# Headless bpy renders EEVEE / Workbench and runs `gpu` only with an EGL driver: Mesa's (software on a machine
# without a GPU). The Blender tests exercise those capture paths, so `test` installs these on Debian as root (CI).
HEADLESS_GL_PACKAGES = ["libegl1", "libegl-mesa0", "libgl1-mesa-dri"]


def venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(path: Path, installs: list, fingerprint: str) -> Path:
    python = venv_python(path)
    stamp = path / ".controlbridge-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return python
    if not python.exists():
        print(f"Creating {path.name} ...", flush=True)
        venv.create(path, with_pip=True)
    for args in installs:
        print(f"Installing into {path.name}: {' '.join(args)}", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                       cwd=ROOT, check=True)
    stamp.write_text(fingerprint)
    return python


def server_env() -> Path:
    fingerprint = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + " ".join(TORCH).encode()).hexdigest()
    return ensure_venv(ROOT / ".venv", [TORCH, ["-e", ".[test]"]], fingerprint)


def blender_env() -> Path:
    return ensure_venv(ROOT / ".venv-blender", [BLENDER_REQUIREMENTS], " ".join(BLENDER_REQUIREMENTS))


def ensure_headless_gl() -> None:
    if not sys.platform.startswith("linux") or not Path("/etc/debian_version").exists():
        return
    def installed(package):
        query = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        return query.stdout.strip() == "install ok installed"
    missing = [p for p in HEADLESS_GL_PACKAGES if not installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        print(f"note: Blender's GPU capture tests need: sudo apt-get install -y {' '.join(missing)}", flush=True)
        return
    print(f"Installing {' '.join(missing)} (Mesa EGL for headless Blender) ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env)


def main(argv) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "demo":
        return subprocess.call([str(server_env()), "-m", "controlbridge", "demo", *args], cwd=ROOT)
    if command == "test":
        python = server_env()
        ensure_headless_gl()
        # Both add-on suites must run here, not skip: a missing Blender or plugin build is a failure.
        env = dict(os.environ, CONTROLBRIDGE_BLENDER_PYTHON=str(blender_env()), CONTROLBRIDGE_REQUIRE_BLENDER="1",
                   CONTROLBRIDGE_REQUIRE_UNREAL_BUILD="1")
        return subprocess.call([str(python), "-m", "pytest", *args], cwd=ROOT, env=env)
    if command == "build-blender":
        return subprocess.call([str(server_env()), "addons/blender/build.py", *args], cwd=ROOT)
    if command == "build-unreal":
        return subprocess.call([str(server_env()), "addons/unreal/build.py", *args], cwd=ROOT)
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
