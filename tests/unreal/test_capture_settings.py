"""Capture settings an Unreal user expects: editor helpers never captured, post-processing on or off, the output
size from the CineCamera's filmback, depth kept raw in centimetres (the server normalizes it)."""

import pytest

from controlbridge_unreal import capture_look, engine_capture, jobs
from controlbridge_unreal.controller import CINE_CAMERA
from controlbridge_unreal.settings_model import PluginSettings
from fake_unreal import read_exr_red


def test_editor_helpers_are_off_and_post_processing_follows_the_setting():
    flags = dict(capture_look.show_flags(post_process=True))
    for helper in ("Editor", "BillboardSprites", "Grid", "Selection", "ModeWidgets", "Bounds", "Volumes",
                   "CameraFrustums"):
        assert flags[helper] is False
    assert flags["PostProcessing"] is True
    assert dict(capture_look.show_flags(post_process=False))["PostProcessing"] is False


@pytest.mark.parametrize("post_process", [True, False])
def test_every_capture_pass_uses_the_show_flags(fake_editor, post_process):
    editor, ue = fake_editor
    editor.add_cine_camera()
    settings = PluginSettings(capture_post_process=post_process)
    view = engine_capture.resolve_view(ue, CINE_CAMERA, settings)
    engine_capture.capture(ue, view, 16, 16, settings)
    assert len(editor.captures) == capture_look.WARMUP_FRAMES + 3        # color (+ warm-up), depth, probe
    for capture in editor.captures:
        assert capture["show_flags"]["PostProcessing"] is post_process
        assert capture["show_flags"]["Grid"] is False and capture["show_flags"]["BillboardSprites"] is False


@pytest.mark.parametrize("sensor,box,expected", [((36.0, 24.0), (768, 768), (768, 512)),       # 3:2 full frame
                                                  ((24.89, 18.66), (1024, 1024), (1024, 768)),  # Super 35 4:3
                                                  ((23.76, 13.365), (1920, 1920), (1920, 1080)),  # 16:9
                                                  ((36.0, 24.0), (512, 2048), (512, 344))])
def test_the_output_size_follows_the_filmback(fake_editor, sensor, box, expected):
    editor, ue = fake_editor
    editor.add_cine_camera(sensor=sensor)
    settings = PluginSettings(width=box[0], height=box[1], match_camera_aspect=True)
    view = engine_capture.resolve_view(ue, CINE_CAMERA, settings)
    assert jobs.output_size(settings, view) == expected


def test_depth_is_sent_raw_in_centimetres(fake_editor):
    editor, ue = fake_editor
    editor.add_cine_camera()
    view = engine_capture.resolve_view(ue, CINE_CAMERA, PluginSettings())
    cap = engine_capture.capture(ue, view, 24, 18, PluginSettings())
    depth = read_exr_red(cap.depth_exr)
    assert max(depth) == 65504.0 and min(depth) == pytest.approx(500.0, abs=1.0)   # sky and the nearest floor, cm
    assert 800.0 in depth                                                           # the box, unnormalized
    depth_attachment = jobs.attachments(cap)[1]
    assert depth_attachment.encoding == "exr" and depth_attachment.descriptor()["far"] == 65504.0
