"""ENGINE LAYER: the two Unreal classes the plugin defines in Python.

- ControlBridgeSettings: a UObject with one editable property per settings_model.FIELDS entry, shown with the
  editor's own details view (engine_ui.edit_settings). The tests check that the properties here and the field
  list agree in names and types.
- ControlBridgeGeneration: an EditorUtilityTask subclass; registering one shows Unreal's non-blocking task
  notification (with a Cancel button) that engine_ui.TaskProgress drives.

Classes are generated once per editor session (Unreal keeps generated classes by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .settings_model import FIELD_BY_NAME, uproperty_meta

_DEFINED: dict = {}


@dataclass(frozen=True)
class PluginClasses:
    settings: Any
    task: Any
    history: Any = None


_HISTORY = "ControlBridge|History"
HISTORY_PROPERTIES = ("results", "pick", "on_plane", "as_projection", "rerun_with_new_seed")


def _meta(name: str) -> dict:
    return uproperty_meta(FIELD_BY_NAME[name])


def define(unreal) -> PluginClasses:
    key = id(unreal)
    if key in _DEFINED:
        return _DEFINED[key]

    @unreal.uclass()
    class ControlBridgeSettings(unreal.Object):
        server_url = unreal.uproperty(str, meta=_meta("server_url"))
        token = unreal.uproperty(str, meta=_meta("token"))
        model = unreal.uproperty(str, meta=_meta("model"))
        prompt = unreal.uproperty(str, meta=_meta("prompt"))
        negative_prompt = unreal.uproperty(str, meta=_meta("negative_prompt"))
        seed = unreal.uproperty(int, meta=_meta("seed"))
        steps = unreal.uproperty(int, meta=_meta("steps"))
        cfg = unreal.uproperty(float, meta=_meta("cfg"))
        sampler = unreal.uproperty(str, meta=_meta("sampler"))
        denoise = unreal.uproperty(float, meta=_meta("denoise"))
        depth_weight = unreal.uproperty(float, meta=_meta("depth_weight"))
        depth_start = unreal.uproperty(float, meta=_meta("depth_start"))
        depth_end = unreal.uproperty(float, meta=_meta("depth_end"))
        depth_model = unreal.uproperty(str, meta=_meta("depth_model"))
        canny_weight = unreal.uproperty(float, meta=_meta("canny_weight"))
        canny_start = unreal.uproperty(float, meta=_meta("canny_start"))
        canny_end = unreal.uproperty(float, meta=_meta("canny_end"))
        canny_model = unreal.uproperty(str, meta=_meta("canny_model"))
        normal_weight = unreal.uproperty(float, meta=_meta("normal_weight"))
        normal_start = unreal.uproperty(float, meta=_meta("normal_start"))
        normal_end = unreal.uproperty(float, meta=_meta("normal_end"))
        normal_model = unreal.uproperty(str, meta=_meta("normal_model"))
        lineart_weight = unreal.uproperty(float, meta=_meta("lineart_weight"))
        lineart_start = unreal.uproperty(float, meta=_meta("lineart_start"))
        lineart_end = unreal.uproperty(float, meta=_meta("lineart_end"))
        lineart_model = unreal.uproperty(str, meta=_meta("lineart_model"))
        lineart_estimator = unreal.uproperty(str, meta=_meta("lineart_estimator"))
        softedge_weight = unreal.uproperty(float, meta=_meta("softedge_weight"))
        softedge_start = unreal.uproperty(float, meta=_meta("softedge_start"))
        softedge_end = unreal.uproperty(float, meta=_meta("softedge_end"))
        softedge_model = unreal.uproperty(str, meta=_meta("softedge_model"))
        softedge_estimator = unreal.uproperty(str, meta=_meta("softedge_estimator"))
        tile_weight = unreal.uproperty(float, meta=_meta("tile_weight"))
        tile_start = unreal.uproperty(float, meta=_meta("tile_start"))
        tile_end = unreal.uproperty(float, meta=_meta("tile_end"))
        tile_model = unreal.uproperty(str, meta=_meta("tile_model"))
        style_image = unreal.uproperty(str, meta=_meta("style_image"))
        style_weight = unreal.uproperty(float, meta=_meta("style_weight"))
        width = unreal.uproperty(int, meta=_meta("width"))
        height = unreal.uproperty(int, meta=_meta("height"))
        match_camera_aspect = unreal.uproperty(bool, meta=_meta("match_camera_aspect"))
        viewport_fov = unreal.uproperty(float, meta=_meta("viewport_fov"))
        max_depth_cm = unreal.uproperty(float, meta=_meta("max_depth_cm"))
        capture_post_process = unreal.uproperty(bool, meta=_meta("capture_post_process"))
        create_plane = unreal.uproperty(bool, meta=_meta("create_plane"))
        plane_distance_cm = unreal.uproperty(float, meta=_meta("plane_distance_cm"))
        projection_reach_cm = unreal.uproperty(float, meta=_meta("projection_reach_cm"))
        live_steps = unreal.uproperty(int, meta=_meta("live_steps"))
        live_denoise = unreal.uproperty(float, meta=_meta("live_denoise"))
        live_sampler = unreal.uproperty(str, meta=_meta("live_sampler"))
        live_max_side = unreal.uproperty(int, meta=_meta("live_max_side"))
        live_interval_s = unreal.uproperty(float, meta=_meta("live_interval_s"))
        shot_sequence = unreal.uproperty(str, meta=_meta("shot_sequence"))
        shot_every_nth = unreal.uproperty(int, meta=_meta("shot_every_nth"))
        shot_range_cut = unreal.uproperty(str, meta=_meta("shot_range_cut"))
        # not a setting: what the last server offers (jobs.offer_summary), for reading; never saved
        server_offers = unreal.uproperty(str, meta={
            "Category": "ControlBridge|Control", "MultiLine": "true", "DisplayName": "Server Offers",
            "ToolTip": "What the last server offers for each ControlNet kind, its estimators and style ('not on this "
                       "server' otherwise). For reading: edits here are ignored."})

    @unreal.uclass()
    class ControlBridgeGeneration(unreal.EditorUtilityTask):
        """Shown by Unreal as 'Task Control Bridge Generation' with our progress text and a Cancel button."""

    @unreal.uclass()
    class ControlBridgeHistory(unreal.Object):
        """The history picker: the server's last results listed, one picked, what to do with it."""
        results = unreal.uproperty(str, meta={"Category": _HISTORY, "MultiLine": "true",
                                              "ToolTip": "The server's newest results (newest first)."})
        pick = unreal.uproperty(int, meta={"Category": _HISTORY, "ClampMin": "1", "UIMin": "1",
                                           "ToolTip": "Number of the result to use, as listed above."})
        on_plane = unreal.uproperty(bool, meta={"Category": _HISTORY, "DisplayName": "Show On Its Camera's Plane",
                                                "ToolTip": "Show it on its camera's result plane (the texture is "
                                                           "always made, once)."})
        as_projection = unreal.uproperty(bool, meta={"Category": _HISTORY, "DisplayName": "Project Onto Level",
                                                     "ToolTip": "Project it onto the level from its camera."})
        rerun_with_new_seed = unreal.uproperty(bool, meta={
            "Category": _HISTORY, "ToolTip": "Instead: capture its camera again and generate with the same "
                                             "settings and a new seed."})

    classes = PluginClasses(settings=ControlBridgeSettings, task=ControlBridgeGeneration,
                            history=ControlBridgeHistory)
    _DEFINED[key] = classes
    return classes
