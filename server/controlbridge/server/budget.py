"""The server-wide byte budget for the inputs of queued jobs, so that many clients cannot exhaust memory.

A job's share is reserved when it is accepted and given back when the Job object is freed: that is exactly when
its decoded arrays and received attachments leave memory (queued, running, cancelled or finished alike), and it
needs no hook in the scheduler or the worker.
"""
import threading
import weakref

import numpy as np


def job_input_bytes(job) -> int:
    """What a job holds in memory: the attachments as received and their decoded arrays (not those read in
    place over the received bytes, as raw depth is)."""
    received = [np.frombuffer(att.data, np.uint8) for att in job.attachments.values() if len(att.data)]
    arrays = [job.inputs.color, job.inputs.depth_raw, *job.inputs.control_maps.values()]
    return (sum(len(att.data) for att in job.attachments.values())
            + sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)
                  and not any(np.may_share_memory(a, r) for r in received)))


class InputBudget:
    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()   # released from whichever thread drops the last reference

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def room_for(self, nbytes: int) -> bool:
        with self._lock:
            return self._used + nbytes <= self.limit

    def reserve(self, job, nbytes: int) -> bool:
        """Book `nbytes` for `job` until it is freed; False (nothing booked) when the budget has no room."""
        with self._lock:
            if self._used + nbytes > self.limit:
                return False
            self._used += nbytes
        weakref.finalize(job, self._release, nbytes)
        return True

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes
