"""ENGINE LAYER: menus, progress notification, error message, settings dialog, the Slate post-tick pump.

Every function takes the `unreal` module as its first argument (tests pass a recording stand-in); engine objects
in local variables are annotated with their `unreal` type for the contract test. Game thread only.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Optional, Sequence, TYPE_CHECKING, Tuple

from .history import HistoryChoice
from .settings_model import FIELDS, PluginSettings

if TYPE_CHECKING:   # for annotations only: the module itself is always passed in as `unreal`
    import unreal


MENU_PARENT = "LevelEditor.MainMenu"
MENU_OWNER = "ControlBridge"
MENU_NAME = "ControlBridge"
MENU_LABEL = "ControlBridge"

_CMD = "import controlbridge_unreal.plugin as controlbridge; controlbridge.{}()"

# (section, entry name, label, tooltip, python command)
MENU_ENTRIES: Tuple[Tuple[str, str, str, str, str], ...] = (
    ("Generate", "ControlBridge.GenerateViewport", "Generate from viewport",
     "Capture the level viewport's view and generate an image from it.", _CMD.format("generate_from_viewport")),
    ("Generate", "ControlBridge.GenerateCineCamera", "Generate from selected CineCamera",
     "Capture the selected CineCameraActor (filmback + focal length) and generate an image from it.",
     _CMD.format("generate_from_cine_camera")),
    ("Generate", "ControlBridge.Live", "Live mode (toggle)",
     "Start or stop live mode: while on, the selected CineCamera (or the level viewport) is captured whenever it "
     "or the level changes, and the generated frames are shown on a plane in front of it.",
     _CMD.format("toggle_live")),
    ("Generate", "ControlBridge.Shots", "Generate Level Sequence shots",
     "Generate every camera cut of the Level Sequence open in Sequencer at its start frame (or every Nth frame, "
     "Settings > Sequence), same settings and seed: textures named after the shots and a contact sheet.",
     _CMD.format("generate_shots")),
    ("Generate", "ControlBridge.ShotRange", "Render shot range",
     "Generate every frame of one camera cut (the one under the playhead, or Settings > Shot Range Cut) as a "
     "numbered image sequence in Saved/ControlBridge/Sequences.", _CMD.format("render_shot_range")),
    ("Result", "ControlBridge.Project", "Project result onto level",
     "Project the newest result onto the level's geometry from the camera that captured it (a transient decal; "
     "not saved with the level).", _CMD.format("project_result")),
    ("Result", "ControlBridge.RemoveProjections", "Remove projections",
     "Remove every ControlBridge projection from the level.", _CMD.format("remove_projections")),
    ("Result", "ControlBridge.History", "History...",
     "The server's newest results: show one again (texture, its camera's plane, projection) or re-run it with a "
     "new seed.", _CMD.format("open_history")),
    ("Job", "ControlBridge.Cancel", "Cancel", "Cancel the running generation.", _CMD.format("cancel")),
    ("Job", "ControlBridge.Settings", "Settings...", "Server, prompt, sampling and output settings.",
     _CMD.format("open_settings")),
)


def register_menus(unreal, entries: Sequence[Tuple[str, str, str, str, str]] = MENU_ENTRIES) -> bool:
    menus: unreal.ToolMenus = unreal.ToolMenus.get()
    main: unreal.ToolMenu = menus.find_menu(MENU_PARENT)
    if main is None:
        unreal.log_warning(f"ControlBridge: menu {MENU_PARENT} not found; no ControlBridge menu added")
        return False
    sub: unreal.ToolMenu = main.add_sub_menu(MENU_OWNER, "", MENU_NAME, MENU_LABEL,
                                             "Generate images from this level with a ControlBridge server")
    for section in dict.fromkeys(e[0] for e in entries):
        sub.add_section(section, section)
    for section, name, label, tooltip, command in entries:
        entry: unreal.ToolMenuEntry = unreal.ToolMenuEntry(name=name, type=unreal.MultiBlockType.MENU_ENTRY)
        entry.set_label(label)
        entry.set_tool_tip(tooltip)
        entry.set_string_command(unreal.ToolMenuStringCommandType.PYTHON, "", command)
        sub.add_menu_entry(section, entry)
    menus.refresh_all_widgets()
    return True


def unregister_menus(unreal) -> None:
    menus: unreal.ToolMenus = unreal.ToolMenus.get()
    menus.unregister_owner_by_name(MENU_OWNER)
    menus.remove_menu(f"{MENU_PARENT}.{MENU_NAME}")
    menus.refresh_all_widgets()


# --------------------------------------------------------------------------- messages

def show_error(unreal, message: str) -> None:
    """One clear message: logged, and shown in a dialog the user acknowledges."""
    unreal.log_error(f"ControlBridge: {message}")
    unreal.EditorDialog.show_message("ControlBridge", message, unreal.AppMsgType.OK)


class TaskProgress:
    """Progress of one generation as Unreal's non-blocking task notification (title, 'Step i/N', Cancel button).

    Implements controller.ProgressHandle. Note: while an EditorUtilityTask runs, Unreal treats scripts as
    unattended (modal message boxes auto-answer), so error dialogs are shown only after the task is finished."""

    def __init__(self, unreal, task_class, title: str):
        self.unreal = unreal
        self.title = title
        self._finished = False
        self._engine_finishes = False   # the user pressed the notification's Cancel: Unreal ends the task itself
        self._text = ""
        self._task = task_class()
        subsystem: unreal.EditorUtilitySubsystem = unreal.get_editor_subsystem(unreal.EditorUtilitySubsystem)
        subsystem.register_and_execute_task(self._task)
        unreal.log(title)

    def update(self, text: str) -> None:
        if self._finished or text == self._text:
            return
        self._text = text
        task: unreal.EditorUtilityTask = self._task
        task.set_task_notification_text(text)

    def cancel_requested(self) -> bool:
        if self._finished or self._engine_finishes:
            return False
        task: unreal.EditorUtilityTask = self._task
        if task.was_cancel_requested():
            # EditorUtilitySubsystem's own tick finishes a task whose Cancel was pressed (all UE 5 versions);
            # finishing it again would trip an ensure, so from here on only the log gets our messages
            self._engine_finishes = True
            return True
        return False

    def succeed(self, text: str) -> None:
        self._finish(True, text)
        self.unreal.log(f"{self.title}: {text}")

    def cancelled(self, text: str) -> None:
        self._finish(True, text)
        self.unreal.log(f"{self.title}: {text}")

    def fail(self, text: str) -> None:
        self._finish(False, "Failed")
        show_error(self.unreal, text)

    def _finish(self, success: bool, text: str) -> None:
        if self._finished:
            return
        self._finished = True
        if self._engine_finishes:
            return
        task: unreal.EditorUtilityTask = self._task
        task.set_task_notification_text(text)
        try:
            task.finish_executing_task(success=success)
        except TypeError:   # UE before 5.5: FinishExecutingTask() has no success flag
            task.finish_executing_task()


# --------------------------------------------------------------------------- settings dialog

def edit_settings(unreal, settings_class, current: PluginSettings, offers: str = "") -> Optional[PluginSettings]:
    """Show the settings object in the editor's details view (modal, OK/Cancel). None when cancelled. `offers`:
    what the server has (jobs.offer_summary), shown for reading; it is not a setting and is never saved."""
    settings_object = settings_class()
    for f in FIELDS:
        settings_object.set_editor_property(f.name, getattr(current, f.name))
    settings_object.set_editor_property("server_offers", offers)
    options: unreal.EditorDialogLibraryObjectDetailsViewOptions = unreal.EditorDialogLibraryObjectDetailsViewOptions(
        show_object_name=False, allow_search=True)
    accepted = unreal.EditorDialog.show_object_details_view("ControlBridge Settings", settings_object, options)
    if not accepted:
        return None
    return PluginSettings.from_mapping({f.name: settings_object.get_editor_property(f.name) for f in FIELDS})


# --------------------------------------------------------------------------- history picker

def choose_history(unreal, history_class, listing: str) -> Optional[HistoryChoice]:
    """The server's results listed in a details view (modal, OK/Cancel): which one, and what to do with it."""
    history_object = history_class()
    history_object.set_editor_property("results", listing)
    history_object.set_editor_property("pick", 1)
    history_object.set_editor_property("on_plane", True)
    history_object.set_editor_property("as_projection", False)
    history_object.set_editor_property("rerun_with_new_seed", False)
    options: unreal.EditorDialogLibraryObjectDetailsViewOptions = unreal.EditorDialogLibraryObjectDetailsViewOptions(
        show_object_name=False, allow_search=False)
    if not unreal.EditorDialog.show_object_details_view("ControlBridge History", history_object, options):
        return None
    return HistoryChoice(pick=int(history_object.get_editor_property("pick")),
                         on_plane=bool(history_object.get_editor_property("on_plane")),
                         as_projection=bool(history_object.get_editor_property("as_projection")),
                         rerun_new_seed=bool(history_object.get_editor_property("rerun_with_new_seed")))


# --------------------------------------------------------------------------- the pump

def register_tick(unreal, callback: Callable[[float], Any]):
    """Run callback(delta_seconds) after every Slate tick on the game thread. An exception is logged once per
    distinct error instead of every frame."""
    reported = set()

    def pump(delta_seconds: float) -> None:
        try:
            callback(delta_seconds)
        except Exception as e:  # noqa: BLE001 - never let an error escape into Slate every frame
            key = f"{type(e).__name__}: {e}"
            if key not in reported:
                reported.add(key)
                unreal.log_error("ControlBridge tick failed:\n" + traceback.format_exc())

    return unreal.register_slate_post_tick_callback(pump)


def unregister_tick(unreal, handle) -> None:
    unreal.unregister_slate_post_tick_callback(handle)
