"""Operators: read properties, build JobSettings, hand over. The logic lives in jobs, bridge, live, results,
history."""
import bpy
from bpy.props import EnumProperty, IntProperty

from . import bridge, cameras, history, jobs, live, preferences, results
from .capture import CaptureError


def _start(op, context, settings):
    try:
        op.report({"INFO"}, jobs.start(context, settings, preferences.get(context)))
    except bridge.Busy as exc:
        op.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    except (CaptureError, ValueError) as exc:   # shown in the panel too, as one line
        bridge.fail(f"Capture failed: {exc}")
        op.report({"ERROR"}, f"Capture failed: {exc}")
        return {"CANCELLED"}
    return {"FINISHED"}


def outcome(st):
    """The report a finished, failed or cancelled job leaves: (level, one line), the server's own message when
    it failed."""
    if st.phase == "failed":
        return "ERROR", st.error or st.line
    if st.phase == "cancelled":
        return "WARNING", st.line or "Cancelled"
    return "INFO", st.line


class _Watched:
    """Invoked from the UI, Generate and Variation stay modal until their job is over, without blocking Blender
    (every event but Esc passes through): Esc cancels the job, and the job's outcome becomes the operator's
    report (status bar, Info editor). From scripts (execute) or without a window they hand over and return."""

    _timer = None

    def invoke(self, context, event):
        started = self.execute(context)
        if started != {"FINISHED"} or context.window is None:
            return started
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        st = bridge.state()
        if event.type == "ESC" and event.value == "PRESS" and st.active:
            bridge.cancel()
            return {"RUNNING_MODAL"}
        if st.active:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        level, line = outcome(st)
        self.report({level}, line)
        return {"FINISHED"} if level == "INFO" else {"CANCELLED"}


class CONTROLBRIDGE_OT_generate(_Watched, bpy.types.Operator):
    """Capture the active camera (color + depth) and generate an image from it"""
    bl_idname = "controlbridge.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.camera is not None and not bridge.busy()

    def execute(self, context):
        p = context.scene.controlbridge
        if p.randomize_seed:
            p.seed = jobs.new_seed()
        return _start(self, context, jobs.settings_from_props(p))


class CONTROLBRIDGE_OT_variation(_Watched, bpy.types.Operator):
    """Generate again with the same settings as the selected history entry (or the panel) and a new seed"""
    bl_idname = "controlbridge.variation"
    bl_label = "Variation"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.camera is not None and not bridge.busy()

    def execute(self, context):
        item = history.active(context.scene)
        try:
            settings = history.settings_of(item) if item is not None else \
                jobs.settings_from_props(context.scene.controlbridge)
        except LookupError:
            settings = jobs.settings_from_props(context.scene.controlbridge)
        seed = jobs.new_seed()
        context.scene.controlbridge.seed = seed
        return _start(self, context, settings.replace(seed=seed))


class CONTROLBRIDGE_OT_generate_cameras(_Watched, bpy.types.Operator):
    """Generate for every camera (or every camera bound to a timeline marker) with the same settings and seed; a
    contact sheet of the shots is saved next to the outputs and opened in the Image editor"""
    bl_idname = "controlbridge.generate_cameras"
    bl_label = "Every Camera"

    scope: EnumProperty(name="Cameras", items=[("ALL", "All Cameras", "Every camera in the scene"),
                                                ("MARKERS", "Marker Cameras", "The cameras bound to timeline markers")],
                        default="ALL")

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not bridge.busy()

    def execute(self, context):
        p = context.scene.controlbridge
        if p.randomize_seed:
            p.seed = jobs.new_seed()   # one seed for every camera
        try:
            self.report({"INFO"}, cameras.start(context, jobs.settings_from_props(p), preferences.get(context),
                                                self.scope))
        except bridge.Busy as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except (CaptureError, ValueError) as exc:
            bridge.fail(str(exc))
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class CONTROLBRIDGE_OT_history_ab(bpy.types.Operator):
    """Compare the last two results of the selected entry's camera side by side (A older, B newer) in the Image
    editor"""
    bl_idname = "controlbridge.history_ab"
    bl_label = "A/B"

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        item = _history_item(self, context.scene.controlbridge)
        camera = cameras.camera_of(item) if item is not None else ""
        if not camera:
            self.report({"ERROR"}, "Select a History entry made from a camera")
            return {"CANCELLED"}
        try:
            image = cameras.a_b(context.scene, camera)
        except LookupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{image.name}: {image.filepath}")
        return {"FINISHED"}


class CONTROLBRIDGE_OT_cancel(bpy.types.Operator):
    """Cancel the running generation"""
    bl_idname = "controlbridge.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return bridge.state().active

    def execute(self, context):
        return {"FINISHED"} if bridge.cancel() else {"CANCELLED"}


class CONTROLBRIDGE_OT_live(bpy.types.Operator):
    """Live: while on, camera and scene changes send new frames and the result updates one image in place"""
    bl_idname = "controlbridge.live"
    bl_label = "Live"

    @classmethod
    def poll(cls, context):
        return live.is_on() or (context.scene is not None and context.scene.camera is not None)

    def execute(self, context):
        if live.is_on():
            live.stop()
            return {"FINISHED"}
        try:
            live.start(context)
        except live.LiveError as exc:
            live.stop(error=str(exc))
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class CONTROLBRIDGE_OT_connect(bpy.types.Operator):
    """Connect to the server and read its models, samplers and limits"""
    bl_idname = "controlbridge.connect"
    bl_label = "Connect"

    @classmethod
    def poll(cls, context):
        return not bridge.busy()

    def execute(self, context):
        prefs = preferences.get(context)
        try:
            bridge.connect(prefs.server_url, prefs.token)
        except bridge.Busy as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


def _history_item(op, p):
    """The history entry an operator acts on: its `index` property, else the list's selection (or None)."""
    index = op.index if op.index >= 0 else p.history_index
    return p.history[index] if 0 <= index < len(p.history) else None


class CONTROLBRIDGE_OT_history_apply(bpy.types.Operator):
    """Place this history image again (camera background, plane, projection as set in the panel)"""
    bl_idname = "controlbridge.history_apply"
    bl_label = "Apply"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        scene = context.scene
        p = scene.controlbridge
        item = _history_item(self, p)
        if item is None or item.image is None:
            self.report({"ERROR"}, "No history image selected")
            return {"CANCELLED"}
        meta = history.capture_meta_of(item)
        objects = [o for o in context.selected_objects if o.type == "MESH"] if p.place_projection else []
        done = results.apply_placements(scene, item.image, meta, background=p.place_background,
                                        plane=p.place_plane, plane_distance=p.plane_distance,
                                        project=bool(objects), objects=objects)
        self.report({"INFO"}, f"{item.image.name}: " + (", ".join(done) or "nothing to place"))
        return {"FINISHED"}


class CONTROLBRIDGE_OT_history_load(bpy.types.Operator):
    """Load this history entry's settings into the panel"""
    bl_idname = "controlbridge.history_load"
    bl_label = "Load Settings"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        p = context.scene.controlbridge
        try:
            settings = history.settings_of(_history_item(self, p))
        except LookupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        jobs.props_from_settings(p, settings)
        return {"FINISHED"}


class CONTROLBRIDGE_OT_remove_projection(bpy.types.Operator):
    """Give the selected meshes their own materials back (undo a projection)"""
    bl_idname = "controlbridge.remove_projection"
    bl_label = "Remove Projection"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        count = sum(results.remove_projection(o) for o in context.selected_objects)
        self.report({"INFO"}, f"Removed the projection from {count} object(s)")
        return {"FINISHED"}


classes = (CONTROLBRIDGE_OT_generate, CONTROLBRIDGE_OT_variation, CONTROLBRIDGE_OT_generate_cameras,
           CONTROLBRIDGE_OT_cancel, CONTROLBRIDGE_OT_live, CONTROLBRIDGE_OT_connect, CONTROLBRIDGE_OT_history_apply,
           CONTROLBRIDGE_OT_history_load, CONTROLBRIDGE_OT_history_ab, CONTROLBRIDGE_OT_remove_projection)
