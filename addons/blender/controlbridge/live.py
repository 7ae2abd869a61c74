"""Live mode: while it is on, changes to the camera or the scene send new frames, and every result replaces
the pixels of one image (`CB Live`), shown as the camera background and on the image plane.

Main thread only; bridge.py does the network part on its threads. How it runs:
- `depsgraph_update_post` and `frame_change_post` note changes. What the add-on does itself is not a
  change: its helpers (image plane, live image) are skipped, and Scene or Collection updates (selection,
  the capture's own render-setting round trip, visibility) only make tick() recompute a key of what a
  frame depends on besides the depsgraph: panel settings, render size, color management, the camera,
  which objects are visible. A frame is due when that key changed or a real datablock changed.
- tick() (a bpy.app.timers timer) captures and sends once the scene has been still for `live_delay`
  ms, at most once per `live_delay`, and never while the previous frame is still being sent: changes
  made meanwhile collapse into one frame. The server renders only the newest waiting frame anyway.
- The capture is the GPU viewport draw (viewport.py) in the interactive UI, else the render (capture.py).
- bridge.drain() hands the server's answers to _on_bridge(): a LiveResult replaces the live image's
  pixels; a LiveSkipped (unchanged, superseded, stopped) is counted; an error stops live mode with one line.

Headless `bpy` runs no timers and evaluates the depsgraph only on `view_layer.update()`: tests call that,
tick() and bridge.drain() themselves.
"""
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import bpy

from . import bridge, capture, jobs, preferences, results, viewport
from .capture import HELPER_PROP, CaptureError
from .vendor.controlbridge_protocol import Disconnected, JobError, LiveResult, LiveSkipped

TICK_S = 0.05


@dataclass
class LiveState:
    on: bool = False
    line: str = ""                 # one line for the panel
    error: str = ""
    scene_name: str = ""
    capabilities: object = None    # the server's, once connected
    dirty: bool = False            # changed since the last capture
    touched: bool = True           # a Scene or Collection update: recompute the visibility key
    changed_at: float = 0.0        # time.monotonic() of the last change
    captured_at: float = float("-inf")
    key: object = None             # the last key seen (settings, render size, camera, visibility ...)
    visibility: int = 0
    pending_meta: Optional[dict] = None           # the capture being sent
    frames: OrderedDict = field(default_factory=OrderedDict)   # frame id -> capture meta, awaiting answers
    sent: int = 0
    results: int = 0
    skipped: int = 0
    capture_ms: float = 0.0        # the last capture
    capture_path: str = ""         # "viewport" or "render"
    viewport_unavailable: str = ""  # why the last capture did not use the viewport path


class LiveError(Exception):
    pass


_st = LiveState()
_capturing = False


def state() -> LiveState:
    return _st


def is_on() -> bool:
    return _st.on


# ---- on / off ------------------------------------------------------------------------------------------------

def start(context) -> None:
    scene = context.scene
    if scene.camera is None or scene.camera.type != "CAMERA":
        raise LiveError("Live needs an active camera: add one or set Scene > Camera")
    stop()
    prefs = preferences.get(context)
    _st.__init__(on=True, scene_name=scene.name, line=f"Live: connecting to {prefs.server_url} ...")
    for handlers, fn in _handlers():
        if fn not in handlers:
            handlers.append(fn)
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S)
    bridge.live_begin(prefs.server_url, prefs.token, _on_bridge)


def stop(error: str = "", line: str = "") -> None:
    """Turn live mode off (the server's session ends too); `error` is shown as one line."""
    for handlers, fn in _handlers():
        if fn in handlers:
            handlers.remove(fn)
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    bridge.live_end()
    was_on, _st.on = _st.on, False
    _st.frames.clear()
    if error:
        _st.line = _st.error = _one_line(error)
    elif was_on or line:
        _st.line, _st.error = line or "Live off", ""


@bpy.app.handlers.persistent
def on_load_pre(*_args) -> None:
    """The file is being closed: its live session ends."""
    if _st.on:
        stop(line="Live off: another file was opened")


def _handlers():
    return ((bpy.app.handlers.depsgraph_update_post, _on_depsgraph),
            (bpy.app.handlers.frame_change_post, _on_frame_change))


# ---- noting changes ------------------------------------------------------------------------------------------

def _mark(now=None) -> None:
    _st.dirty = True
    _st.changed_at = time.monotonic() if now is None else now


def _on_frame_change(scene, *_args) -> None:
    if _st.on and scene.name == _st.scene_name:
        _mark()


def _on_depsgraph(scene, depsgraph) -> None:
    if not _st.on or _capturing or scene.name != _st.scene_name:
        return
    for update in depsgraph.updates:
        kind = _change_kind(update)
        if kind == "touched":
            _st.touched = True
        elif kind == "change":
            _mark()


def _change_kind(update) -> Optional[str]:
    """"change" (a frame is due), "touched" (compare the key in tick()) or None (nothing for live mode)."""
    idb = update.id.original
    if idb.get(HELPER_PROP) or results.LIVE_PROP in idb:
        return None                                   # the add-on's own image plane, live image, ...
    if isinstance(idb, (bpy.types.Scene, bpy.types.Collection)):
        return "touched"                              # selection, render settings, visibility, panel ...
    if isinstance(idb, bpy.types.Object):
        # Shading-only object updates come with visibility changes (seen through the key) and image
        # reloads; a camera's geometry update without transform follows its data or the render size.
        moved = update.is_updated_transform or (update.is_updated_geometry and idb.type != "CAMERA")
        return "change" if moved else None
    if isinstance(idb, bpy.types.Camera) and not (update.is_updated_transform or update.is_updated_geometry
                                                  or update.is_updated_shading):
        return None                                   # background images, display settings
    if isinstance(idb, bpy.types.Image) and idb.type == "RENDER_RESULT":
        return None
    return "change"                                   # meshes, materials, lights, world, node trees, ...


def _key(scene, p):
    """What a frame depends on that the depsgraph does not report as a datablock change."""
    if _st.touched:
        vl = _view_layer(scene)
        _st.visibility = hash(tuple((o.name, o.visible_get(view_layer=vl), o.hide_render)
                                    for o in scene.objects if not o.get(HELPER_PROP)))
        _st.touched = False
    r, vs = scene.render, scene.view_settings
    settings = json.dumps(jobs.live_settings(p, _st.capabilities).to_dict(), sort_keys=True)
    return (settings, capture.render_size(scene), r.pixel_aspect_x, r.pixel_aspect_y, vs.view_transform, vs.look,
            vs.exposure, vs.gamma, scene.camera.name if scene.camera else "", scene.world.name if scene.world else "",
            _st.visibility, p.live_capture, capture.options_from_props(p))


def _view_layer(scene):
    return bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]


# ---- capture and send ------------------------------------------------------------------------------------------

def tick(now: Optional[float] = None) -> Optional[float]:
    """The timer: capture and send when a frame is due. Returns the next interval (None: off)."""
    if not _st.on:
        return None
    try:
        _tick(time.monotonic() if now is None else now)
    except (CaptureError, LiveError, ValueError) as exc:
        stop(error=f"Live stopped: {exc}")
    except Exception as exc:  # noqa: BLE001 - a timer must not raise; live mode stops with the reason
        stop(error=f"Live stopped: {type(exc).__name__}: {exc}")
    return TICK_S if _st.on else None


def _tick(now: float) -> None:
    scene = bpy.data.scenes.get(_st.scene_name)
    if scene is None:
        raise LiveError(f"the scene '{_st.scene_name}' is gone")
    if _st.capabilities is None:
        return                                        # still connecting
    p = scene.controlbridge
    key = _key(scene, p)
    if key != _st.key:
        _st.key = key
        _mark(now)
    delay = p.live_delay / 1000.0
    if not _st.dirty or bridge.live_in_flight() or now - _st.changed_at < delay or now - _st.captured_at < delay:
        return
    if scene.camera is None or scene.camera.type != "CAMERA":
        raise LiveError("the scene has no active camera")
    started = time.perf_counter()
    shot = _capture(scene, _view_layer(scene), p)
    _st.capture_ms = (time.perf_counter() - started) * 1000.0
    prefs = preferences.get()
    bridge.live_send(prefs.server_url, prefs.token, jobs.live_settings(p, _st.capabilities), shot.attachments())
    _st.pending_meta = shot.meta()
    _st.dirty = False
    _st.captured_at = now


def _capture(scene, view_layer, p):
    global _capturing
    _capturing = True   # updates the capture causes (and restores) are not changes
    try:
        _st.viewport_unavailable = ("headless" if bpy.app.background else
                                    "the Normal ControlNet needs the render's normal pass" if p.use_normal else "")
        if p.live_capture == "VIEWPORT" and not _st.viewport_unavailable:
            try:
                shot = viewport.capture(scene, view_layer)
                _st.capture_path = "viewport"
                return shot
            except viewport.Unavailable as exc:   # no usable 3D viewport, or the draw failed: render instead
                _st.viewport_unavailable = str(exc)
        shot = capture.capture(scene, view_layer, capture.options_from_props(p))
        _st.capture_path = "render"
        return shot
    finally:
        _capturing = False


# ---- answers -----------------------------------------------------------------------------------------------------

def _on_bridge(kind, value) -> bool:
    """Called by bridge.drain() on the main thread; True when the event was live mode's."""
    if not _st.on:
        return False
    if kind == "ready":
        _st.capabilities = value
        _st.line = "Live: connected"
        return True
    if kind == "sent":
        _st.frames[value] = _st.pending_meta
        _st.sent += 1
        return True
    if kind == "failed":
        stop(error=f"Live stopped: {value}")
        return True
    event = value
    if isinstance(event, Disconnected):
        stop(error=f"Live stopped: lost the connection to the server: {event.reason}")
        return False                                  # the job (if any) needs to know too
    if getattr(event, "request_id", None) not in _st.frames:
        return False
    if isinstance(event, LiveResult):
        try:
            _apply(event)
        except Exception as exc:  # noqa: BLE001
            stop(error=f"Live stopped: the image could not be shown: {type(exc).__name__}: {exc}")
    elif isinstance(event, LiveSkipped):
        _st.frames.pop(event.request_id, None)
        _st.skipped += 1
        if event.reason == "unchanged":
            _st.line = "Live: no change"
    elif isinstance(event, JobError):
        stop(error=f"Live stopped: {event.message}")
    return True


def _apply(result) -> None:
    meta = None
    while _st.frames:                                 # this frame and the older ones are answered
        frame_id, meta = _st.frames.popitem(last=False)
        if frame_id == result.request_id:
            break
    scene = bpy.data.scenes.get(_st.scene_name) or bpy.context.scene
    p = scene.controlbridge
    info = {"frame": result.request_id, "seed": str(result.seed),
            "settings": json.dumps(result.settings.to_dict()), "capture": json.dumps(meta or {})}
    image = results.update_live_image(result.image, info)
    camera = bpy.data.objects.get((meta or {}).get("camera") or "") or scene.camera
    if camera is not None and camera.type == "CAMERA":
        results.show_live(scene, camera, image, background=p.place_background, plane=p.place_plane,
                          plane_distance=p.plane_distance)
    _st.results += 1
    _st.line = (f"Live: {image.size[0]}x{image.size[1]}, {result.elapsed_ms:.0f} ms on the server, "
                f"capture {_st.capture_ms:.0f} ms ({_st.capture_path})")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."
