"""This file's generations: a list on the scene pointing at the result images (which carry the settings)."""
from . import results
from .vendor.controlbridge_protocol import JobSettings


def add(scene, image):
    info = results.job_info(image)
    hist = scene.controlbridge.history
    item = hist.add()
    item.image = image
    item.name = image.name
    item.job_id = info.get("job_id", "")
    item.seed = str(info.get("seed", ""))
    item.prompt = info.get("settings", {}).get("prompt", "")
    scene.controlbridge.history_index = len(hist) - 1
    return item


def active(scene):
    p = scene.controlbridge
    if 0 <= p.history_index < len(p.history):
        return p.history[p.history_index]
    return None


def settings_of(item) -> JobSettings:
    if item is None or item.image is None:
        raise LookupError("that history entry has no image any more")
    info = results.job_info(item.image)
    if not info.get("settings"):
        raise LookupError(f"image '{item.image.name}' carries no ControlBridge settings")
    return JobSettings.from_dict(info["settings"])


def capture_meta_of(item) -> dict:
    return results.job_info(item.image).get("capture", {}) if item and item.image else {}


def prune(scene) -> int:
    """Drop entries whose image was deleted; returns how many."""
    hist = scene.controlbridge.history
    gone = [i for i, item in enumerate(hist) if item.image is None]
    for i in reversed(gone):
        hist.remove(i)
    scene.controlbridge.history_index = min(scene.controlbridge.history_index, len(hist) - 1)
    return len(gone)
