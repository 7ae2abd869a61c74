import json

import pytest

from controlbridge_protocol import JobSettings
from controlbridge_unreal import buffers, camera_math, jobs, naming, result_plan
from controlbridge_unreal.settings_model import PluginSettings


# ---- naming

@pytest.mark.parametrize("raw,expected", [
    ("Shot 010", "Shot_010"), ("CineCamera/Actor.3", "CineCamera_Actor_3"), ("   ", "Untitled"),
    ("Kamera_Ä:ü", "Kamera"), ("a" * 100, "a" * naming.MAX_NAME),
])
def test_sanitize(raw, expected):
    assert naming.sanitize(raw) == expected


def test_texture_names_are_valid_and_unique():
    name = naming.texture_asset_name("Shot 010", "3f2a9c1e-77aa-4bb0-9c1d-aaaaaaaaaaaa")
    assert name == "T_CB_Shot_010_3f2a9c1e"
    taken = {name, name + "_2"}
    assert naming.unique_name(name, taken.__contains__) == name + "_3"
    assert naming.object_path("/Game/ControlBridge/", "T_A") == "/Game/ControlBridge/T_A.T_A"
    assert naming.temp_image_filename(name, "png") == name + ".png"
    with pytest.raises(ValueError):
        naming.temp_image_filename(name, "raw_rgba8")


def test_plane_names_and_client_name():
    assert naming.plane_label("Shot 010") == "CB_Result_Shot_010"
    assert naming.plane_key_tag("/Game/Map.Map:PersistentLevel.Cam") == "ControlBridgeFor:/Game/Map.Map:PersistentLevel.Cam"
    assert naming.material_instance_name("Shot 010") == "MI_CB_Shot_010"
    assert naming.client_name("5.6.0") == f"unreal 5.6.0 / controlbridge-unreal {naming.PLUGIN_VERSION}"


# ---- jobs

def test_job_settings_from_plugin_settings():
    s = PluginSettings(prompt="stone castle", negative_prompt="blurry", seed=5, steps=9, cfg=3.5, sampler="euler",
                       denoise=0.6, depth_weight=0.8, canny_weight=0.0, model="")
    js = jobs.job_settings(s, 768, 432, "Shot 010")
    assert isinstance(js, JobSettings)
    assert (js.prompt, js.negative_prompt, js.seed, js.steps, js.cfg, js.sampler, js.denoise) == \
        ("stone castle", "blurry", 5, 9, 3.5, "euler", 0.6)
    assert (js.width, js.height, js.model, js.result_encoding) == (768, 432, None, "png")
    assert set(js.controlnets) == {"depth"} and js.controlnets["depth"].weight == 0.8   # weight 0 -> left out
    assert js.filename_prefix == "unreal_Shot_010"
    assert JobSettings.from_dict(json.loads(json.dumps(js.to_dict()))) == js         # JSON-safe


def test_output_size_uses_filmback_aspect_only_when_asked():
    cine = camera_math.cine_camera_view("k", "C", (0, 0, 0), (0, 0, 0), 23.76, 13.365, 35.0)
    assert jobs.output_size(PluginSettings(width=768, height=512), cine) == (768, 432)
    assert jobs.output_size(PluginSettings(width=768, height=512, match_camera_aspect=False), cine) == (768, 512)
    vp = camera_math.viewport_view((0, 0, 0), (0, 0, 0), 90.0)
    assert jobs.output_size(PluginSettings(width=640, height=360), vp) == (640, 360)


def test_attachments():
    probe = buffers.depth_stats([100.0, 65504.0], 2, 1, max_depth_cm=5000.0)
    cap = jobs.Capture(2, 1, b"png bytes", b"exr bytes", probe.far, probe)
    color, d = jobs.attachments(cap)
    assert (color.name, color.encoding, color.width, color.height, color.data) == ("color", "png", 2, 1, b"png bytes")
    assert (d.name, d.encoding, d.far, d.data) == ("depth", "exr", 5000.0, b"exr bytes")


def test_capabilities_check():
    from controlbridge_protocol import Capabilities
    caps = Capabilities(samplers=["euler", "euler_a"], controlnets=["depth"], limits={"max_pixels": 512 * 512})
    js = jobs.job_settings(PluginSettings(sampler="euler"), 512, 512)
    assert "canny" in jobs.check_against_capabilities(js, caps)
    js = jobs.job_settings(PluginSettings(sampler="dpm", canny_weight=0), 512, 512)
    assert "no sampler 'dpm'" in jobs.check_against_capabilities(js, caps)
    js = jobs.job_settings(PluginSettings(sampler="euler", canny_weight=0), 1024, 512)
    assert "larger than the server allows" in jobs.check_against_capabilities(js, caps)
    js = jobs.job_settings(PluginSettings(sampler="euler", canny_weight=0), 512, 512)
    assert jobs.check_against_capabilities(js, caps) is None
    assert jobs.check_against_capabilities(js, None) is None


# ---- result plan

def test_result_plan_for_a_cine_camera():
    view = camera_math.cine_camera_view("/Game/M.M:PersistentLevel.Shot", "Shot 010", (0, 0, 100), (0, 45, 0),
                                        36.0, 24.0, 18.0, actor=object())
    existing = {"/Game/ControlBridge/T_CB_Shot_010_abcdef12.T_CB_Shot_010_abcdef12"}
    plan = result_plan.plan_result(
        view=view, width=768, height=512, job_id="abcdef12-3456", result_settings={"prompt": "x", "seed": 9},
        seed=9, saved_path="/out/a.png", encoding="png", create_plane=True, plane_distance_cm=500.0,
        asset_exists=existing.__contains__)
    assert plan.asset_name == "T_CB_Shot_010_abcdef12_2"
    assert plan.temp_filename == "T_CB_Shot_010_abcdef12_2.png"
    assert plan.texture_object_path == "/Game/ControlBridge/T_CB_Shot_010_abcdef12_2.T_CB_Shot_010_abcdef12_2"
    assert json.loads(plan.metadata[naming.METADATA_SETTINGS]) == {"prompt": "x", "seed": 9}
    assert plan.metadata[naming.METADATA_SEED] == "9"
    assert plan.attach and plan.placement.width == pytest.approx(1000.0)   # hfov 90 at 500 cm
    assert plan.placement.height == pytest.approx(1000.0 * 512 / 768)
    assert plan.plane_key_tag == "ControlBridgeFor:/Game/M.M:PersistentLevel.Shot"


def test_result_plan_without_plane():
    view = camera_math.viewport_view((0, 0, 0), (0, 0, 0), 90.0)
    plan = result_plan.plan_result(view=view, width=64, height=64, job_id="j", result_settings={}, seed=1,
                                   saved_path="", encoding="png", create_plane=False, plane_distance_cm=100.0,
                                   asset_exists=lambda p: False)
    assert plan.placement is None and plan.world is None and not plan.attach


def test_preview_interval_gives_about_eight_previews():
    from controlbridge_unreal.jobs import preview_interval
    assert preview_interval(20, 0.75) == 1            # 15 steps run -> every step (15 // 8)
    assert preview_interval(40, 1.0) == 5
    assert preview_interval(150, 1.0) == 18
    assert preview_interval(4, 0.1) == 1              # never 0 (0 = no previews at all)
