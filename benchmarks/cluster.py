"""Jobs per second through one endpoint: the single-process server, then `serve --ray auto` with 1 and 2 workers.

Each configuration is a real `controlbridge serve` subprocess on 127.0.0.1 (tiny model unless --model); the
clients are threads of this process, each with its own websocket, submitting all their jobs at once. The clock
runs from the first submit to the last result, after one warm-up job per worker (not counted). Every job has
its own seed, so no two are the same work.

    python benchmarks/cluster.py                               # 1 and 2 CPU workers (and no Ray), tiny model
    python benchmarks/cluster.py --workers 1,2,4 --jobs 32 --model ./sd15 --append   # on a GPU box
"""
import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "shared"))
from controlbridge_protocol import Client, ImageAttachment, JobSettings  # noqa: E402


def start_server(model: str, workers: int, output_dir: str, threads: int = 0):
    args = [sys.executable, "-m", "controlbridge", "serve", "--model", model, "--port", "0",
            "--output-dir", output_dir]
    if workers:
        args += ["--ray", "auto", "--workers", str(workers)]
    # OMP_NUM_THREADS reaches Ray's workers too (Ray sets it from each actor's CPUs only when it is unset).
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        found = re.search(r"listening on (ws://\S+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()   # keep it drained
            return proc, found.group(1)
    raise RuntimeError("server did not start:\n" + "".join(seen))


def inputs(size: int):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 255, (size, size, 4), np.uint8)
    depth = np.linspace(1, 10, size * size, dtype="<f4").reshape(size, size)
    return [ImageAttachment.raw_rgba8("color", size, size, rgba.tobytes()),
            ImageAttachment.raw_depth("depth", size, size, depth.tobytes())]


def run_config(model, workers, clients, jobs, settings, images, threads=0):
    with tempfile.TemporaryDirectory() as out:
        proc, url = start_server(model, workers, out, threads)
        try:
            with Client(url) as c:          # workers ready, then one warm-up job per worker
                deadline = time.monotonic() + 300
                while workers and time.monotonic() < deadline and \
                        sum(w["state"] == "idle" for w in c.status().workers) < workers:
                    time.sleep(0.5)
            warm = [threading.Thread(target=_one, args=(url, settings.replace(seed=1000 + i), images))
                    for i in range(max(1, workers))]
            for t in warm:
                t.start()
            for t in warm:
                t.join()
            per_worker, lock = {}, threading.Lock()

            def client(k):
                with Client(url) as c:
                    ids = [c.submit(settings.replace(seed=k * 1000 + i), images) for i in range(jobs // clients)]
                    done = 0
                    while done < len(ids):
                        event = c.next_event(timeout=600)
                        if type(event).__name__ == "Result":
                            done += 1
                            with lock:
                                per_worker[event.worker or "-"] = per_worker.get(event.worker or "-", 0) + 1
                        elif type(event).__name__ == "JobError":
                            raise RuntimeError(event.message)
            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - start
            return seconds, per_worker
        finally:
            proc.terminate()
            proc.wait(60)


def _one(url, settings, images):
    with Client(url) as c:
        c.run(settings, images, timeout=600)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--workers", default="1,2", help="Ray worker counts to run (0 = the single-process server)")
    p.add_argument("--no-baseline", action="store_true", help="skip the single-process (no Ray) row")
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per server process or worker (OMP_NUM_THREADS; default: torch's / Ray's)")
    p.add_argument("--append", action="store_true", help="append the section to benchmarks/RESULTS.md")
    p.add_argument("--note", default="", help="a line about the machine (other load on it, ...)")
    args = p.parse_args(argv)
    settings = JobSettings(prompt="a house", seed=1, steps=args.steps, cfg=5.0, sampler="euler", denoise=1.0,
                           result_encoding="png")
    images = inputs(args.size)
    counts = ([] if args.no_baseline else [0]) + [int(n) for n in args.workers.split(",")]
    rows = []
    for workers in counts:
        load_before = os.getloadavg()[0]
        seconds, per_worker = run_config(args.model, workers, args.clients, args.jobs, settings, images, args.threads)
        label = "single process (no Ray)" if workers == 0 else f"--ray auto --workers {workers}"
        split = ", ".join(f"{k} {v}" for k, v in sorted(per_worker.items()))
        rows.append(f"| {label} | {args.jobs} | {seconds:.1f} | {args.jobs / seconds:.2f} | {split} | "
                    f"{load_before:.1f} |")
        print(rows[-1], flush=True)
    import torch
    import ray
    section = [f"## {time.strftime('%Y-%m-%d')} - cluster throughput - {platform.machine()}, {os.cpu_count()} cores",
               f"- `python benchmarks/cluster.py` - model {args.model}, {args.size}x{args.size}, {args.steps} steps, "
               f"{args.clients} clients submitting {args.jobs} jobs at once; torch threads per process "
               f"{args.threads or 'default (2 for no Ray; Ray: the cores / workers)'}; torch {torch.__version__}, "
               f"ray {ray.__version__}",
               *([f"- {args.note}"] if args.note else []),
               "",
               "| server | jobs | seconds | jobs/s | jobs per worker | load avg before |",
               "|---|---|---|---|---|---|", *rows, ""]
    text = "\n".join(section)
    print(text)
    if args.append:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
