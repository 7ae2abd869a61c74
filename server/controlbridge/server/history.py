"""An index of the results in the output folder, for the protocol's `history` and `history_get`.

Built once at start-up from the `controlbridge` text chunk of every result PNG, then kept current by the device
worker as it saves. The worker thread adds and the event loop reads, so every access holds the lock. A client
names a result by job id, which is looked up here; nothing a client sends becomes a path.
"""
import datetime
import logging
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from controlbridge_protocol import HistoryEntry

from .outputs import read_job

log = logging.getLogger("controlbridge.history")
MAX_PAGE = 100   # items per page: keeps one answer small whatever a client asks for


class History:
    def __init__(self, output_dir: Path):
        self._lock = threading.Lock()
        self._by_id: Dict[str, Tuple[datetime.datetime, HistoryEntry]] = {}
        self._newest_first: List[HistoryEntry] = []
        output_dir = Path(output_dir)
        if output_dir.is_dir():
            for path in sorted(output_dir.glob("*.png")):   # "*.png.tmp" (a save cut short) does not match
                try:
                    metadata = read_job(path)
                except Exception as e:  # noqa: BLE001 - a foreign or damaged PNG is skipped, never fatal
                    log.debug("history skips %s: %s", path, e)
                    continue
                self.add(path, metadata)

    def add(self, saved_path: Path, metadata: dict) -> None:
        """Index one saved result. Never raises: a result that cannot be indexed is still a saved result."""
        try:
            created = datetime.datetime.fromisoformat(metadata["created"])
            if created.tzinfo is not None:   # ours are naive local times; compare like with like
                created = created.astimezone().replace(tzinfo=None)
            if not isinstance(metadata["job_id"], str) or not metadata["job_id"]:
                raise ValueError("no job id")
            settings = metadata["settings"]
            width, height = metadata["size"]
            entry = HistoryEntry(job_id=metadata["job_id"], created=metadata["created"],
                                 saved_path=str(Path(saved_path).resolve()), seed=int(settings["seed"]),
                                 width=int(width), height=int(height), settings=dict(settings),
                                 model=str((metadata.get("model") or {}).get("name", "")),
                                 inputs=sorted(metadata.get("inputs") or {}))
        except Exception as e:  # noqa: BLE001 - metadata from another version or hand-edited
            log.warning("history skips %s: unreadable ControlBridge metadata (%s)", saved_path, e)
            return
        with self._lock:
            self._by_id[entry.job_id] = (created, entry)   # the same job again (a copied file): one entry
            # Re-sorted on every add: results arrive nearly in order, which Python's sort handles in linear time.
            ordered = sorted(self._by_id.values(), key=lambda ce: (ce[0], ce[1].job_id), reverse=True)
            self._newest_first = [e for _, e in ordered]

    def page(self, offset: int, limit: int) -> Tuple[int, List[HistoryEntry]]:
        """(total, entries offset .. offset+limit-1), newest first; limit is capped at MAX_PAGE."""
        with self._lock:
            return len(self._newest_first), self._newest_first[offset:offset + min(limit, MAX_PAGE)]

    def get(self, job_id: str) -> Optional[HistoryEntry]:
        with self._lock:
            found = self._by_id.get(job_id)
        return found[1] if found else None

    def forget(self, job_id: str) -> None:
        """Drop an entry whose file is gone (deleted by hand since it was indexed)."""
        with self._lock:
            if self._by_id.pop(job_id, None) is not None:
                self._newest_first = [e for e in self._newest_first if e.job_id != job_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._newest_first)
