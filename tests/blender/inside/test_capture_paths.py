"""Every capture engine at 512x512 in headless Blender (EEVEE and Workbench through Mesa EGL), depth included;
what the artist sees with a transparent film is what is sent; helpers stay out of captures and F12 renders."""
import time

import bpy
import numpy as np
import pytest

from conftest import cycles, emission_material
from exr_reader import depth_of
from test_capture import _saved_pixels


def _square(scene, size=512):
    r = scene.render
    r.resolution_x = r.resolution_y = size
    r.resolution_percentage = 100


@pytest.mark.parametrize("engine,samples", [("WORKBENCH", 1), ("EEVEE", 4), ("CYCLES", 16)])
def test_every_capture_engine_at_512(cb, scene, make_cube, engine, samples):
    """The cube's front face is 5 units away: each engine's depth says so, the sky is at or beyond far, and the
    marker cube (3 units away, upper left) is where it should be."""
    _square(scene)
    scene.objects["Cube"].data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))
    make_cube("Marker", 0.25, (-0.6, 0.4, -3.25), color=(0.0, 0.0, 1.0))
    options = cb.capture.CaptureOptions(engine=engine, samples=samples, final_samples=samples)

    times = []
    for _ in range(2):   # the first capture of an engine compiles its shaders: the second one is the warm time
        started = time.perf_counter()
        shot = cb.capture.capture(scene, None, options)
        times.append((time.perf_counter() - started) * 1000)
    print(f"\n[capture] {engine} {samples} samples 512x512: first {times[0]:.0f} ms, warm {times[1]:.0f} ms")

    assert shot.engine == cb.capture.engine_id(engine) and (shot.width, shot.height) == (512, 512)
    depth = depth_of(shot)
    assert depth.shape == (512, 512)
    # The cube is 2 units wide at 5 units: it covers the middle of the frame; the marker is 3 units away.
    assert np.allclose(depth[200:312, 200:312], 5.0, atol=2e-3), depth[200:312, 200:312]
    mark = depth[160:190, 140:170]
    assert np.allclose(mark, 3.0, atol=2e-3), mark
    assert (depth[:40, :] >= shot.far * 0.999).all() and (depth[-40:, :] >= shot.far * 0.999).all()
    color = np.frombuffer(shot.color, np.uint8).reshape(512, 512, 4)
    assert (color[..., 3] == 255).all()
    if engine != "WORKBENCH":   # Workbench shows solid shading, not the emission shader
        r, g, b, _ = color[256, 256]
        assert r > 200 and g < 30 and b < 30
        r, g, b, _ = color[175, 155]
        assert b > 200 and r < 30
    else:
        assert color[256, 256, :3].astype(int).sum() > color[5, 5, :3].astype(int).sum() + 30   # lit cube, dark sky
    att = {a.name: a for a in shot.attachments()}["depth"]
    assert att.encoding == "exr" and att.far == shot.far


def _world(color):
    world = bpy.data.worlds.new("Sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (*color, 1.0)
    world.color = color   # Workbench and the viewport use the world's plain colour
    return world


def _srgb8(linear):
    c = np.asarray(linear, np.float64)
    s = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return np.round(s * 255).astype(int)


def test_transparent_film_sends_the_world_colour(cb, scene):
    scene.world = _world((0.2, 0.4, 0.8))
    scene.render.film_transparent = True
    scene.objects["Cube"].data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))

    shot = cb.capture.capture(scene, None, cycles())

    color = np.frombuffer(shot.color, np.uint8).reshape(64, 96, 4).astype(int)
    expected = _srgb8((0.2, 0.4, 0.8))                       # Standard view transform: plain sRGB
    assert np.abs(color[2, 2, :3] - expected).max() <= 2, (color[2, 2], expected)   # the sky, not black
    assert color[32, 48, 0] > 200 and color[..., 3].min() == 255
    assert scene.render.film_transparent                    # the artist's setting is back


def test_transparent_film_over_a_chosen_colour(cb, scene):
    scene.world = _world((0.2, 0.4, 0.8))
    scene.render.film_transparent = True
    scene.objects["Cube"].data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))

    shot = cb.capture.capture(scene, None, cycles(background="COLOR", background_color=(1.0, 0.5, 0.0)))

    color = np.frombuffer(shot.color, np.uint8).reshape(64, 96, 4).astype(int)
    assert np.abs(color[2, 2, :3] - (255, 128, 0)).max() <= 1, color[2, 2]
    assert color[32, 48, 0] > 200 and color[32, 48, 1] < 30 and color[..., 3].min() == 255
    assert scene.render.film_transparent


def test_helpers_are_not_in_an_f12_render(cb, scene, tmp_path):
    """An image plane right in front of the camera and a projector: hidden from F12 by default, shown with the
    Helpers in Renders switch, never in a capture."""
    scene.objects["Cube"].data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))
    green = bpy.data.images.new("green", 4, 4)
    green.pixels.foreach_set(np.tile([0.0, 1.0, 0.0, 1.0], 16).astype(np.float32))
    plane = cb.results.place_image_plane(scene, scene.camera, green, 1.0)
    projector = cb.results.make_projector(scene, "CB Projector test", scene.camera.matrix_world)
    assert plane.hide_render and projector.hide_render

    bpy.ops.render.render()                                    # F12
    result = next(i for i in bpy.data.images if i.type == "RENDER_RESULT")
    px = _saved_pixels(result, scene, tmp_path / "f12.png")
    assert px[32, 48, 0] > 0.8 and px[32, 48, 1] < 0.1         # the red cube, not the green plane

    scene.controlbridge.helpers_in_render = True               # the artist asks for them
    assert not plane.hide_render and not projector.hide_render
    bpy.ops.render.render()
    px = _saved_pixels(result, scene, tmp_path / "f12_helpers.png")
    assert px[32, 48, 1] > 0.8 and px[32, 48, 0] < 0.1         # the plane is in front now

    shot = cb.capture.capture(scene, None, cycles())           # ... but never in a capture
    color = np.frombuffer(shot.color, np.uint8).reshape(64, 96, 4)
    assert color[32, 48, 0] > 200 and color[32, 48, 1] < 30
    assert not plane.hide_render                               # and put back as the artist set it
