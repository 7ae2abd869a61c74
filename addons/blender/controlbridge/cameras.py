"""Every camera at once, for shot iteration: one job per camera (all the scene's cameras, or those bound to timeline
markers) with the same settings and seed, one after another through the bridge; each result is placed on its own
camera (background, plane) and kept in History; when the last one is over, a contact sheet (a labelled grid of the
shots) is saved next to the outputs and opened in the Image editor. Also the A/B view of a camera's last two
results. Main thread only."""
from dataclasses import dataclass, field
from typing import Optional

import bpy

from . import bridge, capture, history, jobs, results, sheet

SHEET_IMAGE = "CB Contact Sheet"


@dataclass
class Batch:
    scene_name: str
    cameras: list                     # camera object names, in sheet order
    seed: int
    done: dict = field(default_factory=dict)     # camera -> result image name
    failed: dict = field(default_factory=dict)   # camera -> one line
    cancelled: bool = False
    sheet_path: str = ""
    sheet_image: str = ""
    line: str = ""


_batch: Optional[Batch] = None


def last() -> Optional[Batch]:
    return _batch


def cameras_of(scene, scope: str) -> list:
    """ALL: every camera object in the scene, by name; MARKERS: the cameras bound to timeline markers, in frame
    order (each once)."""
    if scope == "MARKERS":
        names = []
        for marker in sorted(scene.timeline_markers, key=lambda m: m.frame):
            if marker.camera is not None and marker.camera.type == "CAMERA" and marker.camera.name not in names:
                names.append(marker.camera.name)
        return names
    return sorted(o.name for o in scene.objects if o.type == "CAMERA")


def start(context, settings, prefs, scope: str = "ALL") -> str:
    """Queue one job per camera with `settings` (its seed for all of them). Returns a line for the report.
    Raises capture.CaptureError when there is no camera to generate for, bridge.Busy when a job runs."""
    global _batch
    if bridge.busy():
        raise bridge.Busy("ControlBridge is busy with a job; wait for it or cancel it")
    scene = context.scene
    p = scene.controlbridge
    names = cameras_of(scene, scope)
    if not names:
        raise capture.CaptureError("no camera is bound to a timeline marker (Marker > Bind Camera to Markers)"
                                   if scope == "MARKERS" else "the scene has no camera")
    options = capture.options_from_props(p)
    batch = Batch(scene_name=scene.name, cameras=names, seed=settings.seed)
    batch_jobs = [bridge.Job(settings=settings, scene_name=scene.name,
                             capture=jobs.capture_later(scene.name, context.view_layer.name, options, name),
                             place_background=p.place_background, place_plane=p.place_plane,
                             plane_distance=p.plane_distance, on_done=_on_done(batch, name))
                  for name in names]
    _batch = batch
    bridge.generate(prefs.server_url, prefs.token, batch_jobs[0], then=batch_jobs[1:])
    return f"Generating for {len(names)} cameras (seed {settings.seed}): {', '.join(names)}"


def _on_done(batch: Batch, camera: str):
    def done(job, st):
        if st.phase == "finished" and job.image_name:
            batch.done[camera] = job.image_name
        elif st.phase == "cancelled":
            batch.cancelled = True
        else:
            batch.failed[camera] = st.error or st.line
        if batch.cancelled or len(batch.done) + len(batch.failed) == len(batch.cameras):
            _finish(batch)
    return done


def _finish(batch: Batch) -> None:
    """The last job is over: the contact sheet of what came back, and one line for the panel."""
    cells = [(f"{name}  seed {batch.seed}", bpy.data.images[batch.done[name]])
             for name in batch.cameras if name in batch.done and batch.done[name] in bpy.data.images]
    parts = [f"{len(batch.done)}/{len(batch.cameras)} cameras"]
    if cells:
        saved = [results.job_info(image).get("saved_path", "") for _, image in cells]
        folder = sheet.folder_beside(saved)
        name = f"controlbridge_sheet_{batch.seed}_{bpy.path.clean_name(batch.scene_name)}.png"
        path = bpy.path.native_pathsep(f"{folder}/{name}")
        image = sheet.build(cells, path, SHEET_IMAGE)
        batch.sheet_path, batch.sheet_image = path, image.name
        sheet.show_in_image_editor(image)
        parts.append(f"contact sheet {path}")
    if batch.failed:
        parts.append("failed: " + "; ".join(f"{k}: {v}" for k, v in batch.failed.items()))
    if batch.cancelled:
        parts.append("cancelled")
    batch.line = "Done: " + ", ".join(parts)
    bridge.show(batch.line, error=batch.line if batch.failed else "")   # the report names what failed and why


# ---- A/B -------------------------------------------------------------------------------------------------------

def camera_of(item) -> str:
    return (history.capture_meta_of(item) or {}).get("camera", "")


def last_two(scene, camera: str) -> list:
    """The camera's last two history entries with an image, older first."""
    items = [item for item in scene.controlbridge.history if item.image is not None and camera_of(item) == camera]
    return items[-2:]


def a_b(scene, camera: str):
    """A labelled side-by-side image of the camera's last two results (A older, B newer), opened in the Image
    editor. Raises LookupError when the camera has fewer than two."""
    pair = last_two(scene, camera)
    if len(pair) < 2:
        raise LookupError(f"'{camera}' has {len(pair)} result(s) in History; A/B needs two")
    saved = [results.job_info(item.image).get("saved_path", "") for item in pair]
    folder = sheet.folder_beside(saved)
    path = bpy.path.native_pathsep(f"{folder}/controlbridge_ab_{bpy.path.clean_name(camera)}.png")
    cells = [(f"A  {item.image.name}  seed {item.seed}", item.image) if i == 0 else
             (f"B  {item.image.name}  seed {item.seed}", item.image) for i, item in enumerate(pair)]
    image = sheet.build(cells, path, f"CB A/B {camera}"[:63], columns=2)
    sheet.show_in_image_editor(image)
    return image
