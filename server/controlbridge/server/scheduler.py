"""The fair job queue between the connections and the device worker.

Each client has its own FIFO. The worker takes the next job from the waiting client that has been served
least (fewest jobs run; on a tie, the one served longest ago), so one client's batch of 20 does not starve
another's single job. A client that starts waiting joins at the current service level of the others, so it
gets its fair turn at once but cannot claim credit for the time it was idle. Thread-safe: the event loop
submits and cancels, the worker thread takes and finishes. Several workers (controlbridge.cluster) may take at
once: each passes `runnable`, and each job still comes out in this one fair order.
"""
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .jobs import Job


@dataclass
class _ClientQueue:
    jobs: deque = field(default_factory=deque)
    served: int = 0           # jobs this client has had on the device while competing
    last_served: int = -1     # tick of its latest turn

    def rank(self):
        return (self.served, self.last_served)


def _serve_next(clients: List[_ClientQueue], tick: int, runnable: Optional[Callable[[Job], bool]] = None) -> Job:
    """Pop the next job in fair order from the waiting clients and book the turn (among `runnable` jobs only,
    each client's first runnable one, when given)."""
    if runnable is None:
        state = min((c for c in clients if c.jobs), key=_ClientQueue.rank)
        job = state.jobs.popleft()
    else:
        offers = [(c, next((j for j in c.jobs if runnable(j)), None)) for c in clients]
        state, job = min(((c, j) for c, j in offers if j is not None), key=lambda offer: offer[0].rank())
        state.jobs.remove(job)
    state.served += 1
    state.last_served = tick
    return job


class FairScheduler:
    def __init__(self):
        self._cond = threading.Condition()
        self._clients: Dict[str, _ClientQueue] = {}
        self._tick = 0
        self._active: List[Job] = []          # taken and not finished: one per worker
        self._between: Optional[Job] = None   # a live frame running between two steps of a job
        self._closed = False

    def submit(self, job: Job) -> int:
        """Queue a job; returns how many jobs will run before it (the running one included)."""
        with self._cond:
            state = self._clients.setdefault(job.client_id, _ClientQueue())
            if not state.jobs:
                waiting = [c.served for cid, c in self._clients.items() if c.jobs and cid != job.client_id]
                state.served = max(state.served, min(waiting, default=state.served))
            state.jobs.append(job)
            self._cond.notify()
            return self._order().index(job) + len(self._active)

    def submit_live(self, job: Job) -> Tuple[int, Optional[Job]]:
        """Queue a live frame. The client's waiting live frame, if any, is replaced in place (latest wins, so
        nothing piles up behind a slow device) and returned; else this is submit()."""
        with self._cond:
            state = self._clients.get(job.client_id)
            for i, waiting in enumerate(state.jobs if state else ()):
                if waiting.live:
                    state.jobs[i] = job
                    waiting.cancel_event.set()
                    return self._order().index(job) + len(self._active), waiting
            return self.submit(job), None

    def cancel_live(self, client_id: str) -> List[Job]:
        """End a client's live session: drop its waiting frame, stop its running one within a step."""
        with self._cond:
            state = self._clients.get(client_id)
            removed = [j for j in (state.jobs if state else ()) if j.live]
            for j in removed:
                state.jobs.remove(j)
                j.cancel_event.set()
            for running in (*self._active, self._between):
                if running and running.client_id == client_id and running.live:
                    running.cancel_event.set()
            return removed

    def queued_for(self, client_id: str) -> int:
        with self._cond:
            state = self._clients.get(client_id)
            return len(state.jobs) if state else 0

    def take(self, timeout: Optional[float] = None, runnable: Optional[Callable[[Job], bool]] = None) -> Optional[Job]:
        """The next job in fair order, blocking until there is one (None on timeout or close). With `runnable`,
        the next of the jobs it accepts (a cluster worker: the ones it should run)."""
        def ready():
            return any(runnable is None or runnable(j) for c in self._waiting() for j in c.jobs)
        with self._cond:
            if not self._cond.wait_for(lambda: ready() or self._closed, timeout) or self._closed:
                return None
            job = _serve_next(self._waiting(), self._tick, runnable)
            self._tick += 1
            self._active.append(job)
            return job

    def requeue(self, job: Job) -> None:
        """A taken job back at the head of its client's queue (its worker died: it runs again elsewhere)."""
        with self._cond:
            if job in self._active:
                self._active.remove(job)
            state = self._clients.get(job.client_id)
            if state is None or self._closed:
                return
            state.jobs.appendleft(job)
            state.served = max(0, state.served - 1)   # the lost turn is not counted against the client
            self._cond.notify_all()

    def wake(self) -> None:
        """Workers waiting in take(runnable=...) look again (which worker may run what has changed)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def take_live_between_steps(self, runnable: Callable[[Job], bool]) -> Optional[Job]:
        """A waiting live frame to run between two steps of the running job, or None at once.

        Live clients take these turns in the same fair order as all turns, and each is booked like one, so a
        client streaming frames does not gain on the others. `runnable(job)`: whether it can run now (its model
        loaded: nothing may be loaded or unloaded under the running job)."""
        with self._cond:
            if self._closed or self._between is not None:
                return None
            offers = [(state, next(j for j in state.jobs if j.live)) for state in self._clients.values()
                      if any(j.live for j in state.jobs)]
            offers = [(state, job) for state, job in offers if runnable(job)]
            if not offers:
                return None
            state, job = min(offers, key=lambda offer: offer[0].rank())
            state.jobs.remove(job)
            state.served += 1
            state.last_served = self._tick
            self._tick += 1
            self._between = job
            return job

    def busy(self) -> bool:
        """Whether a worker is running a job (or a live frame between its steps) now."""
        with self._cond:
            return bool(self._active or self._between)

    def finish(self, job: Job) -> None:
        with self._cond:
            if job in self._active:
                self._active.remove(job)
            if self._between is job:
                self._between = None

    def cancel(self, client_id: str, job_id: Optional[str] = None) -> List[Job]:
        """Cancel one job or all of a client's jobs. Returns the queued jobs removed; a running job is
        flagged and its worker stops it within one step (and reports it)."""
        with self._cond:
            state = self._clients.get(client_id)
            removed = [j for j in (state.jobs if state else ()) if job_id is None or j.id == job_id]
            for j in removed:
                state.jobs.remove(j)
                j.cancel_event.set()
            for running in (*self._active, self._between):
                if running and running.client_id == client_id and job_id in (None, running.id):
                    running.cancel_event.set()
            return removed

    def forget(self, client_id: str) -> None:
        """A client that left: cancel everything of it and drop its bookkeeping."""
        with self._cond:
            self.cancel(client_id)
            self._clients.pop(client_id, None)

    def knows(self, client_id: str, job_id: str) -> bool:
        with self._cond:
            state = self._clients.get(client_id)
            return any(r.id == job_id and r.client_id == client_id for r in self._active) or any(
                j.id == job_id for j in (state.jobs if state else ()))

    def snapshot(self, client_id: str) -> Dict[str, object]:
        with self._cond:
            running = next((r for r in self._active if r.client_id == client_id), None)
            state = self._clients.get(client_id)
            return {"queued": sum(len(c.jobs) for c in self._clients.values()),
                    "running": running.id if running else None,
                    "your_jobs": [j.id for j in (state.jobs if state else ())]}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _waiting(self) -> List[_ClientQueue]:
        return [c for c in self._clients.values() if c.jobs]

    def _order(self) -> List[Job]:
        """Every queued job in the order the worker will take them (a dry run of take() on copies)."""
        copies = [_ClientQueue(deque(c.jobs), c.served, c.last_served) for c in self._waiting()]
        count = sum(len(c.jobs) for c in copies)
        return [_serve_next(copies, self._tick + i) for i in range(count)]
