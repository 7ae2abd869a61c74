"""Control maps estimated from the color image, for clients that send only a photo or a sketch.

Each estimator is one of controlnet_aux's detectors; its map feeds the ControlNet named by its role (a job's
`settings.estimate = {role: estimator}`). Their weights are lllyasviel/Annotators' files, looked for on this
machine first (annotator_files: `<models-dir>/annotators/`, a ComfyUI install's comfyui_controlnet_aux folder,
the hub cache) and fetched from the hub only when nowhere here and the hub is not switched off.

controlnet_aux 0.0.10 has no Depth Anything detector (ComfyUI's fork of it has), so there is no such estimator.

Loading runs on the device thread (the worker resolves a job's estimators with its other library components);
each detector is loaded once per weights folder, kept, and moved to the server's device. Checkpoints are read
with torch.load's default, which runs no pickled code on torch >= 2.6.
"""
import importlib.util
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .annotator_files import ANNOTATORS, download, find_local, hub_cache, hub_offline, search_folders

DETECT_RESOLUTION = 512     # the short side the detectors look at (ComfyUI's default); smaller images as they are


@dataclass(frozen=True)
class EstimatorSpec:
    role: str                          # the ControlNet its map is for
    files: Tuple[str, ...]             # needed, side by side in one folder
    optional: Tuple[str, ...] = ()     # used when they lie beside the needed ones (never downloaded)
    label: str = ""                    # what it is, for people


ESTIMATORS: Dict[str, EstimatorSpec] = {
    "midas": EstimatorSpec("depth", ("dpt_hybrid-midas-501f0c75.pt",), label="MiDaS DPT-Hybrid depth"),
    "zoe": EstimatorSpec("depth", ("ZoeD_M12_N.pt",), label="ZoeDepth (ZoeD_M12_N) depth"),
    "lineart": EstimatorSpec("lineart", ("sk_model.pth", "sk_model2.pth"), label="lineart"),
    "lineart_anime": EstimatorSpec("lineart", ("netG.pth",), label="anime lineart"),
    "hed": EstimatorSpec("softedge", ("ControlNetHED.pth",), label="HED soft edges"),
    "pidinet": EstimatorSpec("softedge", ("table5_pidinet.pth",), label="PiDiNet soft edges"),
    "normalbae": EstimatorSpec("normal", ("scannet.pt",), label="BAE normals (NormalBae)"),
    "openpose": EstimatorSpec("openpose", ("body_pose_model.pth",), ("hand_pose_model.pth", "facenet.pth"),
                              label="OpenPose body (hands and face when their files are there)"),
    "mlsd": EstimatorSpec("mlsd", ("mlsd_large_512_fp32.pth",), label="M-LSD straight lines"),
}


class EstimatorUnavailable(RuntimeError):
    """An estimator that cannot load here (its weights are neither local nor reachable, or unreadable): the job
    fails with `unavailable` and this message, not as an internal error."""


def role_of(name: str) -> str:
    return ESTIMATORS[name].role


def unavailable_reason(name: str, roots: Iterable = ()) -> Optional[str]:
    """None when `name` can run here (its files are on this machine, or the hub may be asked), else one line
    saying what is missing and where it was looked for. Looks at the disk only."""
    if name not in ESTIMATORS:
        return f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}"
    if importlib.util.find_spec("controlnet_aux") is None:
        return (f"the {name} estimator needs the optional estimators extra on the server: "
                f"pip install 'controlbridge[estimators]' (controlnet_aux; it needs torchvision)")
    roots = list(roots)
    if find_local(ESTIMATORS[name].files, roots) is None and hub_offline():
        return missing_message(name, roots, "the hub is not asked: HF_HUB_OFFLINE is set")
    return None


def available(roots: Iterable = ()) -> List[str]:
    """The estimators whose weights are on this machine (no download needed), in ESTIMATORS' order."""
    if importlib.util.find_spec("controlnet_aux") is None:
        return []
    roots = list(roots)
    return [name for name, spec in ESTIMATORS.items() if find_local(spec.files, roots) is not None]


def missing_message(name: str, roots: Iterable, why: str) -> str:
    """The estimator's files, every folder they were looked for in, and where to put them."""
    spec = ESTIMATORS[name]
    folders = search_folders(roots)
    files = " and ".join(spec.files)
    where = ", ".join([str(f) for f in folders] + [f"the hub cache {hub_cache()}"])
    if folders:
        put = str(folders[0])
    else:
        from ..library.scan import own_models_dir
        put = f"{own_models_dir() / 'annotators'} (or the annotators/ folder of a --models-dir)"
    return (f"the {name} estimator needs {files} (from the {ANNOTATORS} hub repository), found in none of: "
            f"{where}; put {'them' if len(spec.files) > 1 else 'it'} in {put} ({why})")


class Estimator:
    """One loaded detector: a uint8 HxWx3 RGB image in, its map out (float32 HxWx3 in [0, 1], same size)."""

    def __init__(self, name: str, folder: Path, detector, options: dict):
        self.name, self.folder, self.detector, self.options = name, folder, detector, options
        self.device = "cpu"

    def to(self, device: str) -> "Estimator":
        if device and str(device) != self.device:
            parts = [getattr(self.detector, a, None) for a in ("body_estimation", "hand_estimation",
                                                                "face_estimation")]
            if any(parts):       # openpose: its hand and face parts may be absent (its own .to() needs all)
                for part in parts:
                    if part is not None:
                        part.to(device)
            else:
                self.detector.to(device)
            self.device = str(device)
        return self

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image
        h, w = rgb.shape[:2]
        # The detectors round their working size to multiples of 64: never below 64, never above 512.
        resolution = max(64, min(DETECT_RESOLUTION, h, w))
        with _lock:
            out = self.detector(Image.fromarray(np.ascontiguousarray(rgb)), detect_resolution=resolution,
                                image_resolution=resolution, output_type="pil", **self.options)
        out = out.convert("RGB").resize((w, h), Image.BILINEAR)
        return np.asarray(out, dtype=np.float32) / 255.0


_loaded: Dict[Tuple[str, str], Estimator] = {}     # (name, weights folder) -> loaded
_lock = threading.RLock()


def load(name: str, roots: Iterable = (), device: Optional[str] = None,
         status: Callable[[str], None] = lambda text: None) -> Estimator:
    """The estimator `name`, loaded once per weights folder and kept, on `device`; EstimatorUnavailable when its
    weights are not here and cannot be fetched, or cannot be read. Slow the first time: call it off the event
    loop (the worker does, on the device thread)."""
    if name not in ESTIMATORS:
        raise EstimatorUnavailable(unavailable_reason(name))
    spec = ESTIMATORS[name]
    roots = list(roots)
    with _lock:
        folder = find_local(spec.files, roots)
        if folder is None:
            if importlib.util.find_spec("controlnet_aux") is None:
                raise EstimatorUnavailable(unavailable_reason(name, roots))
            if hub_offline():
                raise EstimatorUnavailable(missing_message(name, roots, "the hub is not asked: HF_HUB_OFFLINE is "
                                                                        "set"))
            status(f"downloading the {name} estimator's weights from {ANNOTATORS}")
            try:
                folder = download(spec.files)
            except Exception as e:  # noqa: BLE001 - offline, not found, refused: all say the same to the artist
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise EstimatorUnavailable(missing_message(name, roots, f"fetching from the hub failed: {first}")) \
                    from e
        key = (name, str(folder))
        estimator = _loaded.get(key)
        if estimator is None:
            status(f"loading the {name} estimator")
            try:
                estimator = _build(name, folder)
            except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which, not 'internal'
                raise EstimatorUnavailable(f"the {name} estimator's weights in {folder} could not be loaded "
                                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                           f"replace {' and '.join(spec.files)} with {ANNOTATORS}' files") from e
            _loaded[key] = estimator
        return estimator.to(device or estimator.device)


def _controlnet_aux():
    with warnings.catch_warnings():      # its import warns about optional packages (mediapipe) and timm renames
        warnings.simplefilter("ignore")
        import controlnet_aux
    return controlnet_aux


def _build(name: str, folder: Path) -> Estimator:
    aux = _controlnet_aux()
    where = str(folder)
    options: dict = {}
    if name == "openpose":
        from controlnet_aux.open_pose.body import Body
        from controlnet_aux.open_pose.face import Face
        from controlnet_aux.open_pose.hand import Hand
        hand = Hand(str(folder / "hand_pose_model.pth")) if (folder / "hand_pose_model.pth").is_file() else None
        face = Face(str(folder / "facenet.pth")) if (folder / "facenet.pth").is_file() else None
        detector = aux.OpenposeDetector(Body(str(folder / "body_pose_model.pth")), hand, face)
        options = {"include_body": True, "include_hand": hand is not None, "include_face": face is not None}
    else:
        classes = {"midas": "MidasDetector", "zoe": "ZoeDetector", "lineart": "LineartDetector",
                   "lineart_anime": "LineartAnimeDetector", "hed": "HEDdetector", "pidinet": "PidiNetDetector",
                   "normalbae": "NormalBaeDetector", "mlsd": "MLSDdetector"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector = getattr(aux, classes[name]).from_pretrained(where)
        if name in ("hed", "pidinet"):
            options = {"safe": False, "scribble": False}
    return Estimator(name, folder, detector, options)
