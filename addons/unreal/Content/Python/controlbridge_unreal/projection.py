"""Projecting a result onto the level from the camera that captured it, decided without the engine. No `unreal`.

The engine side (engine_projection.py) spawns a transient DecalActor whose box covers the camera's frustum out to
`reach_cm`; its material (M_ControlBridge_Projector, a deferred decal) maps each surface point inside the box back
to the image with the camera's own perspective, the maths of `project_point` written as the material's HLSL
(PROJECTOR_HLSL). A decal alone would project orthographically; this keeps the image registered to the geometry
as the camera saw it. Points behind other geometry get the image too (no occlusion test), as a slide projector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from . import camera_math
from .naming import sanitize

PROJECTION_TAG = "ControlBridgeProjection"
MATERIAL_NAME = "M_ControlBridge_Projector"
CAM_POS, CAM_FORWARD, CAM_RIGHT, CAM_UP = "CamPos", "CamForward", "CamRight", "CamUp"
TAN_HALF_H, TAN_HALF_V = "TanHalfH", "TanHalfV"
IMAGE = "Image"

# The Custom node's code: inputs P (world position), the four vectors and two scalars above, and the texture
# object Image (Unreal declares its sampler as ImageSampler). Returns the image's colour and, in alpha, 1 inside
# the camera's view (in front of it, UV within 0..1) and 0 outside - the decal's opacity.
PROJECTOR_HLSL = """float3 d = P - CamPos;
float z = dot(d, CamForward);
float u = 0.5 + dot(d, CamRight) / (2.0 * max(z, 0.001) * TanHalfH);
float v = 0.5 - dot(d, CamUp) / (2.0 * max(z, 0.001) * TanHalfV);
float inside = (z > 0.0 && u >= 0.0 && u <= 1.0 && v >= 0.0 && v <= 1.0) ? 1.0 : 0.0;
return float4(Texture2DSample(Image, ImageSampler, float2(u, v)).rgb, inside);"""


@dataclass(frozen=True)
class ProjectionPlan:
    label: str
    key_tag: str                    # which camera the projection belongs to: projecting again replaces it
    location: camera_math.Vec3      # the decal box's centre
    rotation: camera_math.Rot3      # the camera's: a decal projects along its X axis
    decal_size: camera_math.Vec3    # the box's half extents (X along the view)
    vectors: Dict[str, camera_math.Vec3]
    scalars: Dict[str, float]


def projection_label(camera_label: str) -> str:
    return f"CB_Projection_{sanitize(camera_label, 'Camera')}"


def key_tag(camera_key: str) -> str:
    return f"ControlBridgeProjects:{camera_key}"


def plan_projection(view: camera_math.CameraView, aspect: float, reach_cm: float) -> ProjectionPlan:
    """The decal box around the frustum from the camera out to reach_cm, and the material's camera parameters.
    `aspect` is the image's width / height (the frustum the image fills)."""
    if reach_cm <= 0 or aspect <= 0:
        raise ValueError("the projection needs a positive reach and aspect")
    forward, right, up = camera_math.rotator_axes(view.rotation)
    tan_h = math.tan(math.radians(view.hfov_deg) / 2.0)
    tan_v = tan_h / aspect
    half = reach_cm / 2.0
    centre = tuple(view.location[i] + forward[i] * half for i in range(3))
    return ProjectionPlan(
        label=projection_label(view.label), key_tag=key_tag(view.key), location=centre, rotation=view.rotation,
        decal_size=(half, reach_cm * tan_h, reach_cm * tan_v),
        vectors={CAM_POS: tuple(view.location), CAM_FORWARD: forward, CAM_RIGHT: right, CAM_UP: up},
        scalars={TAN_HALF_H: tan_h, TAN_HALF_V: tan_v})


def project_point(plan: ProjectionPlan, point: camera_math.Vec3) -> Optional[Tuple[float, float]]:
    """Where a world point lands in the image (u right, v down, 0..1), or None outside the view: PROJECTOR_HLSL
    in Python, so the maths the material runs is the maths the tests check."""
    d = tuple(point[i] - plan.vectors[CAM_POS][i] for i in range(3))
    z = _dot(d, plan.vectors[CAM_FORWARD])
    if z <= 0.0:
        return None
    u = 0.5 + _dot(d, plan.vectors[CAM_RIGHT]) / (2.0 * z * plan.scalars[TAN_HALF_H])
    v = 0.5 - _dot(d, plan.vectors[CAM_UP]) / (2.0 * z * plan.scalars[TAN_HALF_V])
    if not (0.0 <= u <= 1.0 and 0.0 <= v <= 1.0):
        return None
    return u, v


def inside_box(plan: ProjectionPlan, point: camera_math.Vec3) -> bool:
    """Whether the decal box (where the engine evaluates the material at all) contains the point."""
    forward, right, up = camera_math.rotator_axes(plan.rotation)
    d = tuple(point[i] - plan.location[i] for i in range(3))
    return all(abs(_dot(d, axis)) <= extent + 1e-6 for axis, extent in zip((forward, right, up), plan.decal_size))


def _dot(a, b) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
