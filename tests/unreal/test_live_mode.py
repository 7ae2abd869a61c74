"""Live mode's decisions without the engine: throttle, in-flight limit, frame size and settings."""

import pytest

from controlbridge_protocol import Capabilities
from controlbridge_unreal import camera_math, live
from controlbridge_unreal.settings_model import PluginSettings


def view(x=0.0, yaw=0.0, fov=90.0):
    return camera_math.viewport_view((x, 0.0, 100.0), (0.0, yaw, 0.0), fov)


def test_a_frame_only_when_something_changed_and_not_sooner_than_the_interval():
    t = live.LiveThrottle(interval_s=0.5)
    a, b = live.view_signature(view()), live.view_signature(view(x=10.0))
    assert t.due(0.0, a)
    t.captured(0.0, a, 1)
    t.sent(1, "f1")
    t.answered("f1")
    assert not t.due(10.0, a)                       # nothing changed: nothing captured, however long
    assert not t.due(0.2, b)                        # changed, but too soon
    assert t.due(0.5, b)


def test_camera_at_rest_is_one_signature():
    assert live.view_signature(view(x=1e-4)) == live.view_signature(view())
    assert live.view_signature(view(yaw=0.02)) != live.view_signature(view())
    assert live.view_signature(view(fov=60.0)) != live.view_signature(view())


def test_at_most_two_frames_unanswered_then_room_again():
    t = live.LiveThrottle(interval_s=0.0)
    for i in (1, 2):
        assert t.due(float(i), ("moved", i))
        t.captured(float(i), ("moved", i), i)
        t.sent(i, f"f{i}")
    assert not t.may_capture(3.0) and not t.due(3.0, ("moved", 3))   # one rendering + one waiting on the server
    assert t.owns("f1") and not t.owns("other") and not t.owns(None)
    t.answered("f1")                                                   # a result or a skip frees a place
    assert t.due(3.0, ("moved", 3))


def test_a_frame_that_failed_to_go_out_is_captured_again():
    t = live.LiveThrottle(interval_s=0.0)
    t.captured(0.0, "a", 1)
    t.failed(1)
    assert t.in_flight == {} and t.due(0.0, "a")


@pytest.mark.parametrize("box,max_side,expected", [((768, 512), 512, (512, 336)), ((768, 512), 1024, (768, 512)),
                                                    ((512, 768), 256, (168, 256))])
def test_frame_size_keeps_the_aspect_within_the_live_limit(box, max_side, expected):
    settings = PluginSettings(width=box[0], height=box[1], live_max_side=max_side)
    w, h = live.frame_size(settings, view())
    assert (w, h) == expected and w % 8 == 0 and h % 8 == 0
    assert abs(w / h - box[0] / box[1]) < 0.03


def test_frame_settings_are_the_shared_live_preset_with_the_panel_choices():
    s = PluginSettings(prompt="castle", seed=11, steps=30, cfg=7.0, sampler="euler", denoise=0.8, live_steps=3,
                       live_denoise=0.55, live_sampler="lcm")
    request = live.frame_settings(s, 512, 344, "Viewport")
    fast = request.resolve(Capabilities(samplers=["euler", "lcm"], features=["live", "fast_decode"]))
    assert (fast.prompt, fast.seed, fast.width, fast.height) == ("castle", 11, 512, 344)     # the artist's
    assert (fast.sampler, fast.steps, fast.cfg, fast.denoise) == ("lcm", 3, 1.0, 0.55)        # live mode's
    assert fast.result_encoding == "jpeg" and fast.preview_every == 0 and fast.fast_decode is True
    # a server without the few-step sampler or the tiny decoder: the artist's sampler, steps and CFG
    plain = request.resolve(Capabilities(samplers=["euler"], features=["live"]))
    assert (plain.sampler, plain.steps, plain.cfg, plain.denoise, plain.fast_decode) == ("euler", 30, 7.0, 0.55, False)
    # an empty Live Sampler keeps the artist's sampler even where lcm is offered
    own = live.frame_settings(PluginSettings(sampler="euler", steps=30, live_sampler=""), 64, 64, "V")
    assert own.resolve(Capabilities(samplers=["euler", "lcm"])).sampler == "euler"


def test_a_settings_change_changes_the_signature():
    a = live.frame_settings(PluginSettings(prompt="castle"), 64, 64, "V")
    assert a.signature() == live.frame_settings(PluginSettings(prompt="castle"), 64, 64, "V").signature()
    assert a.signature() != live.frame_settings(PluginSettings(prompt="ruin"), 64, 64, "V").signature()
    assert a.signature() != live.frame_settings(PluginSettings(prompt="castle", live_steps=2), 64, 64, "V").signature()


# ---- the controller's live session, with a scripted worker and a fake engine port -----------------------

from controlbridge_protocol import Disconnected, ImageAttachment, LiveResult, LiveSkipped  # noqa: E402
from controlbridge_unreal.buffers import CaptureProblem  # noqa: E402
from controlbridge_unreal.controller import VIEWPORT, Controller, UserError  # noqa: E402
from controlbridge_unreal.worker import LiveFailed, LiveSent  # noqa: E402
from test_controller import FakeEngine, FakeWorker  # noqa: E402
from ue_scene import fast_settings  # noqa: E402


class LiveWorker(FakeWorker):
    def __init__(self):
        super().__init__()
        self.frames, self.live_stops = [], 0

    def send_live_frame(self, ticket, url, token, request, images):
        self.frames.append((ticket, request, images))

    def stop_live(self):
        self.live_stops += 1


class LiveEngine(FakeEngine):
    """The engine port as live mode uses it: a viewport whose position the test moves, one live plane."""

    def __init__(self):
        super().__init__()
        self.position, self.stop_reason, self.level = 0.0, None, 0
        self.plane_frames, self.plane_removed, self.source_error = [], 0, None

    def live_source(self, settings):
        if self.source_error:
            raise self.source_error
        return VIEWPORT

    def live_view(self, source, settings):
        return view(x=self.position)

    def live_capture(self, view, width, height, settings):
        return self.capture(view, width, height, settings)

    def live_label(self, source):
        return "the level viewport"

    def world_key(self):
        return "/Game/Maps/Blockout"

    def live_stop_reason(self, started_in):
        return self.stop_reason

    def level_signature(self):
        return self.level

    def show_live_frame(self, view, width, height, settings, image):
        self.plane_frames.append((view.location[0], image.data))
        return True

    def end_live(self):
        self.plane_removed += 1


@pytest.fixture
def live_rig():
    engine, worker = LiveEngine(), LiveWorker()
    settings = fast_settings(server_url="ws://127.0.0.1:9", live_interval_s=0.5, width=256, height=192,
                             live_max_side=64)
    c = Controller(engine, worker, lambda: settings)
    c.clock = lambda: engine.now
    engine.now = 0.0
    return engine, worker, c


def tick(c, engine, worker, at, *events):
    engine.now = at
    worker.pending.extend(events)
    c.tick(0.016)


def frame_result(request_id, data=b"\xff\xd8frame"):
    return LiveResult("", request_id, None, 7, "", ImageAttachment.encoded("image", "jpeg", 32, 24, data))


def test_live_sends_a_frame_only_on_change_and_shows_each_answer(live_rig):
    engine, worker, c = live_rig
    assert c.toggle_live() and c.live is not None
    tick(c, engine, worker, 0.0)
    (ticket, request, images), = worker.frames
    assert [i.name for i in images] == ["color", "depth"] and (request.base.width, request.base.height) == (64, 48)
    tick(c, engine, worker, 0.1, LiveSent(ticket, "F1"))
    tick(c, engine, worker, 2.0, frame_result("F1"))
    assert engine.plane_frames == [(0.0, b"\xff\xd8frame")]      # shown where it was captured from
    tick(c, engine, worker, 5.0)
    assert len(worker.frames) == 1                               # nothing moved: nothing sent
    engine.position = 50.0
    tick(c, engine, worker, 5.1)
    assert len(worker.frames) == 2                               # moved
    engine.level += 1                                            # the level changed, the camera did not
    tick(c, engine, worker, 5.3)
    assert len(worker.frames) == 2                               # but not sooner than live_interval_s
    tick(c, engine, worker, 5.7)
    assert len(worker.frames) == 3


def test_latest_wins_while_the_server_is_busy(live_rig):
    """Two frames unanswered: the views in between are never captured; the newest one goes when room frees."""
    engine, worker, c = live_rig
    c.toggle_live()
    for i, t in enumerate((0.0, 1.0)):
        engine.position = float(i)
        tick(c, engine, worker, t)
        tick(c, engine, worker, t + 0.01, LiveSent(worker.frames[-1][0], f"F{i + 1}"))
    for position, t in ((10.0, 2.0), (20.0, 3.0), (30.0, 4.0)):   # the user keeps flying
        engine.position = position
        tick(c, engine, worker, t)
    assert len(worker.frames) == 2
    tick(c, engine, worker, 4.1, LiveSkipped("F1", "superseded"))  # the server dropped the older frame
    assert len(worker.frames) == 3 and c.live.skipped == 1
    (ticket, request, _) = worker.frames[-1]
    tick(c, engine, worker, 4.2, LiveSent(ticket, "F3"), frame_result("F2", b"two"), frame_result("F3", b"three"))
    assert engine.plane_frames == [(1.0, b"two"), (30.0, b"three")]   # frame 3 is the newest view, placed there
    assert c.live.throttle.in_flight == {}


def test_toggle_off_removes_the_plane_and_late_answers_show_nothing(live_rig):
    engine, worker, c = live_rig
    c.toggle_live()
    tick(c, engine, worker, 0.0)
    tick(c, engine, worker, 0.1, LiveSent(1, "F1"))
    assert c.toggle_live() is False and c.live is None
    assert worker.live_stops == 1 and engine.plane_removed == 1
    tick(c, engine, worker, 0.2, frame_result("F1"), LiveSkipped("F2", "stopped"))
    assert engine.plane_frames == [] and engine.plane_removed == 1   # no plane comes back
    engine.position = 99.0
    tick(c, engine, worker, 9.0)
    assert len(worker.frames) == 1 and engine.errors == []
    assert any("Live mode stopped: switched off" in m for m in engine.logs)


@pytest.mark.parametrize("reason", ["Play In Editor started", "another level was opened"])
def test_pie_or_another_level_stops_live_mode(live_rig, reason):
    engine, worker, c = live_rig
    c.toggle_live()
    tick(c, engine, worker, 0.0)
    engine.stop_reason = reason
    engine.position = 5.0
    tick(c, engine, worker, 1.0)
    assert c.live is None and len(worker.frames) == 1            # stopped before capturing anything new
    assert worker.live_stops == 1 and engine.plane_removed == 1
    assert any(reason in m for m in engine.logs) and engine.errors == []


def test_editor_shutdown_stops_live_mode(live_rig):
    engine, worker, c = live_rig
    c.toggle_live()
    tick(c, engine, worker, 0.0)
    c.shutdown()
    assert c.live is None and worker.live_stops == 1 and engine.plane_removed == 1 and worker.stopped


def test_problems_stop_live_with_one_message_or_wait(live_rig):
    engine, worker, c = live_rig
    engine.source_error = UserError("2 CineCameras are selected")
    assert c.toggle_live() is False and c.live is None and engine.errors == ["2 CineCameras are selected"]
    engine.source_error = None

    c.toggle_live()
    engine.capture_error = CaptureProblem("nothing closer than 655 m")   # sky for a moment: wait, keep going
    tick(c, engine, worker, 0.0)
    assert c.live is not None and worker.frames == [] and len(engine.errors) == 1
    tick(c, engine, worker, 1.0)
    assert worker.frames == []                                   # same view: not captured again
    engine.capture_error = None
    engine.position = 1.0
    tick(c, engine, worker, 2.0)
    assert len(worker.frames) == 1

    tick(c, engine, worker, 2.1, LiveFailed(1, "Cannot reach a ControlBridge server at ws://127.0.0.1:9"))
    assert c.live is None and engine.plane_removed == 1
    assert engine.errors[-1] == "Live mode stopped: Cannot reach a ControlBridge server at ws://127.0.0.1:9"

    c.toggle_live()
    tick(c, engine, worker, 3.0, Disconnected("server closed"))
    assert c.live is None and "server closed" in engine.errors[-1] and engine.plane_removed == 2

    c.toggle_live()
    engine.capture_error = RuntimeError("render target lost")
    engine.position = 7.0
    tick(c, engine, worker, 9.0)
    assert c.live is None and "RuntimeError: render target lost" in engine.errors[-1]
