"""A small capture for tests that talk to a real server: the files the engine's exporters would write."""

import os
import tempfile

from controlbridge_unreal import buffers, jobs
from controlbridge_unreal.settings_model import PluginSettings
from fake_unreal import SceneCaptureSource, default_scene, make_rgba_png, write_exr


def synthetic_capture(width: int = 64, height: int = 48) -> jobs.Capture:
    colors = default_scene(None, width, height, SceneCaptureSource.SCS_FINAL_COLOR_LDR)
    depth = default_scene(None, width, height, SceneCaptureSource.SCS_SCENE_DEPTH)
    png = make_rgba_png([[(c.r, c.g, c.b, 255) for c in colors[y * width:(y + 1) * width]] for y in range(height)])
    fd, path = tempfile.mkstemp(suffix=".exr")
    os.close(fd)
    try:
        write_exr(path, width, height, [(c.r, c.g, c.b, c.a) for c in depth])
        with open(path, "rb") as fh:
            exr = fh.read()
    finally:
        os.remove(path)
    probe = buffers.depth_stats(buffers.depth_from_linear_colors(depth), width, height)
    return jobs.Capture(width, height, png, exr, probe.far, probe)


def fast_settings(**changes) -> PluginSettings:
    """Settings the tiny model runs in well under a second."""
    base = dict(prompt="a stone castle", negative_prompt="blurry", seed=7, steps=4, cfg=5.0, sampler="euler",
                denoise=1.0, width=64, height=48, depth_weight=1.0, canny_weight=0.5)
    base.update(changes)
    return PluginSettings(**base)
