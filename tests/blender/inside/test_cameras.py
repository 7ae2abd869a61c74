"""Every camera at once through a real server: one result per camera with the same settings and seed, each on its
own camera and in History, a labelled contact sheet next to the outputs; A/B of a camera's last two results."""
import os

import bpy
import numpy as np
import pytest

from conftest import emission_material


def top_first(image):
    px = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(image.size[1], image.size[0], 4)[::-1]


def add_camera(scene, name, location):
    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    cam.location = location
    scene.collection.objects.link(cam)
    return cam


@pytest.fixture
def shots(cb, scene, server_url, use_server):
    use_server(server_url)
    p = scene.controlbridge
    p.steps, p.prompt, p.capture_engine, p.randomize_seed = 2, "a street", "WORKBENCH", True
    scene.objects["Cube"].data.materials.append(emission_material("red", (1.0, 0.0, 0.0)))
    add_camera(scene, "Left", (-1.5, 0.0, 0.0))
    add_camera(scene, "Right", (1.5, 0.3, 0.0))
    return scene


def assert_labelled_cells(cb, sheet_image, expected):
    """Each cell holds its result's pixels and, below it, a label with bright text."""
    px = top_first(sheet_image)
    cells = cb.sheet.cells_of(sheet_image)
    assert [c["image"] for c in cells] == [image.name for _, image in expected]
    for cell, (label, image) in zip(cells, expected):
        assert cell["label"].startswith(label)
        x, y, w, h = cell["x"], cell["y"], cell["width"], cell["height"]
        assert np.abs(px[y:y + h, x:x + w, :3] - top_first(image)[..., :3]).max() <= 1.5 / 255
        strip = px[cell["label_y"]:cell["label_y"] + cell["label_height"], x:x + w, :3]
        assert (strip.min(axis=-1) > 0.7).sum() > 20, "no label text drawn"
    return cells


def test_every_camera_gets_a_result_and_a_contact_sheet(cb, shots, wait_idle):
    scene = shots
    main = scene.camera
    p = scene.controlbridge

    assert bpy.ops.controlbridge.generate_cameras(scope="ALL") == {"FINISHED"}
    st = wait_idle(timeout=180)

    batch = cb.cameras.last()
    assert st.phase == "finished" and not st.error, st.line
    assert batch.cameras == ["Camera", "Left", "Right"] and sorted(batch.done) == batch.cameras
    images = [bpy.data.images[batch.done[name]] for name in batch.cameras]
    infos = [cb.results.job_info(image) for image in images]
    assert {info["seed"] for info in infos} == {p.seed}                        # one seed for every camera
    assert len({str(sorted(info["settings"].items())) for info in infos}) == 1   # the same settings
    assert [info["capture"]["camera"] for info in infos] == batch.cameras        # each from its own camera
    for name, image in zip(batch.cameras, images):
        assert [b.image for b in bpy.data.objects[name].data.background_images] == [image]
    assert [cb.cameras.camera_of(item) for item in p.history] == batch.cameras
    assert scene.camera == main                                                  # the active camera is back

    # The contact sheet: next to the server's outputs, a 2x2 grid with the shots and their cameras' names.
    assert os.path.dirname(batch.sheet_path) == os.path.dirname(infos[0]["saved_path"])
    assert os.path.isfile(batch.sheet_path)
    sheet_image = bpy.data.images[cb.cameras.SHEET_IMAGE]
    assert bpy.path.abspath(sheet_image.filepath) == batch.sheet_path
    m, lh = cb.sheet.MARGIN, cb.sheet.label_height(64)
    assert tuple(sheet_image.size) == (2 * 96 + 3 * m, 2 * (64 + lh) + 3 * m)
    assert_labelled_cells(cb, sheet_image, [(name, image) for name, image in zip(batch.cameras, images)])
    assert "3/3 cameras" in st.line and batch.sheet_path in st.line


def test_marker_cameras_only(cb, shots, wait_idle):
    scene = shots
    scene.timeline_markers.new("B", frame=20).camera = scene.objects["Camera"]
    scene.timeline_markers.new("A", frame=1).camera = scene.objects["Left"]

    assert bpy.ops.controlbridge.generate_cameras(scope="MARKERS") == {"FINISHED"}
    st = wait_idle(timeout=120)

    batch = cb.cameras.last()
    assert st.phase == "finished" and not st.error, st.line
    assert batch.cameras == ["Left", "Camera"] and sorted(batch.done) == ["Camera", "Left"]   # frame order
    assert_labelled_cells(cb, bpy.data.images[cb.cameras.SHEET_IMAGE],
                          [(name, bpy.data.images[batch.done[name]]) for name in batch.cameras])


def test_a_b_of_a_cameras_last_two_results(cb, shots, wait_idle):
    scene = shots
    p = scene.controlbridge
    for _ in range(2):
        assert bpy.ops.controlbridge.generate() == {"FINISHED"}
        assert wait_idle().phase == "finished"
    p.history_index = 0

    assert bpy.ops.controlbridge.history_ab() == {"FINISHED"}

    older, newer = (item.image for item in p.history)
    ab = bpy.data.images["CB A/B Camera"]
    cells = assert_labelled_cells(cb, ab, [("A", older), ("B", newer)])
    assert cells[0]["y"] == cells[1]["y"] and cells[0]["x"] < cells[1]["x"]    # side by side
    assert os.path.isfile(bpy.path.abspath(ab.filepath))
    scene.camera = scene.objects["Left"]                                        # no results from that one
    p.history_index = -1
    with pytest.raises(RuntimeError, match="Select a History entry"):
        bpy.ops.controlbridge.history_ab()


def test_every_camera_with_the_server_down_says_so_per_camera(cb, shots, use_server, wait_idle):
    from conftest import env_or_skip
    from test_errors import RenderCounter
    url = env_or_skip("CONTROLBRIDGE_TEST_DOWN_URL")
    use_server(url)

    with RenderCounter() as renders:
        assert bpy.ops.controlbridge.generate_cameras(scope="ALL") == {"FINISHED"}
        st = wait_idle(timeout=30)

    batch = cb.cameras.last()
    assert renders.count == 0 and not batch.done and sorted(batch.failed) == ["Camera", "Left", "Right"]
    assert all("cannot reach" in line for line in batch.failed.values())
    assert st.error == st.line and "0/3 cameras" in st.line and "Left: " in st.line and "\n" not in st.line
    assert cb.operators.outcome(st) == ("ERROR", st.line)
    assert cb.cameras.SHEET_IMAGE not in bpy.data.images and not batch.sheet_path
