"""`controlbridge serve | generate | demo`."""
import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import List, Optional

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")   # before transformers is first imported

from controlbridge_protocol import (DEFAULT_URL, Accepted, Client, ConnectionFailed, ControlBridgeError,  # noqa: E402
                                    ControlNetSettings, Disconnected, ErrorCode, HiresSettings, JobError, JobFailed,
                                    JobSettings, LoraSettings, Progress, Result, StyleSettings)

from . import __version__  # noqa: E402
from .paths import default_output_dir  # noqa: E402
from .progress_bar import ProgressBar  # noqa: E402

TINY_NOTICE = "Note: the embedded tiny model has random weights. It makes noise, not art: use --model for a real one."


def _size(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}") from None


def _controlnet(text: str):
    name, sep, source = text.partition("=")
    if not sep or not name or not source:
        raise argparse.ArgumentTypeError(f"expected NAME=SOURCE such as depth=./controlnet-depth, got {text!r}")
    return name, source


def _lora(text: str):
    name, sep, weight = text.rpartition(":")
    try:
        return LoraSettings(name, float(weight)) if sep else LoraSettings(text)
    except ValueError:
        return LoraSettings(text)          # a colon inside the name, no weight


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


class _ShowDefaults(argparse.HelpFormatter):
    """Every option's default in its help, except where there is none (None/off) or the help names it already."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, [], argparse.SUPPRESS) or \
                not action.option_strings:
            return help_text
        return f"{help_text} (default: %(default)s)".lstrip()


DEFAULTS = JobSettings(prompt="")      # what the server uses for a setting the command line leaves out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="controlbridge", description="ControlNet img2img server for Blender and Unreal",
                                formatter_class=_ShowDefaults)
    p.add_argument("--version", action="version", version=f"controlbridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the generation server", formatter_class=_ShowDefaults)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    s.add_argument("--token", default=os.environ.get("CONTROLBRIDGE_TOKEN"),
                   help="require this token from clients (required off loopback; env CONTROLBRIDGE_TOKEN)")
    s.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed to connect, e.g. http://localhost:3000 (default: none)")
    s.add_argument("--model", default="tiny",
                   help="'tiny' (embedded, random weights), a diffusers folder or a hub id")
    s.add_argument("--controlnet", action="append", type=_controlnet, default=[], metavar="NAME=SOURCE",
                   help="a ControlNet folder or hub id, e.g. depth=lllyasviel/control_v11f1p_sd15_depth")
    s.add_argument("--taesd", help="tiny autoencoder for fast decoding of live frames and previews, "
                                   "e.g. madebyollin/taesd (SD1.5) or madebyollin/taesdxl (SDXL)")
    s.add_argument("--device", default="auto", help="auto, cuda, cuda:1, mps or cpu")
    s.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16")
    s.add_argument("--output-dir", type=Path, default=None, help=f"where results and their inputs are saved "
                                                                 f"(default: {default_output_dir()})")
    s.add_argument("--models-dir", type=Path, help="your ComfyUI-style models/ folder (checkpoints/, controlnet/, "
                                                   "loras/, vae/, upscale_models/, diffusers/)")
    s.add_argument("--memory-budget-gb", type=float,
                   help="unload least recently used models beyond this (default: 85%% of the GPU, half the RAM)")
    s.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet and ControlNets (slow start, faster frames; GPU)")
    s.add_argument("--cuda-graphs", action="store_true",
                   help="torch.compile with CUDA graphs (reduce-overhead): fewest per-frame launches in live mode; "
                        "each frame size is recorded once, at the live session's warm-up; CUDA only")
    s.add_argument("--parallel-controlnets", choices=("streams", "batched"), default="",
                   help="run two or more ControlNets side by side: on CUDA streams of their own (CUDA only), or "
                        "batched over stacked weights (their memory twice); not measured on a GPU yet, see "
                        "benchmarks/RESULTS.md")
    s.add_argument("--log-json", action="store_true",
                   help="log one JSON object per line (start-up, connections, jobs, shutdown) for machines")
    s.add_argument("--ray", metavar="auto|ADDRESS",
                   help="workers as Ray actors (pip install controlbridge[cluster]): auto starts a local Ray with "
                        "one worker per GPU; ADDRESS (e.g. 10.0.0.5:6379) joins a cluster started with `ray start`")
    s.add_argument("--workers", type=int, help="with --ray: this many workers (required where there is no GPU)")

    g = sub.add_parser("generate", help="send one job to a running server and save the result",
                       formatter_class=_ShowDefaults,
                       description="Settings left out come from --from-png's PNG when given, else the defaults shown.")
    g.add_argument("--url", default=DEFAULT_URL, help="the server")
    g.add_argument("--token", default=os.environ.get("CONTROLBRIDGE_TOKEN"), help="env CONTROLBRIDGE_TOKEN")
    g.add_argument("--from-png", type=Path, help="re-run the job stored in a PNG that ControlBridge wrote")
    g.add_argument("--color", type=Path, help="the camera's color image")
    g.add_argument("--depth", type=Path, help="raw depth (.npy float32, .exr) or a ready-made depth map (.png)")
    g.add_argument("--depth-far", type=float, help="raw depth at or beyond this is background")
    g.add_argument("--canny", type=Path, help="a ready-made edge image (default: computed on the server)")
    g.add_argument("--prompt")
    g.add_argument("--negative", help="negative prompt (default: none)")
    g.add_argument("--seed", type=int, help="-1 or absent: random (the result reports the seed used)")
    g.add_argument("--steps", type=int, help=f"sampling steps; img2img runs steps x strength of them "
                                             f"(default: {DEFAULTS.steps})")
    g.add_argument("--cfg", type=float, help=f"prompt guidance scale (default: {DEFAULTS.cfg:g})")
    g.add_argument("--strength", "--denoise", dest="denoise", type=float,
                   help=f"how much of the color to change, 0.01-1 (default: {DEFAULTS.denoise:g})")
    g.add_argument("--sampler", help=f"see --list-samplers (default: {DEFAULTS.sampler})")
    g.add_argument("--list-samplers", action=_ListSamplers, help="print the sampler names and exit")
    g.add_argument("--depth-weight", type=float, help=f"0 switches the depth ControlNet off "
                                                      f"(default: {DEFAULTS.controlnets['depth'].weight:g})")
    g.add_argument("--canny-weight", type=float, help=f"0 switches the canny ControlNet off "
                                                      f"(default: {DEFAULTS.controlnets['canny'].weight:g})")
    g.add_argument("--canny-low", type=int, help=f"edge threshold (default: {DEFAULTS.canny_low})")
    g.add_argument("--canny-high", type=int, help=f"edge threshold (default: {DEFAULTS.canny_high})")
    g.add_argument("--control", action="append", type=_control, default=[], metavar="NAME=WEIGHT[:START:END]",
                   help="a ControlNet of any kind the server lists (lineart, softedge, normal, openpose, tile, ...): "
                        "its weight (0 switches it off) and optionally the fraction of the steps it acts in, e.g. "
                        "--control lineart=0.8:0:0.6 (repeatable)")
    g.add_argument("--control-model", action="append", type=_pair, default=[], metavar="NAME=FILE",
                   help="that ControlNet's file from the server's library (a union file runs in NAME's mode)")
    g.add_argument("--estimate", action="append", type=_pair, default=[], metavar="NAME=ESTIMATOR",
                   help="make that ControlNet's map from the color with a server estimator, e.g. "
                        "--estimate lineart=lineart (see `controlbridge models`)")
    g.add_argument("--map", action="append", type=_pair, default=[], metavar="NAME=IMAGE",
                   help="a ready-made map or pass for the ControlNet NAME, e.g. --map normal=normals.png "
                        "(camera-space normals, as a DCC sends them) or --map lineart=lines.png")
    g.add_argument("--size", type=_size, help="output WIDTHxHEIGHT (default: the color image's size)")
    g.add_argument("--model", help="the model to use (default: the server's)")
    g.add_argument("--preview-every", type=int, default=0, help="ask for a preview every N steps (default: 0, none)")
    g.add_argument("--prompts-file", type=Path, help="render each line's prompt (with all other settings)")
    g.add_argument("--batch", type=_positive, help=f"images per prompt, from consecutive seeds "
                                                  f"(default: {DEFAULTS.batch_size})")
    g.add_argument("--lora", action="append", type=_lora, default=[], metavar="NAME[:WEIGHT]",
                   help="a LoRA from the server's library, e.g. --lora detail.safetensors:0.7 (repeatable)")
    g.add_argument("--vae", help="a VAE from the server's library")
    g.add_argument("--hires", type=float, metavar="SCALE", help="hires fix: upscale by SCALE and refine")
    g.add_argument("--hires-denoise", type=float, default=0.35, help="strength of the hires refinement")
    g.add_argument("--hires-upscaler", default="lanczos", help="lanczos, latent, or a model from upscale_models/")
    g.add_argument("--style", type=Path, metavar="IMAGE",
                   help="style reference image (IP-Adapter from the server's ipadapter/ folder; SD1.5 and SDXL)")
    g.add_argument("--style-weight", type=float, help="how strongly --style steers the look, 0-2 (default: 0.6)")
    g.add_argument("-o", "--output", type=Path, required=True, help="where to write the result PNG")
    g.add_argument("--timings", action="store_true",
                   help="print where the server's time went for each image (decode, queued, load, model, save)")

    m = sub.add_parser("models", formatter_class=_ShowDefaults,
                       help="list what a running server can use: checkpoints, ControlNets, LoRAs "
                            "(with trigger words), VAEs, upscalers, samplers, and files it skipped")
    m.add_argument("--url", default=DEFAULT_URL, help="the server")
    m.add_argument("--token", default=os.environ.get("CONTROLBRIDGE_TOKEN"))
    m.add_argument("--json", action="store_true", help="print the server's own listing as JSON")

    st = sub.add_parser("status", formatter_class=_ShowDefaults,
                        help="what a running server has loaded, each component's dtype and device, and its queue")
    st.add_argument("--url", default=DEFAULT_URL, help="the server")
    st.add_argument("--token", default=os.environ.get("CONTROLBRIDGE_TOKEN"))
    st.add_argument("--json", action="store_true", help="print the server's answer as JSON")

    d = sub.add_parser("demo", help="start a server with the tiny model and render a synthetic blockout through it",
                       formatter_class=_ShowDefaults)
    d.add_argument("--out", type=Path, default=Path("controlbridge-demo"), help="folder for inputs and result")
    d.add_argument("--size", type=_size, default=(640, 360))
    d.add_argument("--steps", type=int, default=12)
    d.add_argument("--seed", type=int, default=42)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "models":
            return cmd_models(args)
        if args.command == "status":
            return cmd_status(args)
        return cmd_demo(args)
    except JobFailed as e:
        hint = " (`controlbridge models` lists what the server has)" if e.code == ErrorCode.UNKNOWN_MODEL else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return 1
    except (ControlBridgeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_serve(args) -> int:
    from .engine.models import ModelSpec
    from .server import log_setup
    from .server.app import serve_forever
    from .server.config import ServerConfig
    config = ServerConfig(host=args.host, port=args.port, token=args.token or None,
                          allowed_origins=list(args.allow_origin), compile=args.compile,
                          cuda_graphs=args.cuda_graphs, parallel_controlnets=args.parallel_controlnets,
                          models_dir=args.models_dir, memory_budget_gb=args.memory_budget_gb,
                          ray=args.ray, workers=args.workers,
                          model=ModelSpec(model=args.model, controlnets=dict(args.controlnet), taesd=args.taesd,
                                          device=args.device, dtype=args.dtype))
    if args.output_dir:
        config.output_dir = args.output_dir
    log = log_setup.configure(json_lines=args.log_json).info
    if args.model == "tiny":
        log(TINY_NOTICE)
    serve_forever(config, log=log)
    return 0


def cmd_models(args) -> int:
    import json

    from .model_listing import format_listing
    with Client(args.url, args.token, f"controlbridge-cli {__version__}") as client:
        caps = client.capabilities
    if args.json:
        print(json.dumps({"models": caps.models, "default_model": caps.default_model, "library": caps.library,
                          "samplers": caps.samplers}, indent=2))
    else:
        print(format_listing(caps, args.url))
    return 0


def cmd_status(args) -> int:
    import json

    from .model_listing import format_status
    with Client(args.url, args.token, f"controlbridge-cli {__version__}") as client:
        pong = client.status()
    if args.json:
        print(json.dumps({"queued": pong.queued, "running": pong.running, "your_jobs": pong.your_jobs,
                          "models": pong.models, "workers": pong.workers}, indent=2))
    else:
        print(format_status(pong, args.url))
    return 0


class _ListSamplers(argparse.Action):
    """`generate --list-samplers`: print the sampler names and exit, like --version (no other flag needed)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .engine.samplers import SAMPLERS
        print("\n".join(SAMPLERS))
        parser.exit()


def _pair(text: str):
    """NAME=VALUE (both non-empty)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _control(text: str):
    """NAME=WEIGHT[:START:END] -> (name, {weight, start, end})."""
    name, value = _pair(text)
    parts = value.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT or NAME=WEIGHT:START:END, got {text!r}")
    return name, dict(zip(("weight", "start", "end"), numbers))


def settings_from_args(args, base: Optional[JobSettings] = None) -> JobSettings:
    """Job settings from the command line, on top of `base` (a stored job) when given."""
    s = base or JobSettings(prompt="")
    overrides = {k: getattr(args, k) for k in ("seed", "steps", "cfg", "denoise", "sampler", "model",
                                               "canny_low", "canny_high") if getattr(args, k) is not None}
    if args.prompt is not None:
        overrides["prompt"] = args.prompt
    if args.negative is not None:
        overrides["negative_prompt"] = args.negative
    if args.size:
        overrides["width"], overrides["height"] = args.size
    overrides["preview_every"] = args.preview_every
    if args.batch is not None:
        overrides["batch_size"] = args.batch
    if args.lora:
        overrides["loras"] = list(args.lora)
    if args.vae is not None:
        overrides["vae"] = args.vae
    if args.hires is not None:
        overrides["hires"] = HiresSettings(scale=args.hires, denoise=args.hires_denoise, upscaler=args.hires_upscaler)
    if args.style is not None or args.style_weight is not None:
        if args.style is None and s.style is None:
            raise ValueError("--style-weight needs a style image: --style IMAGE")
        style = s.style or StyleSettings()
        overrides["style"] = style if args.style_weight is None else dataclasses.replace(style,
                                                                                         weight=args.style_weight)
    s = s.replace(**overrides)
    controlnets = dict(s.controlnets)
    windows = [(name, dict(weight=weight)) for name, weight in (("depth", args.depth_weight),
                                                                  ("canny", args.canny_weight)) if weight is not None]
    for name, window in windows + list(args.control):
        if window["weight"] == 0:
            controlnets.pop(name, None)
        else:
            controlnets[name] = dataclasses.replace(controlnets.get(name, ControlNetSettings()), **window)
    for name, model in args.control_model:
        if name not in controlnets:
            raise ValueError(f"--control-model {name}={model}: switch that ControlNet on with --control {name}=WEIGHT")
        controlnets[name] = dataclasses.replace(controlnets[name], model=model)
    estimate = {**s.estimate, **dict(args.estimate)}
    return s.replace(controlnets=controlnets, estimate={k: v for k, v in estimate.items() if k in controlnets})


def cmd_generate(args) -> int:
    from .imaging.files import depth_file_attachment, image_file_attachment
    if args.from_png:
        from .server.outputs import load_input, read_job
        stored = read_job(args.from_png)
        base = JobSettings.from_dict(stored["settings"])     # its seed is the one actually used
        images = {name: load_input(args.from_png, entry) for name, entry in stored["inputs"].items()}
    else:
        if not args.color or (args.prompt is None and not args.prompts_file):
            raise ValueError("give --color and --prompt or --prompts-file (or --from-png FILE)")
        base, images = None, {"color": image_file_attachment("color", args.color)}
    if args.color and args.from_png:
        images["color"] = image_file_attachment("color", args.color)
    for name, path in args.map:
        images[name] = image_file_attachment(name, Path(path))
    if args.depth:
        images["depth"] = depth_file_attachment(args.depth, args.depth_far)
    if args.canny:
        images["canny"] = image_file_attachment("canny", args.canny)
    if args.style:
        images["style"] = image_file_attachment("style", args.style)
    settings = settings_from_args(args, base)
    if not args.from_png and "depth" not in images:
        settings.controlnets.pop("depth", None)     # nothing to guide it
    prompts = [settings.prompt]
    if args.prompts_file:
        lines = Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
        prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not prompts:
            raise ValueError(f"{args.prompts_file}: no prompts (one per line; # starts a comment)")
    jobs = [(settings.replace(prompt=prompt), list(images.values())) for prompt in prompts]
    return _run_and_save(args.url, args.token, jobs, args.output, timings=args.timings)


def _run_and_save(url, token, jobs, output: Path, client_name: str = "", timings: bool = False) -> int:
    """Send every (settings, images) job at once, then save each result as it comes, with one progress bar
    over the whole batch. One image: written to `output`; several: <output stem>_001.png, _002.png, ..."""
    bar = ProgressBar()
    expected = sum(settings.batch_size for settings, _ in jobs)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = []
    told = set()        # notices said once per run, not once per job of a batch

    def tell_once(text: str) -> None:
        if text and text not in told:
            told.add(text)
            bar.message(f"note: {text}")

    from .server.outputs import inputs_folder, save_inputs
    with Client(url, token, client_name or f"controlbridge-cli {__version__}") as client:
        requests, sent = {}, {}     # request id -> its settings, its images
        for settings, images in jobs:
            request_id = client.submit(settings, images)
            requests[request_id], sent[request_id] = settings, images
        jobs_of_mine = {}    # job id -> its settings
        while len(written) < expected:
            event = client.next_event(timeout=None)
            if isinstance(event, Accepted) and event.request_id in requests:
                jobs_of_mine[event.job_id] = requests[event.request_id]
                tell_once(event.notice)          # e.g. the inputs are centre-cropped to the output's aspect
                if event.queue_position:
                    bar.message(f"queued: {event.queue_position} job(s) ahead")
            elif isinstance(event, Progress) and event.job_id in jobs_of_mine:
                asked = jobs_of_mine[event.job_id].steps
                if event.total and event.total < asked and "hires" not in (event.status or ""):
                    tell_once(f"{event.total} of the {asked} steps run: at strength "
                              f"{jobs_of_mine[event.job_id].denoise:g} img2img starts part-way through the schedule "
                              f"(--strength 1 runs them all)")
                detail = event.status or ("(preview)" if event.preview else "")
                step = f"step {event.step}/{event.total}" if event.total else ""
                bar.update("images", len(written), expected, " ".join(filter(None, [step, detail])),
                           step=event.step, steps=event.total)
            elif isinstance(event, Result) and event.request_id in requests:
                path = output if expected == 1 else output.with_name(f"{output.stem}_{len(written) + 1:03d}.png")
                # Its inputs beside it, as the server keeps them: `--from-png` re-runs this copy on its own.
                save_inputs(inputs_folder(path), {image.name: image for image in sent[event.request_id]})
                path.write_bytes(event.image.data)
                written.append(path)
                bar.end()
                print(f"wrote {path} ({event.image.width}x{event.image.height}, seed {event.seed}); "
                      f"server copy: {event.saved_path}", flush=True)
                if timings and event.timings:
                    print(f"  server time: {format_timings(event.timings)}", flush=True)
            elif isinstance(event, JobError) and (event.request_id in requests or event.job_id in jobs_of_mine):
                raise JobFailed(event.code, _name_the_flag(event.message), event.job_id)
            elif isinstance(event, Disconnected):
                raise ConnectionFailed(event.reason)
    bar.end()
    return 0


def format_timings(timings: dict) -> str:
    """'decode 1.2 ms, queued 0.0 ms, ..., total 840.2 ms': the server's own order, total last."""
    parts = [(k, v) for k, v in timings.items() if k != "total"] + \
        ([("total", timings["total"])] if "total" in timings else [])
    return ", ".join(f"{k} {v:.1f} ms" for k, v in parts)


# The server names settings as the protocol does; the user typed these flags.
FLAGS = {"denoise": "--strength", "batch_size": "--batch", "hires.scale": "--hires", "hires.denoise": "--hires-denoise",
         "controlnets.depth.weight": "--depth-weight", "controlnets.canny.weight": "--canny-weight",
         "canny_low": "--canny-low", "canny_high": "--canny-high", "preview_every": "--preview-every",
         "steps": "--steps", "cfg": "--cfg", "seed": "--seed", "style.weight": "--style-weight"}


def _name_the_flag(message: str) -> str:
    """'denoise is 1.5; ...' -> '--strength is 1.5; ... (denoise on the server)'."""
    for name, flag in FLAGS.items():
        if message.startswith(f"{name} is "):
            return f"{flag}{message[len(name):]}" + ("" if flag == f"--{name}" else f" ({name} on the server)")
    return message


def cmd_demo(args) -> int:
    import numpy as np
    from PIL import Image

    from controlbridge_protocol import ImageAttachment

    from .demo_scene import render_blockout
    from .engine.models import ModelSpec
    from .imaging.depth import depth_to_control
    from .server.app import ServerThread
    from .server.config import ServerConfig

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    width, height = args.size
    print(TINY_NOTICE)
    rgba, depth = render_blockout(width, height)
    Image.fromarray(rgba).save(out / "input_color.png")
    np.save(out / "input_depth.npy", depth)
    Image.fromarray((depth_to_control(depth) * 255).round().astype(np.uint8)).save(out / "input_depth_map.png")
    print(f"Rendered a synthetic blockout ({width}x{height}): {out / 'input_color.png'}, {out / 'input_depth.npy'}")

    config = ServerConfig(port=0, output_dir=out / "server-outputs", model=ModelSpec("tiny"))
    with ServerThread(config, log=print) as server:
        settings = JobSettings(prompt="a quiet street of brick houses at dusk, cinematic lighting",
                               negative_prompt="blurry", seed=args.seed, steps=args.steps, cfg=6.0,
                               sampler="dpmpp_2m", denoise=0.8, preview_every=4)
        images = [ImageAttachment.raw_rgba8("color", width, height, rgba.tobytes()),
                  ImageAttachment.raw_depth("depth", width, height, depth.astype("<f4").tobytes())]
        print(f"Sending the job over {server.url} (depth + canny ControlNets, {args.steps} steps) ...")
        _run_and_save(server.url, None, [(settings, images)], out / "result.png", f"controlbridge-demo {__version__}",
                      timings=True)
    return 0
