"""Several clients on one device: fair order, cancel within a step, disconnects."""
import time

from controlbridge_protocol import Accepted, Cancelled, Client, Progress, Result
from controlbridge.server.outputs import read_job
from helpers import blockout_images, quick_settings

LONG = quick_settings(steps=150, denoise=1.0)     # a few seconds on the tiny model


def wait_for(client, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        event = client.next_event(timeout=0.5)
        if event is None:
            continue
        seen.append(event)
        if predicate(event):
            return event, seen
    raise AssertionError(f"timed out; saw {seen[-5:]}")


def test_cancel_stops_a_running_job_within_a_step(client, server):
    client.submit(LONG, blockout_images(64, 48))
    first, _ = wait_for(client, lambda e: isinstance(e, Progress))
    client.cancel(first.job_id)
    cancelled, seen = wait_for(client, lambda e: isinstance(e, Cancelled))
    assert cancelled.job_id == first.job_id
    steps_after = [e.step for e in seen if isinstance(e, Progress)]
    assert not steps_after or max(steps_after) < 150
    assert not any(isinstance(e, Result) for e in seen)
    assert not list(server.server.config.output_dir.glob("*.png")) if server.server.config.output_dir.exists() else True
    assert client.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64   # still serving


def test_cancel_all_queued_jobs(client):
    images = blockout_images(64, 48)
    for _ in range(3):
        client.submit(LONG, images)
    client.cancel()                                   # every job of this client
    cancelled = set()
    while len(cancelled) < 3:
        event, _ = wait_for(client, lambda e: isinstance(e, Cancelled))
        cancelled.add(event.job_id)
    assert client.status().your_jobs == []


def test_two_clients_share_the_device_fairly(make_server):
    server = make_server()
    a, b = Client(server.url, client_name="batch"), Client(server.url, client_name="single")
    a.connect(), b.connect()
    images = blockout_images(64, 48)
    for i in range(5):
        a.submit(quick_settings(steps=12, seed=i), images)
    wait_for(a, lambda e: isinstance(e, Progress))    # a's first job is on the device now
    b.submit(quick_settings(steps=12), images)
    accepted, _ = wait_for(b, lambda e: isinstance(e, Accepted))
    assert accepted.queue_position == 1               # right after the running job, not after a's batch
    b_result, _ = wait_for(b, lambda e: isinstance(e, Result))

    a_results = []
    while len(a_results) < 5:
        event, _ = wait_for(a, lambda e: isinstance(e, Result))
        a_results.append(event)
    created = sorted((read_job(r.saved_path)["created"], r.job_id) for r in a_results + [b_result])
    order = [job for _, job in created]
    assert order.index(b_result.job_id) <= 1, order   # b ran second at the latest
    assert [r.seed for r in a_results] == [0, 1, 2, 3, 4]   # each client's own jobs stay in order
    a.close(), b.close()


def test_a_client_that_disconnects_mid_job_is_cancelled_and_the_worker_moves_on(make_server):
    server = make_server()
    leaver = Client(server.url, client_name="leaver")
    leaver.connect()
    leaver.submit(LONG, blockout_images(64, 48))
    leaver.submit(LONG, blockout_images(64, 48))
    wait_for(leaver, lambda e: isinstance(e, Progress))
    leaver.close()
    with Client(server.url) as stayer:
        result = stayer.run(quick_settings(steps=2), blockout_images(64, 48), timeout=60)
    saved = list(server.server.config.output_dir.glob("*.png"))
    assert [p.name for p in saved] == [result.saved_path.split("/")[-1]]   # nothing of the leaver's was finished
