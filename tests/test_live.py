"""Live mode: frames stream in, the newest waiting one wins, results stream out."""
import time

import numpy as np

from controlbridge_protocol import Accepted, Client, LiveResult, LiveSkipped, Result
from helpers import blockout_images, decode_png, quick_settings

LIVE = quick_settings(steps=4, denoise=0.6, sampler="lcm", cfg=1.0, seed=-1, result_encoding="jpeg")


def frames(n, width=96, height=64):
    """n different frames: the color image shifts a little each time, as when a camera moves."""
    color, depth = blockout_images(width, height)
    out = []
    for i in range(n):
        pixels = np.roll(np.frombuffer(color.data, np.uint8).reshape(height, width, 4), i, axis=1)
        out.append([color.__class__.raw_rgba8("color", width, height, pixels.tobytes()), depth])
    return out


def collect(client, until, timeout=60):
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.next_event(timeout=0.5)
        if event is not None:
            events.append(event)
            if until(event, events):
                return events
    raise AssertionError(f"timed out after {len(events)} events: {events[-3:]}")


def test_latest_frame_wins_and_nothing_piles_up(server):
    with Client(server.url) as c:
        ids = [c.send_live_frame(LIVE, imgs) for imgs in frames(30)]
        events = collect(c, lambda e, _: isinstance(e, LiveResult) and e.request_id == ids[-1])
        results = [e for e in events if isinstance(e, LiveResult)]
        superseded = [e for e in events if isinstance(e, LiveSkipped) and e.reason == "superseded"]
        assert len(results) < 10, len(results)                  # far fewer renders than frames
        assert len(results) + len(superseded) == 30             # every frame is accounted for
        assert results[-1].request_id == ids[-1] and results[-1].image.encoding == "jpeg"
        assert results[-1].saved_path == "" and results[-1].elapsed_ms > 0
        assert server.server.scheduler.queued_for(next(iter(server.server.transport.connections))) == 0
        assert not server.server.config.output_dir.exists() or not any(server.server.config.output_dir.iterdir())


def test_unchanged_frames_are_skipped_and_settings_changes_apply_next_frame(server):
    with Client(server.url) as c:
        [imgs] = frames(1)
        first = c.send_live_frame(LIVE, imgs)
        r1 = collect(c, lambda e, _: isinstance(e, LiveResult))[-1]
        assert r1.request_id == first
        again = c.send_live_frame(LIVE, imgs)
        skipped = collect(c, lambda e, _: isinstance(e, LiveSkipped))[-1]
        assert (skipped.request_id, skipped.reason) == (again, "unchanged")
        changed = c.send_live_frame(LIVE.replace(prompt="a lighthouse"), imgs)
        r2 = collect(c, lambda e, _: isinstance(e, LiveResult))[-1]
        assert r2.request_id == changed and r2.settings.prompt == "a lighthouse"
        assert r1.seed == r2.seed                               # a fixed seed keeps frames stable
        assert not np.array_equal(decode_jpeg(r1), decode_jpeg(r2))


def decode_jpeg(result):
    return decode_png(result.image.data)


def test_live_and_ordinary_jobs_share_the_device(server):
    live, other = Client(server.url, client_name="live"), Client(server.url, client_name="batch")
    live.connect(), other.connect()
    stream = frames(40)
    live.send_live_frame(LIVE, stream[0])
    collect(live, lambda e, _: isinstance(e, LiveResult))
    other.submit(quick_settings(steps=3), blockout_images(64, 48))
    for imgs in stream[1:20]:                                   # the camera keeps moving
        live.send_live_frame(LIVE, imgs)
    accepted = collect(other, lambda e, _: isinstance(e, Accepted))[-1]
    assert accepted.queue_position <= 1
    result = collect(other, lambda e, _: isinstance(e, Result))[-1]
    assert result.image.width == 64
    collect(live, lambda e, _: isinstance(e, LiveResult))       # and live goes on
    live.close(), other.close()


def test_stop_and_disconnect_end_the_session(server):
    slow = LIVE.replace(steps=60, denoise=1.0, sampler="euler")   # about 2 s a frame on the tiny model
    with Client(server.url) as c:
        ids = [c.send_live_frame(slow, imgs) for imgs in frames(3)]
        time.sleep(0.5)                                         # the first frame is rendering, the last waits
        c.stop_live()
        # Every frame ends without a result: the rendering one and the waiting one are stopped, any frame that
        # was replaced before the device took it is superseded.
        events = collect(c, lambda e, evs: {x.request_id for x in evs if isinstance(x, LiveSkipped)} == set(ids))
        time.sleep(0.5)
        events += c.poll_events()
        assert not any(isinstance(e, LiveResult) for e in events)
        stopped = {e.request_id for e in events if getattr(e, "reason", "") == "stopped"}
        assert ids[2] in stopped and len(stopped) == 2
    leaver = Client(server.url)
    leaver.connect()
    for imgs in frames(3):
        leaver.send_live_frame(slow.replace(steps=150), imgs)   # about 5 s a frame, more on a busy machine
    time.sleep(0.3)
    leaver.close()
    with Client(server.url) as c:                               # the device is free again within a step
        start = time.monotonic()
        assert c.run(quick_settings(steps=2), blockout_images(64, 48), timeout=30).image.width == 64
        assert time.monotonic() - start < 3
    assert server.server.scheduler.snapshot("nobody")["queued"] == 0


def test_fast_decode_uses_the_tiny_autoencoder(client):
    assert "fast_decode" in client.capabilities.features and "live" in client.capabilities.features
    full = decode_png(client.run(quick_settings(), blockout_images()).image.data)
    fast = client.run(quick_settings(fast_decode=True), blockout_images())
    assert fast.settings.fast_decode and fast.image.width == 160
    assert not np.array_equal(full, decode_png(fast.image.data))     # another decoder, another image


def test_previews_come_from_the_tiny_autoencoder_at_full_size(client):
    events = []
    client.run(quick_settings(steps=4, preview_every=2), blockout_images(), events.append)
    previews = [e.preview for e in events if getattr(e, "preview", None) is not None]
    assert previews and all((p.width, p.height) == (168, 96) for p in previews)   # the working size


def test_live_results_say_where_the_servers_time_went_and_frames_reuse_one_pipeline(server):
    model = server.server.models.get(None, lambda text: None)
    with Client(server.url) as c:
        results = []
        for imgs in frames(3):
            rid = c.send_live_frame(LIVE, imgs)
            results.append(collect(c, lambda e, _: isinstance(e, LiveResult) and e.request_id == rid)[-1])
        builds = model.pipelines.builds
        rid = c.send_live_frame(LIVE.replace(prompt="another prompt"), frames(4)[-1])
        collect(c, lambda e, _: isinstance(e, LiveResult) and e.request_id == rid)
    assert model.pipelines.builds == builds          # a new prompt or frame builds no pipeline
    for r in results:
        t = r.timings
        assert set(t) == {"decode", "queued", "prepare", "model", "output", "encode", "total"}, t
        assert all(v >= 0 for v in t.values()) and t["model"] > 0 and t["encode"] > 0
        # the parts add up to (no more than) the whole
        assert sum(t[k] for k in ("decode", "queued", "prepare", "model", "output", "encode")) <= t["total"] + 1.0


def test_live_start_warms_the_session_up_before_its_first_frame(server):
    from controlbridge.engine.resolution import working_size
    from controlbridge_protocol import JobError, LiveReady
    model = server.server.models.get(None, lambda text: None)
    settings = LIVE.replace(prompt="warm-up check", width=160, height=96)
    with Client(server.url) as c:
        rid = c.start_live(settings, 96, 64)
        ready = collect(c, lambda e, _: isinstance(e, LiveReady))[-1]
        working = working_size(160, 96, model.native_resolution, model.size_multiple)
        assert ready.request_id == rid and (ready.width, ready.height) == working and ready.warm_ms > 0
        builds = model.pipelines.builds
        again = c.start_live(settings, 96, 64)
        ready = collect(c, lambda e, _: isinstance(e, LiveReady) and e.request_id == again)[-1]
        assert ready.warm_ms == 0                           # the same session shape is warm already
        frame = c.send_live_frame(settings, frames(1)[0])
        result = collect(c, lambda e, _: isinstance(e, LiveResult) and e.request_id == frame)[-1]
        assert (result.image.width, result.image.height) == (160, 96)
        assert model.pipelines.builds == builds             # the frame found its pipeline built
        bad = c.start_live(settings.replace(sampler="no-such-sampler"), 96, 64)
        error = collect(c, lambda e, _: isinstance(e, JobError))[-1]
        assert error.request_id == bad and "no-such-sampler" in error.message
        tiny = c.start_live(settings, 4, 4)
        error = collect(c, lambda e, _: isinstance(e, JobError) and e.request_id == tiny)[-1]
        assert "too small" in error.message


def test_a_bad_or_oversized_live_frame_is_refused_and_the_next_one_renders(make_server):
    from controlbridge.server.config import Limits
    from controlbridge_protocol import ErrorCode, ImageAttachment, JobError
    server = make_server(limits=Limits(max_queued_input_bytes=200_000))    # a 96x64 frame, not a 256x256 one
    with Client(server.url) as c:
        color, depth = frames(1)[0]
        short_depth = ImageAttachment.raw_depth("depth", 96, 64, depth.data[:-4])
        bad = c.send_live_frame(LIVE, [color, short_depth])
        error = collect(c, lambda e, _: isinstance(e, JobError))[-1]
        assert (error.request_id, error.code) == (bad, ErrorCode.BAD_IMAGE) and "depth" in error.message
        big = c.send_live_frame(LIVE, blockout_images(256, 256))
        full = collect(c, lambda e, _: isinstance(e, JobError))[-1]
        assert (full.request_id, full.code) == (big, ErrorCode.LIMIT_EXCEEDED) and "MiB" in full.message
        good = c.send_live_frame(LIVE, [color, depth])
        assert collect(c, lambda e, _: isinstance(e, LiveResult))[-1].request_id == good
