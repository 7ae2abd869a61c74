"""More ControlNet kinds and the style reference from the Unreal plugin: the settings become the one JobSettings
(weights, windows, library files, estimators, style), the capture sends what they need (the normal pass, the style
image), a kind the server lacks is one clear message, and end to end the world-normal capture reaches a real
server's normal ControlNet as the NormalBae colours it was trained on."""

import io
import math
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from controlbridge_protocol import Capabilities, ControlNetSettings, StyleSettings, control_offer
from controlbridge.server.outputs import read_job
from controlbridge_unreal import jobs, live, plugin, settings_model
from fake_unreal import make_png
from ue_scene import fast_settings, synthetic_capture


def test_each_kind_becomes_a_controlnet_with_its_window_file_and_estimator():
    s = fast_settings(depth_weight=0.0, canny_weight=0.0, normal_weight=0.7, normal_start=0.1, normal_end=0.8,
                      normal_model="control_v11p_sd15_normalbae.safetensors", lineart_weight=0.5,
                      softedge_weight=0.4, softedge_estimator="pidinet", tile_weight=0.3, tile_model="  ")
    job = jobs.job_settings(s, 64, 48)
    assert job.controlnets == {
        "normal": ControlNetSettings(0.7, 0.1, 0.8, model="control_v11p_sd15_normalbae.safetensors"),
        "lineart": ControlNetSettings(0.5), "softedge": ControlNetSettings(0.4), "tile": ControlNetSettings(0.3)}
    assert job.estimate == {"lineart": "", "softedge": "pidinet"}     # empty: the server's first for lineart
    assert job.style is None
    assert jobs.wants_normals(s) and not jobs.wants_normals(fast_settings())
    assert jobs.job_settings(fast_settings(), 64, 48).estimate == {}     # no estimator for a kind that is off


@pytest.mark.parametrize("kind", control_offer.DCC_KINDS)
def test_every_kind_the_protocol_offers_has_its_settings_and_reaches_the_job(kind):
    only_this_kind = {f"{k}_weight": 0.0 for k in control_offer.DCC_KINDS}
    only_this_kind.update({f"{kind}_weight": 0.75, f"{kind}_start": 0.125, f"{kind}_end": 0.875,
                           f"{kind}_model": f"{kind}-file.safetensors"})
    if kind in control_offer.ESTIMATED_KINDS:
        only_this_kind[f"{kind}_estimator"] = f"{kind}-estimator"
    job = jobs.job_settings(fast_settings(**only_this_kind), 64, 48)
    assert job.controlnets == {kind: ControlNetSettings(0.75, 0.125, 0.875, model=f"{kind}-file.safetensors")}
    assert job.estimate == ({kind: f"{kind}-estimator"} if kind in control_offer.ESTIMATED_KINDS else {})
    assert {f"{kind}_weight", f"{kind}_start", f"{kind}_end", f"{kind}_model"} <= set(settings_model.FIELD_BY_NAME)


def test_a_style_image_adds_the_style_settings_and_attachment():
    s = fast_settings(style_image="/Game/Refs/T_Look.T_Look", style_weight=0.9)
    assert jobs.job_settings(s, 64, 48).style == StyleSettings(weight=0.9)
    assert live.frame_settings(s, 64, 48, "Shot").resolve(None).style is None   # style runs in jobs only
    capture = synthetic_capture(64, 48)
    reference = make_png(40, 30, (200, 100, 50))
    with_style = jobs.Capture(**{**capture.__dict__, "style_image": reference})
    images = {a.name: a for a in jobs.attachments(with_style)}
    assert (images["style"].encoding, images["style"].width, images["style"].height) == ("png", 40, 30)
    assert images["style"].data == reference
    assert "style" not in {a.name for a in jobs.attachments(capture)} and "normal" not in images


def test_jpeg_style_files_are_sized_from_their_header(tmp_path):
    from controlbridge_unreal import style
    path = tmp_path / "look.jpg"
    Image.new("RGB", (33, 17), (10, 200, 30)).save(path, quality=80, progressive=True)
    assert style.image_size(path.read_bytes()) == ("jpeg", 33, 17)
    assert style.source_kind(str(path)) == style.FILE
    assert style.source_kind("/Game/Refs/T_Look.T_Look") == style.ASSET
    with pytest.raises(style.CaptureProblem, match="neither an image file"):
        style.source_kind(str(tmp_path / "missing.png"))
    with pytest.raises(style.CaptureProblem, match="not a PNG or JPEG"):
        style.image_size(b"GIF89a....")


def test_a_kind_the_server_lacks_is_one_message_naming_what_it_has():
    caps = Capabilities(controlnets=["canny", "depth"], samplers=["euler"], default_model="tiny",
                        control={"estimators": ["lineart"]},
                        library={"controlnet": [{"name": "tiny-normalbae", "family": "sd15"}]})
    job = jobs.job_settings(fast_settings(normal_weight=1.0, softedge_weight=0.5), 64, 48)
    message = jobs.check_against_capabilities(control_offer.fill_estimators(job, caps), caps)
    assert message == ("Not on this server: the server's model has no normal ControlNet; choose one of its library's: "
                       "tiny-normalbae; the server's model has no softedge ControlNet; the server has no estimator "
                       "for softedge maps (it offers: lineart). Set those weights to 0, or choose what it has, "
                       "in ControlBridge settings.")
    ok = jobs.job_settings(fast_settings(normal_weight=1.0, normal_model="tiny-normalbae"), 64, 48)
    assert jobs.check_against_capabilities(ok, caps) is None


def test_settings_show_what_the_server_offers_for_each_kind():
    caps = Capabilities(controlnets=["canny", "depth"], control={"estimators": ["lineart"],
                                                                  "union_modes": {"sdxl": ["depth", "tile"]}},
                        library={"controlnet": [{"name": "tiny-normalbae", "family": "sd15"},
                                                {"name": "promax", "family": "sdxl", "variant": "union"}]},
                        style={"adapters": []})
    assert jobs.offer_summary(caps).splitlines() == [
        "depth: the model's own, promax", "canny: the model's own", "normal: tiny-normalbae",
        "lineart: not on this server; estimators: lineart", "softedge: not on this server; estimators: none",
        "tile: promax", "style: not on this server (no IP-Adapter)"]
    assert jobs.offer_summary(None).startswith("Not connected yet")


# --------------------------------------------------------------------------- end to end

def pump(editor, index, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        editor.tick(0.016)
        if len(editor.tasks) > index and editor.tasks[index].finished is not None:
            return editor.tasks[index]
        time.sleep(0.005)
    raise AssertionError(f"no end; task texts: {[t.texts for t in editor.tasks]}")


@pytest.fixture
def library_server(spawn_server, tmp_path):
    from controlbridge.engine.tiny_model import ensure_tiny_model
    models = tmp_path / "models"
    # random weights in a normal ControlNet's place: the library tells its kind from the name
    shutil.copytree(ensure_tiny_model().controlnets["depth"], models / "controlnet" / "tiny-normalbae")
    return spawn_server("--models-dir", str(models))


def start_plugin(editor, ue, server, **changes):
    settings_model.save(settings_model.settings_path(editor.saved_dir),
                        fast_settings(server_url=server.url, width=64, height=48, **changes))
    return plugin.start(ue)


def test_the_world_normal_capture_feeds_a_normal_controlnet(fake_editor, library_server):
    editor, ue = fake_editor
    p = start_plugin(editor, ue, library_server, normal_weight=1.0, normal_model="tiny-normalbae")
    try:
        pitch = -8.0
        editor.add_cine_camera(location=(0.0, 0.0, 160.0), rotation=(pitch, 20.0, 0.0), sensor=(36.0, 24.0))
        plugin.generate_from_cine_camera()
        sources = [c["source"] for c in editor.captures]
        assert sources[-2:] == [ue.SceneCaptureSource.SCS_SCENE_DEPTH, ue.SceneCaptureSource.SCS_NORMAL]
        assert all(rt.released for rt in editor.render_targets)
        task = pump(editor, 0)
        assert task.finished is True, (task.texts, editor.messages)
    finally:
        p.stop()
    shown = []
    editor.details_view = lambda obj: shown.append(obj.get_editor_property("server_offers")) or False
    p.open_settings()                                      # after a job: the server's offers are known
    assert "normal: tiny-normalbae" in shown[0] and "lineart: not on this server" in shown[0]
    saved, = library_server.output_dir.glob("*.png")
    job = read_job(saved)
    assert job["settings"]["controlnets"]["normal"]["model"] == "tiny-normalbae"
    sent = job["inputs"]["normal"]                         # the engine's EXR of world normals, and the rotation
    assert sent["encoding"] == "exr" and len(sent["world_to_camera"]) == 9 and (sent["width"], sent["height"]) == \
        (64, 40)                                           # the 3:2 filmback
    seen = np.asarray(Image.open(saved.parent / job["controls"]["normal"]).convert("RGB")).astype(int)
    h, w = seen.shape[:2]
    lavender = (128, 128, 255)                                  # NormalBae: facing the camera
    assert np.abs(seen[h // 2, w // 2] - lavender).max() <= 1            # the box's front
    assert np.abs(seen[2, w // 2] - lavender).max() <= 1                  # sky: background by depth, not its normal
    # the floor faces world up; the camera is pitched down 8 degrees, so it is up and a little toward the camera
    floor = (128, round((math.cos(math.radians(pitch)) + 1) * 127.5), round((math.sin(-math.radians(pitch)) + 1)
                                                                           * 127.5))
    assert np.abs(seen[h - 2, 2] - floor).max() <= 1


def test_a_normal_controlnet_the_server_lacks_is_refused_before_anything_is_sent(fake_editor, spawn_server):
    editor, ue = fake_editor
    server = spawn_server()
    p = start_plugin(editor, ue, server, normal_weight=1.0)
    try:
        editor.add_cine_camera()
        plugin.generate_from_cine_camera()
        task = pump(editor, 0, timeout=60)
    finally:
        p.stop()
    assert task.finished is False
    assert len(editor.messages) == 1 and "the server's model has no normal ControlNet" in editor.messages[0]
    assert list(server.output_dir.glob("*.png")) == []


def test_the_capture_exports_a_style_texture_asset_for_jobs_not_live_frames(fake_editor, tmp_path):
    from controlbridge_unreal import camera_math, engine_capture
    from controlbridge_unreal.settings_model import PluginSettings
    editor, ue = fake_editor
    reference = make_png(20, 10, (1, 2, 3))
    editor.assets["/Game/Refs/T_Look.T_Look"] = ue.Texture2D(name="T_Look", width=20, height=10, png=reference)
    view = camera_math.viewport_view((0.0, 0.0, 170.0), (-10.0, 0.0, 0.0), 90.0)
    settings = PluginSettings(style_image="/Game/Refs/T_Look.T_Look")
    cap = engine_capture.capture(ue, view, 16, 16, settings, temp_dir=str(tmp_path))
    assert cap.style_image == reference and cap.normal_exr is None
    rig = {}
    live = engine_capture.capture(ue, view, 16, 16, settings, temp_dir=str(tmp_path), rig=rig)
    assert live.style_image is None                           # the server runs style references in jobs only
    exports = [c for c in editor.calls_named("ImageWriteBlueprintLibrary.export_to_disk")
               if c.args[2].format is ue.DesiredImageFormat.PNG]
    assert len(exports) == 1
    engine_capture.release_rig(ue, rig)
    with pytest.raises(engine_capture.buffers.CaptureProblem, match="not a texture asset"):
        engine_capture.capture(ue, view, 16, 16, PluginSettings(style_image="/Game/Nope.Nope"),
                               temp_dir=str(tmp_path))
    file_ref = tmp_path / "look.png"
    file_ref.write_bytes(reference)
    cap = engine_capture.capture(ue, view, 16, 16, PluginSettings(style_image=str(file_ref), normal_weight=0.5),
                                 temp_dir=str(tmp_path))
    assert cap.style_image == reference and cap.normal_exr and len(cap.world_to_camera) == 9
    assert all(rt.released for rt in editor.render_targets)


@pytest.fixture
def style_server(spawn_server, tmp_path, model_cache):
    from controlbridge.engine.tiny_model import ensure_tiny_model
    from test_style_reference import write_adapter_file, write_encoder_file   # tiny random-weight IP-Adapter files
    models = tmp_path / "style-models"
    write_adapter_file(ensure_tiny_model().base, "sd15", models / "ipadapter" / "ip-adapter_tiny_sd15.safetensors")
    write_encoder_file(models / "clip_vision" / "tiny-clip-vision.safetensors")
    return spawn_server("--models-dir", str(models))


def test_a_style_texture_reaches_the_server_with_the_job(fake_editor, style_server):
    editor, ue = fake_editor
    look = np.zeros((30, 40, 3), np.uint8)
    look[:15] = (220, 40, 30)
    buf = io.BytesIO()
    Image.fromarray(look).save(buf, "PNG")
    editor.assets["/Game/Refs/T_Look.T_Look"] = ue.Texture2D(name="T_Look", width=40, height=30, png=buf.getvalue())
    p = start_plugin(editor, ue, style_server, style_image="/Game/Refs/T_Look.T_Look", style_weight=0.8)
    try:
        editor.add_cine_camera()
        plugin.generate_from_cine_camera()
        task = pump(editor, 0)
        assert task.finished is True, (task.texts, editor.messages)
    finally:
        p.stop()
    saved, = style_server.output_dir.glob("*.png")
    job = read_job(saved)
    assert job["settings"]["style"] == {"weight": 0.8, "model": None, "image_encoder": None}
    kept = saved.parent / job["inputs"]["style"]["file"]
    assert np.array_equal(np.asarray(Image.open(kept).convert("RGB")), look)     # the texture, as exported


def test_a_server_without_an_adapter_says_so_to_the_artist(fake_editor, spawn_server, tmp_path):
    editor, ue = fake_editor
    server = spawn_server()                                   # the tiny model alone: no ipadapter/ library
    style_file = tmp_path / "look.png"
    style_file.write_bytes(make_png(8, 8, (9, 9, 9)))
    p = start_plugin(editor, ue, server, style_image=str(style_file))
    try:
        editor.add_cine_camera()
        plugin.generate_from_cine_camera()
        task = pump(editor, 0, timeout=60)
    finally:
        p.stop()
    assert task.finished is False and len(editor.messages) == 1
    assert editor.messages[0].startswith("The server reported an error: no sd15 IP-Adapter in the model library: "
                                         "put one (e.g. ip-adapter_sd15.safetensors) into the ipadapter/ folder")


def test_a_history_rerun_captures_what_its_job_needs():
    now = fast_settings(style_image="/Game/Refs/T_Look.T_Look")
    with_normal = jobs.job_settings(fast_settings(normal_weight=0.6), 64, 48)
    s = jobs.capture_settings(now, with_normal)
    assert jobs.wants_normals(s) and s.style_image == ""          # its normal ControlNet: normals; no style
    assert jobs.capture_settings(now, jobs.job_settings(now, 64, 48)) == now   # a new job: the settings as they are
    styled = jobs.job_settings(now, 64, 48)
    with pytest.raises(jobs.CaptureProblem, match="choose a Style Image"):
        jobs.capture_settings(fast_settings(), styled)
