"""The command line, as a user runs it: demo, generate with each depth format, re-run from a PNG."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from controlbridge.cli import main
from controlbridge.demo_scene import render_blockout
from controlbridge.server.outputs import read_job


@pytest.fixture
def scene_files(tmp_path):
    rgba, depth = render_blockout(160, 90)
    color = tmp_path / "color.png"
    Image.fromarray(rgba[:, :, :3]).save(color)
    npy = tmp_path / "depth.npy"
    np.save(npy, depth)
    return color, npy, depth


def run_cli(*args):
    return main([str(a) for a in args])


def test_demo_end_to_end(tmp_path, capsys):
    assert run_cli("demo", "--out", tmp_path / "demo", "--size", "192x108", "--steps", "4") == 0
    out = capsys.readouterr().out
    assert "noise, not art" in out
    result = tmp_path / "demo" / "result.png"
    assert Image.open(result).size == (192, 108)
    for name in ("input_color.png", "input_depth.npy", "input_depth_map.png"):
        assert (tmp_path / "demo" / name).is_file()
    meta = read_job(result)
    assert meta["settings"]["seed"] == 42 and set(meta["inputs"]) == {"color", "depth"}
    assert meta["settings"]["controlnets"].keys() == {"depth", "canny"}


def test_generate_with_npy_depth_and_rerun_from_png(server, scene_files, tmp_path, capsys):
    color, npy, _ = scene_files
    first = tmp_path / "first.png"
    assert run_cli("generate", "--url", server.url, "--color", color, "--depth", npy, "--prompt", "a castle",
                   "--negative", "fog", "--steps", "5", "--cfg", "4.5", "--strength", "0.9",
                   "--sampler", "euler_a", "--depth-weight", "0.7", "--size", "200x112", "-o", first) == 0
    assert "wrote" in capsys.readouterr().out
    meta = read_job(first)
    s = meta["settings"]
    assert (s["prompt"], s["negative_prompt"], s["steps"], s["cfg"], s["denoise"], s["sampler"]) == \
        ("a castle", "fog", 5, 4.5, 0.9, "euler_a")
    assert s["controlnets"]["depth"]["weight"] == 0.7 and 0 <= s["seed"]
    assert Image.open(first).size == (200, 112)

    # The server's copy sits beside its inputs; re-running it gives the same pixels.
    server_copy = next(server.server.config.output_dir.glob("*.png"))
    again = tmp_path / "again.png"
    assert run_cli("generate", "--url", server.url, "--from-png", server_copy, "-o", again) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    assert read_job(again)["settings"] == s
    # ... and a flag on top of it changes just that
    variant = tmp_path / "variant.png"
    assert run_cli("generate", "--url", server.url, "--from-png", server_copy, "--seed", "99", "-o", variant) == 0
    assert read_job(variant)["settings"]["seed"] == 99


def test_generate_with_exr_and_16bit_png_depth(server, scene_files, tmp_path):
    import OpenEXR
    color, _, depth = scene_files
    exr = tmp_path / "depth.exr"
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {"ViewLayer.Depth.Z": depth}) as f:
        f.write(str(exr))
    png16 = tmp_path / "depth16.png"
    Image.fromarray((np.linspace(0, 65535, 160 * 90).reshape(90, 160)).astype(np.uint16)).save(png16)
    for depth_file in (exr, png16):
        out = tmp_path / f"out_{depth_file.suffix[1:]}.png"
        assert run_cli("generate", "--url", server.url, "--color", color, "--depth", depth_file,
                       "--prompt", "x", "--steps", "2", "--seed", "1", "-o", out) == 0
        inputs = read_job(next(p for p in server.server.config.output_dir.glob("*.png")
                               if read_job(p)["job_id"] == read_job(out)["job_id"]))["inputs"]
        assert inputs["depth"]["encoding"] == ("raw_f32" if depth_file is exr else "png")


def test_cli_errors_are_one_clear_line(server, scene_files, tmp_path, capsys):
    color, npy, _ = scene_files
    cases = [
        (["--url", server.url, "--color", tmp_path / "missing.png", "--prompt", "x"], "missing.png: no such file"),
        (["--url", "ws://127.0.0.1:9", "--color", color, "--prompt", "x"], "cannot reach a ControlBridge server"),
        (["--url", server.url, "--color", color, "--prompt", "x", "--sampler", "magic"], "unknown sampler"),
        (["--url", server.url, "--color", color, "--depth", color.with_suffix(".txt"), "--prompt", "x"],
         "no such file"),
        (["--url", server.url, "--from-png", color], "no ControlBridge settings"),
    ]
    for args, words in cases:
        assert run_cli("generate", *args, "-o", tmp_path / "o.png") == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1, err


def test_console_script_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "controlbridge", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("controlbridge ")


def test_prompts_file_and_batch_render_every_image_with_its_settings(server, scene_files, tmp_path, capsys):
    color, npy, _ = scene_files
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a castle\n\n# a comment\na lighthouse at night\n")
    out = tmp_path / "shots" / "shot.png"
    assert run_cli("generate", "--url", server.url, "--color", color, "--depth", npy, "--prompts-file", prompts,
                   "--batch", "2", "--seed", "10", "--steps", "2", "-o", out) == 0
    files = sorted(out.parent.glob("shot_*.png"))
    assert [f.name for f in files] == [f"shot_{i:03d}.png" for i in range(1, 5)]
    jobs = sorted((read_job(f)["settings"]["prompt"], read_job(f)["settings"]["seed"]) for f in files)
    assert jobs == [("a castle", 10), ("a castle", 11), ("a lighthouse at night", 10), ("a lighthouse at night", 11)]
    assert capsys.readouterr().out.count("wrote ") == 4


def _help(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "controlbridge", *args, "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    return " ".join(done.stdout.split())     # argparse wraps lines wherever the terminal width says


def test_help_shows_the_defaults():                                              # issue 12 item 16
    generate = _help("generate")
    for words in ("--url URL the server (default: ws://127.0.0.1:8765)", "(default: 20)", "(default: 7)",
                  "--sampler SAMPLER see --list-samplers (default: euler_a)", "(default: 0.75)",
                  "--hires-upscaler HIRES_UPSCALER lanczos, latent, or a model from upscale_models/ "
                  "(default: lanczos)"):
        assert words in generate, words
    serve = _help("serve")
    for words in ("--port PORT port (0: any free port) (default: 8765)", "(default 127.0.0.1: this machine only)",
                  "--device DEVICE auto, cuda, cuda:1, mps or cpu (default: auto)", "--model MODEL 'tiny'"):
        assert words in serve, words
    assert "(default: None)" not in generate + serve


def test_newcomer_mistakes_get_clear_words(server, scene_files, tmp_path, capsys):   # issue 12 item 13
    color, npy, depth = scene_files
    out = tmp_path / "o.png"
    with pytest.raises(SystemExit) as done:
        run_cli("generate", "--url", server.url, "--color", color, "--prompt", "x", "--batch", "0", "-o", out)
    assert done.value.code == 2 and "--batch: must be 1 or more, got 0" in capsys.readouterr().err
    assert not out.exists()

    assert run_cli("generate", "--url", server.url, "--color", color, "--prompt", "x", "--strength", "1.5",
                   "-o", out) == 1
    assert capsys.readouterr().err.strip() == ("error: --strength is 1.5; it must be between 0.01 and 1.0 "
                                               "(denoise on the server)")

    stacked = tmp_path / "stacked.npy"
    np.save(stacked, np.stack([depth, depth]))      # (2, H, W): two buffers, not one image of 2 columns
    assert run_cli("generate", "--url", server.url, "--color", color, "--depth", stacked, "--prompt", "x",
                   "-o", out) == 1
    assert "expected a depth buffer of shape (height, width), got shape (2, 90, 160)" in capsys.readouterr().err

    assert run_cli("generate", "--url", server.url, "--color", color, "--prompt", "x", "--steps", "40",
                   "--strength", "0.75", "--seed", "3", "-o", out) == 0
    err = capsys.readouterr().err
    assert err.count("note: 30 of the 40 steps run: at strength 0.75 img2img starts part-way") == 1, err
    assert "step 30/30" in err


def test_progress_to_a_non_terminal_is_a_line_every_few_steps(server, scene_files, tmp_path, capsys):  # item 17
    color, _, _ = scene_files
    assert run_cli("generate", "--url", server.url, "--color", color, "--prompt", "x", "--steps", "20",
                   "--strength", "1", "-o", tmp_path / "o.png") == 0
    steps = [line for line in capsys.readouterr().err.splitlines() if "step " in line]
    assert "\r" not in "".join(steps)
    numbers = [int(line.split("step ")[1].split("/")[0]) for line in steps]
    # every 5 steps and the last one; never only one line, never one per step
    assert len(numbers) >= 4 and numbers[-1] == 20 and len(numbers) < 20, steps
    assert all(b - a >= 5 or b == 20 for a, b in zip(numbers, numbers[1:])), numbers


def test_a_different_aspect_is_said_once_in_cli_and_accepted(server, scene_files, tmp_path, capsys):  # item 18
    color, _, _ = scene_files
    assert run_cli("generate", "--url", server.url, "--color", color, "--prompt", "x", "--steps", "2",
                   "--size", "128x128", "--batch", "2", "-o", tmp_path / "square.png") == 0
    err = capsys.readouterr().err
    notice = ("note: the output 128x128 has another aspect than the color image 160x90: the inputs are "
              "centre-cropped to 90x90 first")
    assert err.count(notice) == 1, err
    assert run_cli("generate", "--url", server.url, "--color", color, "--prompt", "x", "--steps", "2",
                   "--size", "320x180", "-o", tmp_path / "same.png") == 0
    assert "centre-cropped" not in capsys.readouterr().err      # same aspect: nothing cropped, nothing said

    from controlbridge_protocol import Accepted, Client
    from controlbridge.imaging.files import image_file_attachment
    from helpers import quick_settings
    events = []
    with Client(server.url) as c:
        c.run(quick_settings(width=128, height=128, steps=1, controlnets={}),
              [image_file_attachment("color", color)], on_event=events.append, timeout=120)
    accepted = [e for e in events if isinstance(e, Accepted)]
    assert [a.notice for a in accepted] == [notice[len("note: "):]]


def test_the_o_copy_reruns_on_its_own_and_a_missing_input_is_named(server, scene_files, tmp_path, capsys):  # item 11
    import shutil
    color, npy, _ = scene_files
    shot = tmp_path / "shots" / "shot.png"
    assert run_cli("generate", "--url", server.url, "--color", color, "--depth", npy, "--prompt", "a castle",
                   "--steps", "3", "--seed", "5", "-o", shot) == 0
    assert sorted(p.name for p in (tmp_path / "shots" / "shot.inputs").iterdir()) == ["color.png", "depth.npy"]
    shutil.rmtree(server.server.config.output_dir)       # the server's copy and its inputs are gone
    again = tmp_path / "again.png"
    assert run_cli("generate", "--url", server.url, "--from-png", shot, "-o", again) == 0
    assert np.array_equal(np.asarray(Image.open(shot)), np.asarray(Image.open(again)))

    (tmp_path / "shots" / "shot.inputs" / "depth.npy").unlink()
    capsys.readouterr()
    assert run_cli("generate", "--url", server.url, "--from-png", shot, "-o", tmp_path / "x.png") == 1
    err = capsys.readouterr().err
    assert f"input 'depth' of {shot} is missing: expected at {tmp_path / 'shots' / 'shot.inputs' / 'depth.npy'} " \
           f"(beside it) or {tmp_path / 'shots'}/" in err, err


def test_flags_for_any_controlnet_kind_build_the_one_settings_object():   # issue 14: more kinds from the CLI
    from controlbridge.cli import build_parser, settings_from_args
    from controlbridge_protocol import ControlNetSettings
    args = build_parser().parse_args([
        "generate", "--color", "c.png", "--prompt", "p", "-o", "o.png", "--canny-weight", "0.4",
        "--control", "lineart=0.8:0.1:0.9", "--control-model", "lineart=tiny-lineart", "--estimate", "lineart=lineart",
        "--control", "tile=0.5", "--control", "depth=0", "--estimate", "softedge=hed"])
    s = settings_from_args(args)
    assert s.controlnets == {"canny": ControlNetSettings(0.4), "tile": ControlNetSettings(0.5),
                             "lineart": ControlNetSettings(0.8, 0.1, 0.9, model="tiny-lineart")}
    assert s.estimate == {"lineart": "lineart"}       # an estimator for a ControlNet that is off is left out
    for bad in (["--control", "lineart=strong"], ["--control", "lineart=1:0"], ["--estimate", "lineart"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["generate", "-o", "o.png", *bad])
    with pytest.raises(ValueError, match="--control normal=WEIGHT"):
        settings_from_args(build_parser().parse_args(["generate", "-o", "o.png", "--control-model", "normal=x"]))


def test_a_normal_map_from_the_command_line_feeds_a_normal_controlnet(make_server, scene_files, tmp_path):
    import shutil
    from controlbridge.engine.tiny_model import ensure_tiny_model
    models = tmp_path / "models"
    shutil.copytree(ensure_tiny_model().controlnets["depth"], models / "controlnet" / "tiny-normalbae")
    server = make_server(models_dir=models)
    color, npy, _ = scene_files
    normals = tmp_path / "normals.png"                       # camera-space: everything faces the camera
    Image.new("RGB", Image.open(color).size, (128, 128, 255)).save(normals)
    out = tmp_path / "out.png"
    assert run_cli("generate", "--url", server.url, "--color", color, "--depth", npy, "--prompt", "a wall",
                   "--steps", "4", "--canny-weight", "0", "--control", "normal=0.9:0:0.5",
                   "--control-model", "normal=tiny-normalbae", "--map", "normal=" + str(normals), "-o", out) == 0
    meta = read_job(out)
    assert meta["settings"]["controlnets"]["normal"] == {"weight": 0.9, "start": 0.0, "end": 0.5,
                                                         "model": "tiny-normalbae", "input": None, "mode": None}
    assert set(meta["settings"]["controlnets"]) == {"depth", "normal"} and "normal" in meta["inputs"]
    server_copy = next(server.server.config.output_dir.glob("*.png"))
    seen = np.asarray(Image.open(server_copy.parent / read_job(server_copy)["controls"]["normal"]).convert("RGB"))
    assert np.abs(seen.astype(int) - (128, 128, 255)).max() <= 2          # NormalBae: facing the camera


def test_timings_flag_prints_where_the_servers_time_went(server, scene_files, tmp_path, capsys):   # issue 9 item 6
    color, npy, _ = scene_files
    assert run_cli("generate", "--url", server.url, "--color", color, "--depth", npy, "--prompt", "a castle",
                   "--steps", "2", "--timings", "-o", tmp_path / "timed.png") == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "server time:" in line)
    parts = dict(part.strip().rsplit(" ", 2)[:2] for part in line.split("server time:")[1].split(","))
    assert {"decode", "queued", "model", "save", "total"} <= set(parts), line
    assert 0 < float(parts["model"]) <= float(parts["total"]), line
    assert line.rstrip().split(",")[-1].strip().startswith("total")
