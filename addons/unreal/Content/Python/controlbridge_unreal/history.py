"""The server's history in the editor, decided without the engine: what the list shows, which camera an entry
came from, what re-running it sends. No `unreal` import.

Entries come from the server's `history` (its saved results, newest first). Re-applying one fetches its PNG
(`history_get`) and shows it again as a texture, on its camera's plane or projected; re-running captures the
same camera again and sends the entry's settings with a new seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

from controlbridge_protocol import HistoryEntry, JobSettings

from . import jobs
from .naming import sanitize

LIMIT = 20                 # entries listed: the newest results of this server
PREFIX = "unreal_"         # jobs.job_settings names the server's files unreal_<camera>
VIEWPORT_LABEL = "Viewport"


class HistoryError(ValueError):
    """Something the user can fix in the choice (no such entry, not an Unreal result)."""


@dataclass(frozen=True)
class HistoryChoice:
    pick: int                      # 1-based, as listed
    on_plane: bool = True          # show it on its camera's plane (the texture is always made)
    as_projection: bool = False    # project it onto the level from its camera
    rerun_new_seed: bool = False   # instead: capture the camera again, same settings, a new seed


def camera_label(entry: HistoryEntry) -> str:
    """The (sanitized) label of the camera an Unreal result came from, '' for another client's result."""
    prefix = str((entry.settings or {}).get("filename_prefix") or "")
    return prefix[len(PREFIX):] if prefix.startswith(PREFIX) else ""


def describe(entries: Sequence[HistoryEntry]) -> str:
    """One line per entry for the picker, numbered from 1, newest first."""
    lines = []
    for i, e in enumerate(entries, 1):
        prompt = str((e.settings or {}).get("prompt") or "").replace("\n", " ")
        prompt = prompt if len(prompt) <= 48 else prompt[:47] + "…"
        lines.append(f"{i}. {e.created[:19].replace('T', ' ')}  {camera_label(e) or '(not from Unreal)'}  "
                     f"{e.width}x{e.height}  seed {e.seed}  \"{prompt}\"")
    return "\n".join(lines) if lines else "(the server has no saved results yet)"


def chosen(entries: Sequence[HistoryEntry], choice: HistoryChoice) -> HistoryEntry:
    if not 1 <= choice.pick <= len(entries):
        raise HistoryError(f"Pick a result between 1 and {len(entries)}." if entries else
                           "The server has no saved results yet.")
    entry = entries[choice.pick - 1]
    if (choice.on_plane or choice.as_projection or choice.rerun_new_seed) and not camera_label(entry):
        raise HistoryError("That result was not generated from Unreal, so it has no camera here: re-apply it as a "
                           "texture only (untick plane, projection and re-run).")
    return entry


def matches_label(actor_label: str, wanted: str) -> bool:
    """Whether a camera in the level is the one an entry names (entries keep the sanitized label)."""
    return sanitize(actor_label, "view") == wanted


def rerun_settings(entry: HistoryEntry, width: int, height: int, rng: Optional[random.Random] = None) -> JobSettings:
    """The entry's settings as the server used them, with a new seed, at the size of the new capture."""
    settings = JobSettings.from_dict(dict(entry.settings))
    seed = (rng or random.Random()).randint(0, 2**31 - 1)
    if seed == settings.seed:
        seed = (seed + 1) % 2**31
    return settings.replace(seed=seed, width=int(width), height=int(height), result_encoding="png",
                            preview_every=jobs.preview_interval(settings.steps, settings.denoise))
