"""Fixtures for the tests that run inside Blender (the `bpy` module).

The add-on is installed once per session from the built zip, the way a user installs an extension
(Preferences > Get Extensions > Install from Disk runs the same operator), into the Blender user folder
that BLENDER_USER_RESOURCES points at. Refuses to run against a real user folder.
"""
import importlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ADDON_MODULE = "bl_ext.user_default.controlbridge"


def pytest_configure(config):
    if not os.environ.get("BLENDER_USER_RESOURCES") or not os.environ.get("CONTROLBRIDGE_ADDON_ZIP"):
        raise pytest.UsageError("run these through tests/blender/test_blender_addon.py: they need "
                                "BLENDER_USER_RESOURCES (a throwaway folder) and CONTROLBRIDGE_ADDON_ZIP")


@pytest.fixture(scope="session")
def installed():
    import bpy
    zip_path = os.environ["CONTROLBRIDGE_ADDON_ZIP"]
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}, result
    return Path(os.environ["BLENDER_USER_RESOURCES"]) / "extensions" / "user_default" / "controlbridge"


@pytest.fixture(scope="session")
def cb(installed):
    """The installed add-on's modules."""
    names = ("bridge", "capture", "results", "history", "jobs", "frustum", "preferences", "properties", "live",
             "viewport", "operators", "engine", "cameras", "sheet", "style", "panels")
    mods = {n: importlib.import_module(f"{ADDON_MODULE}.{n}") for n in names}
    mods["package"] = importlib.import_module(ADDON_MODULE)
    mods["protocol"] = importlib.import_module(f"{ADDON_MODULE}.vendor.controlbridge_protocol")
    return SimpleNamespace(**mods)


def read_image(path):
    """An 8-bit image file as int RGBA, top row first (Blender's pixels are bottom row first)."""
    import bpy
    import numpy as np
    image = bpy.data.images.load(str(path))
    try:
        px = np.empty(image.size[0] * image.size[1] * 4, np.float32)
        image.pixels.foreach_get(px)
        return np.round(px.reshape(image.size[1], image.size[0], 4)[::-1] * 255).astype(int)
    finally:
        bpy.data.images.remove(image)


def env_or_skip(name):
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set")
    return value


@pytest.fixture
def scene(cb):
    """An empty file with a known shot: a camera at the origin looking down -Z, a 2-unit cube whose front
    face is 5 units away, rendered at 192x128 x 50% = 96x64 (not square) with Cycles, few samples."""
    import bpy
    cb.bridge.shutdown()
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    sc.collection.objects.link(cam)
    sc.camera = cam
    cube = bpy.data.objects.new("Cube", _cube_mesh("Cube", 1.0))
    cube.location = (0.0, 0.0, -6.0)
    sc.collection.objects.link(cube)
    r = sc.render
    r.engine = "CYCLES"
    r.resolution_x, r.resolution_y, r.resolution_percentage = 192, 128, 50
    sc.cycles.samples = 2
    sc.cycles.use_denoising = False
    p = sc.controlbridge
    p.capture_engine, p.final_samples, p.capture_samples = "CYCLES", 2, 2   # the tests' default: quick Cycles
    sc.view_settings.view_transform = "Standard"
    bpy.context.view_layer.update()
    yield sc
    cb.bridge.shutdown()


def _cube_mesh(name, half):
    import bpy
    h = half
    verts = [(-h, -h, -h), (h, -h, -h), (h, h, -h), (-h, h, -h), (-h, -h, h), (h, -h, h), (h, h, h), (-h, h, h)]
    faces = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    return mesh


@pytest.fixture
def make_cube():
    def make(name, half, location, color=None):
        import bpy
        obj = bpy.data.objects.new(name, _cube_mesh(name, half))
        obj.location = location
        bpy.context.scene.collection.objects.link(obj)
        if color is not None:
            obj.data.materials.append(emission_material(name, color))
        return obj
    return make


def emission_material(name, color):
    import bpy
    mat = bpy.data.materials.new(name)
    nodes = mat.node_tree.nodes
    nodes.clear()
    em = nodes.new("ShaderNodeEmission")
    em.inputs["Color"].default_value = (*color, 1.0)
    out = nodes.new("ShaderNodeOutputMaterial")
    mat.node_tree.links.new(em.outputs[0], out.inputs["Surface"])
    return mat


def cycles(samples=2, **values):
    """Capture options for a quick Cycles capture (most tests check the render capture's numbers with it)."""
    from importlib import import_module
    capture = import_module(f"{ADDON_MODULE}.capture")
    return capture.CaptureOptions(engine="CYCLES", final_samples=samples, **values)


@pytest.fixture
def server_url():
    return env_or_skip("CONTROLBRIDGE_TEST_SERVER_URL")


@pytest.fixture
def use_server(cb):
    """use_server(url, token="") points the add-on's preferences at a server."""
    def use(url, token=""):
        prefs = cb.preferences.get()
        prefs.server_url = url
        prefs.token = token
        return prefs
    return use


@pytest.fixture
def wait_idle(cb):
    """Drive the main-thread pump the way bpy.app.timers would (timers never fire in the bpy module)."""
    def wait(timeout=60.0, until=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cb.bridge.drain()
            if until is not None and until(cb.bridge.state()):
                return cb.bridge.state()
            if until is None and not cb.bridge.busy():
                cb.bridge.drain()
                return cb.bridge.state()
            time.sleep(0.02)
        raise AssertionError(f"timed out; add-on state: {cb.bridge.state()}")
    return wait
