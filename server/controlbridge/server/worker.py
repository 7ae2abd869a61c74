"""The one thread that owns the device: takes jobs in fair order, runs them, saves, reports.

It never touches a socket: it hands messages to `emit(client_id, message)`, which the transport delivers
on the event loop.
"""
import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from controlbridge_protocol import (Cancelled, ErrorCode, ImageAttachment, JobError, LiveReady, LiveSkipped, Progress,
                                   Result)

from ..engine.generate import HIRES_BUILTIN, JobCancelled, JobResources, active_controlnets, generate
from ..engine.live_engine import LiveEngine
from ..engine.model_manager import ModelManager
from ..engine.style_reference import StyleUnavailable
from ..engine.upscalers import UpscalerUnavailable
from ..imaging.codecs import encode_image, to_attachment
from ..imaging.estimators import EstimatorUnavailable, load as load_estimator
from .history import History
from .jobs import Job
from .live_encoder import LiveEncoder
from ..library.hashing import model_file
from .job_log import log_job
from .outputs import result_png, save_job
from .scheduler import FairScheduler

log = logging.getLogger("controlbridge.worker")
# A library component that cannot load here (its file missing, corrupt or unsuitable): the job, frame or warm-up
# fails with `unavailable` and the component's own message, never as an internal error.
COMPONENT_UNAVAILABLE = (EstimatorUnavailable, StyleUnavailable, UpscalerUnavailable)
Emit = Callable[[str, object], None]


class DeviceWorker:
    def __init__(self, models: ModelManager, scheduler: FairScheduler, output_dir: Path, emit: Emit,
                 history: History):
        self.models = models
        self.scheduler = scheduler
        self.output_dir = Path(output_dir)
        self.emit = emit
        self.history = history
        self.live = LiveEngine()               # live frames: pipelines and warm-up kept across frames
        self.encoder = LiveEncoder(emit)       # their JPEG/WebP encoding, off the device thread
        self._thread = threading.Thread(target=self._loop, name="controlbridge-device-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout=None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self.scheduler.take()
            if job is None:
                self.encoder.close()           # the last live results still reach their clients
                return
            try:
                self.run_job(job)
            except Exception as e:  # noqa: BLE001 - a bug in one job must not end this thread: every later job would wait forever
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                self.emit(job.client_id, JobError(ErrorCode.INTERNAL, _explain(e), job.id, job.request_id))
            finally:
                self.scheduler.finish(job)

    def run_job(self, job: Job) -> None:
        if job.live:
            self.run_live_frame(job)
            return
        if job.cancelled:
            self.emit(job.client_id, Cancelled(job.id))
            return
        for index in range(job.settings.batch_size):
            made = self.make_image(job, index)
            if made is None:
                return
            self.deliver(job, index, *made)

    def make_image(self, job: Job, index: int):
        """Image `index` of a job through the engine, progress emitted: (settings, model, out, timings, made,
        started), or None when it ended (cancelled or failed, and reported). A cluster worker runs this part."""
        batch = job.settings.batch_size
        # Each image of a batch is its own job on disk: seed + index, batch_size 1, re-runnable alone.
        settings = job.settings.replace(seed=job.settings.seed + index, batch_size=1)
        label = f"image {index + 1}/{batch}" if batch > 1 else ""

        def on_step(step, total, preview, stage=""):
            image = to_attachment("preview", preview, "jpeg") if preview is not None else None
            status = ", ".join(filter(None, [label, stage]))
            self.emit(job.client_id, Progress(job.id, step, total, image, status))

        def status(text):
            self.emit(job.client_id, Progress(job.id, 0, 0, None, text))

        started = time.perf_counter()
        timings = {"decode": job.decode_ms, "queued": (started - job.received_at) * 1000 - job.decode_ms} \
            if index == 0 else {}
        try:
            model = self.models.get(settings.model, status)
            resources = self.resources(model, settings, status)
            loaded = time.perf_counter()
            out = generate(model, settings, job.inputs, on_step, lambda: job.cancelled, resources,
                           self._live_frame_between_steps)
            made = time.perf_counter()
            timings.update(load=(loaded - started) * 1000, model=(made - loaded) * 1000)
        except JobCancelled:
            log_job(job, settings, started, "cancelled")
            self.emit(job.client_id, Cancelled(job.id))
            return None
        except COMPONENT_UNAVAILABLE as e:
            log_job(job, settings, started, f"error {ErrorCode.UNAVAILABLE}")
            self.emit(job.client_id, JobError(ErrorCode.UNAVAILABLE, str(e), job.id, job.request_id))
            return None
        except Exception as e:  # noqa: BLE001 - one failed job must not stop the worker
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            log_job(job, settings, started, f"error {ErrorCode.INTERNAL}")
            self.emit(job.client_id, JobError(ErrorCode.INTERNAL, _explain(e), job.id, job.request_id))
            return None
        return settings, model, out, timings, made, started

    def deliver(self, job: Job, index: int, settings, model, out, timings: dict, made: float, started: float,
                worker: str = "") -> None:
        """An image made: saved with its inputs, added to history, sent (the front end's part of a job).
        `worker` names the cluster worker that made it."""
        batch = job.settings.batch_size
        try:
            saved = save_job(self.output_dir, job.id if batch == 1 else f"{job.id}-{index + 1}", settings,
                             model, out, job.attachments, model_file(self.models, model.name))
        except OSError as e:   # the image is made: the client still gets it, and is told it is not on disk
            save_error = f"saving failed: could not write {e.filename or self.output_dir} ({e.strerror or e})"
            log_job(job, settings, started, save_error, model.name, worker)
            png = result_png(settings, model, out) if settings.result_encoding == "png" else None
            self.emit(job.client_id, Result(job.id, job.request_id, settings, settings.seed, "",
                                            _result_image(out.image, settings.result_encoding, png),
                                            save_error=save_error, timings=_finish(timings, made, started),
                                            worker=worker))
            return
        log_job(job, settings, started, f"saved {saved.path}", model.name, worker)
        self.history.add(saved.path, saved.metadata)   # before `result`: whoever got it finds it in history
        # A png result is the very file on disk, metadata included.
        png = saved.path.read_bytes() if settings.result_encoding == "png" else None
        image = _result_image(out.image, settings.result_encoding, png)
        self.emit(job.client_id, Result(job.id, job.request_id, settings, settings.seed, str(saved.path), image,
                                        timings=_finish(timings, made, started), worker=worker))

    def _live_frame_between_steps(self) -> None:
        """Live frames are not starved by a long job: one waiting frame, if its model is loaded, runs now."""
        loaded = set(self.models.loaded_names())
        frame = self.scheduler.take_live_between_steps(
            lambda j: j.warm_up is None and (j.settings.model or self.models.default_name) in loaded)
        if frame is None:
            return
        try:
            self.run_live_frame(frame)     # reports its own errors and cancellation
        finally:
            self.scheduler.finish(frame)

    def resources(self, model, settings, status) -> JobResources:
        """The library components a job names, loaded (and cached) on this thread."""
        res = JobResources()
        for name, cn in settings.controlnets.items():
            if cn.model is not None:
                res.controlnets[name] = self.models.named_controlnet(model, cn.model, status, cn.mode or name)
        if settings.vae is not None:
            res.vae = self.models.named_vae(model, settings.vae, status)
        res.loras = [(str(self.models.resolve(lora.name, "lora", model.family).path), lora.weight)
                     for lora in settings.loras]
        if settings.hires is not None and settings.hires.upscaler not in HIRES_BUILTIN:
            res.upscaler = self.models.upscaler(settings.hires.upscaler, model, status)
        if settings.style is not None:
            res.style = self.models.style_adapter(model, settings.style, status)
        for name in active_controlnets(settings):   # estimators' weights: the model roots, ComfyUI's, the hub
            if name in settings.estimate:
                res.estimators[name] = load_estimator(settings.estimate[name], self.models.library.roots,
                                                      model.device, status)
        return res

    def run_live_frame(self, job: Job) -> None:
        """A live frame: no progress, nothing saved; rendered by the live engine, encoded off this thread."""
        taken = time.perf_counter()
        if job.warm_up is not None:
            self.warm_up_live(job)
            return
        try:
            model = self.models.get(job.settings.model, lambda text: None)
            out = self.live.render(model, job.settings, job.inputs,
                                   self.resources(model, job.settings, lambda text: None), lambda: job.cancelled,
                                   session=job.client_id)
        except JobCancelled:
            self.emit(job.client_id, LiveSkipped(job.request_id, "stopped"))
            return
        except COMPONENT_UNAVAILABLE as e:
            self.emit(job.client_id, JobError(ErrorCode.UNAVAILABLE, str(e), job.id, job.request_id))
            return
        except Exception as e:  # noqa: BLE001
            log.error("live frame %s failed:\n%s", job.request_id, traceback.format_exc())
            self.emit(job.client_id, JobError(ErrorCode.INTERNAL, _explain(e), job.id, job.request_id))
            return
        timings = {"decode": job.decode_ms, "queued": (taken - job.received_at) * 1000 - job.decode_ms,
                   **out.timings}
        self.encoder.submit(job, out.image, timings, taken)


    def warm_up_live(self, job: Job) -> None:
        """A live_start: build and warm the live pipeline for the session's frame size, then say it is ready."""
        try:
            model = self.models.get(job.settings.model, lambda text: None)
            size, seconds = self.live.warm_up(model, job.settings, *job.warm_up,
                                              self.resources(model, job.settings, lambda text: None))
        except COMPONENT_UNAVAILABLE as e:
            self.emit(job.client_id, JobError(ErrorCode.UNAVAILABLE, str(e), job.id, job.request_id))
            return
        except Exception as e:  # noqa: BLE001
            log.error("live warm-up %s failed:\n%s", job.request_id, traceback.format_exc())
            self.emit(job.client_id, JobError(ErrorCode.INTERNAL, _explain(e), job.id, job.request_id))
            return
        log.info("live session warmed up at %dx%d in %.0f ms", *size, seconds * 1000)
        self.emit(job.client_id, LiveReady(job.request_id, size[0], size[1], seconds * 1000))


def _finish(timings: dict, made: float, started: float) -> dict:
    """A job image's timings completed: save (PNG with metadata onto disk, the wire copy) and total (from the
    message read, or for later images of a batch from their own start)."""
    now = time.perf_counter()
    total_from = started - (timings.get("queued", 0.0) + timings.get("decode", 0.0)) / 1000
    return {**timings, "save": (now - made) * 1000, "total": (now - total_from) * 1000}


def _result_image(pixels, encoding: str, data: bytes = None) -> ImageAttachment:
    h, w = pixels.shape[:2]
    return ImageAttachment.encoded("image", encoding, w, h, data if data is not None else encode_image(pixels, encoding))


def _explain(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "out of memory" in text.lower():
        return f"the device ran out of memory ({text}); try a smaller output size or fewer ControlNets"
    return f"generation failed on the server: {text}"
