"""The fair job queue between the connections and the device worker.

Each client has its own FIFO; the worker takes one job per client in turn (round robin), so one client's
batch of 20 does not starve another's single job. Thread-safe: the event loop submits and cancels, the
worker thread takes and finishes.
"""
import threading
from collections import OrderedDict, deque
from typing import Dict, List, Optional

from .jobs import Job


class FairScheduler:
    def __init__(self):
        self._cond = threading.Condition()
        self._queues: "OrderedDict[str, deque]" = OrderedDict()   # rotation order: next client first
        self._running: Optional[Job] = None
        self._closed = False

    def submit(self, job: Job) -> int:
        """Queue a job; returns how many jobs will run before it (the running one included)."""
        with self._cond:
            self._queues.setdefault(job.client_id, deque()).append(job)
            self._cond.notify()
            return self._order().index(job) + (1 if self._running else 0)

    def queued_for(self, client_id: str) -> int:
        with self._cond:
            return len(self._queues.get(client_id, ()))

    def take(self, timeout: Optional[float] = None) -> Optional[Job]:
        """The next job in fair order, blocking until there is one (None on timeout or close)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queues or self._closed, timeout):
                return None
            if self._closed:
                return None
            client_id, jobs = next(iter(self._queues.items()))
            job = jobs.popleft()
            if jobs:
                self._queues.move_to_end(client_id)   # this client waits for everyone else's turn
            else:
                del self._queues[client_id]
            self._running = job
            return job

    def finish(self, job: Job) -> None:
        with self._cond:
            if self._running is job:
                self._running = None

    def cancel(self, client_id: str, job_id: Optional[str] = None) -> List[Job]:
        """Cancel one job or all of a client's jobs. Returns the queued jobs removed; a running job is
        flagged and its worker stops it within one step (and reports it)."""
        with self._cond:
            removed = []
            jobs = self._queues.get(client_id)
            if jobs:
                removed = [j for j in jobs if job_id is None or j.id == job_id]
                for j in removed:
                    jobs.remove(j)
                    j.cancel_event.set()
                if not jobs:
                    del self._queues[client_id]
            running = self._running
            if running and running.client_id == client_id and job_id in (None, running.id):
                running.cancel_event.set()
            return removed

    def knows(self, client_id: str, job_id: str) -> bool:
        with self._cond:
            running = self._running
            return (running is not None and running.id == job_id and running.client_id == client_id) or any(
                j.id == job_id for j in self._queues.get(client_id, ()))

    def snapshot(self, client_id: str) -> Dict[str, object]:
        with self._cond:
            running = self._running
            return {"queued": sum(len(q) for q in self._queues.values()),
                    "running": running.id if running and running.client_id == client_id else None,
                    "your_jobs": [j.id for j in self._queues.get(client_id, ())]}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _order(self) -> List[Job]:
        """Every queued job in the order the worker will take them."""
        queues = [list(q) for q in self._queues.values()]
        order = []
        for i in range(max((len(q) for q in queues), default=0)):
            order.extend(q[i] for q in queues if i < len(q))
        return order
