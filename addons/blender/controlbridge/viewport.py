"""Live mode's fast capture: the camera view drawn on the GPU like the 3D viewport, color and depth.

`gpu.types.GPUOffScreen.draw_view3d` draws the scene from the active camera (the render's matrices, at the
render resolution) with the shading of a 3D viewport of the interactive UI, into an offscreen framebuffer
whose depth texture the viewport drawing uses as its own depth buffer; color and depth are read back from
that framebuffer. Overlays (and with them the camera background images) are switched off and the add-on's
helpers (the image plane) hidden while drawing. The depth is what the viewport's engine wrote (X-ray
surfaces write none). A viewport redraw instead of a render, but only where Blender has a GPU context:
headless Blender (`bpy` as a module, `blender -b`) has none, and live mode then renders (capture.py).
3D viewports in Rendered shading with Cycles (or another external engine) are not used: an offscreen draw
has no render session of its own, so live mode renders for those frames too.

Ran only in an interactive Blender 3.4.1 on a virtual display with software OpenGL (tests/blender/
test_blender_ui.py: depth within 2e-4 of the render's Z pass); not on a GPU, not in 4.2-5.0 with a UI.
`depth_to_z` (pure numpy) is also tested in headless 5.0.1 against Blender's own projection matrices.
"""
import bpy
import numpy as np

from .capture import HELPER_PROP, Capture, render_size
from .frustum import camera_frame, unscaled_matrix

BACKGROUND_Z = 1.0e10   # like Cycles' Z pass: nothing there; beyond `far`
DRAWN_ENGINES = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT", "BLENDER_WORKBENCH")   # Rendered shading drawn offscreen


class Unavailable(Exception):
    """No GPU drawing here (headless) or no 3D viewport to take the shading from: use the render path."""


def depth_to_z(depth, projection) -> np.ndarray:
    """Depth-buffer values (window depth in [0, 1], OpenGL convention: 0 at clip start, 1 at clip end) to
    camera-space Z: the planar distance along the view axis in scene units, like Cycles' Z pass.

    `projection` is the 4x4 projection matrix the view was drawn with (`Object.calc_matrix_camera`, whose
    near/far planes are the camera's clip start/end). With ndc = 2 * depth - 1 and P = projection:
    perspective ndc = (P22 * z + P23) / -z, orthographic ndc = P22 * z + P23, for the eye-space z = -Z.
    A cleared pixel (depth 1: nothing drawn) is BACKGROUND_Z."""
    p = np.asarray(projection, dtype=np.float64)
    d = np.asarray(depth, dtype=np.float64)
    ndc = 2.0 * d - 1.0
    a, b = p[2, 2], p[2, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        if p[3, 3] == 0.0:        # perspective: w = -z
            z = b / (ndc + a)
        else:                     # orthographic: w = 1
            z = (b - ndc) / a
    return np.where(d >= 1.0, BACKGROUND_Z, z).astype(np.float32)


def clip_range(projection):
    """(near, far) of a projection matrix: the camera-space Z at depth 0 and just before depth 1."""
    near, far = depth_to_z(np.array([0.0, np.nextafter(1.0, 0.0)]), projection)
    return float(near), float(far)


def _view3d(scene):
    """A 3D viewport of the interactive UI to take the shading from, preferring one that looks through the
    camera: (space, region)."""
    found = []
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type != "VIEW_3D":
                continue
            region = next((r for r in area.regions if r.type == "WINDOW"), None)
            space = area.spaces.active
            if region is None or (space.shading.type == "RENDERED" and scene.render.engine not in DRAWN_ENGINES):
                continue
            found.append((space.region_3d.view_perspective != "CAMERA", space, region))
    if not found:
        raise Unavailable("no 3D viewport to draw with (none open, or all in Rendered shading with "
                          f"{scene.render.engine})")
    found.sort(key=lambda f: f[0])
    return found[0][1], found[0][2]


def _to_numpy(buffer, dtype) -> np.ndarray:
    try:
        return np.asarray(buffer, dtype=dtype)   # gpu.types.Buffer has the buffer protocol
    except (TypeError, ValueError):
        return np.array(buffer.to_list(), dtype=dtype)


def _read(fb, width, height):
    """Color (RGBA8) and depth of the bound framebuffer, bottom row first, as flat numpy arrays. Read into
    flat Buffers: a multi-dimensional Buffer exposes wrong strides to numpy (seen in Blender 3.4)."""
    import gpu
    color = gpu.types.Buffer("UBYTE", width * height * 4)
    depth = gpu.types.Buffer("FLOAT", width * height)
    fb.read_color(0, 0, width, height, 4, 0, "UBYTE", data=color)
    fb.read_depth(0, 0, width, height, data=depth)
    return _to_numpy(color, np.uint8), _to_numpy(depth, np.float32)


def capture(scene, view_layer) -> Capture:
    """Draw the scene's camera view offscreen; color (display transform applied) and raw depth, top row first."""
    if bpy.app.background:
        raise Unavailable("headless Blender cannot draw on the GPU")
    import gpu
    space, region = _view3d(scene)
    camera = scene.camera
    width, height = render_size(scene)
    r = scene.render
    depsgraph = bpy.context.evaluated_depsgraph_get()
    matrix = unscaled_matrix(camera)   # what the render sees: the camera's scale changes nothing
    projection = camera.calc_matrix_camera(depsgraph, x=width, y=height,
                                           scale_x=r.pixel_aspect_x, scale_y=r.pixel_aspect_y)
    helpers = [o for o in scene.objects if o.get(HELPER_PROP) and o.visible_get(view_layer=view_layer)]
    overlays, offscreen = space.overlay.show_overlays, None
    try:
        offscreen = gpu.types.GPUOffScreen(width, height, format="RGBA8")
        for obj in helpers:
            obj.hide_set(True, view_layer=view_layer)
        if helpers:
            view_layer.update()
        space.overlay.show_overlays = False   # no grid, outlines, camera background images
        offscreen.draw_view3d(scene, view_layer, space, region, matrix.inverted(), projection,
                              do_color_management=True)   # draw_background defaults to True
        with offscreen.bind():
            color, depth = _read(gpu.state.active_framebuffer_get(), width, height)
    except Exception as exc:   # e.g. no GPU context: the caller falls back to rendering
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if offscreen is not None:
            offscreen.free()
        space.overlay.show_overlays = overlays
        for obj in helpers:
            obj.hide_set(False, view_layer=view_layer)
    color = color.reshape(height, width, 4)[::-1].copy()   # OpenGL rows are bottom first
    color[..., 3] = 255
    depth = depth_to_z(depth.reshape(height, width)[::-1], np.array(projection))
    return Capture(width=width, height=height, color=color.tobytes(), depth=np.ascontiguousarray(depth),
                   far=float(camera.data.clip_end), camera_name=camera.name,
                   camera_matrix=[list(row) for row in matrix], frame=camera_frame(scene, camera),
                   engine="VIEWPORT")
