#!/usr/bin/env python3
"""Build the installable Blender extension zip: build/controlbridge_blender-<version>.zip.

    python3 addons/blender/build.py [--output-dir build] [--wheel PATH]

What goes in the zip (files at the zip's root, as Blender's own `extension build` lays them out):
- the add-on source, addons/blender/controlbridge/*
- vendor/controlbridge_protocol: the shared protocol and client package, copied from shared/ at build
  time (it uses relative imports only, so it works as a subpackage of the add-on)
- wheels/websockets-15.0.1-py3-none-any.whl, listed in blender_manifest.toml `wheels`, which Blender
  installs into the extension's own site-packages. The wheel is pure Python (works on Blender 4.2's
  Python 3.11 and on 5.1+'s Python 3.13); it is fetched once with `pip download` and cached in
  <output-dir>/wheels (or given with --wheel, for offline builds).

Runs with any Python >= 3.10; it does not need Blender.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ADDON_SRC = HERE / "controlbridge"
SHARED_SRC = REPO / "shared" / "controlbridge_protocol"

WEBSOCKETS_VERSION = "15.0.1"
WEBSOCKETS_WHEEL = f"websockets-{WEBSOCKETS_VERSION}-py3-none-any.whl"

_SKIP_DIRS = {"__pycache__", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".blend1")


def manifest_version(manifest_text: str) -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', manifest_text, re.MULTILINE)
    if not match:
        raise SystemExit("blender_manifest.toml has no version")
    return match.group(1)


def fetch_wheel(cache_dir: Path, given: "str | None") -> Path:
    """The websockets pure-Python wheel: --wheel, else the cache, else `pip download` into the cache."""
    if given:
        path = Path(given)
        if path.name != WEBSOCKETS_WHEEL:
            raise SystemExit(f"--wheel must be {WEBSOCKETS_WHEEL}, got {path.name}")
        return path
    cached = cache_dir / WEBSOCKETS_WHEEL
    if cached.is_file():
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    # --platform any / --abi none / --implementation py: without them pip picks the CPython-specific
    # wheel with the C speedups, which would tie the extension to one Python version and one OS.
    cmd = [sys.executable, "-m", "pip", "download", f"websockets=={WEBSOCKETS_VERSION}", "--no-deps",
           "--only-binary=:all:", "--platform", "any", "--python-version", "3.11", "--implementation", "py",
           "--abi", "none", "--disable-pip-version-check", "-d", str(cache_dir)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not cached.is_file():
        raise SystemExit(f"could not download {WEBSOCKETS_WHEEL} (pass --wheel PATH when offline):\n{proc.stdout}")
    return cached


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names
                                                       if n in _SKIP_DIRS or n.endswith(_SKIP_SUFFIXES)])


def with_wheels(manifest_text: str, wheel_paths: "list[str]") -> str:
    """Insert a top-level `wheels = [...]` before the first table (TOML keys after a table belong to it)."""
    if re.search(r"^wheels\s*=", manifest_text, re.MULTILINE):
        raise SystemExit("blender_manifest.toml must not list wheels itself; the build adds them")
    line = "wheels = [" + ", ".join(f'"{p}"' for p in wheel_paths) + "]\n\n"
    match = re.search(r"^\[", manifest_text, re.MULTILINE)
    at = match.start() if match else len(manifest_text)
    return manifest_text[:at] + line + manifest_text[at:]


def build(output_dir: Path, wheel: "str | None" = None, wheel_cache: "Path | None" = None) -> Path:
    """Build the zip into output_dir and return its path. The wheel is cached in wheel_cache
    (default: output_dir/wheels)."""
    if not (SHARED_SRC / "__init__.py").is_file():
        raise SystemExit(f"the shared protocol package is missing: {SHARED_SRC}")
    manifest_text = (ADDON_SRC / "blender_manifest.toml").read_text(encoding="utf-8")
    version = manifest_version(manifest_text)

    output_dir.mkdir(parents=True, exist_ok=True)
    wheel_path = fetch_wheel(Path(wheel_cache) if wheel_cache else output_dir / "wheels", wheel)

    stage = output_dir / "blender-stage" / "controlbridge"
    if stage.parent.exists():
        shutil.rmtree(stage.parent)
    _copy_tree(ADDON_SRC, stage)
    vendor = stage / "vendor"
    vendor.mkdir(exist_ok=True)
    (vendor / "__init__.py").write_text(
        '"""Packages bundled at build time (see addons/blender/build.py); not kept in the source tree."""\n',
        encoding="utf-8")
    _copy_tree(SHARED_SRC, vendor / "controlbridge_protocol")
    (stage / "wheels").mkdir()
    shutil.copy2(wheel_path, stage / "wheels" / WEBSOCKETS_WHEEL)
    (stage / "blender_manifest.toml").write_text(
        with_wheels(manifest_text, [f"./wheels/{WEBSOCKETS_WHEEL}"]), encoding="utf-8")

    zip_path = output_dir / f"controlbridge_blender-{version}.zip"
    tmp_path = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(stage).as_posix())
    os.replace(tmp_path, zip_path)
    return zip_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=str(REPO / "build"), help="where the zip goes (default: build/)")
    parser.add_argument("--wheel", help=f"path to {WEBSOCKETS_WHEEL} (skips the download)")
    args = parser.parse_args(argv)
    zip_path = build(Path(args.output_dir).resolve(), args.wheel)
    print(zip_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
