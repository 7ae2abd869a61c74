"""Make addons/blender/docs/panel.png: a real screenshot of the ControlBridge sidebar, drawn by Blender.

    .venv/bin/controlbridge serve --model tiny --port 8765 &       # optional: any server (see --server)
    python3 addons/blender/docs/screenshot_panel.py [--blender blender] [--server ws://127.0.0.1:8765]

Needs Linux with Xvfb and xdotool (Debian: apt-get install blender python3-numpy xvfb xdotool), and a Blender binary
with a window (the `bpy` module has no UI). It runs in two parts:

- outside Blender (this file run by python3): stages the add-on as a plain package in a temp folder
  (addons/blender/controlbridge + shared/controlbridge_protocol as `vendor/controlbridge_protocol`, as
  build.py lays them out) with the websockets wheel on sys.path (pip download, cached under
  build/wheels like build.py), starts Xvfb, and runs `blender --factory-startup --python <this file>`
  with software OpenGL (Mesa llvmpipe);
- inside Blender (this file run by Blender's --python): imports and registers the add-on (plain
  `register()`, with a preferences entry so the add-on preferences resolve), builds the blockout scene
  of make_picture.py, opens the 3D viewport sidebar, connects to the server (a real handshake), presses
  Generate (a real capture and job, when --server is given), switches the sidebar to the ControlBridge
  tab and widens it (xdotool: Ctrl+Wheel over the tabs, a drag of the sidebar's edge), takes a
  screenshot of the window with bpy.ops.screen.screenshot, crops it to the sidebar and quits.

Nothing is faked: the panel is drawn by Blender, the server line, model and sampler lists come from the
server's handshake, the status line and the history entry from a finished job. Without --server the
panel shows "not connected".
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

try:
    import bpy  # noqa: F401 - present only when Blender runs this file
    IN_BLENDER = True
except ImportError:
    IN_BLENDER = False


# ---- outside Blender ------------------------------------------------------------------------------------

def drive():
    import argparse
    import shutil
    import subprocess
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blender", default="blender")
    ap.add_argument("--server", default="", help="ws:// URL of a running server (empty: not connected)")
    ap.add_argument("--out", default=os.path.join(HERE, "panel.png"))
    ap.add_argument("--full", default="", help="also keep the whole window's screenshot here")
    ap.add_argument("--wheel", default="", help="websockets-15.0.1-py3-none-any.whl (else pip download)")
    ap.add_argument("--size", default="1600x1500", help="window size (and Xvfb screen)")
    ap.add_argument("--display", default=":97")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    stage = tempfile.mkdtemp(prefix="cb_panel_shot_")
    pkg = os.path.join(stage, "controlbridge")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(REPO, "addons", "blender", "controlbridge"), pkg, ignore=ignore)
    os.makedirs(os.path.join(pkg, "vendor"))
    open(os.path.join(pkg, "vendor", "__init__.py"), "w").close()
    shutil.copytree(os.path.join(REPO, "shared", "controlbridge_protocol"),
                    os.path.join(pkg, "vendor", "controlbridge_protocol"), ignore=ignore)
    wheel = args.wheel
    if not wheel:
        cache = os.path.join(REPO, "build", "wheels")
        wheel = os.path.join(cache, "websockets-15.0.1-py3-none-any.whl")
        if not os.path.isfile(wheel):
            subprocess.check_call([sys.executable, "-m", "pip", "download", "websockets==15.0.1", "--no-deps",
                                   "--only-binary=:all:", "--platform", "any", "--python-version", "3.11",
                                   "--implementation", "py", "--abi", "none", "-d", cache])

    width, height = (int(v) for v in args.size.split("x"))
    xvfb = subprocess.Popen(["Xvfb", args.display, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        # A distribution's Blender runs the system Python and finds its home from `python3` on PATH: keep
        # this driver's own Python (a venv, pyenv) off the PATH it sees.
        path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
                if d and "/.pyenv/" not in d and (sys.prefix == "/usr" or not d.startswith(sys.prefix))]
        env = dict(os.environ, DISPLAY=args.display, LIBGL_ALWAYS_SOFTWARE="1", PATH=os.pathsep.join(path),
                   BLENDER_USER_CONFIG=os.path.join(stage, "config"),
                   BLENDER_USER_SCRIPTS=os.path.join(stage, "scripts"))
        job = {"stage": stage, "wheel": os.path.abspath(wheel), "server": args.server,
               "out": os.path.abspath(args.out), "full": os.path.abspath(args.full) if args.full else "",
               "screen_height": height}
        cmd = [args.blender, "--factory-startup", "--window-geometry", "0", "0", str(width), str(height),
               "--python", os.path.abspath(__file__), "--", json.dumps(job)]
        print("+", " ".join(cmd[:-1]), "'<job json>'", flush=True)
        proc = subprocess.run(cmd, env=env, timeout=args.timeout)
    finally:
        xvfb.terminate()
        xvfb.wait()
        shutil.rmtree(stage, ignore_errors=True)
    if proc.returncode != 0 or not os.path.isfile(args.out):
        raise SystemExit(f"Blender exited with {proc.returncode}; no screenshot")
    print("wrote", args.out)


# ---- inside Blender ------------------------------------------------------------------------------------

def log(*parts):
    print("[screenshot_panel]", *parts, flush=True)


def blender_main():
    import bpy
    job = json.loads(sys.argv[sys.argv.index("--") + 1])
    sys.path[:0] = [job["stage"], job["wheel"]]

    prefs = bpy.context.preferences
    prefs.view.show_splash = False
    prefs.system.use_region_overlap = False       # an opaque sidebar: nothing of the viewport behind it
    prefs.view.show_tooltips = False
    if "controlbridge" not in prefs.addons:
        prefs.addons.new().module = "controlbridge"   # what enabling does, so the add-on preferences resolve
    import controlbridge
    controlbridge.register()
    from controlbridge import bridge, panels, properties
    log("registered the add-on on Blender", bpy.app.version_string)

    drawn = {"n": 0}

    def mark_drawn(self, context):            # draws nothing; tells us the ControlBridge tab is showing
        drawn["n"] += 1
    panels.VIEW3D_PT_controlbridge.append(mark_drawn)

    build_scene(bpy.context.scene)
    if job["server"]:
        prefs.addons["controlbridge"].preferences.server_url = job["server"]

    steps = iter(run_steps(job, bridge, properties, drawn))

    def tick():
        try:
            return next(steps)
        except StopIteration:
            bpy.ops.wm.quit_blender()
            return None
        except Exception:
            import traceback
            traceback.print_exc()
            sys.stdout.flush()
            os._exit(1)
    bpy.app.timers.register(tick, first_interval=1.0)


def build_scene(scene):
    """The blockout of make_picture.py: a house, roof, shed and tree on a ground plane, and a shot camera."""
    import bpy
    from mathutils import Vector
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.55, 0.65, 0.8, 1.0)
    scene.world = world
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.7, 0.2, 0.9)
    scene.collection.objects.link(sun)

    def box(name, size, location, color):
        mesh = bpy.data.meshes.new(name)
        import bmesh
        bm = bmesh.new()
        bmesh.ops.create_cube(bm, size=1.0)
        bm.to_mesh(mesh)
        bm.free()
        obj = bpy.data.objects.new(name, mesh)
        obj.location, obj.scale = location, size
        mat = bpy.data.materials.new(name)
        mat.use_nodes = True
        mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*color, 1.0)
        mat.diffuse_color = (*color, 1.0)
        mesh.materials.append(mat)
        scene.collection.objects.link(obj)
        return obj

    box("Ground", (14, 14, 0.1), (0, 0, -0.05), (0.35, 0.4, 0.3))
    box("House", (2.4, 2.0, 1.8), (0, 0, 0.9), (0.8, 0.75, 0.7))
    box("Roof", (2.6, 1.5, 1.5), (0, 0, 2.0), (0.6, 0.25, 0.2)).rotation_euler = (0.785, 0, 0)
    box("Shed", (1.2, 1.2, 1.0), (2.3, 0.8, 0.5), (0.7, 0.7, 0.75))
    box("Tree", (0.6, 0.6, 2.6), (-2.4, 1.2, 1.3), (0.2, 0.45, 0.2))
    shot = bpy.data.objects.new("Shot", bpy.data.cameras.new("Shot"))
    scene.collection.objects.link(shot)
    shot.location = (2.5, -8.0, 2.2)
    shot.rotation_mode = "QUATERNION"
    shot.rotation_quaternion = (Vector((0.0, 0.0, 1.0)) - shot.location).to_track_quat("-Z", "Y")
    shot.data.clip_end = 40.0
    scene.camera = shot
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x, r.resolution_y, r.resolution_percentage = 512, 384, 100
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False     # Debian's Blender 3.4 is built without OpenImageDenoise

    p = scene.controlbridge
    p.prompt = "a cosy cottage in a meadow, golden hour, detailed"
    p.negative_prompt = "blurry, low quality"
    p.randomize_seed = False
    p.seed = 421337
    p.steps, p.cfg, p.denoise = 12, 6.5, 0.6
    p.canny_weight = 0.6
    p.capture_samples = 16
    p.place_background, p.place_plane, p.plane_distance = True, True, 4.0


def run_steps(job, bridge, properties, drawn):
    """A generator of timer intervals: each `yield t` lets Blender run (and redraw) for t seconds."""
    import subprocess
    import bpy

    def view3d():
        win = bpy.context.window_manager.windows[0]
        area = max((a for a in win.screen.areas if a.type == "VIEW_3D"), key=lambda a: a.width * a.height)
        return win, area, next(r for r in area.regions if r.type == "UI")

    def xdo(*a):
        subprocess.run(["xdotool", *map(str, a)], check=False)

    def to_screen(win, x, y):                  # window coordinates (origin bottom left) -> X screen
        return int(win.x + x), int(job["screen_height"] - (win.y + y))

    yield 2.0
    win, area, _ = view3d()
    area.spaces.active.show_region_ui = True
    area.spaces.active.region_3d.view_perspective = "CAMERA"
    for a in win.screen.areas:
        a.tag_redraw()
    yield 1.0

    scene = bpy.context.scene
    info = properties.server_info(bpy.context)
    if job["server"]:
        with bpy.context.temp_override(window=win, area=area):
            bpy.ops.controlbridge.connect()
        deadline = time.monotonic() + 60
        while not info.connected_url and time.monotonic() < deadline:
            yield 0.2
        log("connected:", info.connected_url or bridge.state().line)
        if info.connected_url:
            p = scene.controlbridge
            names = [s.name for s in info.samplers]
            p.sampler = next((n for n in ("dpmpp_2m", "euler_a", "euler") if n in names), names[0] if names else "")
            p.model = info.models[0].name if len(info.models) else ""
            log("samplers", names, "models", [m.name for m in info.models], "controlnets", info.controlnets)
            bpy.ops.object.select_all(action="DESELECT")
            with bpy.context.temp_override(window=win, area=area):
                log("generate:", bpy.ops.controlbridge.generate())
            deadline = time.monotonic() + 300
            while bridge.busy() and time.monotonic() < deadline:
                yield 0.2
            log("job:", bridge.state().phase, bridge.state().line)

    # The sidebar opens on its first tab ("Item"); Blender 3.x/4.x have no API to pick a tab, so use the
    # mouse like a user: Ctrl+Wheel over the sidebar cycles its tabs; stop when our panel has drawn.
    win, area, region = view3d()
    mx, my = to_screen(win, region.x + region.width // 2, region.y + region.height // 2)
    xdo("mousemove", mx, my)
    yield 0.5
    for _ in range(8):
        drawn["n"] = 0
        region.tag_redraw()
        yield 0.6
        if drawn["n"]:
            break
        xdo("keydown", "ctrl")
        xdo("click", "5")
        xdo("keyup", "ctrl")
        yield 0.6
    if not drawn["n"]:
        raise RuntimeError("could not bring up the ControlBridge tab")
    log("ControlBridge tab is showing; sidebar", region.width, "px wide")

    # Widen the sidebar (drag its left edge; in the runs here it ended near 330 px, not 420) so more of the
    # prompt shows; Blender has no API for a region's width.
    target = 420
    if region.width < target:
        ex, ey = to_screen(win, region.x + 2, region.y + region.height // 2)
        xdo("mousemove", ex, ey)
        yield 0.5
        xdo("mousedown", "1")
        yield 0.3
        for step in range(1, 21):
            xdo("mousemove", ex - (target - region.width) * step // 20, ey)
            yield 0.15
        xdo("mouseup", "1")
        yield 0.5
        win, area, region = view3d()
        log("sidebar now", region.width, "px wide")

    # Park the mouse over the viewport (no hover highlight in the sidebar) and let everything redraw.
    px, py = to_screen(win, area.x + 40, area.y + area.height // 2)
    xdo("mousemove", px, py)
    for _ in range(4):
        for a in win.screen.areas:
            a.tag_redraw()
        yield 0.5

    full = job["full"] or os.path.join(job["stage"], "window.png")
    with bpy.context.temp_override(window=win, area=area):
        bpy.ops.screen.screenshot(filepath=full, check_existing=False)
    log("window screenshot:", full)
    crop(full, job["out"], region)
    log("panel screenshot:", job["out"])


def crop(src, dst, region):
    """Cut the sidebar region out of the window screenshot (both in window pixels, origin bottom left)."""
    import bpy
    import numpy as np
    img = bpy.data.images.load(src)
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(h, w, 4)[region.y:region.y + region.height, region.x:region.x + region.width]
    # Drop the empty sidebar below the last panel (rows are bottom-up; ignore the tab column at the right).
    body = px[:, :max(1, region.width - 40), :3]
    busy_rows = np.nonzero((np.abs(body - body[0:1, 0:1]) > 0.02).any(axis=(1, 2)))[0]
    bottom = max(0, int(busy_rows[0]) - 12) if len(busy_rows) else 0
    px = px[bottom:].copy()
    out = bpy.data.images.new("panel", px.shape[1], px.shape[0], alpha=False)
    out.pixels.foreach_set(px.ravel())
    out.filepath_raw = dst
    out.file_format = "PNG"
    out.save()


if __name__ == "__main__":
    if IN_BLENDER:
        try:
            blender_main()
        except Exception:
            import traceback
            traceback.print_exc()
            sys.stdout.flush()
            os._exit(1)
    else:
        drive()
