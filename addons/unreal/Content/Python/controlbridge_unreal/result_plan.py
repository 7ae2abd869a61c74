"""What applying a result will do, decided without the engine: names, metadata, plane size and transform.
engine_results.py only carries the plan out. No `unreal` import."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from . import camera_math, naming


@dataclass(frozen=True)
class ResultPlan:
    texture_dir: str
    asset_name: str
    temp_filename: str
    metadata: Dict[str, str]
    create_plane: bool
    camera_key: str
    plane_label: str
    plane_key_tag: str
    material_dir: str
    material_instance_name: str
    placement: Optional[camera_math.PlanePlacement]    # relative to the camera
    world: Optional[camera_math.WorldPlacement]        # the same plane in world space
    attach: bool                                        # attach to the camera actor (CineCamera) or not (viewport)

    @property
    def texture_object_path(self) -> str:
        return naming.object_path(self.texture_dir, self.asset_name)


def plan_result(*, view: camera_math.CameraView, width: int, height: int, job_id: str, result_settings: dict,
                seed: int, saved_path: str, encoding: str, create_plane: bool, plane_distance_cm: float,
                asset_exists: Callable[[str], bool], asset_base: Optional[str] = None,
                texture_dir: str = naming.TEXTURE_DIR) -> ResultPlan:
    """asset_exists(object_path) -> bool keeps names unique in the texture folder. `asset_base` names the
    texture (a shot's name); by default it is named after the camera and the job."""
    base = asset_base or naming.texture_asset_name(view.label, job_id)
    asset_name = naming.unique_name(base, lambda n: asset_exists(naming.object_path(texture_dir, n)))
    metadata = {
        naming.METADATA_SETTINGS: json.dumps(result_settings, sort_keys=True),
        naming.METADATA_SEED: str(seed),
        naming.METADATA_JOB: job_id,
        naming.METADATA_CAMERA: view.label,
        naming.METADATA_SERVER_PATH: saved_path,
    }
    placement = world = None
    if create_plane:
        placement = camera_math.plane_placement(plane_distance_cm, view.hfov_deg, width / height)
        world = camera_math.plane_world_placement(view, placement)
    return ResultPlan(
        texture_dir=texture_dir,
        asset_name=asset_name,
        temp_filename=naming.temp_image_filename(asset_name, encoding),
        metadata=metadata,
        create_plane=create_plane,
        camera_key=view.key,
        plane_label=naming.plane_label(view.label),
        plane_key_tag=naming.plane_key_tag(view.key),
        material_dir=naming.MATERIAL_DIR,
        material_instance_name=naming.material_instance_name(view.label),
        placement=placement,
        world=world,
        attach=view.attached,
    )
