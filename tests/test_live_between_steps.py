"""Live frames are not starved by a long job: they run between its steps, and the job's pixels do not change."""
import threading
import time

import numpy as np

from controlbridge_protocol import Client, LiveResult, LoraSettings, Progress, Result
from helpers import blockout_images, decode_png, quick_settings
from test_live import LIVE, frames
from test_lora_state import write_lora

JOB = quick_settings(steps=16, denoise=1.0, loras=[LoraSettings("style.safetensors", 1.0)])


class LiveStreamer(threading.Thread):
    """A live client that sends a new frame whenever its last one came back, until stopped."""

    def __init__(self, url, frame_pair, settings=LIVE):
        super().__init__(daemon=True)
        self.url, self.frames, self.settings = url, frame_pair, settings
        self.results = []          # (monotonic time, which of the two frames, LiveResult)
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self):
        with Client(self.url, client_name="live") as c:
            self.ready.set()
            n = 0
            while not self.stop.is_set():
                rid = c.send_live_frame(self.settings, self.frames[n % 2])    # alternate: never "unchanged"
                while not self.stop.is_set():
                    event = c.next_event(timeout=0.2)
                    if isinstance(event, LiveResult) and event.request_id == rid:
                        self.results.append((time.monotonic(), n % 2, event))
                        break
                n += 1
            c.stop_live()


def run_job_while(url, streamers, settings=JOB):
    """The job's result, when it arrived, and the time its first step was reported."""
    with Client(url, client_name="job") as c:
        first_step = []

        def on_event(event):
            if isinstance(event, Progress) and event.step == 1 and not first_step:
                first_step.append(time.monotonic())
                for s in streamers:
                    s.start()
        result = c.run(settings, blockout_images(), on_event)
        return result, time.monotonic(), first_step[0]


def test_live_frames_run_between_a_long_jobs_steps_and_the_job_keeps_its_pixels(make_server, tiny_model, tmp_path):
    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    write_lora(tiny_model, models / "loras" / "style.safetensors")
    server = make_server(models_dir=models)
    pair = frames(2)
    with Client(server.url) as c:
        alone = c.run(JOB, blockout_images())
        idle_frame = c.send_live_frame(LIVE.replace(seed=99), pair[0])
        while not (isinstance(e := c.next_event(timeout=30), LiveResult) and e.request_id == idle_frame):
            pass
        idle_pixels = e.image.data
        c.stop_live()

    streamer = LiveStreamer(server.url, pair, LIVE.replace(seed=99))
    job, job_done, _ = run_job_while(server.url, [streamer])
    streamer.stop.set()
    streamer.join(30)
    during = [(which, r) for t, which, r in streamer.results if t < job_done]
    assert len(during) >= 3, f"only {len(during)} live frames came back while the 16-step job ran"
    assert np.array_equal(decode_png(job.image.data), decode_png(alone.image.data))   # the pixels of an uninterrupted run
    # and the job's LoRA did not leak into the frames: the first frame rendered between steps equals it idle
    firsts = [r.image.data for which, r in during if which == 0]
    assert firsts and all(data == idle_pixels for data in firsts)


def test_live_clients_share_the_between_step_turns_fairly(make_server):
    server = make_server()
    streamers = [LiveStreamer(server.url, frames(2)) for _ in range(3)]
    _, job_done, _ = run_job_while(server.url, streamers, quick_settings(steps=24, denoise=1.0))
    for s in streamers:
        s.stop.set()
        s.join(30)
    counts = [sum(1 for t, _, _ in s.results if t < job_done) for s in streamers]
    assert min(counts) >= 2, counts                        # every live client saw frames during the job
    assert max(counts) - min(counts) <= 2, counts           # and none took the others' turns
