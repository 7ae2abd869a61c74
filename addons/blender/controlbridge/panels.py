"""The 3D viewport sidebar panel (tab "ControlBridge") and the status bar line. Drawing only."""
import bpy

from . import bridge, live, properties


def _server_line(layout, info):
    row = layout.row(align=True)
    if info.connected_url:
        row.label(text=f"Server: {info.connected_url}", icon="LINKED")
    else:
        row.label(text="Server: not connected", icon="UNLINKED")
    row.operator("controlbridge.connect", text="", icon="FILE_REFRESH")


def _status(layout, st):
    if st.active:
        factor = st.step / st.total if st.total else 0.0
        if hasattr(layout, "progress"):
            layout.progress(factor=factor, type="BAR", text=st.line)
        else:
            layout.label(text=st.line, icon="TIME")
    elif st.error:
        layout.label(text=st.line, icon="ERROR")
    elif st.line:
        layout.label(text=st.line, icon="CHECKMARK" if st.phase == "finished" else "INFO")


class VIEW3D_PT_controlbridge(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ControlBridge"
    bl_label = "ControlBridge"

    def draw(self, context):
        layout = self.layout
        st = bridge.state()
        _server_line(layout, properties.server_info(context))
        if context.scene.camera is None:
            layout.label(text="Add a camera and make it active", icon="ERROR")
        row = layout.row(align=True)
        row.scale_y = 1.5
        if st.active:
            row.operator("controlbridge.cancel", icon="CANCEL")
        else:
            row.operator("controlbridge.generate", icon="RENDER_STILL")
            row.operator("controlbridge.variation", text="", icon="FILE_REFRESH")
            row.operator_menu_enum("controlbridge.generate_cameras", "scope", text="", icon="OUTLINER_OB_CAMERA")
        row.operator("controlbridge.live", text="Live", icon="PLAY" if not live.is_on() else "PAUSE",
                     depress=live.is_on())
        _status(layout, st)
        lv = live.state()
        if lv.line:
            layout.label(text=lv.line, icon="ERROR" if lv.error else ("REC" if lv.on else "INFO"))
        preview = bpy.data.images.get(st.preview_name) if st.active and st.preview_name else None
        if preview is not None and preview.preview is not None:
            layout.template_icon(icon_value=preview.preview.icon_id, scale=8.0)


class _Sub:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ControlBridge"
    bl_parent_id = "VIEW3D_PT_controlbridge"


class VIEW3D_PT_controlbridge_prompt(_Sub, bpy.types.Panel):
    bl_label = "Prompt and Sampling"

    def draw(self, context):
        layout = self.layout
        p = context.scene.controlbridge
        info = properties.server_info(context)
        layout.prop(p, "prompt", text="")
        layout.prop(p, "negative_prompt", text="", icon="REMOVE")
        row = layout.row(align=True)
        row.prop(p, "seed")
        row.prop(p, "randomize_seed", text="", icon="FILE_REFRESH", toggle=True)
        col = layout.column(align=True)
        col.prop(p, "steps")
        col.prop(p, "cfg")
        col.prop(p, "denoise")
        layout.prop_search(p, "sampler", info, "samplers", text="Sampler")
        layout.prop_search(p, "model", info, "models", text="Model")
        if not info.connected_url:
            layout.label(text="Connect to list the server's samplers and models", icon="INFO")


def _kind_note(info, p, kind) -> str:
    """Why a ControlNet kind cannot run on the connected server, or what its union file does; "" when fine."""
    if not info.connected_url:
        return ""
    model = getattr(p, f"{kind}_model").strip()
    if model:
        if model not in info.controlnet_files:
            return "not in the server's library"
        return f"union: {kind} mode" if model in [n.strip() for n in info.union_files.split(",")] else ""
    own = [n.strip() for n in info.controlnets.split(",")]
    if kind in own:
        return ""
    available = [n.strip() for n in info.kinds_available.split(",")]
    return "choose a model from the library" if kind in available else "not on this server"


class VIEW3D_PT_controlbridge_controlnets(_Sub, bpy.types.Panel):
    bl_label = "ControlNets"

    def draw(self, context):
        layout = self.layout
        p = context.scene.controlbridge
        info = properties.server_info(context)
        for name in properties.CONTROL_KINDS:
            on = getattr(p, f"use_{name}")
            box = layout.box()
            row = box.row(align=True)
            row.prop(p, f"use_{name}")
            note = _kind_note(info, p, name)
            if note:
                row.label(text=note, icon="INFO" if note.startswith("union") else "ERROR")
            sub = row.row(align=True)
            sub.active = on
            sub.prop(p, f"{name}_weight")
            if not on:
                continue
            row = box.row(align=True)
            row.prop(p, f"{name}_start")
            row.prop(p, f"{name}_end")
            box.prop_search(p, f"{name}_model", info, "controlnet_files", text="Model")
            if name == "canny":
                row = box.row(align=True)
                row.prop(p, "canny_low")
                row.prop(p, "canny_high")
            elif name == "normal":
                box.label(text="Fed by the camera's normal pass", icon="NORMALS_FACE")
            elif name == "tile":
                box.label(text="Fed by the captured colour", icon="IMAGE_DATA")
            elif name in ("lineart", "softedge"):
                box.prop_search(p, f"{name}_estimator", info, "estimators", text="Estimator")
                estimator = getattr(p, f"{name}_estimator").strip()
                offered = [e.name for e in info.estimators if e.label == name]
                if info.connected_url and (estimator not in offered if estimator else not offered):
                    box.label(text=f"estimator {estimator or 'for ' + name} not on this server", icon="ERROR")


class VIEW3D_PT_controlbridge_style(_Sub, bpy.types.Panel):
    bl_label = "Style Reference"
    bl_options = {"DEFAULT_CLOSED"}

    def draw_header(self, context):
        self.layout.prop(context.scene.controlbridge, "use_style", text="")

    def draw(self, context):
        layout = self.layout
        p = context.scene.controlbridge
        info = properties.server_info(context)
        layout.active = p.use_style
        layout.template_ID(p, "style_image", open="image.open")
        if p.style_image is None:
            layout.prop(p, "style_path")
        layout.prop(p, "style_weight")
        if info.connected_url and not info.style_adapters:
            layout.label(text="not on this server (no IP-Adapter)", icon="ERROR")
        layout.label(text="Generations only: live frames ignore it", icon="INFO")


class VIEW3D_PT_controlbridge_output(_Sub, bpy.types.Panel):
    bl_label = "Output"

    def draw(self, context):
        layout = self.layout
        p = context.scene.controlbridge
        layout.prop(p, "use_scene_resolution")
        if p.use_scene_resolution:
            r = context.scene.render
            layout.label(text=f"{r.resolution_x * r.resolution_percentage // 100} x "
                              f"{r.resolution_y * r.resolution_percentage // 100} (render resolution)")
        else:
            row = layout.row(align=True)
            row.prop(p, "width")
            row.prop(p, "height")
        layout.prop(p, "preview_every")
        layout.label(text="Put the result on:")
        col = layout.column(align=True)
        col.prop(p, "place_background")
        row = col.row(align=True)
        row.prop(p, "place_plane")
        sub = row.row(align=True)
        sub.active = p.place_plane
        sub.prop(p, "plane_distance")
        row = col.row(align=True)
        row.prop(p, "place_projection")
        row.operator("controlbridge.remove_projection", text="", icon="X")


class VIEW3D_PT_controlbridge_capture(_Sub, bpy.types.Panel):
    bl_label = "Capture"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        p = context.scene.controlbridge
        layout.prop(p, "capture_engine")
        if p.capture_engine == "EEVEE":
            layout.prop(p, "capture_samples")
        elif p.capture_engine == "CYCLES":
            layout.prop(p, "final_samples")
        row = layout.row(align=True)
        row.prop(p, "capture_background")
        if p.capture_background == "COLOR":
            row.prop(p, "background_color", text="")
        layout.prop(p, "helpers_in_render")


class VIEW3D_PT_controlbridge_server(_Sub, bpy.types.Panel):
    bl_label = "Server"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        info = properties.server_info(context)
        if not info.connected_url:
            layout.label(text="Not connected")
            layout.operator("controlbridge.connect")
            return
        col = layout.column(align=True)
        for model in info.models:
            col.label(text=model.label or model.name, icon="FILE_3D")
        col.label(text=f"Default model: {info.default_model or '-'}")
        col.label(text=f"ControlNets: {info.controlnets or '-'}")
        col.label(text=f"Kinds it can run: {info.kinds_available or '-'}")
        col.label(text=f"Estimators: {', '.join(e.name for e in info.estimators) or '-'}")
        col.label(text=f"Style adapters: {info.style_adapters or '-'}")
        col.label(text=f"Samplers: {', '.join(s.name for s in info.samplers) or '-'}")
        col.label(text=f"Max steps {info.max_steps or '-'}, max pixels {info.max_pixels or '-'}")
        col.label(text="Token required" if info.token_required else "No token required")


class VIEW3D_PT_controlbridge_live(_Sub, bpy.types.Panel):
    bl_label = "Live"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        p = context.scene.controlbridge
        row = layout.row(align=True)
        row.prop(p, "live_fast")
        sub = row.row(align=True)
        sub.active = p.live_fast
        sub.prop(p, "live_steps")
        layout.prop(p, "live_delay")
        layout.prop(p, "live_capture")
        lv = live.state()
        if lv.on and lv.sent:
            layout.label(text=f"{lv.sent} sent, {lv.results} shown, {lv.skipped} skipped")
        if lv.on and p.live_capture == "VIEWPORT" and lv.capture_path == "render" and lv.viewport_unavailable:
            layout.label(text=f"Rendering: {lv.viewport_unavailable}", icon="INFO")


class CONTROLBRIDGE_UL_history(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        icon_value = item.image.preview.icon_id if item.image is not None and item.image.preview else 0
        label = f"{item.image.name if item.image else item.name}  seed {item.seed}"
        if icon_value:
            layout.label(text=label, icon_value=icon_value)
        else:
            layout.label(text=label, icon="IMAGE_DATA")


class VIEW3D_PT_controlbridge_history(_Sub, bpy.types.Panel):
    bl_label = "History"

    def draw(self, context):
        layout = self.layout
        p = context.scene.controlbridge
        layout.template_list("CONTROLBRIDGE_UL_history", "", p, "history", p, "history_index", rows=3)
        row = layout.row(align=True)
        row.operator("controlbridge.history_apply", icon="IMAGE_REFERENCE")
        row.operator("controlbridge.history_load", icon="IMPORT")
        row.operator("controlbridge.variation", icon="FILE_REFRESH")
        layout.operator("controlbridge.history_ab", icon="SPLIT_HORIZONTAL")


class RENDER_PT_controlbridge(bpy.types.Panel):
    """Render Properties with the ControlBridge engine: what F12 and Ctrl-F12 use (the prompt and the rest are the
    sidebar's, one set of settings per scene)."""
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    bl_label = "ControlBridge"
    COMPAT_ENGINES = {"CONTROLBRIDGE"}

    @classmethod
    def poll(cls, context):
        return context.engine in cls.COMPAT_ENGINES

    def draw(self, context):
        from . import engine   # the render engine module, imported where used
        layout = self.layout
        layout.use_property_split = True
        p = context.scene.controlbridge
        layout.prop(p, "prompt")
        row = layout.row(align=True)
        row.prop(p, "seed", text="Seed (every frame)")
        col = layout.column(align=True)
        col.prop(p, "steps")
        col.prop(p, "denoise")
        layout.prop(p, "capture_engine", text="Inner Engine")
        if p.capture_engine == "EEVEE":
            layout.prop(p, "capture_samples")
        elif p.capture_engine == "CYCLES":
            layout.prop(p, "final_samples")
        layout.prop(p, "render_chain")
        vs = context.scene.view_settings
        if vs.view_transform != "Standard" or vs.look != "None" or vs.exposure != 0.0 or vs.gamma != 1.0:
            # The server's image is display-ready: any other view transform would grade it a second time.
            box = layout.box()
            box.label(text="Colour Management > View Transform: Standard", icon="INFO")
            box.label(text="shows and saves the server's pixels exactly")
            box.prop(vs, "view_transform")
        est = engine.state()
        if est.line:
            layout.label(text=est.line, icon="ERROR" if est.error else "INFO")


def draw_status_bar(self, context):
    st = bridge.state()
    if st.active or st.error:
        self.layout.label(text=f"ControlBridge: {st.line}", icon="ERROR" if st.error else "RENDER_STILL")


classes = (VIEW3D_PT_controlbridge, VIEW3D_PT_controlbridge_prompt, VIEW3D_PT_controlbridge_controlnets,
           VIEW3D_PT_controlbridge_style,
           VIEW3D_PT_controlbridge_output, VIEW3D_PT_controlbridge_capture, VIEW3D_PT_controlbridge_live,
           VIEW3D_PT_controlbridge_server,
           CONTROLBRIDGE_UL_history, VIEW3D_PT_controlbridge_history, RENDER_PT_controlbridge)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)


def unregister():
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
