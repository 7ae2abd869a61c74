"""ControlBridge for Blender: generate from the active camera with a ControlBridge server.

Registration only; see README.md beside the add-on source for the layout of the modules.
"""
import bpy

from . import bridge, engine, live, operators, panels, preferences, properties


def register():
    bpy.utils.register_class(preferences.ControlBridgePreferences)
    properties.register()
    for cls in operators.classes:
        bpy.utils.register_class(cls)
    panels.register()
    engine.register()
    bpy.app.handlers.load_pre.append(bridge.on_load_pre)
    bpy.app.handlers.load_pre.append(live.on_load_pre)


def unregister():
    for handler in (bridge.on_load_pre, live.on_load_pre):
        if handler in bpy.app.handlers.load_pre:
            bpy.app.handlers.load_pre.remove(handler)
    live.stop()
    bridge.shutdown()
    engine.unregister()
    panels.unregister()
    for cls in reversed(operators.classes):
        bpy.utils.unregister_class(cls)
    properties.unregister()
    bpy.utils.unregister_class(preferences.ControlBridgePreferences)
