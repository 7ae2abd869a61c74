import json
import os

import pytest

from controlbridge_unreal import settings_model as sm


def test_field_list_and_dataclass_agree():
    s = sm.PluginSettings()
    assert [f.name for f in sm.FIELDS] == list(s.to_dict())
    for f in sm.FIELDS:
        assert isinstance(getattr(s, f.name), f.type), f.name
        assert sm.coerce(f, f.default) == f.default


def test_issue_settings_are_all_there():
    names = set(sm.FIELD_BY_NAME)
    for required in ("server_url", "token", "prompt", "negative_prompt", "seed", "steps", "cfg", "sampler",
                     "denoise", "depth_weight", "canny_weight", "width", "height"):
        assert required in names


def test_save_load_round_trip(tmp_path):
    path = sm.settings_path(str(tmp_path / "Saved"))
    assert path.endswith(os.path.join("Saved", "ControlBridge", "settings.json"))
    s = sm.PluginSettings(prompt="a castle", seed=42, steps=12, cfg=4.5, token="secret", match_camera_aspect=False)
    sm.save(path, s)
    data = json.loads(open(path, encoding="utf-8").read())
    assert data["version"] == sm.SETTINGS_FILE_VERSION
    assert data["settings"]["prompt"] == "a castle"
    assert sm.load(path) == s
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.startswith(".settings-")]  # no temp file left


def test_missing_or_broken_file_gives_defaults(tmp_path):
    assert sm.load(str(tmp_path / "nope.json")) == sm.PluginSettings()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert sm.load(str(bad)) == sm.PluginSettings()
    bad.write_text("[1, 2]", encoding="utf-8")
    assert sm.load(str(bad)) == sm.PluginSettings()


def test_values_are_coerced_and_clamped(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"settings": {
        "steps": 1000, "cfg": "7.5", "denoise": -1, "seed": 3.6, "width": "wide", "match_camera_aspect": "false",
        "create_plane": 1, "server_url": "   ", "prompt": None, "unknown_key": 5, "viewport_fov": float("nan"),
        "depth_weight": True,
    }}), encoding="utf-8")
    s = sm.load(str(path))
    assert s.steps == 150 and s.cfg == 7.5 and s.denoise == 0.0 and s.seed == 4
    assert s.width == 768                      # unparseable -> default
    assert s.match_camera_aspect is False and s.create_plane is True
    assert s.server_url == "ws://127.0.0.1:8765"
    assert s.prompt == ""
    assert s.viewport_fov == 90.0              # NaN -> default
    assert s.depth_weight == 1.0               # a bool is not a weight


def test_uproperty_meta():
    meta = sm.uproperty_meta(sm.FIELD_BY_NAME["steps"])
    assert meta["Category"] == "ControlBridge|Sampling"
    assert meta["ClampMin"] == "1" and meta["ClampMax"] == "150"
    assert sm.uproperty_meta(sm.FIELD_BY_NAME["prompt"])["MultiLine"] == "true"
    assert sm.uproperty_meta(sm.FIELD_BY_NAME["token"])["PasswordField"] == "true"
    assert sm.uproperty_meta(sm.FIELD_BY_NAME["cfg"])["DisplayName"] == "CFG"
    for f in sm.FIELDS:
        assert all(isinstance(v, str) for v in sm.uproperty_meta(f).values())


def test_store_persists_every_change(tmp_path):
    path = sm.settings_path(str(tmp_path))
    store = sm.SettingsStore(path)
    assert store.get() == sm.PluginSettings()
    store.set(sm.PluginSettings(prompt="x", steps=999))
    assert store.get().steps == 150
    assert sm.SettingsStore(path).get() == store.get()


@pytest.mark.parametrize("value,expected", [("yes", True), ("0", False), (0, False), ("TRUE", True)])
def test_bool_parsing(value, expected):
    assert sm.coerce(sm.FIELD_BY_NAME["create_plane"], value) is expected
