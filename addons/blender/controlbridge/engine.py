"""ControlBridge as a render engine: F12 captures the frame with an inner engine, generates it on the server and
writes the image into the Render Result, so the Image editor, the compositor and the output paths work as for any
render. Ctrl-F12 renders an animation frame by frame with one seed (the panel's, for the whole shot), optionally
starting each frame from the previous frame's result (img2img chaining) for steadier sequences.

Per frame: connect and read the handshake first (a server that is down costs no capture), then capture a
temporary copy of the scene (a render cannot render its own scene again; the copy links the same objects) with
the panel's capture engine, then send and wait, reporting progress and previews in the render window; Esc
(`test_break`) cancels the server's job.

Threads: in background mode (command-line and the tests) Blender calls render() on the main thread, and a
render blocks it by nature. In the UI, render() runs on the render job's thread: the capture and the decoding
of the result (bpy data) are handed to the main thread (a task queue that a main-thread timer empties), and
only the network waits here.
"""
import queue
import threading
from dataclasses import dataclass, field
from typing import Optional

import bpy
import numpy as np

from . import capture, jobs, preferences, results, style
from .vendor.controlbridge_protocol import control_offer
from .vendor.controlbridge_protocol import (Accepted, Cancelled, Client, ControlBridgeError, Disconnected,
                                            ImageAttachment, JobError, Progress, Result)

ENGINE_ID = "CONTROLBRIDGE"
CONNECT_TIMEOUT = 5.0
CAPTURE_SCENE_PREFIX = "ControlBridge capture of "
PUMP_INTERVAL = 0.05
CANCELLED = "Cancelled"


class RenderFailed(Exception):
    """One line for the render window and the report."""


@dataclass
class Frame:
    """What one rendered frame did (kept for chaining, the panel and the tests)."""
    scene: str
    frame: int
    job_id: str
    seed: int
    saved_path: str
    chained: bool              # started from the previous frame's result
    camera: str = ""           # the camera captured (markers can switch it during an animation)
    png: bytes = field(repr=False, default=b"")   # the result file, kept for the newest frame only
    width: int = 0
    height: int = 0


@dataclass
class EngineState:
    line: str = ""
    error: str = ""
    frames: list = field(default_factory=list)   # Frame, newest last (the last few)

    def last(self, scene_name: str) -> Optional[Frame]:
        return next((f for f in reversed(self.frames) if f.scene == scene_name), None)


_state = EngineState()
KEEP_FRAMES = 16


def state() -> EngineState:
    return _state


class ControlBridgeRenderEngine(bpy.types.RenderEngine):
    bl_idname = ENGINE_ID
    bl_label = "ControlBridge"
    bl_use_postprocess = True     # compositor and sequencer run on the result, as for any engine
    bl_use_preview = False        # material previews would each be a server job

    def render(self, depsgraph):
        scene = depsgraph.scene.original
        try:
            frame = _render_frame(self, scene, depsgraph.view_layer.name)
        except Exception as exc:  # noqa: BLE001 - every failure is the render's one-line report
            line = str(exc) if isinstance(exc, RenderFailed) else _one_line(f"{type(exc).__name__}: {exc}")
            if line == CANCELLED:   # Esc: the artist knows, the render just stops
                _state.error, _state.line = "", line
                self.report({"WARNING"}, line)
                return
            _state.error = _state.line = line
            self.report({"ERROR"}, line)
            self.error_set(line)
            return
        _state.error = ""
        _state.line = (f"Frame {frame.frame}: {frame.width}x{frame.height}, seed {frame.seed}"
                       + (", chained" if frame.chained else ""))
        self.update_stats("ControlBridge", _state.line)


def _render_frame(engine, scene, view_layer_name: str) -> Frame:
    p = scene.controlbridge
    prefs = preferences.get()
    width, height = capture.render_size(scene)
    number = scene.frame_current
    # Server first: an unreachable server or a refused token is reported before any capture is made.
    engine.update_stats("ControlBridge", f"Connecting to {prefs.server_url} ...")
    client = Client(url=prefs.server_url, token=prefs.token or None, client_name=_client_name())
    try:
        try:
            client.connect(timeout=CONNECT_TIMEOUT)
        except ControlBridgeError as exc:
            raise RenderFailed(_one_line(exc)) from None
        if engine.test_break():
            raise RenderFailed(CANCELLED)
        engine.update_stats("ControlBridge", f"Frame {number}: capturing ({p.capture_engine}) ...")
        images, meta = _on_main(engine, lambda: _capture_copy(scene, view_layer_name, capture.options_from_props(p)))
        previous = _state.last(scene.name)
        # Chaining is for animations: the previous frame of this sequence, at this size, from the same camera (a
        # cut to another camera, by a timeline marker, starts afresh).
        chained = bool(p.render_chain and engine.is_animation and previous is not None
                       and previous.frame == number - 1 and (previous.width, previous.height) == (width, height)
                       and previous.camera == meta.get("camera") and previous.png)
        if chained:   # img2img from the previous frame's result; depth (and normals) are this frame's own
            images = [ImageAttachment.encoded("color", "png", width, height, previous.png)] + \
                     [a for a in images if a.name != "color"]
        settings = control_offer.fill_estimators(jobs.settings_from_props(p), client.capabilities).replace(
            width=None, height=None, result_encoding="png")
        result = _run(engine, client, settings, images, number, width, height)
    finally:
        _close_in_background(client)
    pixels = _on_main(engine, lambda: _linear_pixels(result.image, width, height))
    out = engine.begin_result(0, 0, width, height)
    out.layers[0].passes["Combined"].rect = pixels
    engine.end_result(out)
    frame = Frame(scene=scene.name, frame=number, job_id=result.job_id, seed=int(result.seed),
                  saved_path=result.saved_path, chained=chained, camera=meta.get("camera", ""), png=result.image.data,
                  width=width, height=height)
    for older in _state.frames:
        older.png = b""   # only the newest frame can be chained from: do not hold every frame's file
    _state.frames = (_state.frames + [frame])[-KEEP_FRAMES:]
    return frame


def _run(engine, client, settings, images, number, width, height) -> Result:
    """Send the job and wait for it, with progress, previews and Esc; the render's thread only."""
    try:
        request_id = client.submit(settings, images)
    except ControlBridgeError as exc:
        raise RenderFailed(_one_line(exc)) from None
    job_id = None
    cancelled = False
    while True:
        if engine.test_break() and not cancelled:
            cancelled = True
            if job_id is None:
                raise RenderFailed(CANCELLED)   # not accepted yet: the connection closes, the server drops it
            client.cancel(job_id)
            engine.update_stats("ControlBridge", f"Frame {number}: cancelling ...")
        event = client.next_event(timeout=0.1)
        if event is None:
            continue
        if isinstance(event, Disconnected):
            raise RenderFailed(_one_line(f"Lost the connection to the server: {event.reason}"))
        if isinstance(event, Accepted) and event.request_id == request_id:
            job_id = event.job_id
            if cancelled:
                client.cancel(job_id)
            engine.update_stats("ControlBridge", f"Frame {number}: queued"
                                + (f" (position {event.queue_position})" if event.queue_position else ""))
        elif isinstance(event, JobError) and (event.request_id == request_id or (job_id and event.job_id == job_id)):
            raise RenderFailed(_one_line(event.message))
        elif job_id is None or getattr(event, "job_id", None) != job_id:
            continue
        elif isinstance(event, Cancelled):
            raise RenderFailed(CANCELLED)
        elif isinstance(event, Progress) and not cancelled:
            if event.total:
                engine.update_progress(event.step / event.total)
            engine.update_stats("ControlBridge", f"Frame {number}: step {event.step}/{event.total}"
                                if event.total else f"Frame {number}: {event.status}")
            if event.preview is not None:
                _show_preview(engine, event.preview, width, height)
        elif isinstance(event, Result):
            if (event.image.width, event.image.height) != (width, height):
                raise RenderFailed(f"the server returned {event.image.width}x{event.image.height}, "
                                   f"the render is {width}x{height}")
            return event


def _show_preview(engine, preview, width, height) -> None:
    """A step preview in the render window (scaled to the render size), replaced by the final pixels."""
    try:
        pixels = _on_main(engine, lambda: _linear_pixels(preview, width, height, resize=True))
    except RenderFailed:
        return   # a preview that cannot be shown is not worth failing the frame
    out = engine.begin_result(0, 0, width, height)
    out.layers[0].passes["Combined"].rect = pixels
    engine.update_result(out)
    engine.end_result(out, cancel=True)   # shown, not kept: the final result replaces it


# ---- main thread -----------------------------------------------------------------------------------------------

_main_tasks: "queue.Queue" = queue.Queue()   # (fn, done event, result box) from render threads


def _on_main(engine, fn):
    """fn() on the main thread: directly when this is the main thread (background mode), else through the main
    thread's task pump while this render thread waits (Esc still cancels). Exceptions come back as RenderFailed."""
    if threading.current_thread() is threading.main_thread():
        try:
            return fn()
        except RenderFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - the capture's and Blender's own errors, as one line
            raise RenderFailed(_one_line(exc)) from None
    done, box = threading.Event(), {}
    _main_tasks.put((fn, done, box))
    while not done.wait(0.05):
        if engine.test_break():
            box["abandoned"] = True   # the pump skips it if it has not started
            raise RenderFailed(CANCELLED)
    if "error" in box:
        raise RenderFailed(_one_line(box["error"]))
    return box["value"]


def _pump_main_tasks():
    """A timer on the main thread (registered with the engine, UI only): runs what render threads hand over. Timers
    are registered here, on the main thread, never from a render thread."""
    while True:
        try:
            fn, done, box = _main_tasks.get_nowait()
        except queue.Empty:
            return PUMP_INTERVAL
        if box.get("abandoned"):
            continue
        try:
            box["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed back to the render thread
            box["error"] = exc
        done.set()


def _capture_copy(scene, view_layer_name: str, options):
    """Capture a temporary copy of the scene (same objects, world and camera, linked): Blender cannot render the
    scene that is being rendered. The copy is removed afterwards, whatever happens."""
    copy = scene.copy()
    copy.name = (CAPTURE_SCENE_PREFIX + scene.name)[:63]
    try:
        layer = copy.view_layers.get(view_layer_name) or copy.view_layers[0]
        shot = capture.capture(copy, layer, options, own_slot=False)
        return shot.attachments() + style.attachments(scene.controlbridge), shot.meta()
    finally:
        bpy.data.scenes.remove(copy)


def _linear_pixels(att, width, height, resize=False) -> np.ndarray:
    """The server's sRGB image as the Render Result's linear RGBA (bottom row first, Blender's order): with the
    Standard view transform the render shows and saves the server's pixels exactly."""
    image = results.image_from_attachment(att, "ControlBridge render")
    try:
        if resize and tuple(image.size) != (width, height):
            image.scale(width, height)
        px = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(image)
    px = px.reshape(-1, 4)
    rgb = px[:, :3]
    px[:, :3] = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    px[:, 3] = 1.0
    return px


# ---- helpers ---------------------------------------------------------------------------------------------------

def _client_name() -> str:
    from .bridge import client_name
    return client_name() + " / render engine"


def _close_in_background(client) -> None:
    threading.Thread(target=lambda: _quiet(client.close), name="controlbridge-render-close", daemon=True).start()


def _quiet(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass


def _one_line(text) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."


# ---- registration: Blender's own Output/Format/Colour panels show for this engine too ---------------------------

def _compatible_panels():
    for name in dir(bpy.types):
        cls = getattr(bpy.types, name, None)
        engines = getattr(cls, "COMPAT_ENGINES", None)
        # Panels shared by EEVEE and Workbench are engine-neutral (format, frame range, output, colour management);
        # one engine's own settings panels are not for this engine.
        if isinstance(engines, set) and {"BLENDER_EEVEE", "BLENDER_WORKBENCH"} <= engines:
            yield cls


def register():
    bpy.utils.register_class(ControlBridgeRenderEngine)
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.add(ENGINE_ID)
    if not bpy.app.background and not bpy.app.timers.is_registered(_pump_main_tasks):
        bpy.app.timers.register(_pump_main_tasks, first_interval=PUMP_INTERVAL, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(_pump_main_tasks):
        bpy.app.timers.unregister(_pump_main_tasks)
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.discard(ENGINE_ID)
    bpy.utils.unregister_class(ControlBridgeRenderEngine)
