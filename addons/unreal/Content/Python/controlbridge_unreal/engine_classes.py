"""ENGINE LAYER: the two Unreal classes the plugin defines in Python.

- ControlBridgeSettings: a UObject with one editable property per settings_model.FIELDS entry, shown with the
  editor's own details view (engine_ui.edit_settings). The tests check that the properties here and the field
  list agree in names and types.
- ControlBridgeGeneration: an EditorUtilityTask subclass; registering one shows Unreal's non-blocking task
  notification (with a Cancel button) that engine_ui.TaskProgress drives.

Classes are generated once per editor session (Unreal keeps generated classes by name).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

from .settings_model import FIELDS, uproperty_meta

_DEFINED: dict = {}


@dataclass(frozen=True)
class PluginClasses:
    settings: Any
    task: Any
    history: Any = None


_HISTORY = "ControlBridge|History"
HISTORY_PROPERTIES = ("results", "pick", "on_plane", "as_projection", "rerun_with_new_seed")


def define(unreal) -> PluginClasses:
    key = id(unreal)
    if key in _DEFINED:
        return _DEFINED[key]

    # uproperties must be class attributes when the class is made: one per settings field, in the list's order
    settings_properties: dict = {"__module__": __name__}   # as a class statement here would have it
    settings_properties.update((f.name, unreal.uproperty(f.type, meta=uproperty_meta(f))) for f in FIELDS)
    # not a setting: what the last server offers (jobs.offer_summary), for reading; never saved
    settings_properties["server_offers"] = unreal.uproperty(str, meta={
        "Category": "ControlBridge|Control", "MultiLine": "true", "DisplayName": "Server Offers",
        "ToolTip": "What the last server offers for each ControlNet kind, its estimators and style ('not on this "
                   "server' otherwise). For reading: edits here are ignored."})

    def settings_class_body(namespace: dict) -> None:
        namespace.update(settings_properties)

    ControlBridgeSettings = unreal.uclass()(types.new_class("ControlBridgeSettings", (unreal.Object,),
                                                            exec_body=settings_class_body))

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
