"""Run by tests/blender/test_blender_ui.py inside an interactive Blender (a window on Xvfb), not by pytest.

    blender --factory-startup --python live_in_ui.py -- '{"stage": ..., "wheel": ..., "server": ..., "out": ...}'

The add-on is imported from `stage` (the built zip, unpacked as a `controlbridge` package) and registered
by hand, so this also runs on a Blender older than the extension platform. Checks, written to `out`:
1. the GPU viewport capture against the render capture (same camera; perspective and orthographic):
   depth agreement, background mask, the image plane hidden, overlays put back, and the time per capture;
2. live mode driven by Blender's own timers and depsgraph handlers: first frame, nothing sent while idle
   or when selecting, a camera move updates the same image in place, turning it off stops updates.
"""
import json
import sys
import time
import traceback

import bpy
import numpy as np

JOB = json.loads(sys.argv[sys.argv.index("--") + 1])
sys.path[:0] = [JOB["stage"], JOB["wheel"]]
prefs = bpy.context.preferences
prefs.view.show_splash = False
if "controlbridge" not in prefs.addons:
    prefs.addons.new().module = "controlbridge"   # what enabling does, so the add-on preferences resolve
import controlbridge  # noqa: E402
from controlbridge import capture, live, preferences, results, viewport  # noqa: E402

controlbridge.register()
preferences.get().server_url = JOB["server"]
out = {"blender": bpy.app.version_string}
step = {"name": "viewport", "t": time.monotonic()}


def pixels(image):
    px = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(px)
    return px


def check_viewport(scene, view_layer):
    results.place_image_plane(scene, scene.camera, bpy.data.images.new("plane", 4, 4), 3.0)  # fills the view
    spaces = [a.spaces.active for w in bpy.context.window_manager.windows for a in w.screen.areas
              if a.type == "VIEW_3D"]
    for space in spaces:
        space.region_3d.view_perspective = "CAMERA"
    for kind, (w, h) in (("PERSP", (160, 120)), ("ORTHO", (160, 120)), ("PERSP", (512, 512))):
        scene.render.resolution_x, scene.render.resolution_y = w, h
        scene.camera.data.type, scene.camera.data.ortho_scale = kind, 6.0
        view_layer.update()
        times = []
        for _ in range(4):
            started = time.perf_counter()
            shot = viewport.capture(scene, view_layer)
            times.append((time.perf_counter() - started) * 1000)
        rendered = capture.capture(scene, view_layer, samples=2)
        vd, rd = shot.depth, rendered.depth
        both = (vd < 1e9) & (rd < 1e9)
        out[f"viewport {kind} {w}x{h}"] = {
            "ms": min(times[1:]), "first_ms": times[0], "hits": int(both.sum()),
            "mask_agree": float(((vd < 1e9) == (rd < 1e9)).mean()),
            "depth_err": float(np.abs(vd - rd)[both].max()) if both.any() else None,
            "color_std": float(np.frombuffer(shot.color, np.uint8).std())}
    out["overlays_back"] = all(s.overlay.show_overlays for s in spaces)
    out["plane_shown_again"] = all(not o.hide_get() for o in scene.objects if o.get(capture.HELPER_PROP))
    scene.render.resolution_x, scene.render.resolution_y = 160, 120
    scene.camera.data.type = "PERSP"


def run():
    try:
        return script()
    except Exception:  # noqa: BLE001
        out["error"] = traceback.format_exc()
        return finish()


def finish():
    live.stop()
    with open(JOB["out"], "w") as f:
        json.dump(out, f, indent=1)
    bpy.ops.wm.quit_blender()
    return None


def go(name):
    step["name"], step["t"] = name, time.monotonic()


def waited(seconds):
    return time.monotonic() - step["t"] > seconds


def script():
    scene, lv = bpy.context.scene, live.state()
    name = step["name"]
    if waited(60):
        raise AssertionError(f"timed out in step {name}: {lv}")
    if name == "viewport":
        scene.render.engine, scene.render.resolution_percentage = "CYCLES", 100
        scene.cycles.samples, scene.cycles.use_denoising = 2, False
        scene.view_settings.view_transform = "Standard"
        check_viewport(scene, bpy.context.view_layer)
        p = scene.controlbridge
        p.place_background, p.place_plane, p.live_delay = True, True, 100
        assert bpy.ops.controlbridge.live() == {"FINISHED"}
        go("first")
    elif name == "first" and (lv.results >= 1 or not lv.on):
        assert lv.on, lv.line
        image = results.live_image()
        step.update(image=(image.name, image.as_pointer()), px=pixels(image), blocks=len(bpy.data.images))
        out["first"] = {"path": lv.capture_path, "capture_ms": lv.capture_ms, "line": lv.line}
        go("idle")
    elif name == "idle" and waited(1.5):
        out["idle_sent"] = lv.sent                                # 1: the results changed nothing
        bpy.context.scene.objects["Light"].select_set(True)
        go("select")
    elif name == "select" and waited(1.0):
        out["select_sent"] = lv.sent
        scene.camera.location.x += 0.5
        go("moved")
    elif name == "moved" and lv.results >= 2 and not lv.frames:
        image = results.live_image()
        out["moved"] = {"sent": lv.sent, "same_image": (image.name, image.as_pointer()) == step["image"],
                        "new_pixels": not np.array_equal(pixels(image), step["px"]),
                        "no_new_images": len(bpy.data.images) == step["blocks"], "capture_ms": lv.capture_ms}
        assert bpy.ops.controlbridge.live() == {"FINISHED"}      # off
        step.update(px=pixels(image), sent=lv.sent)
        scene.camera.location.x -= 0.5
        go("off")
    elif name == "off" and waited(1.5):
        out["off"] = {"on": lv.on, "line": lv.line, "sent_more": lv.sent - step["sent"],
                      "pixels_kept": bool(np.array_equal(pixels(results.live_image()), step["px"]))}
        return finish()
    return 0.05


bpy.app.timers.register(run, first_interval=1.0)
