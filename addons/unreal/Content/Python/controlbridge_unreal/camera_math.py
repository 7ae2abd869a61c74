"""Camera and frustum math in Unreal's conventions. No `unreal` import.

Unreal: centimetres, left-handed, X forward, Y right, Z up. A rotator is (pitch, yaw, roll) in degrees, applied
as roll about X, then pitch about Y, then yaw about Z (FRotationMatrix). A camera looks along its +X. Camera and
SceneCapture field of view (`FieldOfView`, `FOVAngle`) is the HORIZONTAL angle; the vertical extent follows from
the image aspect (width / height).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

Vec3 = Tuple[float, float, float]
Rot3 = Tuple[float, float, float]  # (pitch, yaw, roll) degrees

# /Engine/BasicShapes/Plane: 100 x 100 uu in its XY plane, facing +Z.
PLANE_MESH_SIZE = 100.0
# Pitch +90 turns the plane's +Z (its visible face) to -X, towards the camera; its +X then points up and
# +Y stays right, so the texture's top (V=0, at the mesh's +X edge) is up. Verified in the manual test.
PLANE_RELATIVE_ROTATION: Rot3 = (90.0, 0.0, 0.0)


@dataclass(frozen=True)
class CameraView:
    """What a capture needs to know about a camera, taken on the game thread at the moment of capture."""

    key: str                    # stable id for "the same camera" (actor path, or "viewport")
    label: str                  # for asset names and messages
    location: Vec3
    rotation: Rot3
    hfov_deg: float
    aspect: Optional[float]     # width / height the camera wants (filmback), or None = use the output size
    actor: Any = None           # the CineCameraActor (engine object), None for the level viewport

    @property
    def attached(self) -> bool:
        return self.actor is not None


@dataclass(frozen=True)
class PlanePlacement:
    distance: float
    width: float                # world size of the frustum slice at `distance`
    height: float
    relative_location: Vec3     # relative to the camera
    relative_rotation: Rot3
    scale: Vec3                 # actor scale for the 100 uu engine plane


@dataclass(frozen=True)
class WorldPlacement:
    location: Vec3
    rotation: Rot3
    scale: Vec3


# --------------------------------------------------------------------------- field of view

def hfov_from_filmback(sensor_width_mm: float, focal_length_mm: float) -> float:
    """Horizontal FOV (degrees) of a CineCamera: 2 * atan(sensor_width / (2 * focal_length))."""
    if sensor_width_mm <= 0 or focal_length_mm <= 0:
        raise ValueError(f"invalid filmback: sensor width {sensor_width_mm} mm, focal length {focal_length_mm} mm")
    return math.degrees(2.0 * math.atan(sensor_width_mm / (2.0 * focal_length_mm)))


def vfov_from_hfov(hfov_deg: float, aspect: float) -> float:
    return math.degrees(2.0 * math.atan(math.tan(math.radians(hfov_deg) / 2.0) / aspect))


def frustum_size(distance: float, hfov_deg: float, aspect: float) -> Tuple[float, float]:
    """(width, height) of the view frustum's cross-section at `distance` in front of the camera."""
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"field of view must be between 0 and 180 degrees, got {hfov_deg}")
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    width = 2.0 * distance * math.tan(math.radians(hfov_deg) / 2.0)
    return width, width / aspect


def fit_output_size(max_width: int, max_height: int, aspect: Optional[float], multiple: int = 8) -> Tuple[int, int]:
    """The largest size with `aspect` (w/h) that fits in max_width x max_height, both sides a multiple of
    `multiple` (the server's models work in blocks of 8). aspect None = the box itself (rounded)."""
    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    def down(v: float) -> int:
        return max(multiple, int(v // multiple) * multiple)

    if aspect is None:
        return down(max_width), down(max_height)
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    w, h = float(max_width), max_width / aspect
    if h > max_height:
        h, w = float(max_height), max_height * aspect
    # round to the block size, but never beyond the box
    w_s, h_s = min(snap(w), down(max_width)), min(snap(h), down(max_height))
    return w_s, h_s


# --------------------------------------------------------------------------- rotations (FRotationMatrix)

def rotator_axes(rot: Rot3) -> Tuple[Vec3, Vec3, Vec3]:
    """World directions of the local X (forward), Y (right), Z (up) axes of a rotator."""
    pitch, yaw, roll = (math.radians(a) for a in rot)
    sp, cp = math.sin(pitch), math.cos(pitch)
    sy, cy = math.sin(yaw), math.cos(yaw)
    sr, cr = math.sin(roll), math.cos(roll)
    x = (cp * cy, cp * sy, sp)
    y = (sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp)
    z = (-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp)
    return x, y, z


def axes_to_rotator(x: Vec3, y: Vec3, z: Vec3) -> Rot3:
    """Inverse of rotator_axes (FMatrix::Rotator)."""
    pitch = math.degrees(math.atan2(x[2], math.hypot(x[0], x[1])))
    yaw = math.degrees(math.atan2(x[1], x[0]))
    _, sy_axis, _ = rotator_axes((pitch, yaw, 0.0))
    roll = math.degrees(math.atan2(_dot(z, sy_axis), _dot(y, sy_axis)))
    return pitch, yaw, roll


def _dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def local_to_world_direction(rot: Rot3, v: Vec3) -> Vec3:
    x, y, z = rotator_axes(rot)
    return tuple(v[0] * x[i] + v[1] * y[i] + v[2] * z[i] for i in range(3))  # type: ignore[return-value]


def compose(parent_location: Vec3, parent_rotation: Rot3, rel_location: Vec3, rel_rotation: Rot3) -> Tuple[Vec3, Rot3]:
    """World location/rotation of a child given relative to an (unscaled) parent."""
    off = local_to_world_direction(parent_rotation, rel_location)
    loc = (parent_location[0] + off[0], parent_location[1] + off[1], parent_location[2] + off[2])
    cx, cy, cz = rotator_axes(rel_rotation)
    wx = local_to_world_direction(parent_rotation, cx)
    wy = local_to_world_direction(parent_rotation, cy)
    wz = local_to_world_direction(parent_rotation, cz)
    return loc, axes_to_rotator(wx, wy, wz)


# --------------------------------------------------------------------------- result plane

def plane_placement(distance: float, hfov_deg: float, aspect: float) -> PlanePlacement:
    """The engine plane placed `distance` in front of the camera, filling its view exactly."""
    if distance <= 0:
        raise ValueError(f"plane distance must be positive, got {distance}")
    width, height = frustum_size(distance, hfov_deg, aspect)
    # after PLANE_RELATIVE_ROTATION the mesh's X runs along the view's up axis and its Y along the view's right
    scale = (height / PLANE_MESH_SIZE, width / PLANE_MESH_SIZE, 1.0)
    return PlanePlacement(distance, width, height, (distance, 0.0, 0.0), PLANE_RELATIVE_ROTATION, scale)


def plane_world_placement(view: CameraView, placement: PlanePlacement) -> WorldPlacement:
    loc, rot = compose(view.location, view.rotation, placement.relative_location, placement.relative_rotation)
    return WorldPlacement(loc, rot, placement.scale)


def cine_camera_view(key: str, label: str, location: Vec3, rotation: Rot3, sensor_width_mm: float,
                     sensor_height_mm: float, focal_length_mm: float, actor: Any = None) -> CameraView:
    if sensor_height_mm <= 0:
        raise ValueError(f"invalid filmback: sensor height {sensor_height_mm} mm")
    return CameraView(key, label, location, rotation, hfov_from_filmback(sensor_width_mm, focal_length_mm),
                      sensor_width_mm / sensor_height_mm, actor)


def viewport_view(location: Vec3, rotation: Rot3, hfov_deg: float) -> CameraView:
    return CameraView("viewport", "Viewport", location, rotation, hfov_deg, None, None)
