"""Level Sequence shots end to end: the plugin reads the open sequence's camera cuts through the recording
stand-in, moves the playhead (the stand-in evaluates animated cameras), captures, and a REAL
`controlbridge serve --model tiny` generates every shot. What a user would check: one texture per shot frame named
after the shot, one seed for all, each captured where its camera is at that frame, a contact sheet showing the
shots in order, a numbered image sequence for a range, and the playhead back where it was."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from controlbridge_unreal import plugin, shots
from test_end_to_end import pump_until_finished, started  # noqa: F401 - the fixture


def dolly(frame):
    """CamA moves 10 cm per frame along X, looking slightly down."""
    return (10.0 * frame, 0.0, 170.0), (-5.0, 0.0, 0.0)


@pytest.fixture
def sequence(started):
    editor, ue, server, p = started
    cam_a = editor.add_cine_camera(label="CamA", select=False)
    cam_b = editor.add_cine_camera(label="CamB", location=(0.0, 300.0, 200.0), rotation=(-10.0, -90.0, 0.0),
                                   select=False)
    editor.open_sequence("SEQ_Main", (0, 30), [(0, 24, cam_a, dolly), (24, 30, cam_b)], time=27)
    s = p.store.get()
    p.store.set(s.__class__(**{**s.to_dict(), "seed": -1, "width": 96, "height": 64}))
    return editor, ue, server, p


def settings_with(p, **changes):
    s = p.store.get()
    p.store.set(s.__class__(**{**s.to_dict(), **changes}))


def test_shots_become_named_textures_with_one_seed_and_a_contact_sheet(sequence):
    editor, ue, server, p = sequence
    settings_with(p, shot_every_nth=12)
    level_before = list(editor.level)
    plugin.generate_shots()
    task = pump_until_finished(editor, 0)
    assert task.finished is True, task.texts
    assert editor.messages == []

    folder = "/Game/ControlBridge/Shots/SEQ_Main"
    names = ["T_CB_SEQ_Main_010_CamA_f0000", "T_CB_SEQ_Main_010_CamA_f0012", "T_CB_SEQ_Main_020_CamB_f0024"]
    textures = [editor.assets[f"{folder}/{n}.{n}"] for n in names]
    assert sorted(p_ for p_ in editor.assets if p_.startswith(folder)) == sorted(f"{folder}/{n}.{n}" for n in names)
    seeds = {t.metadata["ControlBridge.Seed"] for t in textures}
    assert len(seeds) == 1                                          # seed -1: one seed drawn for the whole run
    assert all(json.loads(t.metadata["ControlBridge.Settings"])["prompt"] == "a stone castle" for t in textures)
    for t in textures:                                              # each texture is exactly the server's PNG
        assert Path(t.metadata["ControlBridge.ServerPath"]).read_bytes() == t.png

    # each frame was captured where its camera is at that frame (the sequence evaluated before the capture)
    spawns = [c for c in editor.calls_named("EditorActorSubsystem.spawn_actor_from_class")
              if c.args[0] is ue.SceneCapture2D]
    assert [(c.args[1].x, c.args[1].y) for c in spawns] == [(0.0, 0.0), (120.0, 0.0), (0.0, 300.0)]
    assert editor.sequence_time == 27 and editor.level == level_before   # playhead back; no plane, no leftovers
    assert all(rt.released for rt in editor.render_targets)

    # the contact sheet: the shots in order, each tile the shot's image
    sheet_path = Path(shots.contact_sheet_path(editor.saved_dir, "SEQ_Main"))
    sheet = cv2.imread(str(sheet_path), cv2.IMREAD_COLOR)
    layout = shots.contact_sheet_layout(3, 96, 64)
    assert sheet.shape[:2] == (layout.height, layout.width)
    for texture, (x, y, w, h) in zip(textures, layout.tiles):
        image = cv2.imdecode(np.frombuffer(texture.png, np.uint8), cv2.IMREAD_COLOR)
        expected = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(sheet[y:y + h, x:x + w].astype(int) - expected).max() <= 1
    assert task.texts[-1] == (f"Done: 3 shot image(s) in {folder}; contact sheet {sheet_path}")


def test_render_shot_range_writes_a_numbered_image_sequence(sequence):
    editor, ue, server, p = sequence
    assets_before = dict(editor.assets)
    plugin.render_shot_range()                                     # the cut under the playhead (27): CamB 24..29
    task = pump_until_finished(editor, 0)
    assert task.finished is True, task.texts
    folder = Path(editor.saved_dir) / "ControlBridge" / "Sequences" / "SEQ_Main" / "SEQ_Main_020_CamB"
    files = sorted(f.name for f in folder.iterdir())
    assert files == [f"SEQ_Main_020_CamB.{f:04d}.png" for f in range(24, 30)]
    saved = sorted(server.output_dir.glob("*.png"))
    assert sorted((folder / f).read_bytes() for f in files) == sorted(s.read_bytes() for s in saved)
    assert editor.assets == assets_before                           # files only, no assets
    assert editor.sequence_time == 27


def test_sequence_problems_are_one_message(started):
    editor, ue, server, p = started
    plugin.generate_shots()                                         # no sequence open
    assert len(editor.messages) == 1 and "Open a Level Sequence" in editor.messages[0]
    editor.open_sequence("Empty", (0, 100), [(0, 50, None)])        # a cut whose camera binding is broken
    plugin.generate_shots()
    assert "frame 0 has no camera bound" in editor.messages[-1] and editor.tasks == []
    settings_with(p, shot_sequence="/Game/Cinematics/Nope.Nope")
    plugin.generate_shots()
    assert "/Game/Cinematics/Nope.Nope is not a Level Sequence" in editor.messages[-1] and editor.tasks == []


def test_a_sequence_chosen_in_the_settings_is_opened(started):
    """Not the one open in Sequencer: the asset named in Settings > Shot Sequence."""
    editor, ue, server, p = started
    camera = editor.add_cine_camera(label="CamZ", select=False)
    chosen = editor.open_sequence("SEQ_Other", (10, 20), [(10, 20, camera)])
    editor.assets["/Game/Cinematics/SEQ_Other.SEQ_Other"] = chosen
    editor.open_sequence("SEQ_Open", (0, 5), [(0, 5, None)])         # what Sequencer shows now (broken)
    settings_with(p, shot_sequence="/Game/Cinematics/SEQ_Other.SEQ_Other")
    plugin.generate_shots()
    task = pump_until_finished(editor, 0)
    assert task.finished is True, task.texts
    assert editor.sequence is chosen
    assert "/Game/ControlBridge/Shots/SEQ_Other/T_CB_SEQ_Other_010_CamZ_f0010.T_CB_SEQ_Other_010_CamZ_f0010" \
        in editor.assets
