"""How a capture is made to look like the editor's viewport: gamma, GI/reflection overrides, warm-up. No `unreal`
import; engine_capture.py applies these decisions.

Gamma: a render target from RenderingLibrary.create_render_target2d keeps bForceLinearGamma, so its display
gamma is 1.0 and Final Color (LDR) lands in an RGBA8 target roughly LINEAR: mid-grey (18 %) stored as 46 instead
of the 117 a viewport shows - the server got dark images with crushed shadows. Setting the target's TargetGamma
(> 0 overrides GetDisplayGamma) to the display gamma stores value^(1/gamma), which is what the viewport shows.

Lighting: a scene capture is a separate view. Without a persistent view state (capture_every_frame and
always_persist_rendering_state both off) every capture starts with no temporal history and no eye-adaptation
history; and scene captures turn Lumen GI and reflections off unless their post-process settings override
the method. So the capture persists its rendering state, overrides GI/reflections with the project's methods
(read from the r.DynamicGlobalIlluminationMethod / r.ReflectionMethod console variables), and renders a few
warm-up frames before the one that is read.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

DISPLAY_GAMMA = 2.2
# eye adaptation and temporal AA converge over frames; one capture_scene() is one frame of the capture's view
WARMUP_FRAMES = 3

GI_CVAR = "r.DynamicGlobalIlluminationMethod"
REFLECTION_CVAR = "r.ReflectionMethod"
# console variable value -> enum member name (DynamicGlobalIlluminationMethod / ReflectionMethod)
GI_METHODS = {0: "NONE", 1: "LUMEN", 2: "SCREEN_SPACE", 3: "PLUGIN"}
REFLECTION_METHODS = {0: "NONE", 1: "LUMEN", 2: "SCREEN_SPACE"}


def stored_byte(linear: float, display_gamma: float) -> int:
    """The 8-bit value an LDR render target stores for a linear scene value (0..1) at a display gamma:
    round(255 * linear^(1/gamma)); gamma 1.0 is the bForceLinearGamma case."""
    if display_gamma <= 0:
        raise ValueError(f"display gamma must be positive, got {display_gamma}")
    v = min(1.0, max(0.0, float(linear)))
    return int(round(255.0 * v ** (1.0 / display_gamma)))


def srgb_byte(linear: float) -> int:
    """The sRGB transfer function (what a monitor-referred PNG holds), for comparing with stored_byte."""
    v = min(1.0, max(0.0, float(linear)))
    s = 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1.0 / 2.4) - 0.055
    return int(round(255.0 * s))


def method_override(already_overridden: bool, project_value: int, table: dict) -> Optional[str]:
    """The enum member to override a capture's GI or reflection method with, or None to leave it: a camera that
    overrides the method itself keeps its choice; an unknown console value is left to the engine."""
    if already_overridden:
        return None
    return table.get(int(project_value))


# Editor drawing that must never reach the server: a scene capture starts from the game's show flags, but a
# capture in the editor world can still draw editor-only helpers; switch each off by name (ShowFlagsValues.inl).
EDITOR_ONLY_FLAGS = ("Editor", "BillboardSprites", "Grid", "Selection", "ModeWidgets", "Bounds", "Volumes",
                     "Splines", "Navigation", "CameraFrustums", "LightRadius")
POST_PROCESS_FLAG = "PostProcessing"


def show_flags(post_process: bool) -> List[Tuple[str, bool]]:
    """(show flag name, enabled) for the capture: editor helpers off; post-processing (tone mapping, exposure,
    bloom, color grading) on as in the viewport, or off for the flat scene color."""
    return [(name, False) for name in EDITOR_ONLY_FLAGS] + [(POST_PROCESS_FLAG, bool(post_process))]
