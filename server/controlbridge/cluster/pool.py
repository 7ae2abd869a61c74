"""The front end's side of a cluster: one slot per worker actor, each taking jobs from the one fair queue.

A slot's thread takes the next job, in the scheduler's fair order, among the jobs it should run:
- a live frame only on the worker its session is pinned to (its warmed-up engine is there); the pin moves only
  when that worker is lost;
- a job on a worker that has its model loaded; a worker without it takes it only when no idle worker has it.
It streams the actor's messages to the client and saves the image here (DeviceWorker.deliver), so results,
history and the output folder stay on the front end whatever the number of workers.

Faults: any Ray error but the job's own (the actor process died, its node was lost) marks the worker lost. Its
job is requeued once at the head of its client's queue (same seed: the same pixels, from the image it was on);
a second loss ends it with an error. A lost live frame is answered `live_skipped` ("worker_lost"). The slot
starts a new actor and joins again once it has loaded its model; with GPUs and no --workers, nodes added to the
cluster get slots of their own.
"""
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from controlbridge_protocol import Cancelled, ErrorCode, JobError, LiveSkipped, Result

from ..server.jobs import Job
from ..server.worker import DeviceWorker

log = logging.getLogger("controlbridge.cluster")
READY_TIMEOUT_S = 900          # a worker loading a large model on a cold node
RETRY_PAUSE_S = 2.0            # between attempts to bring a lost worker back, doubling up to the max
MAX_RETRY_PAUSE_S = 60.0
# A local Ray (--ray auto) must listen on loopback only, like the server: Ray has no authentication, so a raylet
# or GCS on the machine's network address would let anyone on the network run code here. Ray binds loopback when
# its "cluster support" is off (its switch for Windows/macOS, which works on Linux too); it must be set before ray is
# imported. Joining a cluster (--ray ADDRESS) leaves it alone: that is what `ray start` on each host is for.
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOCAL_OBJECT_STORE_BYTES = 200 * 2**20   # --ray auto: job inputs and results pass through it, one at a time
ENV_PREFIXES = ("CONTROLBRIDGE_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_")


class WorkerLost(Exception):
    """The worker's process or node went away while it had a job."""


@dataclass
class _Slot:
    name: str
    actor: object = None
    state: str = "starting"        # starting, idle, busy, lost
    job: Optional[str] = None
    models: List[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    jobs_done: int = 0
    restarts: int = 0
    failures: int = 0              # starts that failed in a row

    @property
    def up(self) -> bool:
        return self.state in ("idle", "busy")


class ClusterWorker(DeviceWorker):
    """DeviceWorker's interface (start, join) over Ray actors; its `deliver` saves what they make."""

    def __init__(self, config, models, scheduler, emit, history, log_line=print):
        super().__init__(models, scheduler, config.output_dir, emit, history)
        if config.ray == "auto":
            os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")   # read when ray is imported, by us and every worker
        import ray     # controlbridge[cluster]
        self.ray = ray
        self.config = config
        self.log_line = log_line
        self._started_ray = _connect(ray, config)
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        if config.workers is None and self.gpus == 0:
            raise ValueError("this Ray cluster has no GPU: say how many CPU workers to start with --workers N")
        self._fixed = config.workers is not None
        count = config.workers or self.gpus
        # CPU workers share the cores (Ray sets each actor's torch threads from num_cpus).
        self._cpus = 1 if self.gpus else max(1, int(resources.get("CPU", 1)) // count)
        self.slots: List[_Slot] = [_Slot(f"w{i + 1}") for i in range(count)]
        self._pins: Dict[str, _Slot] = {}      # live session (client id) -> the worker it sticks to
        self._retried: Dict[str, int] = {}     # job id -> the image it resumes at, once retried
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._shut_down = False
        self._env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        self.log_line(f"Ray cluster: {count} worker(s) ({'1 GPU' if self.gpus else f'{self._cpus} CPU'} each), "
                      f"{int(resources.get('CPU', 0))} CPUs and {self.gpus} GPUs in the cluster")

    # ---- DeviceWorker's interface ----------------------------------------------------------------------------

    def start(self) -> None:
        for slot in list(self.slots):
            self._start_slot(slot)
        if not self._fixed:
            threading.Thread(target=self._watch_for_gpus, name="controlbridge-cluster-nodes", daemon=True).start()

    def join(self, timeout=None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        if any(t.is_alive() for t in self._threads) or self._shut_down:
            return                      # still finishing a job (called again, or the process exits), or done
        self._shut_down = True          # any Ray call after shutdown would start a new Ray
        self.encoder.close()
        for slot in self.slots:
            self._drop_actor(slot)
        if self._started_ray and self.ray.is_initialized():
            self.ray.shutdown()

    def describe_workers(self) -> List[dict]:
        """For `status`: each worker's node, device, loaded models, state and jobs done."""
        with self._lock:
            return [{"name": s.name, "node": s.info.get("node", ""), "pid": s.info.get("pid"),
                     "device": s.info.get("device", ""), "state": s.state, "job": s.job, "models": list(s.models),
                     "jobs_done": s.jobs_done, "restarts": s.restarts} for s in self.slots]

    # ---- one slot --------------------------------------------------------------------------------------------

    def _start_slot(self, slot: _Slot) -> None:
        thread = threading.Thread(target=self._slot_loop, args=(slot,), name=f"controlbridge-{slot.name}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _slot_loop(self, slot: _Slot) -> None:
        while not self.scheduler.closed:
            if not slot.up and not self._bring_up(slot):
                # a worker that cannot start (no free GPU, a model missing on its node) is retried, less often
                end = time.monotonic() + min(MAX_RETRY_PAUSE_S, RETRY_PAUSE_S * 2 ** min(slot.failures, 5))
                while time.monotonic() < end and not self.scheduler.closed:
                    time.sleep(0.5)
                slot.failures += 1
                continue
            job = self.scheduler.take(timeout=1.0, runnable=lambda j: self._fits(slot, j))
            if job is None:
                continue
            with self._lock:
                slot.state, slot.job = "busy", job.id
                if job.live:
                    self._pins[job.client_id] = slot
            try:
                self._run(slot, job)
            except WorkerLost as e:
                self._lost(slot, job, e)
            except Exception as e:  # noqa: BLE001 - a failure here (saving, a bug) ends the job, not the slot
                log.exception("job %s failed on the front end", job.id)
                self.emit(job.client_id, JobError(ErrorCode.INTERNAL, f"the server failed on this job: "
                                                  f"{_first_line(e)}", job.id, job.request_id))
            finally:
                self.scheduler.finish(job)     # no-op for a requeued job
                with self._lock:
                    slot.job = None
                    if slot.state == "busy":
                        slot.state = "idle"
                self.scheduler.wake()          # who may take what has changed

    def _bring_up(self, slot: _Slot) -> bool:
        """Start the slot's actor (a new one after a loss) and wait for its model; False if it is not there."""
        from .actor import EngineActor
        ray = self.ray
        if slot.actor is None:
            options = {"num_cpus": self._cpus, "num_gpus": 1 if self.gpus else 0, "max_restarts": 0,
                       "max_concurrency": 4}   # run, cancel and info at once
            slot.actor = ray.remote(EngineActor).options(**options).remote(self.config, slot.name, self._env)
        try:
            ready, end = slot.actor.info.remote(), time.monotonic() + READY_TIMEOUT_S
            while not ray.wait([ready], timeout=2)[0]:       # the model loads; a shutdown need not wait for it
                if self.scheduler.closed or time.monotonic() > end:
                    raise TimeoutError(f"not ready after {time.monotonic() - end + READY_TIMEOUT_S:.0f} s")
            info = ray.get(ready)
        except Exception as e:  # noqa: BLE001 - any failure to come up: try a fresh actor later
            if not self.scheduler.closed:
                log.warning("worker %s did not start: %s", slot.name, _first_line(e))
            self._drop_actor(slot)
            return False
        with self._lock:
            slot.info, slot.models, slot.state, slot.failures = info, list(info["models"]), "idle", 0
        self.log_line(f"worker {slot.name} ready on {info['node']} ({info['device']}, pid {info['pid']})")
        self.scheduler.wake()
        return True

    def _drop_actor(self, slot: _Slot) -> None:
        if slot.actor is not None:
            try:
                self.ray.kill(slot.actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        slot.actor = None

    def _fits(self, slot: _Slot, job: Job) -> bool:
        """Called under the scheduler's lock: whether this slot should take `job` now."""
        if job.live:
            pinned = self._pins.get(job.client_id)
            return pinned is None or pinned is slot or not pinned.up
        model = job.settings.model or self.models.default_name
        if model in slot.models:
            return True
        return not any(other is not slot and other.state == "idle" and model in other.models for other in self.slots)

    def _lost(self, slot: _Slot, job: Job, error: Exception) -> None:
        self.log_line(f"worker {slot.name} lost during job {job.id}: {_first_line(error)}")
        with self._lock:
            slot.state, slot.restarts = "lost", slot.restarts + 1
            for client, pinned in list(self._pins.items()):
                if pinned is slot:
                    del self._pins[client]       # its live sessions move to the next worker that is free
        self._drop_actor(slot)
        if job.live:
            self.emit(job.client_id, LiveSkipped(job.request_id, "worker_lost"))
        elif job.id in self._retried:
            self._retried.pop(job.id)
            self.emit(job.client_id, JobError(ErrorCode.INTERNAL, f"two workers were lost running this job (last "
                                              f"{slot.name}: {_first_line(error)}); it was not finished", job.id,
                                              job.request_id))
        else:
            self._retried[job.id] = getattr(error, "index", 0)   # the images before it are delivered already
            self.scheduler.requeue(job)

    # ---- one job ---------------------------------------------------------------------------------------------

    def _run(self, slot: _Slot, job: Job) -> None:
        if job.live:
            self._call(slot, job, 0)
            return
        if job.cancelled:
            self.emit(job.client_id, Cancelled(job.id))
            return
        for index in range(self._retried.get(job.id, 0), job.settings.batch_size):
            try:
                if not self._call(slot, job, index):
                    break
            except WorkerLost as e:
                e.index = index            # a retry starts again from the image that was lost
                raise
        self._retried.pop(job.id, None)

    def _call(self, slot: _Slot, job: Job, index: int) -> bool:
        """One job image (or live frame) on the slot's actor; True when an image was made and delivered."""
        ray = self.ray
        started = time.perf_counter()
        fields = {"id": job.id, "client_id": job.client_id, "request_id": job.request_id, "settings": job.settings,
                  "inputs": job.inputs, "live": job.live, "received_at": job.received_at, "decode_ms": job.decode_ms,
                  "warm_up": job.warm_up}
        with self._lock:
            slot.state = "busy"
        calls = slot.actor.run.options(num_returns="streaming").remote(fields, index)
        watcher = _CancelForwarder(job, lambda: slot.actor.cancel.remote(job.id))
        made = None
        try:
            for ref in calls:
                item = ray.get(ref)
                if item[0] == "emit":
                    message = item[1]
                    if isinstance(message, Result):      # live results (job results are made by deliver)
                        message.worker = slot.name
                    self.emit(job.client_id, message)
                elif item[0] == "made":
                    made = item[1:]
                elif item[0] == "done":
                    with self._lock:
                        slot.models = list(item[1])
        except ray.exceptions.RayTaskError as e:    # our code failed in the actor: the job's error, not a loss
            self.emit(job.client_id, JobError(ErrorCode.INTERNAL, f"generation failed on worker {slot.name}: "
                                              f"{_first_line(e)}", job.id, job.request_id))
            return False
        except ray.exceptions.RayError as e:
            raise WorkerLost(_first_line(e)) from e
        finally:
            watcher.stop()
        with self._lock:
            if slot.state == "busy":
                slot.state = "idle"    # the actor is free while the image is saved here: an idle worker with
                                       # this model is the one the next job for it waits for
        if made is None:
            return False
        settings, model, out, timings = made
        if "queued" in timings:      # as the front end saw it (the actor's clock may be another host's)
            timings = dict(timings, queued=(started - job.received_at) * 1000 - job.decode_ms)
        with self._lock:
            slot.jobs_done += 1
        self.deliver(job, index, settings, model, out, timings, time.perf_counter(), started, worker=slot.name)
        return True

    def _watch_for_gpus(self) -> None:
        """One slot per GPU: nodes that join the cluster later get workers too."""
        while not self.scheduler.closed:
            time.sleep(10)
            try:
                gpus = int(self.ray.cluster_resources().get("GPU", 0))
            except Exception:  # noqa: BLE001 - the head is briefly unreachable
                continue
            while len(self.slots) < gpus and not self.scheduler.closed:
                slot = _Slot(f"w{len(self.slots) + 1}")
                with self._lock:
                    self.slots.append(slot)
                self.log_line(f"a GPU joined the cluster: starting worker {slot.name}")
                self._start_slot(slot)


class _CancelForwarder:
    """Passes a cancel of the running job (set on the front end's copy) on to the actor."""

    def __init__(self, job: Job, cancel):
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(job, cancel), daemon=True)
        self._thread.start()

    def _watch(self, job: Job, cancel) -> None:
        while not self._done.is_set():
            if job.cancel_event.wait(0.1):
                cancel()
                return

    def stop(self) -> None:
        self._done.set()


def _connect(ray, config) -> bool:
    """Start a local Ray (`--ray auto`) or join a cluster; True when this process started it."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}}
    if config.ray == "auto":
        import torch
        device = config.model.device or "auto"
        gpus = torch.cuda.device_count() if device == "auto" or device.startswith("cuda") else 0
        cpus = max(os.cpu_count() or 1, config.workers or 1)
        ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, runtime_env=env, log_to_driver=True,
                 logging_level=logging.WARNING)
    else:
        ray.init(address=config.ray, runtime_env=env, logging_level=logging.WARNING)
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
