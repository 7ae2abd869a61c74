"""Level Sequence shots without the engine: which camera cuts, which frames, what each result is called, and
where each image sits on the contact sheet. No `unreal` import; engine_sequence.py reads the sequence and hands
plain CutSection values in.

Frames are the sequence's display-rate frame numbers, as Sequencer shows them; a section's end is exclusive
(Sequencer's ranges are [start, end)).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

from .naming import TEXTURE_DIR, sanitize

MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class CutSection:
    """One camera cut section as read from the sequence's camera cut track."""

    start: Optional[int]         # None = open (infinite) start
    end: Optional[int]           # None = open end; exclusive
    binding: Any                 # the camera binding id (engine value, passed back to resolve the camera)
    camera_label: str            # the bound camera's label ('' when the binding resolves to nothing)
    active: bool = True
    row: int = 0                 # on overlap, Sequencer uses the section on the higher row


@dataclass(frozen=True)
class Cut:
    index: int                   # 1-based, in time order
    start: int
    end: int                     # exclusive
    binding: Any
    camera_label: str
    name: str                    # the shot name results are called after

    @property
    def length(self) -> int:
        return self.end - self.start


class ShotError(ValueError):
    """Something the user can fix in the sequence (no camera cuts, an unbound camera)."""


def shot_name(sequence_name: str, index: int, camera_label: str) -> str:
    """'<Sequence>_010_<Camera>': Sequencer's own shot numbering (10, 20, ...) so names sort in cut order."""
    return f"{sanitize(sequence_name, 'Sequence')}_{index * 10:03d}_{sanitize(camera_label, 'Camera')}"


def enumerate_cuts(sections: Sequence[CutSection], playback: Tuple[int, int], sequence_name: str) -> List[Cut]:
    """The cuts a viewer of the sequence sees, in time order: inactive sections dropped, each clipped to the
    playback range, and where sections overlap the later-starting one (or the higher row at the same start)
    takes over from its start (an earlier, longer section does not resume after it: Sequencer's camera cut track
    trims overlaps when sections are placed). A cut without a bound camera is an error: its frames would show
    nothing."""
    play_start, play_end = playback
    if play_end <= play_start:
        raise ShotError(f"The sequence's playback range is empty ({play_start}..{play_end}).")
    spans = []
    for s in sections:
        if not s.active:
            continue
        start = play_start if s.start is None else max(play_start, s.start)
        end = play_end if s.end is None else min(play_end, s.end)
        if end > start:
            spans.append((start, -s.row, end, s))
    spans.sort(key=lambda t: (t[0], t[1]))
    cuts: List[Cut] = []
    for i, (start, _, end, s) in enumerate(spans):
        if cuts and start < cuts[-1].end:       # same start as the previous: the higher row already won
            continue
        later = [t[0] for t in spans[i + 1:] if t[0] > start]
        if later:                               # the next cut takes over from its start
            end = min(end, later[0])
        if end <= start:
            continue
        if not s.camera_label:
            raise ShotError(f"The camera cut at frame {start} has no camera bound to it; fix its binding in "
                            "Sequencer.")
        index = len(cuts) + 1
        cuts.append(Cut(index, start, end, s.binding, s.camera_label, shot_name(sequence_name, index, s.camera_label)))
    if not cuts:
        raise ShotError("The sequence has no camera cut inside its playback range: add a Camera Cut track with "
                        "a section per shot.")
    return cuts


def frames_of(cut: Cut, every_nth: int = 0) -> List[int]:
    """The frames to generate for a cut: its start frame, or with every_nth > 0 every Nth frame from the start."""
    if every_nth <= 0:
        return [cut.start]
    return list(range(cut.start, cut.end, every_nth))


def choose_cut(cuts: Sequence[Cut], wanted: str) -> Cut:
    """The cut named by the user: its number (1, 2, ...), its shot name, or its camera's label."""
    wanted = wanted.strip()
    for cut in cuts:
        if wanted in (str(cut.index), cut.name, cut.camera_label):
            return cut
    raise ShotError(f"No camera cut '{wanted}' in the sequence; cuts: "
                    + ", ".join(f"{c.index} = {c.name}" for c in cuts) + ".")


def cut_at(cuts: Sequence[Cut], frame: int) -> Cut:
    """The cut Sequencer's playhead is in."""
    for cut in cuts:
        if cut.start <= frame < cut.end:
            return cut
    raise ShotError(f"The playhead (frame {frame}) is in no camera cut: move it into the shot to render, or name "
                    "the shot in Settings > Shot Range Cut.")


def batch_seed(seed: int, rng: Optional[random.Random] = None) -> int:
    """One seed for every shot of a run: the settings' seed, or with -1 one random seed drawn for the whole run
    (each shot a different seed would make the shots look unrelated)."""
    if seed >= 0:
        return seed
    return (rng or random.Random()).randint(0, MAX_SEED)


def texture_name(cut: Cut, frame: int) -> str:
    return f"T_CB_{cut.name}_f{frame:04d}"


def sequence_filename(cut: Cut, frame: int, extension: str = "png") -> str:
    """A numbered image sequence as compositing tools read it: <shot>.<frame, 4 digits>.<ext>."""
    return f"{cut.name}.{frame:04d}.{extension}"


def output_folder(saved_dir: str, sequence_name: str) -> str:
    """Saved/ControlBridge/Sequences/<sequence>: the contact sheet and the rendered ranges."""
    return os.path.join(saved_dir, "ControlBridge", "Sequences", sanitize(sequence_name, "Sequence"))


def texture_folder(sequence_name: str) -> str:
    return f"{TEXTURE_DIR}/Shots/{sanitize(sequence_name, 'Sequence')}"


def contact_sheet_path(saved_dir: str, sequence_name: str) -> str:
    return os.path.join(output_folder(saved_dir, sequence_name), f"{sanitize(sequence_name, 'Sequence')}_contact_sheet.png")


def range_frame_path(saved_dir: str, sequence_name: str, cut: Cut, frame: int) -> str:
    return os.path.join(output_folder(saved_dir, sequence_name), cut.name, sequence_filename(cut, frame))


# ---- one run: what is left to capture, what is on the server, what came back ------------------------------

IN_FLIGHT = 2   # one rendering, one queued: the GPU never waits, the server's per-client queue never fills


@dataclass
class ShotItem:
    cut: Cut
    frame: int
    ticket: int = 0
    view: Any = None
    width: int = 0
    height: int = 0
    request_id: Optional[str] = None
    job_id: Optional[str] = None


@dataclass
class ShotRun:
    """A shots run (each cut's frames become textures + a contact sheet) or a range render (one cut's frames
    become a numbered image sequence). Frames are captured as room frees up, not all at once up front."""

    sequence_name: str
    render_range: bool
    seed: int
    restore_frame: int
    todo: List[Tuple[Cut, int]]
    handle: Any
    total: int = 0
    in_flight: List[ShotItem] = field(default_factory=list)
    done: List[Tuple[ShotItem, Any]] = field(default_factory=list)   # (item, what the result became)
    cancel_requested: bool = False

    def owner_of(self, event: Any) -> Optional[ShotItem]:
        job_id = getattr(event, "job_id", None)
        request_id = getattr(event, "request_id", None)
        ticket = getattr(event, "ticket", None)
        for item in self.in_flight:
            if (job_id and job_id == item.job_id) or (request_id and request_id == item.request_id) \
                    or (ticket is not None and ticket == item.ticket):
                return item
        return None

    def in_order(self) -> List[Tuple[ShotItem, Any]]:
        """What came back, in cut and frame order (the contact sheet's reading order)."""
        return sorted(self.done, key=lambda d: (d[0].cut.index, d[0].frame))

    @property
    def finished(self) -> bool:
        return not self.todo and not self.in_flight


def plan_frames(cuts: Sequence[Cut], every_nth: int) -> List[Tuple[Cut, int]]:
    return [(cut, frame) for cut in cuts for frame in frames_of(cut, every_nth)]


def plan_range(cut: Cut) -> List[Tuple[Cut, int]]:
    return [(cut, frame) for frame in range(cut.start, cut.end)]


# ---- contact sheet ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SheetLayout:
    width: int
    height: int
    tiles: Tuple[Tuple[int, int, int, int], ...]   # (x, y, w, h) per image, in order, left to right, top to bottom


def contact_sheet_layout(count: int, image_width: int, image_height: int, max_side: int = 2048,
                         gap: int = 8) -> SheetLayout:
    """A near-square grid of `count` equal tiles keeping the images' aspect, the sheet's longest side at most
    max_side. Tiles never overlap and keep a `gap` between them and to the edge."""
    if count <= 0:
        raise ValueError("a contact sheet needs at least one image")
    columns = max(1, math.ceil(math.sqrt(count * image_height / image_width)))
    rows = math.ceil(count / columns)
    scale = min(1.0, (max_side - gap * (columns + 1)) / (columns * image_width),
                (max_side - gap * (rows + 1)) / (rows * image_height))
    tile_w, tile_h = max(1, int(image_width * scale)), max(1, int(image_height * scale))
    tiles = tuple((gap + (i % columns) * (tile_w + gap), gap + (i // columns) * (tile_h + gap), tile_w, tile_h)
                  for i in range(count))
    return SheetLayout(gap + columns * (tile_w + gap), gap + rows * (tile_h + gap), tiles)
