"""Level Sequence shots without the engine: cut enumeration, frame choice, naming, the contact sheet's grid."""

import random

import pytest

from controlbridge_unreal import shots
from controlbridge_unreal.shots import CutSection


def sec(start, end, camera="CamA", active=True, row=0):
    return CutSection(start, end, binding=object(), camera_label=camera, active=active, row=row)


def test_cuts_in_time_order_clipped_to_the_playback_range():
    cuts = shots.enumerate_cuts([sec(120, 300, "CamB"), sec(-20, 120, "CamA"), sec(300, 500, "CamC")], (0, 400),
                                "SEQ Main")
    assert [(c.index, c.start, c.end, c.camera_label) for c in cuts] == [
        (1, 0, 120, "CamA"), (2, 120, 300, "CamB"), (3, 300, 400, "CamC")]
    assert [c.name for c in cuts] == ["SEQ_Main_010_CamA", "SEQ_Main_020_CamB", "SEQ_Main_030_CamC"]


def test_open_ended_inactive_and_overlapping_sections():
    # open start/end reach the playback range; an inactive section is not seen; a later section takes over
    # from its start; at the same start the higher row wins (as Sequencer evaluates)
    cuts = shots.enumerate_cuts([sec(None, 50, "Open"), sec(40, None, "Late"), sec(60, 90, "Muted", active=False),
                                 sec(100, 150, "Low", row=0), sec(100, 150, "High", row=1)], (0, 200), "S")
    assert [(c.start, c.end, c.camera_label) for c in cuts] == [(0, 40, "Open"), (40, 100, "Late"),
                                                               (100, 150, "High"), ]
    # 150..200: the 'Late' section ended where the next started, so nothing covers it - no cut invented there


def test_sequence_problems_are_clear():
    with pytest.raises(shots.ShotError, match="no camera cut"):
        shots.enumerate_cuts([sec(500, 600)], (0, 100), "S")
    with pytest.raises(shots.ShotError, match="frame 10 has no camera"):
        shots.enumerate_cuts([sec(10, 20, camera="")], (0, 100), "S")
    with pytest.raises(shots.ShotError, match="playback range is empty"):
        shots.enumerate_cuts([sec(0, 10)], (10, 10), "S")


def test_frames_start_or_every_nth_and_the_named_cut():
    cut, second = shots.enumerate_cuts([sec(100, 125, "CamA"), sec(125, 140, "CamB")], (0, 1000), "S")
    assert shots.frames_of(cut) == [100]
    assert shots.frames_of(cut, 10) == [100, 110, 120]                 # never past the cut's (exclusive) end
    assert shots.frames_of(cut, 1) == list(range(100, 125))
    assert shots.plan_frames([cut, second], 0) == [(cut, 100), (second, 125)]
    assert shots.plan_range(second) == [(second, f) for f in range(125, 140)]
    assert shots.choose_cut([cut, second], "2") is second
    assert shots.choose_cut([cut, second], "CamB") is second and shots.choose_cut([cut, second], "S_010_CamA") is cut
    with pytest.raises(shots.ShotError, match="1 = S_010_CamA, 2 = S_020_CamB"):
        shots.choose_cut([cut, second], "CamZ")
    assert shots.cut_at([cut, second], 124) is cut and shots.cut_at([cut, second], 125) is second
    with pytest.raises(shots.ShotError, match="playhead"):
        shots.cut_at([cut, second], 140)


def test_names_of_what_a_run_makes(tmp_path):
    cut, = shots.enumerate_cuts([sec(0, 48, "Cam 1/A")], (0, 48), "Seq:Main")
    assert shots.texture_name(cut, 24) == "T_CB_Seq_Main_010_Cam_1_A_f0024"
    assert shots.texture_folder("Seq:Main") == "/Game/ControlBridge/Shots/Seq_Main"
    assert shots.range_frame_path(str(tmp_path), "Seq:Main", cut, 7) == str(
        tmp_path / "ControlBridge" / "Sequences" / "Seq_Main" / "Seq_Main_010_Cam_1_A" / "Seq_Main_010_Cam_1_A.0007.png")
    assert shots.contact_sheet_path(str(tmp_path), "Seq:Main").endswith("Seq_Main_contact_sheet.png")


def test_one_seed_for_the_whole_run():
    assert shots.batch_seed(42) == 42
    drawn = shots.batch_seed(-1, random.Random(3))
    assert 0 <= drawn <= shots.MAX_SEED and drawn == shots.batch_seed(-1, random.Random(3))


@pytest.mark.parametrize("count,w,h", [(1, 768, 512), (3, 768, 512), (7, 512, 768), (24, 1920, 1080), (100, 64, 64)])
def test_contact_sheet_tiles_keep_the_aspect_never_overlap_and_fit(count, w, h):
    layout = shots.contact_sheet_layout(count, w, h, max_side=2048, gap=8)
    assert len(layout.tiles) == count and max(layout.width, layout.height) <= 2048
    tw, th = layout.tiles[0][2:]
    assert all(t[2:] == (tw, th) for t in layout.tiles)
    assert abs(tw / th - w / h) < 0.02 and tw <= w
    boxes = [(x, y, x + tw, y + th) for x, y, _, _ in layout.tiles]
    for i, a in enumerate(boxes):
        assert a[0] >= 8 and a[1] >= 8 and a[2] <= layout.width - 8 and a[3] <= layout.height - 8
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    # reading order: left to right, then top to bottom
    assert [t[1] for t in layout.tiles] == sorted(t[1] for t in layout.tiles)
    assert 0.4 < layout.width / layout.height < 2.6 or count < 3            # near square, not a strip


# ---- the controller's shots run, with a scripted worker and a fake engine port ------------------------------

from controlbridge_protocol import Accepted, JobError, Progress  # noqa: E402
from controlbridge_unreal import camera_math  # noqa: E402
from controlbridge_unreal.controller import Controller, UserError  # noqa: E402
from controlbridge_unreal.worker import Submitted  # noqa: E402
from test_controller import FakeEngine, FakeWorker, result_event  # noqa: E402
from ue_scene import fast_settings  # noqa: E402


class ShotEngine(FakeEngine):
    def __init__(self, cuts, playhead=7):
        super().__init__()
        self.cuts, self.playhead, self.views, self.kept, self.sheets = cuts, playhead, [], [], []

    def sequence_cuts(self, settings):
        if isinstance(self.cuts, Exception):
            raise self.cuts
        return "SEQ", self.cuts, self.playhead

    def shot_view(self, cut, frame):
        self.playhead = frame
        self.views.append((cut.name, frame))
        return camera_math.cine_camera_view(cut.camera_label, cut.camera_label, (float(frame), 0, 100), (0, 0, 0),
                                            36.0, 24.0, 35.0)

    def set_sequence_frame(self, frame):
        self.playhead = frame

    def apply_shot_result(self, run, item, result):
        self.kept.append((item.cut.name, item.frame, result.job_id))
        return f"tex-{item.frame}"

    def finish_shots(self, run):
        self.sheets.append([made for _, made in run.in_order()])
        return "3 shot image(s)"


def cuts3():
    return shots.enumerate_cuts([sec(0, 10, "CamA"), sec(10, 20, "CamB"), sec(20, 40, "CamC")], (0, 40), "SEQ")


def answer(c, worker, ticket, n):
    worker.pending.extend([Submitted(ticket, f"R{n}"), Accepted(f"R{n}", f"J{n}", 0), Progress(f"J{n}", 2, 4),
                           result_event(f"J{n}", f"R{n}")])
    c.tick()


def test_a_shots_run_paces_frames_keeps_one_seed_and_ends_with_the_contact_sheet():
    engine, worker = ShotEngine(cuts3()), FakeWorker()
    c = Controller(engine, worker, lambda: fast_settings(seed=-1))
    assert c.generate_shots() and c.busy
    assert len(worker.submitted) == 2                                  # captured as room frees up, not all at once
    assert engine.views == [("SEQ_010_CamA", 0), ("SEQ_020_CamB", 10)]
    answer(c, worker, worker.submitted[0][0], 1)
    assert len(worker.submitted) == 3 and engine.views[-1] == ("SEQ_030_CamC", 20)
    seeds = {job.seed for _, _, _, job, _ in worker.submitted}
    assert len(seeds) == 1 and seeds.pop() >= 0                        # seed -1: one drawn seed for every shot
    assert [job.filename_prefix for _, _, _, job, _ in worker.submitted] == [
        "unreal_SEQ_010_CamA", "unreal_SEQ_020_CamB", "unreal_SEQ_030_CamC"]
    handle = engine.handles[0]
    assert any(t.startswith("SEQ_010_CamA frame 0 (1/3): step 2/4") for t in handle.texts)
    answer(c, worker, worker.submitted[1][0], 2)
    answer(c, worker, worker.submitted[2][0], 3)
    assert engine.kept == [("SEQ_010_CamA", 0, "J1"), ("SEQ_020_CamB", 10, "J2"), ("SEQ_030_CamC", 20, "J3")]
    assert engine.sheets == [["tex-0", "tex-10", "tex-20"]]
    assert handle.end == ("ok", "Done: 3 shot image(s)") and not c.busy
    assert engine.playhead == 7                                        # put back where the user had it


def test_every_nth_frame_and_the_range_render():
    engine, worker = ShotEngine(cuts3(), playhead=12), FakeWorker()
    settings = fast_settings(shot_every_nth=5)
    c = Controller(engine, worker, lambda: settings)
    c.generate_shots()
    for n in range(1, 9):
        answer(c, worker, worker.submitted[n - 1][0], n)
    assert [f for _, f, _ in engine.kept] == [0, 5, 10, 15, 20, 25, 30, 35]
    assert engine.handles[0].end[0] == "ok"

    engine.kept.clear()
    c.render_shot_range()                                              # the cut under the playhead (frame 12)
    for n in range(9, 19):
        answer(c, worker, worker.submitted[n - 1][0], n)
    assert [(name, f) for name, f, _ in engine.kept] == [("SEQ_020_CamB", f) for f in range(10, 20)]
    settings.shot_range_cut = "CamA"
    engine.kept.clear()
    c.render_shot_range()
    assert engine.views[-1] == ("SEQ_010_CamA", 1)


def test_a_failed_frame_ends_the_run_once_and_cancels_the_rest():
    engine, worker = ShotEngine(cuts3()), FakeWorker()
    c = Controller(engine, worker, lambda: fast_settings())
    c.generate_shots()
    t1, t2 = worker.submitted[0][0], worker.submitted[1][0]
    worker.pending.extend([Submitted(t1, "R1"), Accepted("R1", "J1", 0), Submitted(t2, "R2"),
                           JobError("out_of_range", "too big", "J1", "R1")])
    c.tick()
    kind, text = engine.handles[0].end
    assert kind == "failed" and "SEQ_010_CamA frame 0" in text and "too big" in text
    assert worker.cancels == [None] and not c.busy and engine.playhead == 7   # J2 not named yet: this client's jobs
    assert len(worker.submitted) == 2 and engine.kept == []
    worker.pending.append(result_event("J2", "R2"))                          # late: nothing kept
    c.tick()
    assert engine.kept == [] and engine.errors == []


def test_cancel_and_sequence_problems():
    engine, worker = ShotEngine(cuts3()), FakeWorker()
    c = Controller(engine, worker, lambda: fast_settings())
    c.generate_shots()
    worker.pending.extend([Submitted(worker.submitted[0][0], "R1"), Accepted("R1", "J1", 0)])
    c.tick()
    engine.handles[0].cancel_flag = True                                     # the notification's Cancel
    c.tick()
    assert engine.handles[0].end == ("cancelled", "Cancelled") and not c.busy
    assert worker.cancels == [None] and len(worker.submitted) == 2          # the 2nd frame is not named yet

    assert c.generate_shots() and not c.generate_shots()                    # one run at a time
    assert "already running" in engine.errors[-1]
    c.cancel()
    assert not c.busy

    engine.cuts = UserError("Open a Level Sequence in Sequencer first")
    assert not c.generate_shots() and engine.errors[-1].startswith("Open a Level Sequence")
    engine.cuts = cuts3()
    engine.capture_error = RuntimeError("lost device")
    assert c.generate_shots() is True and not c.busy
    assert engine.handles[-1].end[0] == "failed" and "lost device" in engine.handles[-1].end[1]
