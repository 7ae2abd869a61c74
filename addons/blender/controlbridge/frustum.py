"""The camera's view frame, from Blender's own `Camera.view_frame(scene=...)`.

`view_frame` already accounts for the render aspect ratio, pixel aspect, sensor fit, lens, shift and
orthographic scale, so everything that has to line up with the rendered image (the image plane, the
projection material) is derived from it here, in one place.
"""
from dataclasses import dataclass

from mathutils import Matrix, Vector


@dataclass(frozen=True)
class Frame:
    """The view frame in camera space: x in [x0, x1], y in [y0, y1].

    Perspective: at distance 1 in front of the camera (the frame at distance d is the same times d).
    Orthographic: the frame itself, at any distance."""

    ortho: bool
    x0: float
    x1: float
    y0: float
    y1: float

    def corners(self, distance: float):
        """Camera-space corners at `distance` in front of the camera: bottom-left, bottom-right,
        top-right, top-left (counter-clockwise seen from the camera, so the face points at it)."""
        s = 1.0 if self.ortho else distance
        return [Vector((self.x0 * s, self.y0 * s, -distance)), Vector((self.x1 * s, self.y0 * s, -distance)),
                Vector((self.x1 * s, self.y1 * s, -distance)), Vector((self.x0 * s, self.y1 * s, -distance))]

    def to_dict(self) -> dict:
        return {"ortho": self.ortho, "x0": self.x0, "x1": self.x1, "y0": self.y0, "y1": self.y1}

    @classmethod
    def from_dict(cls, d: dict) -> "Frame":
        return cls(bool(d["ortho"]), float(d["x0"]), float(d["x1"]), float(d["y0"]), float(d["y1"]))


def camera_frame(scene, camera_object) -> Frame:
    data = camera_object.data
    if data.type == "PANO":
        raise ValueError(f"camera '{camera_object.name}' is panoramic; use a perspective or orthographic camera")
    pts = data.view_frame(scene=scene)
    ortho = data.type == "ORTHO"
    if ortho:
        xs = [p.x for p in pts]
        ys = [p.y for p in pts]
    else:
        xs = [p.x / -p.z for p in pts]
        ys = [p.y / -p.z for p in pts]
    return Frame(ortho, min(xs), max(xs), min(ys), max(ys))


def unscaled_matrix(camera_object) -> Matrix:
    """The camera's world matrix without scale: scale changes nothing in what the camera sees."""
    loc, rot, _scale = camera_object.matrix_world.decompose()
    return Matrix.LocRotScale(loc, rot, None)
