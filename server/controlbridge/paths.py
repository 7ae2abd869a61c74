"""Per-user folders, following each platform's convention."""
import os
import sys
from pathlib import Path


def _platform_dir(windows_env: str, mac: str, xdg_env: str, xdg_default: str) -> Path:
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get(windows_env) or home / "AppData" / "Local")
    if sys.platform == "darwin":
        return home / "Library" / mac
    return Path(os.environ.get(xdg_env) or home / xdg_default)


def user_data_dir() -> Path:
    return _platform_dir("LOCALAPPDATA", "Application Support", "XDG_DATA_HOME", ".local/share") / "controlbridge"


def user_cache_dir() -> Path:
    """Built models live here; CONTROLBRIDGE_CACHE_DIR overrides it (tests use a private one)."""
    override = os.environ.get("CONTROLBRIDGE_CACHE_DIR")
    if override:
        return Path(override)
    return _platform_dir("LOCALAPPDATA", "Caches", "XDG_CACHE_HOME", ".cache") / "controlbridge"


def default_output_dir() -> Path:
    return Path(os.environ.get("CONTROLBRIDGE_OUTPUT_DIR") or user_data_dir() / "outputs")
