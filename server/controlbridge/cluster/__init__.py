"""Scale-out over Ray (`controlbridge serve --ray auto|ADDRESS`, the `controlbridge[cluster]` extra).

Workers are Ray actors (`actor.py`), each with its own model manager and engine; the front end (`pool.py`) keeps
the websocket transport, security, the fair queue, history and saving, and hands each worker the jobs it should
run. Without `--ray` none of this is imported.
"""
from .pool import ClusterWorker

__all__ = ["ClusterWorker"]
