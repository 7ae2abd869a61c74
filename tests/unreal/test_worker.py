"""The worker thread against a real server (tiny model): events reach the game-thread queue, failures are clear."""

import socket
import threading
import time

from controlbridge_protocol import Cancelled, Progress, Result
from controlbridge_unreal import jobs
from controlbridge_unreal.worker import SubmitFailed, Submitted, Worker
from ue_scene import fast_settings, synthetic_capture


def drain_until(worker, done, timeout=120.0):
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += worker.drain()
        if done(events):
            return events
        time.sleep(0.01)
    raise AssertionError(f"timed out; events so far: {events}")


def job_for(settings, capture):
    return jobs.job_settings(settings, capture.width, capture.height, "Test"), jobs.attachments(capture)


def test_job_round_trip_through_the_worker(server):
    capture = synthetic_capture()
    settings = fast_settings()
    job, images = job_for(settings, capture)
    worker = Worker("pytest-unreal")
    try:
        caller = threading.current_thread()
        t0 = time.monotonic()
        worker.submit(1, server.url, "", job, images)
        assert time.monotonic() - t0 < 0.05                  # the game thread never waits for the network
        events = drain_until(worker, lambda ev: any(isinstance(e, Result) for e in ev))
        assert worker._thread is not caller
    finally:
        worker.stop()
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Submitted" and kinds[1] == "Accepted" and kinds[-1] == "Result"
    submitted, accepted, result = events[0], events[1], events[-1]
    assert isinstance(submitted, Submitted) and submitted.ticket == 1
    assert accepted.request_id == submitted.request_id and result.job_id == accepted.job_id
    steps = [e for e in events if isinstance(e, Progress)]
    assert steps and steps[-1].step == steps[-1].total
    assert result.image.encoding == "png" and result.image.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (result.image.width, result.image.height) == (64, 48)
    assert result.settings.prompt == "a stone castle" and result.seed == 7
    assert not worker.alive


def test_second_job_reuses_the_connection(server):
    capture = synthetic_capture()
    job, images = job_for(fast_settings(), capture)
    worker = Worker("pytest-unreal")
    try:
        worker.submit(1, server.url, "", job, images)
        drain_until(worker, lambda ev: any(isinstance(e, Result) for e in ev))
        first_client = worker._client
        worker.submit(2, server.url, "", job, images)
        events = drain_until(worker, lambda ev: any(isinstance(e, Result) for e in ev))
        assert worker._client is first_client
        assert [e.ticket for e in events if isinstance(e, Submitted)] == [2]
    finally:
        worker.stop()


def test_cancel_before_the_server_named_the_job(server):
    capture = synthetic_capture()
    job, images = job_for(fast_settings(steps=150, denoise=1.0), capture)
    worker = Worker("pytest-unreal")
    try:
        worker.submit(1, server.url, "", job, images)
        worker.cancel(None)      # queued behind the submit: cancels this client's jobs
        events = drain_until(worker, lambda ev: any(isinstance(e, (Cancelled, Result)) for e in ev))
    finally:
        worker.stop()
    assert any(isinstance(e, Cancelled) for e in events), events


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_one_clear_message():
    url = f"ws://127.0.0.1:{free_port()}"
    capture = synthetic_capture(16, 16)
    job, images = job_for(fast_settings(width=16, height=16), capture)
    worker = Worker("pytest-unreal", connect_timeout=2.0)
    try:
        worker.submit(7, url, "", job, images)
        events = drain_until(worker, lambda ev: bool(ev), timeout=15)
    finally:
        worker.stop()
    assert len(events) == 1 and isinstance(events[0], SubmitFailed) and events[0].ticket == 7
    assert url in events[0].message and "controlbridge serve" in events[0].message
    assert events[0].message[0].isupper()


def test_wrong_token_is_reported(make_server):
    server = make_server(token="right-token")
    capture = synthetic_capture(16, 16)
    job, images = job_for(fast_settings(width=16, height=16), capture)
    worker = Worker("pytest-unreal")
    try:
        worker.submit(1, server.url, "wrong-token", job, images)
        events = drain_until(worker, lambda ev: bool(ev), timeout=30)
    finally:
        worker.stop()
    assert isinstance(events[0], SubmitFailed)
    assert "token" in events[0].message.lower()


def test_unknown_sampler_is_caught_from_the_welcome(server):
    capture = synthetic_capture(16, 16)
    job, images = job_for(fast_settings(width=16, height=16, sampler="no_such_sampler"), capture)
    worker = Worker("pytest-unreal")
    try:
        worker.submit(3, server.url, "", job, images)
        events = drain_until(worker, lambda ev: bool(ev), timeout=30)
    finally:
        worker.stop()
    assert isinstance(events[0], SubmitFailed) and "no_such_sampler" in events[0].message


def test_stop_is_prompt_and_idempotent():
    worker = Worker("pytest-unreal")
    worker.start()
    t0 = time.monotonic()
    worker.stop()
    worker.stop()
    assert time.monotonic() - t0 < 2.0 and not worker.alive
