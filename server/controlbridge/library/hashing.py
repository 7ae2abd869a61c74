"""sha256 of model files, as ComfyUI and Civitai identify a checkpoint, cached so each file is read once.

The cache key is (path, size, mtime): a file replaced in place gets hashed again. Folders (diffusers layout) and
hub ids have no single file to hash and get None.
"""
import hashlib
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

_cache: Dict[Tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_sha256(path: Path) -> Optional[str]:
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with _lock:
        _cache[key] = digest.hexdigest()
    return _cache[key]


def model_file(models, name: str) -> Optional[Path]:
    """The single file a loaded model came from: a library checkpoint, or a file named on the command line."""
    try:
        return Path(models.library.resolve(name, "checkpoint").path)
    except Exception:  # noqa: BLE001 - not a library model (tiny, a diffusers folder, a hub id)
        path = Path(name)
        return path if path.is_file() else None
