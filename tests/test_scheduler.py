"""Fair order on the device, without sockets."""
from controlbridge.server.jobs import Job
from controlbridge.server.scheduler import FairScheduler


def job(client, n):
    return Job(id=f"{client}{n}", client_id=client, request_id="", settings=None, inputs=None, attachments={})


def drain(s):
    out = []
    while (j := s.take(timeout=0)) is not None:
        out.append(j.id)
        s.finish(j)
    return out


def test_round_robin_between_waiting_clients():
    s = FairScheduler()
    for i in range(3):
        s.submit(job("a", i))
    assert s.submit(job("b", 0)) == 1
    assert s.submit(job("c", 0)) == 2
    assert drain(s) == ["a0", "b0", "c0", "a1", "a2"]


def test_a_newcomer_goes_next_after_the_running_job():
    s = FairScheduler()
    for i in range(5):
        s.submit(job("a", i))
    running = s.take()
    assert running.id == "a0"
    assert s.submit(job("b", 0)) == 1           # the running a0, then b0
    s.finish(running)
    assert drain(s) == ["b0", "a1", "a2", "a3", "a4"]


def test_an_idle_client_earns_no_credit():
    s = FairScheduler()
    for i in range(4):
        s.submit(job("a", i))
    drain(s)                                     # a ran 4 jobs alone
    s.submit(job("a", 9))
    s.submit(job("b", 0))
    s.submit(job("b", 1))
    s.submit(job("b", 2))
    # b joins at a's service level: it goes first (never served), then they alternate; no 4 turns in a row
    assert drain(s) == ["b0", "a9", "b1", "b2"]


def test_cancel_removes_queued_jobs_and_flags_the_running_one():
    s = FairScheduler()
    s.submit(job("a", 0))
    s.submit(job("a", 1))
    running = s.take()
    removed = s.cancel("a")
    assert [j.id for j in removed] == ["a1"] and running.cancelled
    assert s.take(timeout=0) is None
