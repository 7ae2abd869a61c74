"""A synthetic blockout "render": a few boxes on a ground plane, seen by a pinhole camera.

Gives what a DCC add-on would send: an RGBA color image and the raw camera-space depth (scene units,
infinity where the ray hits nothing), so the demo exercises exactly the path real clients take.
"""
import numpy as np

# (center x, center y, center z, size x, size y, size z, r, g, b): a greybox with a little color
BOXES = [(-1.6, 0.75, 5.0, 1.2, 1.5, 1.2, 0.75, 0.45, 0.35),
         (0.4, 1.25, 7.5, 1.6, 2.5, 1.6, 0.45, 0.55, 0.75),
         (2.2, 0.4, 4.2, 0.8, 0.8, 0.8, 0.55, 0.7, 0.45),
         (-0.2, 2.0, 12.0, 6.0, 4.0, 1.0, 0.7, 0.7, 0.68)]
CAMERA_HEIGHT = 1.6
CAMERA_PITCH_DEG = -8.0
VERTICAL_FOV_DEG = 50.0
LIGHT = np.array([-0.4, 0.8, -0.45])


def render_blockout(width: int, height: int):
    """(rgba uint8 HxWx4, depth float32 HxW with inf for sky)."""
    aspect = width / height
    tan_half = np.tan(np.radians(VERTICAL_FOV_DEG) / 2)
    xs = (np.arange(width) + 0.5) / width * 2 - 1
    ys = 1 - (np.arange(height) + 0.5) / height * 2
    px, py = np.meshgrid(xs * tan_half * aspect, ys * tan_half)
    cam = np.stack([px, py, np.ones_like(px)], axis=-1)          # camera space, looking along +z
    pitch = np.radians(CAMERA_PITCH_DEG)
    rot = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    dirs = cam @ rot.T
    origin = np.array([0.0, CAMERA_HEIGHT, 0.0])

    t_hit = np.full(px.shape, np.inf)
    normal = np.zeros(px.shape + (3,))
    albedo = np.zeros(px.shape + (3,))

    # ground plane y = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dirs[..., 1] < 0, -origin[1] / dirs[..., 1], np.inf)
    hit = t < t_hit
    t_hit[hit] = t[hit]
    normal[hit] = (0, 1, 0)
    with np.errstate(invalid="ignore"):
        gx = origin[0] + dirs[..., 0] * t
        gz = origin[2] + dirs[..., 2] * t
        checker = ((np.floor(gx) + np.floor(gz)) % 2 == 0)[..., None]
    albedo[hit] = np.where(checker, 0.42, 0.36)[hit]

    for cx, cy, cz, sx, sy, sz, r, g, b in BOXES:
        lo = np.array([cx - sx / 2, cy - sy / 2, cz - sz / 2])
        hi = np.array([cx + sx / 2, cy + sy / 2, cz + sz / 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = (lo - origin) / dirs
            t1 = (hi - origin) / dirs
        t_near = np.minimum(t0, t1)
        t_enter = t_near.max(axis=-1)
        t_exit = np.maximum(t0, t1).min(axis=-1)
        hit = (t_enter <= t_exit) & (t_enter > 0) & (t_enter < t_hit)
        t_hit[hit] = t_enter[hit]
        axis = t_near.argmax(axis=-1)
        n = np.zeros(px.shape + (3,))
        np.put_along_axis(n, axis[..., None], -np.sign(np.take_along_axis(dirs, axis[..., None], -1)), -1)
        normal[hit] = n[hit]
        albedo[hit] = (r, g, b)

    light = LIGHT / np.linalg.norm(LIGHT)
    shade = 0.35 + 0.65 * np.clip(normal @ light, 0, 1)
    color = albedo * shade[..., None]
    sky = ~np.isfinite(t_hit)
    sky_grad = np.clip(0.55 + 0.4 * py / tan_half, 0, 1)[..., None] * np.array([0.55, 0.7, 0.95])
    color[sky] = sky_grad[sky]
    rgba = np.concatenate([np.clip(color, 0, 1) * 255, np.full(px.shape + (1,), 255.0)], axis=-1)
    # Camera-space depth (distance along the view axis, as renderers' Z passes store it) is t itself,
    # because every camera-space ray has z = 1.
    depth = np.where(sky, np.inf, t_hit)
    return rgba.round().astype(np.uint8), depth.astype(np.float32)
