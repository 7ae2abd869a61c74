"""Per-user folders, following each platform's convention."""
import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "controlbridge"


def default_output_dir() -> Path:
    return Path(os.environ.get("CONTROLBRIDGE_OUTPUT_DIR") or user_data_dir() / "outputs")
