"""Names and paths of everything the plugin creates. No `unreal` import."""

from __future__ import annotations

import re
from typing import Callable

PLUGIN_VERSION = "0.1.0"

ASSET_ROOT = "/Game/ControlBridge"
TEXTURE_DIR = ASSET_ROOT
MATERIAL_DIR = ASSET_ROOT + "/Materials"
BASE_MATERIAL_NAME = "M_ControlBridge_Unlit"
TEXTURE_PARAMETER = "Image"
PLANE_MESH_PATH = "/Engine/BasicShapes/Plane.Plane"
DEFAULT_TEXTURE_PATH = "/Engine/EngineResources/DefaultTexture.DefaultTexture"

PLANE_TAG = "ControlBridgePlane"            # every result plane
PLANE_KEY_TAG_PREFIX = "ControlBridgeFor:"  # + camera key: which camera the plane belongs to
LIVE_TAG = "ControlBridgeLive"              # the live-mode plane (transient)
CAPTURE_TAG = "ControlBridgeCapture"        # a capture actor (live mode keeps one for the session)
LIVE_PLANE_LABEL = "CB_Live"

METADATA_SETTINGS = "ControlBridge.Settings"   # JSON of the JobSettings the server used
METADATA_SEED = "ControlBridge.Seed"
METADATA_JOB = "ControlBridge.JobId"
METADATA_CAMERA = "ControlBridge.Camera"
METADATA_SERVER_PATH = "ControlBridge.ServerPath"

MAX_NAME = 60
# characters Unreal refuses in asset / object names (INVALID_OBJECTNAME_CHARACTERS + path separators)
_INVALID = re.compile(r"[^A-Za-z0-9_\-]+")


def sanitize(name: str, fallback: str = "Untitled") -> str:
    """An asset-safe name part: ASCII letters, digits, _ and -; runs of anything else become one _."""
    out = _INVALID.sub("_", name).strip("_-")
    return (out or fallback)[:MAX_NAME]


def short_job_id(job_id: str) -> str:
    return sanitize(job_id.replace("-", ""), "job")[:8]


def texture_asset_name(camera_label: str, job_id: str) -> str:
    return f"T_CB_{sanitize(camera_label, 'Camera')}_{short_job_id(job_id)}"


def unique_name(base: str, exists: Callable[[str], bool]) -> str:
    """base, base_2, base_3, ... - the first for which exists(name) is False."""
    if not exists(base):
        return base
    n = 2
    while exists(f"{base}_{n}"):
        n += 1
    return f"{base}_{n}"


def object_path(package_dir: str, name: str) -> str:
    """'/Game/X' + 'T_A' -> '/Game/X/T_A.T_A' (the form load_asset and does_asset_exist take)."""
    return f"{package_dir.rstrip('/')}/{name}.{name}"


def material_instance_name(camera_label: str) -> str:
    return f"MI_CB_{sanitize(camera_label, 'Camera')}"


def plane_label(camera_label: str) -> str:
    return f"CB_Result_{sanitize(camera_label, 'Camera')}"


def plane_key_tag(camera_key: str) -> str:
    return PLANE_KEY_TAG_PREFIX + camera_key


def client_name(engine_version: str) -> str:
    return f"unreal {engine_version} / controlbridge-unreal {PLUGIN_VERSION}"


def preview_filename(encoding: str) -> str:
    ext = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp"}.get(encoding.lower())
    if ext is None:
        raise ValueError(f"cannot show a {encoding!r} preview")
    return f"controlbridge_preview.{ext}"


def temp_image_filename(asset_name: str, encoding: str) -> str:
    """The imported file's name IS the asset name: Interchange (UE 5.x texture import) ignores
    AssetImportTask.destination_name and names the asset after the file."""
    ext = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp"}.get(encoding.lower())
    if ext is None:
        raise ValueError(f"cannot import a {encoding!r} image as a texture")
    return f"{asset_name}.{ext}"
