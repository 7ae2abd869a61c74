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

from controlbridge_protocol import (Cancelled, ErrorCode, ImageAttachment, JobError, LiveResult, LiveSkipped, Progress,
                                   Result)

from ..engine.generate import JobCancelled, generate
from ..engine.models import LoadedModel
from ..imaging.codecs import encode_image, to_attachment
from .jobs import Job
from .outputs import save_job
from .scheduler import FairScheduler

log = logging.getLogger("controlbridge.worker")
Emit = Callable[[str, object], None]


class DeviceWorker:
    def __init__(self, model: LoadedModel, scheduler: FairScheduler, output_dir: Path, emit: Emit):
        self.model = model
        self.scheduler = scheduler
        self.output_dir = Path(output_dir)
        self.emit = emit
        self._thread = threading.Thread(target=self._loop, name="controlbridge-device-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout=None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self.scheduler.take()
            if job is None:
                return
            try:
                self.run_job(job)
            finally:
                self.scheduler.finish(job)

    def run_job(self, job: Job) -> None:
        if job.live:
            self.run_live_frame(job)
            return
        if job.cancelled:
            self.emit(job.client_id, Cancelled(job.id))
            return

        def on_step(step, total, preview):
            image = to_attachment("preview", preview, "jpeg") if preview is not None else None
            self.emit(job.client_id, Progress(job.id, step, total, image))

        try:
            out = generate(self.model, job.settings, job.inputs, on_step, lambda: job.cancelled)
            saved = save_job(self.output_dir, job.id, job.settings, self.model.describe(), out.working_size,
                             out.image, job.attachments)
        except JobCancelled:
            self.emit(job.client_id, Cancelled(job.id))
            return
        except Exception as e:  # noqa: BLE001 - one failed job must not stop the worker
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self.emit(job.client_id, JobError(ErrorCode.INTERNAL, _explain(e), job.id, job.request_id))
            return
        # A png result is the very file on disk, metadata included.
        png = saved.path.read_bytes() if job.settings.result_encoding == "png" else None
        self.emit(job.client_id, Result(job.id, job.request_id, job.settings, job.settings.seed,
                                        str(saved.path), _result_image(out.image, job.settings.result_encoding, png)))

    def run_live_frame(self, job: Job) -> None:
        """A live frame: no progress, nothing saved, the image back in the frame's (fast) encoding."""
        start = time.perf_counter()
        try:
            out = generate(self.model, job.settings, job.inputs, None, lambda: job.cancelled)
            image = _result_image(out.image, job.settings.result_encoding)
        except JobCancelled:
            self.emit(job.client_id, LiveSkipped(job.request_id, "stopped"))
            return
        except Exception as e:  # noqa: BLE001
            log.error("live frame %s failed:\n%s", job.request_id, traceback.format_exc())
            self.emit(job.client_id, JobError(ErrorCode.INTERNAL, _explain(e), job.id, job.request_id))
            return
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.emit(job.client_id, LiveResult(job.id, job.request_id, job.settings, job.settings.seed, "", image,
                                            elapsed_ms))


def _result_image(pixels, encoding: str, data: bytes = None) -> ImageAttachment:
    h, w = pixels.shape[:2]
    return ImageAttachment.encoded("image", encoding, w, h, data if data is not None else encode_image(pixels, encoding))


def _explain(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "out of memory" in text.lower():
        return f"the device ran out of memory ({text}); try a smaller output size or fewer ControlNets"
    return f"generation failed on the server: {text}"
