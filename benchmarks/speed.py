#!/usr/bin/env python3
"""Speed of ControlBridge's generation path against the stock diffusers pipeline, side by side in one run.

    python benchmarks/speed.py                           # on a CUDA machine: rows a, b, t, c and their server rows
    python benchmarks/speed.py --rows cpu-side           # server-side CPU work per 512x512 frame (any machine)
    python benchmarks/speed.py --rows overhead --tiny    # whole-server time per live frame minus its model time
    python benchmarks/speed.py --tiny --device cpu       # dry run of every row with the tiny models
    bash benchmarks/device_run.sh                        # everything, on the lent H200 (see RESULTS.md)

Rows (a, b, t, c: the stock pipeline and our engine; server-X: row X through the whole server):
  a         SD1.5 512x512 + depth ControlNet, 8 steps x denoise 0.5 = 4 run, CFG 1, TAESD decode (live)
  b         the same with depth + canny ControlNets (the issue's live target row); ours three times: the ControlNets
            one after the other, then side by side (`serve --parallel-controlnets streams|batched`; row t too)
  t         turbo-style: b at 2 steps x 0.5 = 1 run step
  s         stream batch: b with the ddim sampler and settings.stream_batch, the 4 run steps of 4 consecutive
            frames in one batched call (each frame shown 3 frames late); its stock path runs DDIM too
  c         SDXL 1024x1024 + depth, 20 steps x 0.6 = 12 run, CFG 5, full VAE (quality)
  overhead  the tiny model through the whole server, 512x512 frames: server time per frame minus the model
            time the server reports (the client-side round trip too)
  cpu-side  the server's host steps for one 512x512 frame, each timed alone

How it stays honest:
- the stock rows run the UNMODIFIED diffusers StableDiffusion(XL)ControlNetImg2ImgPipeline, constructed from
  the components as `from_pretrained(torch_dtype=...)` would, on a SEPARATELY built copy of the model in the
  same dtype; our speed-ups are applied to our copy only;
- both get the same inputs: with `--inputs ready` (default) ready-made depth and canny maps for both; with
  `--inputs raw` raw depth + color for both, depth normalization and canny timed inside both calls. Stock
  returns PIL (uint8), our engine uint8 numpy; no encoding in either. Server rows send raw depth + color over
  the websocket and get a JPEG back (everything a live client pays);
- after the run every path prints the dtype read back from its modules' tensors (a silent upcast shows);
- paths are interleaved per iteration (stock, ours, server, then the reverse order: drift and order hit all);
- the server rows' client is another process (benchmarks/live_client.py), never a thread of this one;
- the compute floor is the FLOPs of one stock call (torch's FlopCounterMode) over the dense matmul rate
  measured here in the row's dtype; "of floor" = floor / p50.
Each run appends a section to benchmarks/RESULTS.md (or --out) and, with --json, one JSON line per path.
Full-size architectures are built from benchmarks/configs/ with random weights (speed does not depend on them).
"""
import argparse
import datetime
import gc
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from full_size import build_model, module_dtypes  # noqa: E402

PROMPT = "a street at dusk"


@dataclass(frozen=True)
class Row:
    family: str
    controlnets: tuple
    size: int
    steps: int
    denoise: float
    cfg: float
    fast_decode: bool
    what: str
    tiny_model: bool = False        # always the tiny model (the server-overhead row)
    sampler: str = "euler"
    stream_batch: bool = False

    @property
    def run_steps(self) -> int:
        return int(self.steps * self.denoise)


ROWS = {
    "a": Row("sd15", ("depth",), 512, 8, 0.5, 1.0, True, "SD1.5 512 + depth, 4 steps, TAESD"),
    "b": Row("sd15", ("depth", "canny"), 512, 8, 0.5, 1.0, True, "SD1.5 512 + depth + canny, 4 steps, TAESD"),
    "t": Row("sd15", ("depth", "canny"), 512, 2, 0.5, 1.0, True, "turbo: SD1.5 512 + depth + canny, 1 step, TAESD"),
    "s": Row("sd15", ("depth", "canny"), 512, 8, 0.5, 1.0, True,
             "stream batch: b with ddim, 4 frames per call, each shown 3 frames late", sampler="ddim",
             stream_batch=True),
    "c": Row("sdxl", ("depth",), 1024, 20, 0.6, 5.0, False, "SDXL 1024 + depth, CFG 5, 12 steps, full VAE"),
    "overhead": Row("sd15", ("depth", "canny"), 512, 8, 0.5, 1.0, True, "tiny model, 512 frames, whole server",
                    tiny_model=True),
}
DEFAULT_ROWS = "a,b,t,s,c,server-a,server-b,server-t,server-s,server-c"


def live_engine_class():
    """The live engine once it exists; until then our rows run the one-shot job path (engine.generate)."""
    try:
        from controlbridge.engine.live_engine import LiveEngine
        return LiveEngine
    except ImportError:
        return None


# ---- the scene, as the stock user and our engine get it ----------------------------------------------------

class Scene:
    def __init__(self, size: int):
        from controlbridge.demo_scene import render_blockout
        from controlbridge.imaging.canny import canny_edges
        from controlbridge.imaging.depth import depth_to_control
        rgba, self.depth = render_blockout(size, size)
        self.color = np.ascontiguousarray(rgba[:, :, :3])
        self.depth_map = depth_to_control(self.depth)                       # float32 HxW in [0, 1]
        self.edges = canny_edges(self.color, 100, 200)                      # uint8 HxW

    def stock_images(self, names):
        """(color PIL, [control PIL per ControlNet]) from ready-made maps."""
        return Image.fromarray(self.color), [self._pil(self.depth_map * 255 if n == "depth" else self.edges)
                                             for n in names]

    def stock_images_raw(self, names):
        """The same, made from raw depth + color (what --inputs raw times inside the stock call)."""
        from controlbridge.imaging.canny import canny_edges
        from controlbridge.imaging.depth import depth_to_control
        maps = {"depth": lambda: depth_to_control(self.depth) * 255, "canny": lambda: canny_edges(self.color, 100, 200)}
        return Image.fromarray(self.color), [self._pil(maps[n]()) for n in names]

    @staticmethod
    def _pil(a):
        return Image.fromarray(np.asarray(a).round().astype(np.uint8) if a.dtype != np.uint8 else a).convert("RGB")

    def job_inputs(self, names, raw: bool):
        from controlbridge.engine.generate import JobInputs
        if raw:
            return JobInputs(self.color, depth_raw=self.depth)
        maps = {"depth": np.repeat(self.depth_map[:, :, None], 3, axis=2),
                "canny": np.repeat((self.edges.astype(np.float32) / 255.0)[:, :, None], 3, axis=2)}
        return JobInputs(self.color, control_maps={n: maps[n] for n in names})


def job_settings(row: Row):
    from controlbridge_protocol import ControlNetSettings, JobSettings
    return JobSettings(prompt=PROMPT, seed=1, steps=row.steps, denoise=row.denoise, cfg=row.cfg, sampler=row.sampler,
                       stream_batch=row.stream_batch, fast_decode=row.fast_decode, result_encoding="jpeg", canny_low=100, canny_high=200,
                       controlnets={n: ControlNetSettings() for n in row.controlnets})


# ---- the paths a row is measured on -------------------------------------------------------------------------

class StockPath:
    """diffusers' own ControlNet img2img pipeline, as a user builds and calls it: PIL in, PIL out."""

    label = "stock diffusers"

    def __init__(self, model, row: Row, scene: Scene, raw: bool):
        from diffusers import (DDIMScheduler, EulerDiscreteScheduler, StableDiffusionControlNetImg2ImgPipeline,
                               StableDiffusionXLControlNetImg2ImgPipeline)
        cls = StableDiffusionXLControlNetImg2ImgPipeline if row.family == "sdxl" else \
            StableDiffusionControlNetImg2ImgPipeline
        params = inspect.signature(cls.__init__).parameters
        parts = {k: v for k, v in model.base.components.items() if k in params}
        cns = [model.controlnets[n] for n in row.controlnets]
        parts.update(controlnet=cns[0] if len(cns) == 1 else cns,
                     vae=model.taesd if row.fast_decode else model.base.vae,
                     scheduler={"euler": EulerDiscreteScheduler, "ddim": DDIMScheduler}[row.sampler].from_config(
                         model.base.scheduler.config))
        if "safety_checker" in params:
            parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        self.pipe = cls(**parts)
        self.pipe.set_progress_bar_config(disable=True)
        self.row, self.scene, self.raw = row, scene, raw
        self.inputs = "raw, preprocessing timed" if raw else "ready maps"
        self.ready = scene.stock_images(row.controlnets)

    def __call__(self):
        color, controls = self.scene.stock_images_raw(self.row.controlnets) if self.raw else self.ready
        return self.pipe(prompt=PROMPT, image=color, control_image=controls[0] if len(controls) == 1 else controls,
                         strength=self.row.denoise, num_inference_steps=self.row.steps,
                         guidance_scale=self.row.cfg, generator=torch.Generator("cpu").manual_seed(1),
                         output_type="pil").images[0]

    def dtypes(self):
        return module_dtypes({k: v for k, v in self.pipe.components.items() if isinstance(v, torch.nn.Module)})


class EnginePath:
    """ControlBridge's engine on its own copy: the LiveEngine when it exists, else engine.generate.
    `parallel`: the model's ControlNets side by side ("streams" or "batched") during its calls, as
    `serve --parallel-controlnets` sets for good."""

    def __init__(self, model, row: Row, scene: Scene, raw: bool, parallel: str = ""):
        engine_class = live_engine_class()
        self.model, self.settings = model, job_settings(row)
        self.job_inputs = scene.job_inputs(row.controlnets, raw)
        self.inputs = "raw, preprocessing timed" if raw else "ready maps"
        self.parallel = parallel
        if engine_class is not None:
            engine = engine_class()
            self.label = "ours: LiveEngine"
            # one session: with stream_batch its frames stay in flight from call to call
            self.render = lambda: engine.render(self.model, self.settings, self.job_inputs, session="benchmark")
        else:
            from controlbridge.engine.generate import generate
            self.label = "ours: engine.generate"
            self.render = lambda: generate(self.model, self.settings, self.job_inputs)
        if parallel:
            cpu = parallel == "streams" and not model.device.startswith("cuda")
            self.label += f", ControlNets {parallel}" + (" (CPU: one by one)" if cpu else "")

    def __call__(self):
        self.model.parallel_controlnets = self.parallel     # a pipeline of its own under each setting
        try:
            return self.render().image
        finally:
            self.model.parallel_controlnets = ""

    def dtypes(self):
        return model_dtypes(self.model)


class ServerPath:
    """Live frames through the whole server (in this process) from a client in another process."""

    label = "ours: whole server"
    inputs = "raw over websocket, jpeg back"

    def __init__(self, model, row: Row, size: int):
        from controlbridge.server.app import ServerThread
        from controlbridge.server.config import ServerConfig
        self.model = model
        self.output_dir = tempfile.TemporaryDirectory(prefix="controlbridge-bench-")
        self.server = ServerThread(ServerConfig(port=0, output_dir=Path(self.output_dir.name)), model=model).start()
        settings = json.dumps(job_settings(row).to_dict())
        self.client = subprocess.Popen([sys.executable, str(HERE / "live_client.py"), self.server.url, settings,
                                        str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def frame(self) -> dict:
        """One frame; the client measures its round trip (its own clock, no pipe in it)."""
        self.client.stdin.write("frame\n")
        self.client.stdin.flush()
        line = self.client.stdout.readline()
        if not line:
            raise RuntimeError(f"the live client process ended (exit code {self.client.wait()})")
        return json.loads(line)

    def dtypes(self):
        return model_dtypes(self.model)

    def close(self):
        try:
            self.client.stdin.write("quit\n")
            self.client.stdin.close()
            self.client.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.client.kill()
        self.server.stop()
        self.output_dir.cleanup()


def model_dtypes(model) -> str:
    modules = {k: v for k, v in model.base.components.items() if isinstance(v, torch.nn.Module)}
    modules.update({f"controlnet_{n}": m for n, m in model.controlnets.items()})
    if model.taesd is not None:
        modules["taesd"] = model.taesd
    return module_dtypes(modules)


# ---- measuring ----------------------------------------------------------------------------------------------

def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(path, device) -> dict:
    """One call: {"ms", "peak" (GiB allocated on the GPU during it), "timings" (server rows)}."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if isinstance(path, ServerPath):
        record = path.frame()
    else:
        sync(device)
        start = time.perf_counter()
        path()
        sync(device)
        record = {"ms": (time.perf_counter() - start) * 1000}
    record["peak"] = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return record


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(device, dtype):
    """Measured dense matmul FLOP/s of this device in this dtype: the denominator of the compute floor."""
    n = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 50 if device.startswith("cuda") else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


class Models:
    """Two independent copies per family and mode: 'stock' (never touched by us) and 'ours' (accelerated)."""

    def __init__(self, args, dtype):
        self.args, self.dtype, self.built = args, dtype, {}

    def get(self, row: Row):
        tiny = self.args.tiny or row.tiny_model
        key = (row.family, tiny)
        if key not in self.built:
            self.built.clear()                 # one family's pair on the device at a time
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            stock = build_model(row.family, self.args.device, self.dtype, tiny)
            ours = build_model(row.family, self.args.device, self.dtype, tiny)
            if self.args.device != "cpu" or self.args.compile:    # as the server does at start-up
                from controlbridge.engine.acceleration import accelerate
                accelerate(ours, self.args.compile, log=print)
            self.built[key] = (stock, ours)
        return self.built[key]


def run_group(name, row: Row, want: set, models: Models, args, rate, report, results):
    stock_model, ours_model = models.get(row)
    tiny = args.tiny or row.tiny_model
    size = row.size if (row.tiny_model or not tiny) else ours_model.native_resolution
    scene = Scene(size)
    raw = args.inputs == "raw"
    paths = []
    if "stock" in want:
        paths.append(StockPath(stock_model, row, scene, raw))
    if "engine" in want:
        paths.append(EnginePath(ours_model, row, scene, raw))
        if len(row.controlnets) > 1 and not row.stream_batch:     # issue 9: does running them side by side pay?
            paths += [EnginePath(ours_model, row, scene, raw, parallel) for parallel in ("streams", "batched")]
    if "server" in want:
        paths.append(ServerPath(ours_model, row, size))
    try:
        flops = count_flops(paths[0]) if isinstance(paths[0], StockPath) else float("nan")
        for path in list(paths):
            try:
                for _ in range(args.warmup):
                    timed(path, args.device)
            except Exception as e:  # noqa: BLE001 - an experimental path must not cost the row its other paths
                if not getattr(path, "parallel", ""):
                    raise
                paths.remove(path)
                report.append(f"- row {name}: path '{path.label}' failed in its warm-up and was left out: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
                print(report[-1], flush=True)
        records = {id(p): [] for p in paths}
        start = time.perf_counter()
        for i in range(args.iters):
            for path in (paths if i % 2 == 0 else paths[::-1]):
                records[id(path)].append(timed(path, args.device))
            if time.perf_counter() - start > args.group_budget_s:
                print(f"row {name}: stopped after {i + 1} iterations (--group-budget-s {args.group_budget_s})")
                break
        rows = [summarize(name, row, path, records[id(path)], flops, rate, size) for path in paths]
    finally:
        for path in paths:
            if isinstance(path, ServerPath):
                path.close()
    stock_p50 = next((r["p50"] for r in rows if r["path"] == StockPath.label), float("nan"))
    for r in rows:
        r["x_stock"] = stock_p50 / r["p50"]
        report.append(f"| {r['row']} | {r['what']} | {r['path']} | {r['inputs']} | {r['dtype']} | {r['p50']:.1f} | "
                      f"{r['p95']:.1f} | {r['fps']:.1f} | {fmt(r['x_stock'], '{:.2f}x')} | "
                      f"{fmt(r['floor_ms'], '{:.2f}')} | {fmt(r['of_floor'], '{:.0%}')} | "
                      f"{fmt(r['peak_gib'], '{:.1f}')} | {r['n']} |")
        print(report[-1], flush=True)
        results.append(r)


def summarize(name, row: Row, path, records, flops, rate, size) -> dict:
    ms = np.array([r["ms"] for r in records])
    p50 = float(np.percentile(ms, 50))
    floor = flops / rate * 1000 if flops == flops else float("nan")
    peaks = [r["peak"] for r in records if r["peak"] is not None]
    out = {"row": name, "what": row.what + (f" (at {size}x{size})" if size != row.size else ""),
           "path": path.label, "inputs": path.inputs, "dtype": path.dtypes(), "p50": p50,
           "p95": float(np.percentile(ms, 95)), "fps": len(ms) / (ms.sum() / 1000), "n": len(ms),
           "gflop": flops / 1e9, "floor_ms": floor, "of_floor": floor / p50, "peak_gib": max(peaks) if peaks else
           float("nan"), "run_steps": row.run_steps}
    timings = [r.get("timings") for r in records if isinstance(path, ServerPath)]
    if isinstance(path, ServerPath):
        out["timings_p50"] = timing_summary(records) if all(timings) else None
        out["elapsed_ms_p50"] = float(np.percentile([r["elapsed_ms"] for r in records], 50))
    return out


def timing_summary(records) -> dict:
    """p50 of each server-reported timing, and of what is left when the model's own time is taken away."""
    keys = sorted({k for r in records for k in r["timings"]})
    out = {k: float(np.percentile([r["timings"].get(k, np.nan) for r in records], 50)) for k in keys}
    if "model" in keys:
        out["server minus model"] = float(np.percentile(
            [r["timings"].get("total", np.nan) - r["timings"]["model"] for r in records], 50))
        out["round trip minus model"] = float(np.percentile([r["ms"] - r["timings"]["model"] for r in records], 50))
    return out


def fmt(value, pattern):
    return "n/a" if value is None or value != value else pattern.format(value)


def timings_report(results, report):
    server = [r for r in results if "timings_p50" in r]
    if not server:
        return
    report.append("")
    report.append("Server rows, p50 ms. `timings` are what the server reports per live_result; `elapsed` is its "
                  "older elapsed_ms (taking the frame to encoding its result); round trip is the client's clock.")
    report.append("")
    report.append("| row | round trip | elapsed | server timings (queued, prepare, model, output, encode, total) | "
                  "server minus model | round trip minus model |")
    report.append("|---|---|---|---|---|---|")
    for r in server:
        t = r["timings_p50"]
        if t is None:
            # No estimate by subtracting another path's p50: two noisy ~0.5 s numbers cannot resolve 3 ms.
            report.append(f"| {r['row']} | {r['p50']:.1f} | {r['elapsed_ms_p50']:.1f} | not reported by this server "
                          f"| n/a | n/a |")
        else:
            parts = ", ".join(f"{k} {t[k]:.2f}" for k in ("queued", "prepare", "model", "output", "encode", "total")
                              if k in t)
            report.append(f"| {r['row']} | {r['p50']:.1f} | {r['elapsed_ms_p50']:.1f} | {parts} | "
                          f"{fmt(t.get('server minus model'), '{:.2f}')} | "
                          f"{fmt(t.get('round trip minus model'), '{:.2f}')} |")


def run_rows(args, rows, report, results):
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    rate = matmul_rate(args.device, dtype)
    report.append(f"- measured dense matmul rate: {rate / 1e12:.2f} TFLOP/s ({args.dtype})")
    report.append("")
    report.append("| row | what | path | inputs | dtype after run | p50 ms | p95 ms | frames/s | stock p50 / p50 | "
                  "floor ms | of floor | peak GiB | n |")
    report.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups = {}
    for name in rows:
        base = name.replace("server-", "")
        if base not in ROWS:
            raise SystemExit(f"unknown row {name!r}; rows: {', '.join(ROWS)}, server-<row>, cpu-side")
        want = groups.setdefault(base, set())
        if base == "overhead":
            want.update({"server"})
        else:
            want.update({"stock", "server" if name.startswith("server-") else "engine"})
    models = Models(args, dtype)
    for base, want in groups.items():
        run_group(base, ROWS[base], want, models, args, rate, report, results)
    timings_report(results, report)


# ---- the server's host steps, each alone --------------------------------------------------------------------

def run_cpu_side(report, iters):
    """Server-side CPU work for one 512x512 live frame: wire framing, decoding, depth, canny, resizing, jpeg."""
    from controlbridge_protocol import ControlNetSettings, ImageAttachment, JobSettings
    from controlbridge_protocol.framing import MessageReader, encode
    from controlbridge_protocol.messages import CLIENT_MESSAGES, LiveFrame

    from controlbridge.engine.generate import prepare_inputs
    from controlbridge.engine.model_manager import ModelManager
    from controlbridge.engine.models import LoadedModel, ModelSpec
    from controlbridge.imaging.codecs import encode_image
    from controlbridge.server.config import Limits
    from controlbridge.server.jobs import ServerOffer, frame_key, prepare_job
    scene = Scene(512)
    rgba = np.concatenate([scene.color, np.full((512, 512, 1), 255, np.uint8)], axis=2)
    settings = JobSettings(prompt="x", seed=1, controlnets={"depth": ControlNetSettings(),
                                                            "canny": ControlNetSettings()})
    msg = LiveFrame("f", settings, [ImageAttachment.raw_rgba8("color", 512, 512, rgba.tobytes()),
                                    ImageAttachment.raw_depth("depth", 512, 512, scene.depth.astype("<f4").tobytes())])
    # A model record with no modules: these steps never touch the network, only its size facts.
    model = LoadedModel("m", "sd15", 512, 64, None, {"depth": None, "canny": None}, "cpu", "fp32")
    offer = ServerOffer(ModelManager(model, ModelSpec()), Limits())
    result = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    steps = {
        "frame -> frames (encode)": lambda: encode(msg),
        "frames -> message (decode)": lambda: [MessageReader(CLIENT_MESSAGES).feed(f) for f in encode(msg)],
        "unchanged-frame check": lambda: frame_key(msg) == frame_key(msg),
        "check + decode attachments": lambda: prepare_job(msg, "c", offer, True),
        "depth normalize + canny + resize": lambda: prepare_inputs(model, settings, prepare_job(msg, "c", offer).inputs),
        "result jpeg encode (512x512)": lambda: encode_image(result, "jpeg"),
    }
    report.append("| server-side CPU step, 512x512 frame | p50 ms | p95 ms |")
    report.append("|---|---|---|")
    total = 0.0
    for label, fn in steps.items():
        p50, p95 = time_alone(fn, iters)
        if label == "depth normalize + canny + resize":
            base, _ = time_alone(lambda: prepare_job(msg, "c", offer), iters)
            p50, p95 = p50 - base, p95 - base      # prepare_job is timed on its own line above
        total += p50
        report.append(f"| {label} | {p50:.2f} | {p95:.2f} |")
    report.append(f"| **total** | **{total:.2f}** | |")
    report.append("")


def time_alone(fn, iters):
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return np.percentile(times, 50), np.percentile(times, 95)


# ---- the report ---------------------------------------------------------------------------------------------

def machine(device) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU only, {name}, {os.cpu_count()} cores, no GPU"


def versions() -> str:
    import diffusers
    import transformers
    try:
        import websockets
        ws = websockets.__version__
    except ImportError:
        ws = "absent"
    return (f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"transformers {transformers.__version__}, websockets {ws}")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma-separated (default {DEFAULT_ROWS})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                   help="every model's dtype, stock and ours (default bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--iters", type=int, default=30, help="timed calls per path")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per path first")
    p.add_argument("--group-budget-s", type=float, default=float("inf"),
                   help="stop a row's timed loop after this many seconds (the device script's time guard)")
    p.add_argument("--inputs", choices=("ready", "raw"), default="ready",
                   help="ready-made control maps for both stock and ours, or raw depth + color for both")
    p.add_argument("--tiny", action="store_true", help="the tiny models instead of full-size architectures")
    p.add_argument("--compile", action="store_true", help="torch.compile our UNet and ControlNets")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--json", type=Path, default=None, help="also append one JSON line per measured path here")
    p.add_argument("--note", default="", help="what this run tried, for the results file")
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    engine = "LiveEngine" if live_engine_class() else "engine.generate (no LiveEngine in this checkout)"
    report = [f"## {now} - {machine(args.device)}{' - tiny model dry run' if args.tiny else ''}",
              f"- {versions()}; commit {commit()}",
              f"- rows {','.join(rows)}; dtype {args.dtype}; iters {args.iters} (+{args.warmup} warm-up) per path, "
              f"interleaved; inputs {args.inputs}; ours = {engine}; compile {args.compile}"
              + (f"; {args.note}" if args.note else "")]
    results = []
    if "cpu-side" in rows:
        rows.remove("cpu-side")
        run_cpu_side(report, args.iters)
    if rows:
        run_rows(args, rows, report, results)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report.append(f"\n- process peak RSS {rss:.1f} GiB" + ("" if args.device.startswith("cuda") else
                                                           "; peak GiB is GPU memory: n/a on the CPU"))
    text = "\n".join(report) + "\n\n"
    print(text)
    with open(args.out, "a") as f:
        f.write(text)
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(dict(r, machine=machine(args.device), dtype_requested=args.dtype,
                                        tiny=args.tiny, when=now)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
