"""serve --ray: a real local Ray cluster with two CPU workers (actors) running the tiny model, behind one websocket
endpoint on 127.0.0.1. Ray is started once for the module and shut down at its end."""
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # before ray is imported: loopback only (pool.py)
import ray  # noqa: E402 F401 - controlbridge[cluster], in the test extra: missing is a failure, not a skip

from controlbridge_protocol import Accepted, Client, JobError, LiveResult, Progress, Result
from helpers import blockout_images, decode_png, quick_settings

SLOW = quick_settings(steps=40, denoise=1.0)          # long enough to be caught running (about 3 s per worker)


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    from controlbridge.server.app import ServerThread
    from controlbridge.server.config import ServerConfig
    config = ServerConfig(port=0, output_dir=tmp_path_factory.mktemp("cluster-outputs"), ray="auto", workers=2)
    lines = []
    server = ServerThread(config, model=tiny_model, log=lines.append).start()
    server.lines = lines
    with Client(server.url) as c:
        wait_for_workers(c, idle=2)
    yield server
    server.stop()
    assert not ray.is_initialized()        # the server shut down the Ray it started


def wait_for_workers(client, idle, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.status().workers
        if sum(w["state"] == "idle" for w in workers) >= idle:
            return workers
        time.sleep(0.5)
    raise AssertionError(f"workers did not come up: {workers}")


def busy_worker(client, job_id, timeout=30, other_than=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in client.status().workers:
            if w["job"] == job_id and w["state"] == "busy" and w["name"] != other_than:
                return w
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is not running on any worker")


def running_job_id(client, request_id, timeout=60):
    """Wait until the job of `request_id` reports progress (it is on a worker) and return its id."""
    job_id, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.next_event(timeout=0.5)
        if isinstance(event, Accepted) and event.request_id == request_id:
            job_id = event.job_id
        if isinstance(event, Progress) and event.job_id == job_id and event.step > 0:
            return job_id
    raise AssertionError("the job never started")


def final_event(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.next_event(timeout=0.5)
        if isinstance(event, (Result, JobError)) and event.job_id == job_id:
            return event
    raise AssertionError(f"no result or error for {job_id}")


def test_two_clients_jobs_run_on_both_workers_at_once(cluster, caplog):
    caplog.set_level(logging.INFO, logger="controlbridge.jobs")
    results, both_busy = {}, []

    def artist(name):
        with Client(cluster.url, client_name=name) as c:
            results[name] = c.run(SLOW.replace(seed=11 if name == "a" else 12), blockout_images(), timeout=120)

    threads = [threading.Thread(target=artist, args=(name,)) for name in "ab"]
    for t in threads:
        t.start()
    with Client(cluster.url) as watcher:
        while any(t.is_alive() for t in threads):
            states = [w["state"] for w in watcher.status().workers]
            both_busy.append(states == ["busy", "busy"])
            time.sleep(0.1)
    for t in threads:
        t.join()
    assert any(both_busy)                                              # at the same time, not one after the other
    assert {results["a"].worker, results["b"].worker} == {"w1", "w2"}
    for r in results.values():                                         # one front end: saved and in its history
        assert os.path.isfile(r.saved_path)
    with Client(cluster.url) as c:
        listed = {item.job_id for item in c.history(limit=100).items}
        assert {results["a"].job_id, results["b"].job_id} <= listed
    logged = [r.getMessage() for r in caplog.records if r.name == "controlbridge.jobs"]
    assert any(results["a"].job_id in line and line.endswith(f"on worker {results['a'].worker}") for line in logged)
    # status lists both workers: node, device, loaded models, state, jobs done
    from controlbridge.model_listing import format_status
    with Client(cluster.url) as c:
        pong = c.status()
    assert [w["name"] for w in pong.workers] == ["w1", "w2"]
    for w in pong.workers:
        assert w["device"] == "cpu" and w["node"] and "tiny" in w["models"] and w["jobs_done"] >= 1
        assert w["state"] == "idle" and w["job"] is None
    text = format_status(pong, cluster.url)
    assert "Workers:" in text and "w1" in text and "w2" in text


def test_jobs_for_a_model_go_to_the_worker_that_has_it_loaded(cluster):
    sdxl = quick_settings(model="tiny-sdxl", steps=2)
    with Client(cluster.url) as c:
        first = c.run(sdxl, blockout_images(), timeout=120)
        loaded_on = {w["name"]: w["models"] for w in c.status().workers}
        assert "tiny-sdxl" in loaded_on[first.worker]
        assert all("tiny-sdxl" not in models for name, models in loaded_on.items() if name != first.worker)
        again = [c.run(sdxl.replace(seed=s), blockout_images(), timeout=120).worker for s in range(3)]
    assert again == [first.worker] * 3      # both workers were free each time: the one with the model took it


def test_a_live_session_stays_on_one_worker(cluster):
    from test_live import LIVE, frames
    stop = threading.Event()

    def other_artist():          # keeps both workers in play while the session runs
        with Client(cluster.url) as c:
            while not stop.is_set():
                c.run(quick_settings(steps=6), blockout_images(), timeout=120)

    background = threading.Thread(target=other_artist)
    background.start()
    try:
        with Client(cluster.url) as c:
            workers = []
            for imgs in frames(8):
                request = c.send_live_frame(LIVE, imgs)
                while True:
                    event = c.next_event(timeout=60)
                    assert event is not None and not isinstance(event, JobError), event
                    if isinstance(event, LiveResult) and event.request_id == request:
                        workers.append(event.worker)
                        break
    finally:
        stop.set()
        background.join()
    assert len(set(workers)) == 1 and workers[0] in ("w1", "w2"), workers


def test_a_worker_killed_mid_job_is_retried_elsewhere_with_the_same_pixels(cluster):
    settings = SLOW.replace(seed=99)
    with Client(cluster.url) as c:
        wait_for_workers(c, idle=2)
        reference = c.run(settings, blockout_images(), timeout=120)
        job_id = running_job_id(c, c.submit(settings, blockout_images()))
        victim = busy_worker(c, job_id)
        os.kill(victim["pid"], signal.SIGKILL)              # the worker process dies, as on a crash
        result = final_event(c, job_id)
        assert isinstance(result, Result), result
        assert result.worker != victim["name"]
        assert np.array_equal(decode_png(result.image.data), decode_png(reference.image.data))
        # The lost worker is replaced and joins the pool again; the server serves on.
        workers = {w["name"]: w for w in wait_for_workers(c, idle=2)}
        assert workers[victim["name"]]["restarts"] == 1 and workers[victim["name"]]["pid"] != victim["pid"]
        assert c.run(quick_settings(), blockout_images(), timeout=120).saved_path
    assert any(f"worker {victim['name']} lost during job {job_id}" in line for line in cluster.lines)


def test_a_job_whose_retry_is_lost_too_ends_with_a_clear_error(cluster):
    with Client(cluster.url) as c:
        wait_for_workers(c, idle=2)
        request = c.submit(SLOW.replace(seed=5), blockout_images())
        job_id = running_job_id(c, request)
        first = busy_worker(c, job_id)
        os.kill(first["pid"], signal.SIGKILL)
        second = busy_worker(c, job_id, other_than=first["name"])   # the retry, on the other worker
        os.kill(second["pid"], signal.SIGKILL)
        error = final_event(c, job_id)
        assert isinstance(error, JobError) and error.code == "internal"
        assert "two workers were lost" in error.message
        wait_for_workers(c, idle=2)                         # both replaced
        assert c.run(quick_settings(), blockout_images(), timeout=120).worker in ("w1", "w2")


def test_workers_need_ray():
    from controlbridge.server.config import ServerConfig
    with pytest.raises(ValueError, match="--workers needs --ray"):
        ServerConfig(workers=2).check()



def test_a_live_session_moves_only_when_its_worker_is_lost(cluster):
    from test_live import LIVE, frames
    slow_live = LIVE.replace(steps=40, denoise=1.0)
    clips = frames(4, 256, 256)         # a frame of a few seconds: caught while it renders
    with Client(cluster.url) as c:
        wait_for_workers(c, idle=2)

        def frame(imgs):
            request = c.send_live_frame(slow_live, imgs)
            while True:
                event = c.next_event(timeout=60)
                assert event is not None and not isinstance(event, JobError), event
                if getattr(event, "request_id", None) == request and not isinstance(event, Accepted):
                    return request, event

        _, first = frame(clips[0])
        request = c.send_live_frame(slow_live, clips[1])
        victim = next(w for w in _wait_busy(c) if w["name"] == first.worker)
        os.kill(victim["pid"], signal.SIGKILL)
        while True:                                         # the frame in flight is dropped, and said so
            event = c.next_event(timeout=60)
            if getattr(event, "request_id", None) == request:
                break
        assert (type(event).__name__, event.reason) == ("LiveSkipped", "worker_lost")
        _, moved = frame(clips[2])
        assert isinstance(moved, LiveResult) and moved.worker != first.worker
        wait_for_workers(c, idle=2)                         # the lost worker is back; the session stays put
        _, after = frame(clips[3])
        assert after.worker == moved.worker


def _wait_busy(client, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.status().workers
        if any(w["state"] == "busy" for w in workers):
            return workers
        time.sleep(0.05)
    raise AssertionError("no worker became busy")


def test_workers_take_jobs_in_one_fair_order():
    """Each worker takes only what it should run (`runnable`), and among those the fair order still holds:
    a client with a long batch queued does not starve another client's job."""
    from controlbridge.engine.generate import JobInputs
    from controlbridge.server.jobs import Job
    from controlbridge.server.scheduler import FairScheduler
    scheduler = FairScheduler()

    def job(client, n, model):
        return Job(f"{client}{n}", client, "", quick_settings(model=model), JobInputs(np.zeros((8, 8, 3), np.uint8)), {})
    for n in range(3):
        scheduler.submit(job("a", n, "tiny"))
    scheduler.submit(job("b", 0, "tiny-sdxl"))
    scheduler.submit(job("b", 1, "tiny"))
    only_tiny = lambda j: j.settings.model == "tiny"   # noqa: E731 - a worker that has only "tiny" loaded
    taken = [scheduler.take(0, only_tiny).id for _ in range(3)]
    assert taken == ["a0", "b1", "a1"]                 # b's sdxl job waits for another worker, b is not skipped
    assert scheduler.take(0, lambda j: True).id == "b0"
    scheduler.requeue(scheduler.take(0, lambda j: True))   # a worker lost a2: it goes back first in a's queue
    assert scheduler.snapshot("a")["your_jobs"] == ["a2"]


def test_serve_ray_auto_keeps_its_ray_on_loopback(spawn_server, monkeypatch):
    # Ray has no authentication: a raylet or GCS on the machine's network address would let anyone run code here.
    # The spawned server gets no help from this module's environment: it must choose loopback itself.
    import re
    import subprocess
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    server = spawn_server("--ray", "auto", "--workers", "1")
    with Client(server.url) as c:
        wait_for_workers(c, idle=1)
    family = {server.process.pid}
    for _ in range(4):          # the server's children, theirs, ...: Ray's GCS, raylet and worker processes
        for stat in os.listdir("/proc"):
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) in family:
                family.add(int(stat))
    listening = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if pids & (family - {server.process.pid}):
            listening.append(line.split()[3])
    assert len(listening) >= 3, listening            # GCS, raylet, workers: Ray did start
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in listening), listening
