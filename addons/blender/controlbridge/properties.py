"""Blender properties: the job settings the panel edits (per scene, saved with the .blend), the history of
this file's generations, and the server's capabilities as last read from its handshake (per session)."""
import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, FloatVectorProperty, IntProperty,
                       PointerProperty, StringProperty)

from .vendor.controlbridge_protocol import control_offer

MAX_SEED = 2**31 - 1   # Blender integer properties are 32-bit


class ControlBridgeName(bpy.types.PropertyGroup):
    """One entry of a capabilities list (a sampler or a model); `name` is the value."""

    label: StringProperty()


class ControlBridgeServerInfo(bpy.types.PropertyGroup):
    """What the server said in its welcome. Filled by bridge.drain(); never hard-coded."""

    connected_url: StringProperty(description="The server these capabilities came from")
    samplers: CollectionProperty(type=ControlBridgeName)
    models: CollectionProperty(type=ControlBridgeName)
    controlnets: StringProperty(description="ControlNets the server has, comma separated")
    # For the ControlNets panel (control_offer.py decides): kinds the server can run, its library's ControlNet files
    # (label: family, "union"), the estimators it runs, whether it has any style (IP-Adapter) model
    kinds_available: StringProperty(description="ControlNet kinds the server can run, comma separated")
    controlnet_files: CollectionProperty(type=ControlBridgeName)
    union_files: StringProperty(description="The library's union (ControlNet++) files, comma separated")
    estimators: CollectionProperty(type=ControlBridgeName)
    style_adapters: StringProperty(description="Style (IP-Adapter) models the server has, comma separated")
    default_model: StringProperty()
    max_pixels: IntProperty()
    max_steps: IntProperty()
    max_message_bytes: IntProperty()
    token_required: BoolProperty()


class ControlBridgeHistoryItem(bpy.types.PropertyGroup):
    image: PointerProperty(type=bpy.types.Image, description="The generated image; its settings are stored on it")
    job_id: StringProperty()
    seed: StringProperty(description="Seeds can be larger than a Blender integer")
    prompt: StringProperty()


CAPTURE_ENGINES = [("EEVEE", "EEVEE (fast)", "Render the capture with EEVEE at Capture Samples: the artist's look, "
                                             "milliseconds on a GPU"),
                   ("WORKBENCH", "Workbench (fastest)", "Render the capture with Workbench: solid shading, the "
                                                        "quickest depth and layout"),
                   ("CYCLES", "Cycles (final quality)", "Render the capture with Cycles at Final Samples: slow, "
                                                         "for the final image")]

CAPTURE_BACKGROUNDS = [("WORLD", "World", "Where the film is transparent, send the world as the viewport shows it"),
                       ("COLOR", "Colour", "Where the film is transparent, send this colour")]


def _update_helpers_in_render(self, context):
    from .results import set_helpers_in_render   # results imports bpy-heavy modules
    set_helpers_in_render(context.scene, self.helpers_in_render)


LIVE_CAPTURES = [("VIEWPORT", "Viewport", "Draw the camera view on the GPU like the 3D viewport (fast; needs the "
                                         "interactive UI, falls back to Render otherwise)"),
                 ("RENDER", "Render", "Render the capture like Generate does (slower; works everywhere)")]


CONTROL_KINDS = control_offer.DCC_KINDS   # the kinds the panel offers, each with the properties below
_ESTIMATOR_HELP = "The server's estimator that makes the map from the color; empty: its first for this kind"
_MODEL_HELP = ("A ControlNet file from the server's library; empty: the model's own. A union (ControlNet++) file "
               "runs in this kind's mode")

# Per kind (every one of CONTROL_KINDS): the label of its switch, whether a new scene has it on, what it guides with
_CONTROL_SWITCHES = {
    "depth": ("Depth", True, "Guide with the captured depth"),
    "canny": ("Canny", True, "Guide with edges of the captured color"),
    "normal": ("Normal", False, "Guide with the camera's normal pass (captured and sent when this is on)"),
    "lineart": ("Lineart", False, "Guide with line art the server's estimator draws from the captured color"),
    "softedge": ("Soft Edge", False, "Guide with soft edges (HED / PiDiNet) the server's estimator makes from the "
                                     "captured color"),
    "tile": ("Tile", False, "Guide with the captured color itself (keeps its detail and layout)"),
}


def _control_properties(kind: str) -> dict:
    """One ControlNet kind's properties: use_<kind>, <kind>_weight/_start/_end/_model, and <kind>_estimator for a
    kind whose map the server's estimator makes from the color (control_offer.ESTIMATED_KINDS)."""
    label, on, description = _CONTROL_SWITCHES[kind]
    props = {f"use_{kind}": BoolProperty(name=label, default=on, description=description),
             f"{kind}_weight": FloatProperty(name="Weight", min=0.0, soft_max=2.0, default=1.0),
             f"{kind}_start": FloatProperty(name="Start", min=0.0, max=1.0, default=0.0, subtype="FACTOR"),
             f"{kind}_end": FloatProperty(name="End", min=0.0, max=1.0, default=1.0, subtype="FACTOR"),
             f"{kind}_model": StringProperty(name="Model", description=_MODEL_HELP)}
    if kind in control_offer.ESTIMATED_KINDS:
        props[f"{kind}_estimator"] = StringProperty(name="Estimator", description=_ESTIMATOR_HELP)
    return props


def _with_control_properties(cls):
    """Give the settings every kind's properties (registration reads them from __annotations__)."""
    for kind in CONTROL_KINDS:
        cls.__annotations__.update(_control_properties(kind))
    return cls


@_with_control_properties
class ControlBridgeSettings(bpy.types.PropertyGroup):
    # Prompt and sampling (ComfyUI names)
    prompt: StringProperty(name="Prompt", description="What to generate")
    negative_prompt: StringProperty(name="Negative", description="What to avoid")
    seed: IntProperty(name="Seed", min=0, max=MAX_SEED, default=0)
    randomize_seed: BoolProperty(name="Randomize", default=True,
                                 description="Pick a new seed for every generation (the seed used is shown)")
    steps: IntProperty(name="Steps", min=1, soft_max=100, default=20)
    cfg: FloatProperty(name="CFG", min=0.0, soft_max=30.0, default=7.0, step=10, precision=1)
    sampler: StringProperty(name="Sampler", description="Empty: the server's default")
    model: StringProperty(name="Model", description="Empty: the server's default model")
    denoise: FloatProperty(name="Denoise", min=0.0, max=1.0, default=0.75, subtype="FACTOR",
                           description="How much of the captured color image is changed (img2img strength)")
    # ControlNets: one set per kind, added by _with_control_properties; the canny thresholds are canny's own
    canny_low: IntProperty(name="Low", min=0, max=255, default=100)
    canny_high: IntProperty(name="High", min=0, max=255, default=200)
    # Style reference (IP-Adapter): generations (not live frames) follow this image's look
    use_style: BoolProperty(name="Style Reference", default=False,
                            description="Every generation follows the look of a reference image (IP-Adapter)")
    style_image: PointerProperty(type=bpy.types.Image, name="Image", description="The reference image")
    style_path: StringProperty(name="File", subtype="FILE_PATH",
                               description="A PNG or JPEG file, used when no image is chosen")
    style_weight: FloatProperty(name="Weight", min=0.0, max=2.0, default=0.6,
                                description="How strongly the reference steers the result")
    # Output
    use_scene_resolution: BoolProperty(name="Scene Resolution", default=True,
                                       description="Generate at the render resolution x percentage")
    width: IntProperty(name="Width", min=8, soft_max=4096, default=512)
    height: IntProperty(name="Height", min=8, soft_max=4096, default=512)
    preview_every: IntProperty(name="Preview Every", min=0, soft_max=20, default=5,
                               description="Show a preview every N steps (0: none)")
    # Capture
    capture_engine: EnumProperty(name="Capture Engine", items=CAPTURE_ENGINES, default="EEVEE")
    capture_samples: IntProperty(name="Capture Samples", min=1, soft_max=64, default=4,
                                 description="EEVEE samples for the capture render")
    final_samples: IntProperty(name="Final Samples", min=1, soft_max=1024, default=32,
                               description="Cycles samples for a final-quality capture")
    capture_background: EnumProperty(name="Background", items=CAPTURE_BACKGROUNDS, default="WORLD",
                                     description="What is sent where the film is transparent (Film > Transparent)")
    background_color: FloatVectorProperty(name="Background Colour", subtype="COLOR_GAMMA", size=3, min=0.0, max=1.0,
                                          default=(0.5, 0.5, 0.5))
    helpers_in_render: BoolProperty(name="Helpers in Renders", default=False, update=_update_helpers_in_render,
                                    description="Show the image planes and projectors in F12 renders (they are "
                                                "never in a capture)")
    # The ControlBridge render engine (F12 / Ctrl-F12)
    render_chain: BoolProperty(name="Chain Frames", default=False,
                               description="In an animation, start each frame from the previous frame's result "
                                           "(img2img) instead of its own capture, for steadier sequences; depth "
                                           "is always the frame's own")
    # Live mode
    live_fast: BoolProperty(name="Fast Sampler", default=True,
                            description="Live frames use the LCM sampler with Live Steps and CFG 1 when the server "
                                        "has it (otherwise the sampler, steps and CFG above)")
    live_steps: IntProperty(name="Live Steps", min=1, soft_max=12, default=4,
                            description="Steps of a live frame with the fast sampler")
    live_delay: IntProperty(name="Delay (ms)", min=0, soft_max=2000, default=200,
                            description="Capture once the scene has been still this long, and at most once per "
                                        "this long")
    live_capture: EnumProperty(name="Live Capture", items=LIVE_CAPTURES, default="VIEWPORT")
    # Where the result goes (the image datablock is always made)
    place_background: BoolProperty(name="Camera Background", default=True)
    place_plane: BoolProperty(name="Image Plane", default=False,
                              description="A plane parented to the camera, filling its view at a distance")
    plane_distance: FloatProperty(name="Distance", min=0.001, default=10.0, subtype="DISTANCE")
    place_projection: BoolProperty(name="Project on Selected", default=False,
                                   description="Texture the selected meshes with the image projected from the camera")
    # History of this file's generations
    history: CollectionProperty(type=ControlBridgeHistoryItem)
    history_index: IntProperty(default=-1)


classes = (ControlBridgeName, ControlBridgeServerInfo, ControlBridgeHistoryItem, ControlBridgeSettings)


def settings(context_or_scene) -> ControlBridgeSettings:
    scene = getattr(context_or_scene, "scene", context_or_scene)
    return scene.controlbridge


def server_info(context=None) -> ControlBridgeServerInfo:
    return (context or bpy.context).window_manager.controlbridge_server


def store_capabilities(info: ControlBridgeServerInfo, url: str, caps) -> None:
    info.connected_url = url
    info.samplers.clear()
    for name in caps.samplers:
        info.samplers.add().name = name
    info.models.clear()
    for model in caps.models:
        item = info.models.add()
        item.name = str(model.get("name", ""))
        item.label = f"{item.name} ({model.get('family', '?')}, {model.get('native_resolution', '?')}px)"
    info.controlnets = ", ".join(caps.controlnets)
    info.kinds_available = ", ".join(k for k in CONTROL_KINDS if control_offer.kind_available(caps, k))
    info.controlnet_files.clear()
    for entry in (caps.library or {}).get("controlnet") or []:
        item = info.controlnet_files.add()
        item.name = str(entry.get("name", ""))
        item.label = ", ".join(x for x in (entry.get("family"), entry.get("variant")) if x)
    info.union_files = ", ".join(e.name for e in info.controlnet_files if e.label.endswith("union"))
    info.estimators.clear()
    for kind in CONTROL_KINDS:
        for name in control_offer.estimators_for(caps, kind):
            item = info.estimators.add()
            item.name, item.label = name, kind
    info.style_adapters = ", ".join(str(a.get("name")) for a in (getattr(caps, "style", None) or {}).get("adapters")
                                    or [])
    info.default_model = caps.default_model or ""
    limits = caps.limits or {}
    info.max_pixels = int(limits.get("max_pixels") or 0)
    info.max_steps = int(limits.get("max_steps") or 0)
    info.max_message_bytes = min(int(limits.get("max_message_bytes") or 0), 2**31 - 1)
    info.token_required = bool(caps.token_required)


def clear_capabilities(info: ControlBridgeServerInfo) -> None:
    info.connected_url = ""
    info.samplers.clear()
    info.models.clear()
    info.controlnets = ""
    info.kinds_available = ""
    info.controlnet_files.clear()
    info.union_files = ""
    info.estimators.clear()
    info.style_adapters = ""


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.controlbridge = PointerProperty(type=ControlBridgeSettings)
    bpy.types.WindowManager.controlbridge_server = PointerProperty(type=ControlBridgeServerInfo)


def unregister():
    del bpy.types.WindowManager.controlbridge_server
    del bpy.types.Scene.controlbridge
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
