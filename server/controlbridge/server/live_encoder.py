"""Encodes live results (JPEG/WebP) on its own thread, so the device thread starts the next frame at once.

The queue is small and `submit` blocks when it is full: if encoding ever falls behind the device, the device
waits instead of frames piling up in memory. One thread keeps each client's results in frame order.
"""
import logging
import queue
import threading
import time
from typing import Callable, Optional

import numpy as np
from controlbridge_protocol import ErrorCode, ImageAttachment, JobError, LiveResult

from ..imaging.codecs import encode_image
from .jobs import Job

log = logging.getLogger("controlbridge.worker")


class LiveEncoder:
    def __init__(self, emit: Callable[[str, object], None], depth: int = 4):
        self.emit = emit
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._loop, name="controlbridge-live-encoder", daemon=True)
        self._thread.start()

    def submit(self, job: Job, image: np.ndarray, timings: dict, taken_at: float) -> None:
        """`image` uint8 HxWx3; `timings` the device's (ms); `taken_at` when the device took the frame."""
        self._queue.put((job, image, timings, taken_at))

    def close(self, timeout: float = 10.0) -> None:
        """Encode and send what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, image, timings, taken_at = item
            try:
                start = time.perf_counter()
                encoding = job.settings.result_encoding
                h, w = image.shape[:2]
                attachment = ImageAttachment.encoded("image", encoding, w, h, encode_image(image, encoding))
                done = time.perf_counter()
                timings = {**timings, "encode": (done - start) * 1000, "total": (done - job.received_at) * 1000}
                self.emit(job.client_id, LiveResult(job.id, job.request_id, job.settings, job.settings.seed, "",
                                                    attachment, (done - taken_at) * 1000, timings=timings))
            except Exception as e:  # noqa: BLE001 - one bad frame must not stop the encoder
                log.exception("encoding live frame %s failed", job.request_id)
                self.emit(job.client_id, JobError(ErrorCode.INTERNAL, f"encoding the live result failed: {e}",
                                                  job.id, job.request_id))
