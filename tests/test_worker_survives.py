"""A bug in one job (here: saving raises something other than OSError) is that job's error, not the server's end."""
import numpy as np

from controlbridge_protocol import Client, JobError, Result
from helpers import blockout_images, quick_settings


def test_a_job_that_crashes_is_reported_and_the_next_one_still_runs(server, monkeypatch):
    import controlbridge.server.worker as worker

    real_save = worker.save_job
    calls = []

    def save_once_broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug while saving")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(worker, "save_job", save_once_broken)
    with Client(server.url) as c:
        color, depth = blockout_images(96, 64)
        rid = c.submit(quick_settings(steps=2, seed=1), [color, depth])
        event = c.next_event(timeout=120)
        while not (isinstance(event, (JobError, Result)) and event.request_id == rid):
            assert event is not None, "no answer to the first job"
            event = c.next_event(timeout=120)
        assert isinstance(event, JobError) and event.code == "internal"
        assert event.message == "generation failed on the server: a bug while saving"
        result = c.run(quick_settings(steps=2, seed=2), [color, depth], timeout=120)
    assert isinstance(result, Result) and result.saved_path and len(calls) == 2
    assert np.frombuffer(result.image.data, np.uint8).size > 0
