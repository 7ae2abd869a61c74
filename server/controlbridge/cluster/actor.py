"""One cluster worker, as a Ray actor: its own model manager and engine, running DeviceWorker's engine part.

It never saves, never touches a socket and never sees the fair queue: the front end hands it one job image (or
one live frame) at a time and gets back, streamed, the messages DeviceWorker emits (progress, previews, live
results, errors) and, for a job image, the pixels to save. Created by `pool.py` with the `ray.remote` options
(GPUs, CPUs) of its slot.
"""
import os
import queue
import socket
import threading
from dataclasses import dataclass

from controlbridge_protocol import JobError, LiveReady, LiveResult, LiveSkipped

from ..server.jobs import Job
from ..server.worker import DeviceWorker

_DONE = object()
LIVE_RESULT_TIMEOUT_S = 60     # a live frame's encoded result is on its way from the encoder thread


@dataclass
class ModelFacts:
    """What saving a result needs of the model that made it (outputs.job_metadata), without its weights."""

    name: str
    facts: dict
    device: str
    dtype_name: str

    def describe(self) -> dict:
        return dict(self.facts)


class _NoLiveBetweenSteps:
    """The scheduler a worker's DeviceWorker sees: live frames come from the front end, never between steps."""

    def take_live_between_steps(self, runnable):
        return None

    def finish(self, job):
        pass


class EngineActor:
    def __init__(self, config, name: str, env: dict):
        os.environ.update(env)          # the front end's CONTROLBRIDGE_* / HF_* settings (cache and model folders)
        from ..server.app import load_models    # after the environment: paths are read at import and load
        self.name = name
        self.models = load_models(config, log=lambda message: None)
        self.device = str(self.models.get(None, lambda text: None).device)
        self._sink = None               # the queue of the call in progress: one job at a time
        self._job = None
        self.worker = DeviceWorker(self.models, _NoLiveBetweenSteps(), config.output_dir, self._emit, None)

    def _emit(self, client_id, message) -> None:
        sink = self._sink
        if sink is not None:
            sink.put(("emit", message))

    def info(self) -> dict:
        return {"name": self.name, "node": socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "models": self.models.loaded_names()}

    def cancel(self, job_id: str) -> None:
        job = self._job
        if job is not None and job.id == job_id:
            job.cancel_event.set()

    def run(self, fields: dict, index: int = 0):
        """Streams ("emit", message) items, then for a job image ("made", settings, ModelFacts, output, timings,
        model seconds), and last ("done", loaded model names). A live frame ends with its live_result (or error)."""
        job = Job(**fields, attachments={})
        sink = queue.Queue()
        self._sink, self._job = sink, job

        def work():
            try:
                if job.live:
                    self.worker.run_job(job)
                    return
                made = self.worker.make_image(job, index)
                if made is not None:
                    settings, model, out, timings, made_at, started = made
                    facts = ModelFacts(model.name, model.describe(), str(model.device), model.dtype_name)
                    sink.put(("made", settings, facts, out, timings))
            finally:
                sink.put(_DONE)

        threading.Thread(target=work, name="controlbridge-cluster-job", daemon=True).start()
        done, answered = False, not job.live
        try:
            while not (done and answered):
                item = sink.get(timeout=None if not done else LIVE_RESULT_TIMEOUT_S)
                if item is _DONE:
                    done = True
                    continue
                if item[0] == "emit" and _ends_live_request(item[1], job):
                    answered = True
                yield item
        except queue.Empty:
            pass          # the frame's result never came: the front end sees the call end without it
        finally:
            self._sink = self._job = None
        yield ("done", self.models.loaded_names())


def _ends_live_request(message, job) -> bool:
    """Whether `message` is the last word on live frame or warm-up `job` (the encoder sends results later)."""
    return isinstance(message, (LiveResult, LiveReady, LiveSkipped, JobError)) and \
        getattr(message, "request_id", None) == job.request_id
