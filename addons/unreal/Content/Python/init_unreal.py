"""Run by Unreal's Python Editor Script Plugin at editor start-up: registers ControlBridge."""

import os
import sys

import unreal

_SITE_PACKAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Lib", "site-packages")
if os.path.isdir(_SITE_PACKAGES) and _SITE_PACKAGES not in sys.path:
    # Unreal adds a plugin's Content/Python/Lib/site-packages itself; this covers setups where it did not
    sys.path.insert(0, _SITE_PACKAGES)


def _start() -> None:
    if sys.version_info < (3, 9):
        unreal.log_error("ControlBridge needs Unreal's Python 3.9 or newer (UE 5.3+); it is not started.")
        return
    try:
        from controlbridge_unreal import plugin
    except ImportError as e:
        unreal.log_error(f"ControlBridge could not load its Python packages ({e}). Install the BUILT plugin "
                         "(build/unreal/ControlBridge, made by addons/unreal/build.py), which bundles them.")
        return
    try:
        plugin.start(unreal)
    except Exception:  # noqa: BLE001 - a broken plugin must not break the editor's start-up
        import traceback

        unreal.log_error("ControlBridge failed to start:\n" + traceback.format_exc())


_start()
