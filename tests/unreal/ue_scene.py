"""A small capture for tests that talk to a real server: built with the plugin's own buffer code."""

from types import SimpleNamespace

from controlbridge_unreal import buffers, jobs
from controlbridge_unreal.settings_model import PluginSettings
from fake_unreal import SceneCaptureSource, default_scene


def synthetic_capture(width: int = 64, height: int = 48) -> jobs.Capture:
    component = SimpleNamespace()
    colors = default_scene(component, width, height, SceneCaptureSource.SCS_FINAL_COLOR_LDR)
    depth_colors = default_scene(component, width, height, SceneCaptureSource.SCS_SCENE_DEPTH)
    depth = buffers.prepare_depth(buffers.depth_from_linear_colors(depth_colors), width, height)
    return jobs.Capture(width, height, buffers.rgba8_from_colors(colors, width, height), depth)


def fast_settings(**changes) -> PluginSettings:
    """Settings the tiny model runs in well under a second."""
    base = dict(prompt="a stone castle", negative_prompt="blurry", seed=7, steps=4, cfg=5.0, sampler="euler",
                denoise=1.0, width=64, height=48, depth_weight=1.0, canny_weight=0.5)
    base.update(changes)
    return PluginSettings(**base)
