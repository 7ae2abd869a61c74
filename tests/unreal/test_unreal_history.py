"""History in the editor: the listing, the choice, re-running; end to end against a real server: re-apply an older
result to its camera's plane and as a projection (the texture is not imported twice), re-run with a new seed."""

import json
import random
import time

import pytest

from controlbridge_protocol import HistoryEntry
from controlbridge_unreal import engine_classes, engine_projection, history, naming, plugin
from test_end_to_end import pump_until_finished, started  # noqa: F401 - the fixture


def entry(job_id="j1", prefix="unreal_Shot_010", prompt="a stone castle", seed=7):
    return HistoryEntry(job_id=job_id, created="2026-12-03T22:01:05", saved_path=f"/out/{job_id}.png", seed=seed,
                        width=96, height=64, settings={"prompt": prompt, "seed": seed, "steps": 20, "denoise": 0.75,
                                                       "width": 96, "height": 64, "filename_prefix": prefix})


def test_listing_and_choice():
    entries = [entry("j2", prompt="x" * 60), entry("j1", prefix="cli")]
    text = history.describe(entries).splitlines()
    assert text[0].startswith("1. 2026-12-03 22:01:05  Shot_010  96x64  seed 7") and text[0].endswith("…\"")
    assert "(not from Unreal)" in text[1]
    assert history.describe([]) == "(the server has no saved results yet)"
    assert history.chosen(entries, history.HistoryChoice(1)) is entries[0]
    with pytest.raises(history.HistoryError, match="between 1 and 2"):
        history.chosen(entries, history.HistoryChoice(3))
    with pytest.raises(history.HistoryError, match="not generated from Unreal"):
        history.chosen(entries, history.HistoryChoice(2, on_plane=True))
    assert history.chosen(entries, history.HistoryChoice(2, on_plane=False)) is entries[1]   # texture only
    assert history.matches_label("Shot 010", "Shot_010") and not history.matches_label("Shot 011", "Shot_010")


def test_rerun_keeps_the_settings_with_a_new_seed():
    s = history.rerun_settings(entry(), 96, 64, random.Random(1))
    assert s.prompt == "a stone castle" and s.steps == 20 and s.seed != 7 and s.seed >= 0
    assert (s.width, s.height, s.result_encoding) == (96, 64, "png") and s.preview_every >= 1
    assert history.rerun_settings(entry(seed=5), 96, 64, random.Random(1)).seed != 5


def test_the_history_picker_class_has_what_the_picker_sets(fake_editor):
    editor, ue = fake_editor
    classes = engine_classes.define(ue)
    declared = {name for name, value in vars(classes.history).items() if hasattr(value, "meta")}
    assert declared == set(engine_classes.HISTORY_PROPERTIES)


def pump_until(editor, done, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, editor.log[-5:]
        editor.tick(0.016)
        time.sleep(0.005)


def choose(editor, **choice):
    """The user fills in the history picker and presses OK."""
    shown = []

    def dialog(obj):
        shown.append(obj.get_editor_property("results"))
        for name, value in choice.items():
            obj.set_editor_property(name, value)
        return True

    editor.details_view = dialog
    return shown


def test_reapply_an_older_result_and_rerun_it_with_a_new_seed(started):
    editor, ue, server, p = started
    camera = editor.add_cine_camera(label="Shot 040")
    plugin.generate_from_cine_camera()
    assert pump_until_finished(editor, 0).finished is True
    first = p.engine.last_result[3]
    editor.selected = [camera]
    s = p.store.get()
    p.store.set(s.__class__(**{**s.to_dict(), "seed": 8}))
    plugin.generate_from_cine_camera()
    assert pump_until_finished(editor, 1).finished is True
    plane, = [a for a in editor.level if isinstance(a, ue.StaticMeshActor)]
    assert plane.static_mesh_component.materials[0].textures["Image"] is not editor.assets[first]
    assets_before = set(editor.assets)

    # re-apply the older result (listed second, newest first) on its plane and as a projection
    shown = choose(editor, pick=2, on_plane=True, as_projection=True)
    plugin.open_history()
    pump_until(editor, lambda: any("re-applied" in text for _, text in editor.log))
    assert editor.messages == [] and "1. " in shown[0] and "Shot_040" in shown[0] and "seed 7" in shown[0]
    made = set(editor.assets) - assets_before                       # the texture exists: not imported again
    assert made == {naming.object_path(naming.MATERIAL_DIR, "M_ControlBridge_Projector")}   # the projector, once
    assert plane.static_mesh_component.materials[0].textures["Image"] is editor.assets[first]
    decal, = engine_projection.find_projections(ue)
    assert decal.decal._props["decal_material"].textures["Image"] is editor.assets[first]

    # re-run it: the camera captured again, the entry's settings, a new seed
    choose(editor, pick=2, rerun_with_new_seed=True)
    plugin.open_history()
    pump_until(editor, lambda: len(editor.tasks) == 3)
    assert pump_until_finished(editor, 2).finished is True
    new = p.engine.last_result[3]
    meta, old_meta = editor.assets[new].metadata, editor.assets[first].metadata
    assert meta[naming.METADATA_SEED] not in ("7", "8")
    rerun, original = json.loads(meta[naming.METADATA_SETTINGS]), json.loads(old_meta[naming.METADATA_SETTINGS])
    assert {k: v for k, v in rerun.items() if k != "seed"} == {k: v for k, v in original.items() if k != "seed"}
    assert editor.messages == []

    # a camera that is gone: one message, nothing sent
    editor.level.remove(camera)
    choose(editor, pick=1, on_plane=True)
    plugin.open_history()
    pump_until(editor, lambda: editor.messages)
    assert "No CineCamera labelled Shot_040" in editor.messages[0] and len(editor.tasks) == 3


def test_history_failures_and_a_cancelled_picker_change_nothing():
    from controlbridge_protocol import HistoryPage
    from controlbridge_unreal.controller import Controller
    from controlbridge_unreal.worker import HistoryFailed, HistoryLoaded
    from test_controller import FakeEngine, FakeWorker
    from ue_scene import fast_settings

    class Worker(FakeWorker):
        asked = []

        def fetch_history(self, url, token, limit):
            self.asked.append(("history", limit))

        def fetch_history_item(self, url, token, job_id, request=None):
            self.asked.append(("item", job_id))

    engine, worker = FakeEngine(), Worker()
    picks = []
    engine.choose_history = lambda listing: picks.append(listing)   # the user presses Cancel: None
    c = Controller(engine, worker, lambda: fast_settings())
    c.open_history()
    assert worker.asked == [("history", history.LIMIT)]
    worker.pending.append(HistoryLoaded(HistoryPage("r", 0, 1, [entry()])))
    c.tick()
    assert picks and worker.asked == [("history", history.LIMIT)] and engine.errors == []
    worker.pending.append(HistoryFailed("Cannot reach a ControlBridge server at ws://x"))
    c.tick()
    assert engine.errors == ["ControlBridge could not read the server's history: Cannot reach a ControlBridge "
                             "server at ws://x"]
    engine.choose_history = lambda listing: history.HistoryChoice(1, on_plane=True)
    worker.pending.append(HistoryLoaded(HistoryPage("r", 0, 1, [entry("j9")])))
    c.tick()
    assert worker.asked[-1] == ("item", "j9") and not c.busy
