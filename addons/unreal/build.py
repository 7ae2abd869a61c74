#!/usr/bin/env python3
"""Build the installable Unreal plugin: build/unreal/ControlBridge/ (+ a zip with --zip).

    python addons/unreal/build.py [--out build/unreal] [--websockets-wheel PATH] [--zip]

The result is this folder's plugin (ControlBridge.uplugin, Content/Python) with its Python dependencies in
Content/Python/Lib/site-packages, where Unreal's Python finds them:
- controlbridge_protocol, copied from shared/controlbridge_protocol at build time;
- websockets, unpacked from its pure-Python wheel (py3-none-any; downloaded once with pip into
  build/.cache/wheels, or given with --websockets-wheel for offline builds).
Only the standard library is used, so any Python 3.9+ can run it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROTOCOL_SRC = REPO / "shared" / "controlbridge_protocol"
WEBSOCKETS_VERSION = "15.0.1"          # last release with a py3-none-any wheel for Python >= 3.9 (UE 5.3+)
PLUGIN_NAME = "ControlBridge"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".DS_Store")


def log(msg: str) -> None:
    print(f"[build-unreal] {msg}", flush=True)


def get_websockets_wheel(cache: Path, wheel: Path | None) -> Path:
    if wheel is not None:
        if not wheel.is_file():
            raise SystemExit(f"--websockets-wheel {wheel} does not exist")
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"websockets-{WEBSOCKETS_VERSION}-py3-none-any.whl"))
    if found:
        return found[-1]
    log(f"downloading websockets {WEBSOCKETS_VERSION} (pure-Python wheel) into {cache}")
    cmd = [sys.executable, "-m", "pip", "download", f"websockets=={WEBSOCKETS_VERSION}", "--no-deps",
           "--only-binary=:all:", "--platform", "any", "--implementation", "py", "--abi", "none",
           "--python-version", "3.9", "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob(f"websockets-{WEBSOCKETS_VERSION}-py3-none-any.whl"))
    if proc.returncode != 0 or not found:
        raise SystemExit("could not download the websockets wheel (pip said: "
                         f"{proc.stderr.strip()[-400:]}); pass one with --websockets-wheel")
    return found[-1]


def unpack_pure_wheel(wheel: Path, site_packages: Path) -> str:
    """Unpack a py3-none-any wheel; refuses compiled wheels (Unreal's Python must load it on every platform)."""
    if not wheel.name.endswith("-py3-none-any.whl"):
        raise SystemExit(f"{wheel.name} is not a pure-Python (py3-none-any) wheel")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        compiled = [n for n in names if n.endswith((".so", ".pyd", ".dylib", ".dll"))]
        if compiled:
            raise SystemExit(f"{wheel.name} contains compiled files: {compiled}")
        for name in names:
            if name.endswith(".c"):      # C source of optional speedups: never built here, not needed
                continue
            zf.extract(name, site_packages)
    return wheel.name.split("-")[1]


def build(out_root: Path, wheel: Path | None, cache: Path, make_zip: bool) -> Path:
    if not (PROTOCOL_SRC / "__init__.py").is_file():
        raise SystemExit(f"{PROTOCOL_SRC} is missing: the plugin bundles the shared client library")
    dest = out_root / PLUGIN_NAME
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    shutil.copy2(HERE / f"{PLUGIN_NAME}.uplugin", dest / f"{PLUGIN_NAME}.uplugin")
    shutil.copy2(HERE / "README.md", dest / "README.md")
    shutil.copytree(HERE / "Content", dest / "Content", ignore=IGNORE)

    site = dest / "Content" / "Python" / "Lib" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROTOCOL_SRC, site / "controlbridge_protocol", ignore=IGNORE)
    ws_version = unpack_pure_wheel(get_websockets_wheel(cache, wheel), site)

    # every bundled .py must at least compile (catches a broken copy, not other Python versions)
    for py in dest.rglob("*.py"):
        compile(py.read_text(encoding="utf-8"), str(py), "exec", dont_inherit=True)

    uplugin = json.loads((dest / f"{PLUGIN_NAME}.uplugin").read_text(encoding="utf-8"))
    protocol_version = _read_version(PROTOCOL_SRC / "__init__.py")
    info = {"plugin": uplugin.get("VersionName"), "controlbridge_protocol": protocol_version,
            "websockets": ws_version, "built_with_python": sys.version.split()[0]}
    (dest / "Content" / "Python" / "BUILD_INFO.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"built {dest} ({info})")

    if make_zip:
        archive = out_root / f"{PLUGIN_NAME}-{uplugin.get('VersionName', 'dev')}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(dest.rglob("*")):
                if path.is_file():
                    zf.write(path, str(Path(PLUGIN_NAME) / path.relative_to(dest)))
        log(f"wrote {archive}")
    return dest


def _read_version(init: Path) -> str:
    for line in init.read_text(encoding="utf-8").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "unreal", help="output folder (default build/unreal)")
    parser.add_argument("--websockets-wheel", type=Path, default=None,
                        help=f"a websockets-{WEBSOCKETS_VERSION}-py3-none-any.whl to use instead of downloading")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / ".cache" / "wheels", help="wheel cache folder")
    parser.add_argument("--zip", action="store_true", help="also write <out>/ControlBridge-<version>.zip")
    args = parser.parse_args(argv)
    build(args.out.resolve(), args.websockets_wheel, args.cache.resolve(), args.zip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
