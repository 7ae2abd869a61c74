#!/usr/bin/env python3
"""Speed of ControlBridge's generation path against the stock diffusers pipeline, side by side in one run.

    python benchmarks/speed.py                     # on a CUDA machine: rows a, b, c, server-a, server-b
    python benchmarks/speed.py --rows cpu-side     # server-side CPU work per 512x512 frame (any machine)
    python benchmarks/speed.py --tiny --device cpu # dry run of every row with the tiny model

Full-size SD1.5 / SDXL architectures are built from benchmarks/configs/ with random weights (speed does not
depend on the weights' values). Rows:
  a  SD1.5 + depth ControlNet, 512x512, 4 steps run, no CFG, TAESD decode (live)
  b  the same with depth + canny ControlNets
  c  SDXL + depth ControlNet, 1024x1024, 20 steps x strength 0.6 = 12 run, CFG 5, full VAE (quality)
  server-a / server-b   a and b through the whole server: live frames over a localhost websocket, jpeg back
Each GPU row: stock StableDiffusion(XL)ControlNetImg2ImgPipeline (bf16, SDPA, no compile, PIL in and out,
same steps) and ours; latency p50/p99, frames/s, FLOPs of one call, the compute floor at the measured bf16
matmul rate and the fraction of it reached, peak GPU memory. Results are appended to benchmarks/RESULTS.md.
"""
import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
ROWS = {
    "a": dict(family="sd15", controlnets=["depth"], size=512, steps=8, denoise=0.5, cfg=1.0, fast_decode=True),
    "b": dict(family="sd15", controlnets=["depth", "canny"], size=512, steps=8, denoise=0.5, cfg=1.0,
              fast_decode=True),
    "c": dict(family="sdxl", controlnets=["depth"], size=1024, steps=20, denoise=0.6, cfg=5.0, fast_decode=False),
}


def config(family, name):
    d = json.loads((CONFIGS / family / f"{name}.json").read_text())
    return {k: v for k, v in d.items() if not k.startswith("_")}


def build_full_size(family, device, dtype):
    """A LoadedModel of the real architecture with random weights, created directly on the device."""
    from diffusers import (AutoencoderKL, AutoencoderTiny, ControlNetModel, EulerDiscreteScheduler,
                           StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from controlbridge.engine.models import NATIVE_RESOLUTION, LoadedModel
    from controlbridge.engine.tiny_model import ensure_tiny_model
    tokenizer = CLIPTokenizer.from_pretrained(ensure_tiny_model().base / "tokenizer")   # ids < vocab: fine
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(config(family, "unet"))
        vae = AutoencoderKL.from_config(config(family, "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**config(family, "text_encoder")))
        cn_channels = config(family, "controlnet")["conditioning_embedding_out_channels"]
        controlnets = {n: ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cn_channels)
                       for n in ("depth", "canny")}
        taesd = AutoencoderTiny(**config(family, "taesd")) if family == "sd15" else None
        scheduler = EulerDiscreteScheduler.from_config(config(family, "scheduler"))
        if family == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config(family, "text_encoder_2")))
            base = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                             tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                             scheduler=scheduler)
        else:
            base = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                           scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    base.to(device, dtype)
    for module in [*controlnets.values()] + ([taesd] if taesd else []):
        module.to(device, dtype)
    base.set_progress_bar_config(disable=True)
    return LoadedModel(name=f"{family}-random", family=family, native_resolution=NATIVE_RESOLUTION[family],
                       size_multiple=64, base=base, controlnets=controlnets, device=device,
                       dtype_name=str(dtype).split(".")[-1], taesd=taesd)


def scene(size):
    from controlbridge.demo_scene import render_blockout
    rgba, depth = render_blockout(size, size)
    return rgba, depth


def stock_call(model, row, color_pil, control_pils, generator):
    """The stock diffusers pipeline, as a user would call it: PIL in, PIL out."""
    from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionXLControlNetImg2ImgPipeline
    cls = StableDiffusionXLControlNetImg2ImgPipeline if row["family"] == "sdxl" else \
        StableDiffusionControlNetImg2ImgPipeline
    cns = [model.controlnets[n] for n in row["controlnets"]]
    pipe = cls.from_pipe(model.base, controlnet=cns[0] if len(cns) == 1 else cns,
                         vae=model.taesd if row["fast_decode"] else model.base.vae)
    pipe.set_progress_bar_config(disable=True)
    return lambda: pipe(prompt="a street at dusk", image=color_pil,
                        control_image=control_pils[0] if len(cns) == 1 else control_pils,
                        strength=row["denoise"], num_inference_steps=row["steps"], guidance_scale=row["cfg"],
                        generator=generator, output_type="pil").images[0]


def ours_call(model, row, rgba, depth):
    """ControlBridge's engine: numpy in (raw depth normalized, canny computed), jpeg bytes out."""
    from controlbridge_protocol import ControlNetSettings, JobSettings

    from controlbridge.engine.generate import JobInputs, generate
    from controlbridge.imaging.codecs import encode_image
    settings = JobSettings(prompt="a street at dusk", seed=1, steps=row["steps"], denoise=row["denoise"],
                           cfg=row["cfg"], sampler="euler", fast_decode=row["fast_decode"],
                           controlnets={n: ControlNetSettings() for n in row["controlnets"]})
    inputs = JobInputs(rgba[:, :, :3].copy(), depth)
    return lambda: encode_image(generate(model, settings, inputs).image, "jpeg")


def time_it(fn, iters, device):
    for _ in range(3):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return np.percentile(times, 50), np.percentile(times, 99)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


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


def peak_memory_gib(device):
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def run_gpu_rows(args, rows, report):
    from controlbridge.engine.acceleration import accelerate
    from controlbridge.engine.models import ModelSpec, load_model
    from controlbridge.imaging.depth import depth_to_control
    from controlbridge.imaging.canny import canny_edges
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    rate = matmul_rate(args.device, dtype)
    report.append(f"- measured dense matmul rate: {rate / 1e12:.1f} TFLOP/s ({dtype})")
    report.append("")
    report.append("| row | path | p50 ms | p99 ms | frames/s | GFLOP/call | floor ms | of floor | peak GiB |")
    report.append("|---|---|---|---|---|---|---|---|---|")
    built = {}
    for name in rows:
        base_row = ROWS[name.replace("server-", "")]
        row = dict(base_row)
        family = row["family"]
        if args.tiny:                         # one SD1.5-architecture tiny model stands in for every family
            row.update(size=128, family="sd15")
            family = "sd15"
        if family not in built:
            model = load_model(ModelSpec("tiny"), log=lambda m: None) if args.tiny else \
                build_full_size(family, args.device, dtype)
            built[family] = {"model": model, "accelerated": False}
        model = built[family]["model"]
        rgba, depth = scene(row["size"])
        color_pil = Image.fromarray(rgba[:, :, :3])
        depth_pil = Image.fromarray((depth_to_control(depth) * 255).astype(np.uint8)).convert("RGB")
        edges_pil = Image.fromarray(canny_edges(rgba[:, :, :3], 100, 200)).convert("RGB")
        controls = [depth_pil if n == "depth" else edges_pil for n in row["controlnets"]]
        results = []
        if not name.startswith("server-"):
            if built[family]["accelerated"]:
                print(f"row {name}: stock skipped (modules already accelerated; run this row first)")
            else:
                stock = stock_call(model, row, color_pil, controls, torch.Generator("cpu").manual_seed(1))
                flops = count_flops(stock)
                reset_peak(args.device)
                p50, p99 = time_it(stock, args.iters, args.device)
                results.append(("stock diffusers", p50, p99, flops, peak_memory_gib(args.device)))
        if not built[family]["accelerated"] and not args.tiny:
            accelerate(model, args.compile, log=print)
            built[family]["accelerated"] = True
        ours = ours_call(model, row, rgba, depth) if not name.startswith("server-") else \
            server_call(model, row, rgba, depth)
        flops = count_flops(ours) if not name.startswith("server-") and not args.compile else \
            (results[0][3] if results else float("nan"))
        reset_peak(args.device)
        p50, p99 = time_it(ours, args.iters, args.device)
        results.append(("ControlBridge" + (" server" if name.startswith("server-") else " engine"), p50, p99, flops,
                        peak_memory_gib(args.device)))
        for path, p50, p99, flops, peak in results:
            floor = flops / rate * 1000 if flops == flops else float("nan")
            report.append(f"| {name} | {path} | {p50:.1f} | {p99:.1f} | {1000 / p50:.1f} | {flops / 1e9:.0f} | "
                          f"{floor:.2f} | {floor / p50:.0%} | {peak:.1f} |")
            print(report[-1], flush=True)


def reset_peak(device):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def server_call(model, row, rgba, depth):
    """One live frame through the whole server: websocket in, jpeg out, on localhost."""
    from controlbridge_protocol import Client, ControlNetSettings, ImageAttachment, JobSettings, LiveResult

    from controlbridge.server.app import ServerThread
    from controlbridge.server.config import ServerConfig
    server = ServerThread(ServerConfig(port=0, output_dir=Path("/tmp/controlbridge-bench")), model=model).start()
    client = Client(server.url, client_name="benchmark")
    client.connect()
    settings = JobSettings(prompt="a street at dusk", seed=1, steps=row["steps"], denoise=row["denoise"],
                           cfg=row["cfg"], sampler="euler", fast_decode=row["fast_decode"], result_encoding="jpeg",
                           controlnets={n: ControlNetSettings() for n in row["controlnets"]})
    h, w = depth.shape
    frame = {"n": 0}

    def one_frame():
        frame["n"] += 1          # a new seed each frame, so the server never skips it as unchanged
        client.send_live_frame(settings.replace(seed=frame["n"]),
                               [ImageAttachment.raw_rgba8("color", w, h, rgba.tobytes()),
                                ImageAttachment.raw_depth("depth", w, h, depth.astype("<f4").tobytes())])
        while not isinstance(client.next_event(timeout=60), LiveResult):
            pass
    return one_frame


def run_cpu_side(report, iters):
    """Server-side CPU work for one 512x512 live frame: wire framing, decoding, depth, canny, resizing, jpeg."""
    from controlbridge_protocol import ControlNetSettings, ImageAttachment, JobSettings
    from controlbridge_protocol.framing import MessageReader, encode
    from controlbridge_protocol.messages import CLIENT_MESSAGES, LiveFrame

    from controlbridge.engine.generate import prepare_inputs
    from controlbridge.engine.models import LoadedModel
    from controlbridge.imaging.codecs import encode_image
    from controlbridge.server.config import Limits
    from controlbridge.server.jobs import ServerOffer, frame_fingerprint, prepare_job
    rgba, depth = scene(512)
    settings = JobSettings(prompt="x", seed=1, controlnets={"depth": ControlNetSettings(),
                                                            "canny": ControlNetSettings()})
    msg = LiveFrame("f", settings, [ImageAttachment.raw_rgba8("color", 512, 512, rgba.tobytes()),
                                    ImageAttachment.raw_depth("depth", 512, 512, depth.astype("<f4").tobytes())])
    offer = ServerOffer("m", ["canny", "depth"], Limits())
    model = LoadedModel("m", "sd15", 512, 64, None, {}, "cpu", "fp32")
    result = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    steps = {
        "frame -> frames (encode)": lambda: encode(msg),
        "frames -> message (decode)": lambda: [MessageReader(CLIENT_MESSAGES).feed(f) for f in encode(msg)],
        "unchanged-frame fingerprint": lambda: frame_fingerprint(msg),
        "check + decode attachments": lambda: prepare_job(msg, "c", offer, True),
        "depth normalize + canny + resize": lambda: prepare_inputs(model, settings, prepare_job(msg, "c", offer).inputs),
        "result jpeg encode (512x512)": lambda: encode_image(result, "jpeg"),
    }
    report.append("| server-side CPU step, 512x512 frame | p50 ms | p99 ms |")
    report.append("|---|---|---|")
    total = 0.0
    for label, fn in steps.items():
        p50, p99 = time_it(fn, iters, "cpu")
        if label == "depth normalize + canny + resize":
            base, _ = time_it(lambda: prepare_job(msg, "c", offer), iters, "cpu")
            p50, p99 = p50 - base, p99 - base      # prepare_job is timed on its own line above
        total += p50
        report.append(f"| {label} | {p50:.2f} | {p99:.2f} |")
    report.append(f"| **total** | **{total:.2f}** | |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="a,b,c,server-a,server-b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--tiny", action="store_true", help="the tiny model instead of full-size architectures")
    p.add_argument("--compile", action="store_true", help="torch.compile our UNet and ControlNets")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--note", default="", help="what this run tried, for the results file")
    args = p.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    import diffusers
    report = [f"## {datetime.date.today()} - {machine}{' - tiny model dry run' if args.tiny else ''}",
              f"- torch {torch.__version__}, diffusers {diffusers.__version__}, iters {args.iters}, "
              f"compile {args.compile}{' - ' + args.note if args.note else ''}"]
    if "cpu-side" in rows:
        run_cpu_side(report, args.iters)
        rows.remove("cpu-side")
    if rows:
        run_gpu_rows(args, rows, report)
    text = "\n".join(report) + "\n\n"
    print(text)
    with open(args.out, "a") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
