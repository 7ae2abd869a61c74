"""The game-thread state machine with a scripted worker and a fake engine port (no threads, no engine)."""

import pytest

from controlbridge_protocol import (Accepted, Cancelled, Disconnected, ImageAttachment, JobError, JobSettings, Progress,
                                    Result)
from controlbridge_unreal import camera_math
from controlbridge_unreal.buffers import CaptureProblem
from controlbridge_unreal.controller import CINE_CAMERA, VIEWPORT, Controller, ProgressHandle, UserError
from controlbridge_unreal.worker import CancelFailed, SubmitFailed, Submitted
from ue_scene import fast_settings, synthetic_capture


class FakeWorker:
    def __init__(self):
        self.submitted, self.cancels, self.pending, self.stopped = [], [], [], False

    def submit(self, ticket, url, token, settings, images):
        self.submitted.append((ticket, url, token, settings, images))

    def cancel(self, job_id=None):
        self.cancels.append(job_id)

    def drain(self):
        out, self.pending = self.pending, []
        return out

    def stop(self):
        self.stopped = True


class Handle(ProgressHandle):
    def __init__(self, on_fail=None):
        self.texts, self.end, self.cancel_flag, self.on_fail = [], None, False, on_fail

    def update(self, text):
        self.texts.append(text)

    def cancel_requested(self):
        return self.cancel_flag

    def succeed(self, text):
        self.end = ("ok", text)

    def cancelled(self, text):
        self.end = ("cancelled", text)

    def fail(self, text):
        self.end = ("failed", text)
        if self.on_fail:
            self.on_fail()


class FakeEngine:
    def __init__(self):
        self.errors, self.logs, self.handles, self.applied = [], [], [], []
        self.view_error = None
        self.capture_error = None
        self.apply_error = None
        self.on_fail = None

    def resolve_view(self, source, settings):
        if self.view_error:
            raise self.view_error
        if source == VIEWPORT:
            return camera_math.viewport_view((0, 0, 100), (0, 0, 0), settings.viewport_fov)
        return camera_math.cine_camera_view("cam", "Shot", (0, 0, 100), (0, 0, 0), 36.0, 24.0, 35.0, actor="a")

    def capture(self, view, width, height, settings):
        if self.capture_error:
            raise self.capture_error
        self.captured = (view, width, height)
        return synthetic_capture(width, height)

    def apply_result(self, job, result):
        if self.apply_error:
            raise self.apply_error
        self.applied.append((job, result))
        return "/Game/ControlBridge/T_X"

    def begin_progress(self, title):
        h = Handle(self.on_fail)
        h.title = title
        self.handles.append(h)
        return h

    def show_error(self, message):
        self.errors.append(message)

    def log(self, message):
        self.logs.append(message)


@pytest.fixture
def rig():
    engine, worker = FakeEngine(), FakeWorker()
    settings = fast_settings(server_url="ws://127.0.0.1:9", token="tok")
    return engine, worker, Controller(engine, worker, lambda: settings)


def result_event(job_id="J1", request_id="R1"):
    png = b"\x89PNG\r\n\x1a\n"
    return Result(job_id, request_id, JobSettings(prompt="p"), 7, "/out/x.png",
                  ImageAttachment.encoded("image", "png", 64, 48, png))


def run_events(controller, worker, *events):
    worker.pending.extend(events)
    controller.tick(0.016)


def test_happy_path(rig):
    engine, worker, c = rig
    assert c.generate(CINE_CAMERA)
    (ticket, url, token, job, images), = worker.submitted
    assert (url, token) == ("ws://127.0.0.1:9", "tok")
    assert (job.width, job.height) == (64, 40)              # 3:2 filmback fitted in 64 x 48
    assert [i.name for i in images] == ["color", "depth"]
    h = engine.handles[0]
    assert h.title == "ControlBridge: Shot" and h.texts == ["Connecting to ws://127.0.0.1:9"]
    run_events(c, worker, Submitted(ticket, "R1"), Accepted("R1", "J1", 2))
    assert h.texts[-1] == "Queued: 2 job(s) ahead"
    run_events(c, worker, Progress("J1", 3, 10), Progress("OTHER", 9, 10))
    assert h.texts[-1] == "Step 3/10"
    run_events(c, worker, result_event())
    assert h.end == ("ok", "Done: /Game/ControlBridge/T_X")
    assert engine.applied[0][0].job_id == "J1" and not c.busy and engine.errors == []


def test_one_job_at_a_time(rig):
    engine, worker, c = rig
    c.generate(VIEWPORT)
    assert not c.generate(VIEWPORT)
    assert len(worker.submitted) == 1 and "already running" in engine.errors[0]


@pytest.mark.parametrize("error,expected", [
    (UserError("Select a CineCameraActor"), "Select a CineCameraActor"),
    (CaptureProblem("nothing closer than 655 m"), "nothing closer than 655 m"),
    (RuntimeError("boom"), "could not capture the view: RuntimeError: boom"),
])
def test_capture_side_errors_are_one_message_and_send_nothing(rig, error, expected):
    engine, worker, c = rig
    engine.capture_error = error
    assert not c.generate(VIEWPORT)
    assert len(engine.errors) == 1 and expected in engine.errors[0]
    assert worker.submitted == [] and engine.handles == [] and not c.busy


def test_view_error(rig):
    engine, worker, c = rig
    engine.view_error = UserError("No CineCamera selected")
    c.generate(CINE_CAMERA)
    assert engine.errors == ["No CineCamera selected"]


def test_submit_failure_and_server_errors(rig):
    engine, worker, c = rig
    c.generate(VIEWPORT)
    run_events(c, worker, SubmitFailed(1, "Cannot reach a ControlBridge server at ws://x"))
    assert engine.handles[0].end == ("failed", "Cannot reach a ControlBridge server at ws://x")
    assert not c.busy

    c.generate(VIEWPORT)
    run_events(c, worker, Submitted(2, "R2"), JobError("bad_image", "other request", None, "R-other"))
    assert engine.handles[1].end is None                     # not ours
    run_events(c, worker, JobError("out_of_range", "steps must be <= 150", None, "R2"))
    assert engine.handles[1].end == ("failed", "The server reported an error: steps must be <= 150")


def test_disconnect_fails_the_job(rig):
    engine, worker, c = rig
    c.generate(VIEWPORT)
    run_events(c, worker, Submitted(1, "R1"), Accepted("R1", "J1", 0), Disconnected("server closed"))
    assert engine.handles[0].end[0] == "failed" and "server closed" in engine.handles[0].end[1]


def test_cancel_from_menu_before_and_after_accept(rig):
    engine, worker, c = rig
    c.generate(VIEWPORT)
    c.cancel()
    assert worker.cancels == [None]                          # job id unknown yet: cancel this client's jobs
    c.cancel()
    assert worker.cancels == [None]                          # only once
    run_events(c, worker, Submitted(1, "R1"), Accepted("R1", "J1", 0), Cancelled("J1"))
    assert engine.handles[0].end == ("cancelled", "Cancelled") and not c.busy

    c.generate(VIEWPORT)
    run_events(c, worker, Submitted(2, "R2"), Accepted("R2", "J2", 0))
    engine.handles[1].cancel_flag = True                     # the notification's Cancel button
    c.tick()
    assert worker.cancels[-1] == "J2"
    run_events(c, worker, result_event("J2", "R2"))          # crossed the cancel on the wire
    assert engine.handles[1].end == ("cancelled", "Cancelled") and engine.applied == []


def test_nothing_to_cancel(rig):
    engine, worker, c = rig
    c.cancel()
    assert worker.cancels == [] and engine.logs


def test_apply_failure_keeps_the_server_path_in_the_message(rig):
    engine, worker, c = rig
    engine.apply_error = RuntimeError("import failed")
    c.generate(VIEWPORT)
    run_events(c, worker, Submitted(1, "R1"), Accepted("R1", "J1", 0), result_event())
    kind, text = engine.handles[0].end
    assert kind == "failed" and "/out/x.png" in text and "import failed" in text


def test_tick_is_not_reentered_by_a_modal_dialog(rig):
    engine, worker, c = rig
    engine.on_fail = lambda: c.tick()                        # a modal dialog ticks Slate again
    c.generate(VIEWPORT)
    run_events(c, worker, SubmitFailed(1, "x"), CancelFailed("y"))
    assert engine.handles[0].end == ("failed", "x")


def test_late_events_are_ignored_and_shutdown_stops(rig):
    engine, worker, c = rig
    run_events(c, worker, Progress("J9", 1, 2), result_event("J9", "R9"))
    assert engine.applied == []
    c.generate(VIEWPORT)
    c.shutdown()
    assert worker.stopped and worker.cancels == [None] and engine.handles[0].end[0] == "cancelled"


def test_previews_are_shown_and_a_broken_preview_never_fails_the_job(rig):
    engine, worker, c = rig
    shown, ended = [], []

    def show(job, image):
        if image.data == b"broken":
            raise RuntimeError("texture import failed")
        shown.append(image.data)
        return True

    engine.show_preview = show
    engine.end_preview = lambda job: ended.append(job.job_id)
    c.generate(CINE_CAMERA)
    ticket = worker.submitted[0][0]
    jpeg = ImageAttachment.encoded("preview", "jpeg", 8, 8, b"\xff\xd8one")
    run_events(c, worker, Submitted(ticket, "R1"), Accepted("R1", "J1", 0), Progress("J1", 1, 4, jpeg),
               Progress("OTHER", 1, 4, ImageAttachment.encoded("preview", "jpeg", 8, 8, b"not mine")))
    assert shown == [b"\xff\xd8one"]                       # only this job's previews
    run_events(c, worker, Progress("J1", 2, 4, ImageAttachment.encoded("preview", "jpeg", 8, 8, b"broken")),
               Progress("J1", 3, 4, jpeg))
    assert shown == [b"\xff\xd8one"] and any("previews are off" in m for m in engine.logs)   # off after a failure
    assert c.busy and engine.handles[0].texts[-1] == "Step 3/4"                            # the job goes on
    run_events(c, worker, Cancelled("J1"))
    assert ended == ["J1"] and engine.handles[0].end == ("cancelled", "Cancelled")       # plane put back


def test_a_job_settings_asks_for_previews(rig):
    engine, worker, c = rig
    c.generate(VIEWPORT)
    job = worker.submitted[0][3]
    assert job.preview_every >= 1
