"""One log line per job: who, which model, what size and steps, how long, and where it went (or why not).

With `controlbridge serve --log-json` the same facts are the fields of a JSON line (see cli.py).
"""
import logging
import time

log = logging.getLogger("controlbridge.jobs")


def log_job(job, settings, started: float, outcome: str, model: str = "", worker: str = "") -> None:
    fields = {"event": "job", "job": job.id, "client": job.client_id, "model": model or settings.model or "(default)",
              "size": f"{settings.width}x{settings.height}" if settings.width else
              f"{job.inputs.color.shape[1]}x{job.inputs.color.shape[0]}",
              "steps": settings.steps, "seconds": round(time.perf_counter() - started, 2), "outcome": outcome}
    if worker:   # a cluster worker ran it
        fields["worker"] = worker
    log.info("job %(job)s client %(client)s model %(model)s size %(size)s steps %(steps)s %(seconds).2fs: "
             "%(outcome)s" + (" on worker %(worker)s" if worker else ""), fields, extra={"fields": fields})
