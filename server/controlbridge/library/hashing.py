"""sha256 of model files, as ComfyUI and Civitai identify a checkpoint, cached so each file is read once.

The cache key is (path, size, mtime): a file replaced in place gets hashed again. Folders (diffusers layout) and
hub ids have no single file to hash and get None. Reading a multi-GB checkpoint takes seconds, so the server
never hashes on the device thread: `prefetch` starts a background thread when a job names the model (and at
start-up for the default), and result metadata takes `known_sha256`, which never waits.
"""
import hashlib
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

_cache: Dict[Tuple[str, int, int], str] = {}
_running: Dict[Tuple[str, int, int], threading.Thread] = {}
_lock = threading.Lock()


def _key(path: Path) -> Optional[Tuple[str, int, int]]:
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def file_sha256(path: Path) -> Optional[str]:
    """The file's sha256, read now unless cached (blocking: not for the device thread)."""
    path = Path(path)
    key = _key(path)
    if key is None:
        return None
    with _lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()       # hashlib releases the GIL on large blocks: other threads keep running
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with _lock:
        _cache[key] = digest.hexdigest()
    return _cache[key]


def prefetch(path: Optional[Path]) -> Optional[threading.Thread]:
    """Start hashing `path` in the background unless it is known or under way; the thread, if one runs."""
    if path is None:
        return None
    key = _key(Path(path))
    if key is None:
        return None
    with _lock:
        if key in _cache:
            return None
        if key not in _running:
            _running[key] = threading.Thread(target=_hash_quietly, args=(Path(path), key), daemon=True,
                                             name=f"controlbridge-sha256 {Path(path).name}")
            _running[key].start()
        return _running[key]


def known_sha256(path: Optional[Path]) -> Optional[str]:
    """The sha256 if already computed, else None (and hashing starts in the background): never waits."""
    if path is None:
        return None
    key = _key(Path(path))
    with _lock:
        if key in _cache:
            return _cache[key]
    prefetch(path)
    return None


def _hash_quietly(path: Path, key) -> None:
    try:
        file_sha256(path)
    except OSError:     # deleted or unreadable meanwhile: the metadata just has no hash
        pass
    finally:
        with _lock:
            _running.pop(key, None)


def model_file(models, name: str) -> Optional[Path]:
    """The single file a loaded model came from: a library checkpoint, or a file named on the command line."""
    try:
        return Path(models.library.resolve(name, "checkpoint").path)
    except Exception:  # noqa: BLE001 - not a library model (tiny, a diffusers folder, a hub id)
        path = Path(name)
        return path if path.is_file() else None
