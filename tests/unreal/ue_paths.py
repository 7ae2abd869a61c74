"""Paths and module lists shared by the Unreal plugin's tests (not in conftest.py: several conftest modules exist)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGIN_DIR = REPO / "addons" / "unreal"
PLUGIN_PYTHON = PLUGIN_DIR / "Content" / "Python"
PACKAGE_DIR = PLUGIN_PYTHON / "controlbridge_unreal"

# modules that must never import or receive `unreal`: they are tested for real outside the engine
PLAIN_MODULES = ("settings_model", "camera_math", "buffers", "capture_look", "naming", "jobs", "result_plan", "worker", "controller", "live", "shots", "projection", "history", "normals", "style")
# modules that touch the engine, all through the `unreal` argument / module
ENGINE_MODULES = ("engine_capture", "engine_results", "engine_live", "engine_sequence", "engine_projection", "engine_ui", "engine_classes", "plugin")
