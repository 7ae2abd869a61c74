"""Stream batch: consecutive live frames' steps in one batched model call, each frame on the one-shot trajectory."""
import numpy as np
import pytest

from controlbridge_protocol import Client, ControlNetSettings, JobError, LiveResult
from controlbridge.engine.live_engine import LiveEngine
from controlbridge.engine.models import ModelSpec, load_model
from helpers import quick_settings
from test_live import collect, frames
from test_live_engine import scene

# 8 steps at denoise 0.5: N = 4 run steps, so a stream holds 3 frames in flight and shows each 3 frames late.
STREAM = dict(steps=8, denoise=0.5, cfg=1.0, sampler="ddim", seed=21)
LAG = 3


@pytest.fixture(scope="module")
def model():
    return load_model(ModelSpec("tiny"), log=lambda m: None)


def count_unet_calls(model):
    calls = []
    handle = model.base.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls, handle


def close(a, b):
    difference = np.abs(a.astype(int) - b.astype(int))
    return difference.max() <= 2 and difference.mean() < 0.05, (difference.max(), difference.mean())


@pytest.mark.parametrize("sampler", ["ddim", "ddim_trailing"])
def test_each_frame_comes_out_on_its_one_shot_pixels_n_minus_1_frames_late(model, sampler):
    settings = quick_settings(**{**STREAM, "sampler": sampler})
    shots = [scene(128, 128, shift * 7) for shift in range(7)]
    one_shot = [LiveEngine().render(model, settings, s).image for s in shots]
    assert not np.array_equal(one_shot[0], one_shot[1])
    engine = LiveEngine()
    streamed = [engine.render(model, settings.replace(stream_batch=True), s, session="artist").image for s in shots]
    for k, image in enumerate(streamed):
        ok, how_far = close(image, one_shot[max(0, k - LAG)])     # the first frame at once, then N-1 late
        assert ok, (k, how_far)


def test_a_full_stream_runs_one_batched_model_call_per_frame(model):
    engine, settings = LiveEngine(), quick_settings(**STREAM, stream_batch=True)
    calls, handle = count_unet_calls(model)
    try:
        engine.render(model, settings, scene(128, 128), session="s")          # fills the stream: 4 single calls
        assert calls == [1, 1, 1, 1]
        calls.clear()
        for shift in range(1, 4):
            engine.render(model, settings, scene(128, 128, shift), session="s")
        assert calls == [4, 4, 4]                                            # one call of 4 frames per frame
        calls.clear()
        engine.render(model, settings.replace(stream_batch=False), scene(128, 128), session="s")
        assert calls == [1, 1, 1, 1]                                         # off: a frame's steps in turn
    finally:
        handle.remove()


def test_new_settings_or_another_session_start_their_own_stream(model):
    engine, settings = LiveEngine(), quick_settings(**STREAM, stream_batch=True)
    a, b = scene(128, 128), scene(128, 128, 40)
    engine.render(model, settings, a, session="one")
    other = engine.render(model, settings, b, session="two").image        # not session one's frame
    assert close(other, LiveEngine().render(model, settings.replace(stream_batch=False), b).image)[0]
    lighthouse = settings.replace(prompt="a lighthouse")
    changed = engine.render(model, lighthouse, b, session="one").image     # no frame of the old prompt shows
    assert close(changed, LiveEngine().render(model, lighthouse.replace(stream_batch=False), b).image)[0]


@pytest.mark.parametrize("parallel", ["", "batched"])
def test_controlnet_windows_apply_per_frame_in_the_batch(model, parallel):
    # depth only in the first half of the steps, canny only in the second: each frame of the batch is at
    # another step, so the two ControlNets get different scales per frame; still the one-shot pixels, also
    # with the ControlNets batched over their stacked weights (per-frame scales stacked per ControlNet).
    settings = quick_settings(**STREAM, controlnets={"depth": ControlNetSettings(1.0, 0.0, 0.5),
                                                     "canny": ControlNetSettings(0.8, 0.5, 1.0)})
    shots = [scene(128, 128, shift * 9) for shift in range(5)]
    one_shot = [LiveEngine().render(model, settings, s).image for s in shots]
    engine = LiveEngine()
    model.parallel_controlnets = parallel
    try:
        streamed = [engine.render(model, settings.replace(stream_batch=True), s, session="w").image for s in shots]
    finally:
        model.parallel_controlnets = ""
    assert close(streamed[4], one_shot[4 - LAG])[0]


def test_the_server_streams_batched_frames_and_explains_what_it_cannot_batch(server):
    live = quick_settings(**STREAM, stream_batch=True, result_encoding="jpeg")
    with Client(server.url) as c:
        shots = frames(5)
        results = []
        for imgs in shots:      # one at a time, so none is superseded: every frame takes its turn
            rid = c.send_live_frame(live, imgs)
            results.append(collect(c, lambda e, _: isinstance(e, LiveResult) and e.request_id == rid)[-1])
        assert all(r.image.encoding == "jpeg" and r.timings["model"] > 0 for r in results)
        c.send_live_frame(live.replace(sampler="euler_a"), shots[0])
        error = collect(c, lambda e, _: isinstance(e, JobError))[-1]
        assert error.code == "out_of_range"
        assert "stream_batch steps every frame of the batch at its own timestep, which the euler_a sampler " \
               "cannot: use ddim or ddim_trailing" in error.message
        c.send_live_frame(live.replace(cfg=4.0), shots[0])
        assert "stream_batch needs cfg 1" in collect(c, lambda e, _: isinstance(e, JobError))[-1].message
