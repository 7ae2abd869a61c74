"""Wiring: the engine adapter, the plugin's life cycle and the functions the menu entries call.

init_unreal.py calls start(unreal) once at editor start-up. The menu entries run
`controlbridge_unreal.plugin.<action>()` as Python commands.
"""

from __future__ import annotations

import os
from typing import Optional

from . import (camera_math, engine_capture, engine_classes, engine_live, engine_projection, engine_results, engine_sequence,
               engine_ui, history, jobs, naming, projection, result_plan, settings_model, shots)
from controlbridge_protocol import HistoryItem, ImageAttachment, Result

from .controller import CINE_CAMERA, VIEWPORT, Controller, EnginePort, PendingJob, UserError
from .worker import Worker

class EngineAdapter(EnginePort):
    """The controller's view of the engine, implemented with the engine_* modules."""

    def __init__(self, unreal, task_class, temp_dir: str, saved_dir: str = "", history_class=None):
        self.unreal = unreal
        self.task_class = task_class
        self.history_class = history_class
        self.temp_dir = temp_dir
        self.saved_dir = saved_dir
        self._preview_restore: dict = {}   # plane key tag -> the material its plane had before previews
        self._live_state: dict = {}        # the live plane and its dynamic material, while live mode shows frames
        self.last_result = None            # (view, width, height, texture object path) of the newest result shown

    def resolve_view(self, source, settings):
        return engine_capture.resolve_view(self.unreal, source, settings)

    def capture(self, view, width, height, settings, rig=None):
        # never capture our own result planes or projections: the server would get our last image back
        planes = engine_results.find_planes(self.unreal) + engine_projection.find_projections(self.unreal)
        return engine_capture.capture(self.unreal, view, width, height, settings, hidden_actors=planes,
                                      temp_dir=self.temp_dir, rig=rig)

    def live_capture(self, view, width, height, settings):
        """Live frames reuse one capture actor for the whole session (see engine_capture.capture's rig)."""
        return self.capture(view, width, height, settings, rig=self._live_state.setdefault("rig", {}))

    def apply_result(self, job: PendingJob, result: Result) -> str:
        image = result.image
        plan = result_plan.plan_result(
            view=job.view, width=job.width, height=job.height, job_id=result.job_id,
            result_settings=result.settings.to_dict() if result.settings else job.job_settings.to_dict(),
            seed=result.seed, saved_path=result.saved_path, encoding=image.encoding,
            create_plane=job.settings.create_plane, plane_distance_cm=job.settings.plane_distance_cm,
            asset_exists=lambda path: engine_results.asset_exists(self.unreal, path),
        )
        self._preview_restore.pop(naming.plane_key_tag(job.view.key), None)   # the result replaces the preview
        summary = engine_results.apply_result(self.unreal, plan, job.view, image.data, self.temp_dir)
        self.last_result = (job.view, job.width, job.height, plan.texture_object_path)
        return summary

    def history_view(self, camera_label, settings: settings_model.PluginSettings):
        return engine_capture.labelled_view(self.unreal, camera_label, history.matches_label, settings.viewport_fov)

    def choose_history(self, listing):
        return engine_ui.choose_history(self.unreal, self.history_class, listing)

    def apply_history(self, item: HistoryItem, choice: history.HistoryChoice, settings: settings_model.PluginSettings) -> str:
        entry, image = item.entry, item.image
        label = history.camera_label(entry)
        if label:
            view = self.history_view(label, settings)
        else:   # another client's result: a texture only (history.chosen refuses plane and projection)
            view = camera_math.CameraView("history", "History", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 90.0, None)
        name = naming.texture_asset_name(view.label, entry.job_id)
        path = naming.object_path(naming.TEXTURE_DIR, name)
        existing = engine_results.load_asset(self.unreal, path) if engine_results.asset_exists(self.unreal, path) \
            else None
        plan = result_plan.plan_result(
            view=view, width=entry.width, height=entry.height, job_id=entry.job_id, result_settings=entry.settings,
            seed=entry.seed, saved_path=entry.saved_path, encoding=image.encoding, create_plane=choice.on_plane,
            plane_distance_cm=settings.plane_distance_cm,
            # the result's texture is made once: re-applying it again reuses that asset
            asset_exists=(lambda _: False) if existing is not None else
            (lambda p: engine_results.asset_exists(self.unreal, p)))
        summary = engine_results.apply_result(self.unreal, plan, view, image.data, self.temp_dir, texture=existing)
        self.last_result = (view, entry.width, entry.height, plan.texture_object_path)
        if choice.as_projection:
            summary += "; " + self.project_last(settings)
        return summary

    def project_last(self, settings: settings_model.PluginSettings) -> str:
        if self.last_result is None:
            raise UserError("Nothing to project yet: generate an image first (or re-apply one from the history).")
        view, width, height, texture_path = self.last_result
        texture = engine_results.load_asset(self.unreal, texture_path)
        if texture is None:
            raise UserError(f"The texture {texture_path} no longer exists.")
        plan = projection.plan_projection(view, width / height, settings.projection_reach_cm)
        engine_projection.project(self.unreal, plan, texture)
        return f"{texture_path.split('.')[0]} projected from {view.label} as {plan.label}"

    def remove_projections(self) -> int:
        return engine_projection.remove_projections(self.unreal)

    def show_preview(self, job: PendingJob, image: ImageAttachment) -> bool:
        return engine_results.show_preview(self.unreal, naming.plane_key_tag(job.view.key), image.data,
                                           image.encoding, self.temp_dir, self._preview_restore)

    def end_preview(self, job: PendingJob) -> None:
        engine_results.end_preview(self.unreal, naming.plane_key_tag(job.view.key), self._preview_restore)

    def live_source(self, settings):
        return engine_live.live_source(self.unreal)

    def live_view(self, source, settings: settings_model.PluginSettings):
        return engine_live.live_view(self.unreal, source, settings.viewport_fov)

    def live_label(self, source):
        return engine_live.source_label(self.unreal, source)

    def world_key(self):
        return engine_live.world_key(self.unreal)

    def live_stop_reason(self, started_in):
        return engine_live.stop_reason(self.unreal, started_in)

    def level_signature(self):
        return engine_live.level_signature(self.unreal)

    def show_live_frame(self, view, width, height, settings: settings_model.PluginSettings,
                        image: ImageAttachment) -> bool:
        return engine_live.show_frame(self.unreal, self._live_state, view, width, height, settings.plane_distance_cm,
                                      image.data, image.encoding, self.temp_dir)

    def end_live(self):
        try:
            engine_capture.release_rig(self.unreal, self._live_state.pop("rig", {}))
        finally:
            engine_live.remove_plane(self.unreal, self._live_state)

    def sequence_cuts(self, settings: settings_model.PluginSettings):
        sequence = engine_sequence.open_sequence(self.unreal, settings.shot_sequence)
        name, sections, playback = engine_sequence.read_cuts(self.unreal, sequence)
        return name, shots.enumerate_cuts(sections, playback, name), engine_sequence.current_frame(self.unreal)

    def shot_view(self, cut, frame):
        return engine_sequence.view_at(self.unreal, cut, frame)

    def set_sequence_frame(self, frame):
        engine_sequence.set_frame(self.unreal, frame)

    def apply_shot_result(self, run: shots.ShotRun, item: shots.ShotItem, result: Result):
        if run.render_range:   # the server's PNG as it is: no asset, no re-encoding
            path = shots.range_frame_path(self.saved_dir, run.sequence_name, item.cut, item.frame)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(result.image.data)
            return path
        plan = result_plan.plan_result(
            view=item.view, width=item.width, height=item.height, job_id=result.job_id,
            result_settings=result.settings.to_dict() if result.settings else {}, seed=result.seed,
            saved_path=result.saved_path, encoding=result.image.encoding, create_plane=False, plane_distance_cm=0.0,
            asset_exists=lambda path: engine_results.asset_exists(self.unreal, path),
            asset_base=shots.texture_name(item.cut, item.frame), texture_dir=shots.texture_folder(run.sequence_name))
        texture = engine_results.import_texture(self.unreal, plan, result.image.data, self.temp_dir)
        engine_results.tag_texture(self.unreal, texture, plan.metadata)
        return texture

    def finish_shots(self, run: shots.ShotRun) -> str:
        done = run.in_order()
        first: shots.ShotItem = done[0][0]
        if run.render_range:
            return f"{len(done)} frames of {first.cut.name} in {os.path.dirname(done[0][1])}"
        layout = shots.contact_sheet_layout(len(done), first.width, first.height)
        sheet = engine_sequence.write_contact_sheet(self.unreal, [made for _, made in done], layout,
                                                    shots.contact_sheet_path(self.saved_dir, run.sequence_name))
        return f"{len(done)} shot image(s) in {shots.texture_folder(run.sequence_name)}; contact sheet {sheet}"

    def begin_progress(self, title):
        return engine_ui.TaskProgress(self.unreal, self.task_class, title)

    def show_error(self, message):
        engine_ui.show_error(self.unreal, message)

    def log(self, message):
        self.unreal.log(message)


class Plugin:
    def __init__(self, unreal, worker: Optional[Worker] = None, saved_dir: Optional[str] = None):
        self.unreal = unreal
        self.classes = engine_classes.define(unreal)
        saved_dir = saved_dir or unreal.Paths.project_saved_dir()
        self.store = settings_model.SettingsStore(settings_model.settings_path(saved_dir))
        temp_dir = os.path.join(saved_dir, settings_model.SETTINGS_SUBDIR, "Incoming")
        self.engine = EngineAdapter(unreal, self.classes.task, temp_dir, saved_dir, self.classes.history)
        self.worker = worker or Worker(naming.client_name(unreal.SystemLibrary.get_engine_version()))
        self.controller = Controller(self.engine, self.worker, self.store.get)
        self._tick_handle = None
        self._shutdown_handle = None

    def start(self) -> None:
        engine_ui.register_menus(self.unreal)
        self._tick_handle = engine_ui.register_tick(self.unreal, self.controller.tick)
        self._shutdown_handle = self.unreal.register_python_shutdown_callback(self.stop)
        self.unreal.log(f"ControlBridge {naming.PLUGIN_VERSION} ready (settings: {self.store.path})")

    def stop(self) -> None:
        self.controller.shutdown()
        if self._tick_handle is not None:
            engine_ui.unregister_tick(self.unreal, self._tick_handle)
            self._tick_handle = None
        if self._shutdown_handle is not None:
            self.unreal.unregister_python_shutdown_callback(self._shutdown_handle)
            self._shutdown_handle = None

    def open_settings(self) -> None:
        edited = engine_ui.edit_settings(self.unreal, self.classes.settings, self.store.get(),
                                         jobs.offer_summary(self.worker.capabilities))
        if edited is not None:
            self.store.set(edited)
            self.unreal.log(f"ControlBridge settings saved to {self.store.path}")


_PLUGIN: Optional[Plugin] = None


def start(unreal) -> Plugin:
    global _PLUGIN
    if _PLUGIN is not None:     # re-run of init_unreal.py (e.g. a Python reload): start over cleanly
        _PLUGIN.stop()
    _PLUGIN = Plugin(unreal)
    _PLUGIN.start()
    return _PLUGIN


def current() -> Optional[Plugin]:
    return _PLUGIN


def _require() -> Plugin:
    if _PLUGIN is None:
        raise RuntimeError("ControlBridge is not started (init_unreal.py did not run)")
    return _PLUGIN


def generate_from_viewport() -> None:
    _require().controller.generate(VIEWPORT)


def generate_from_cine_camera() -> None:
    _require().controller.generate(CINE_CAMERA)


def toggle_live() -> None:
    _require().controller.toggle_live()


def generate_shots() -> None:
    _require().controller.generate_shots()


def render_shot_range() -> None:
    _require().controller.render_shot_range()


def open_history() -> None:
    _require().controller.open_history()


def project_result() -> None:
    _require().controller.project_last()


def remove_projections() -> None:
    _require().controller.remove_projections()


def cancel() -> None:
    _require().controller.cancel()


def open_settings() -> None:
    _require().open_settings()
