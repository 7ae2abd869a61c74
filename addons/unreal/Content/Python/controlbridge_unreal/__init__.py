"""ControlBridge for Unreal Engine: generate images from a level's viewport or a CineCamera.

Plain modules (no `unreal` import, tested for real outside the engine):
    settings_model, camera_math, buffers, naming, jobs, result_plan, worker, controller
Engine layer (takes the `unreal` module as an argument; checked against Epic's API stub):
    engine_capture, engine_results, engine_ui, engine_classes, plugin
"""

from .naming import PLUGIN_VERSION as __version__  # noqa: F401
