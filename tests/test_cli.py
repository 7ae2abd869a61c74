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
