"""What a welcome says about each ControlNet kind a DCC offers (controlbridge_protocol/control_offer.py): the
add-ons' "not on this server" lines and their checks before a job is sent, from real capabilities."""
from controlbridge_protocol import Capabilities, Client, ControlNetSettings
from controlbridge_protocol import control_offer
from helpers import quick_settings

CAPS = Capabilities(
    controlnets=["canny", "depth"], default_model="tiny",
    control={"kinds": ["depth", "canny", "normal", "lineart", "softedge", "tile"],
             "union_modes": {"sdxl": ["depth", "normal", "tile"]},
             "estimators": ["midas", "lineart", {"name": "pidinet", "role": "softedge"}]},
    library={"controlnet": [{"name": "control_v11p_sd15_normalbae.safetensors", "family": "sd15"},
                            {"name": "promax.safetensors", "family": "sdxl", "variant": "union"},
                            {"name": "control_v11p_sd15_lineart.safetensors", "family": "sd15"}]})


def test_a_kind_is_offered_by_the_model_or_a_library_file_or_a_union_mode():
    assert control_offer.kind_available(CAPS, "depth") and control_offer.kind_available(CAPS, "canny")
    assert control_offer.controlnet_files(CAPS, "normal") == ["control_v11p_sd15_normalbae.safetensors",
                                                             "promax.safetensors"]
    assert control_offer.controlnet_files(CAPS, "lineart") == ["control_v11p_sd15_lineart.safetensors"]
    assert control_offer.controlnet_files(CAPS, "tile") == ["promax.safetensors"]      # the union's tile mode
    assert not control_offer.kind_available(CAPS, "softedge")
    assert control_offer.is_union(CAPS, "promax.safetensors")
    assert not control_offer.is_union(CAPS, "control_v11p_sd15_lineart.safetensors")


def test_estimators_by_the_kind_of_map_they_make():
    assert control_offer.estimators_for(CAPS, "lineart") == ["lineart"]
    assert control_offer.estimators_for(CAPS, "softedge") == ["pidinet"]
    assert control_offer.estimators_for(CAPS, "depth") == ["midas"]
    assert control_offer.estimators_for(Capabilities(), "lineart") == []


def test_problems_name_each_missing_controlnet_and_estimator():
    ok = quick_settings(controlnets={"depth": ControlNetSettings(),
                                     "normal": ControlNetSettings(model="control_v11p_sd15_normalbae.safetensors"),
                                     "lineart": ControlNetSettings(model="control_v11p_sd15_lineart.safetensors")},
                        estimate={"lineart": "lineart"})
    assert control_offer.problems(ok, CAPS) == []
    bad = quick_settings(controlnets={"normal": ControlNetSettings(), "tile": ControlNetSettings(model="nope.pt")},
                         estimate={"softedge": "hed"})
    found = control_offer.problems(bad, CAPS)
    assert found[0] == ("the server's model has no normal ControlNet; choose one of its library's: "
                        "control_v11p_sd15_normalbae.safetensors, promax.safetensors")
    assert found[1] == "the server's library has no ControlNet 'nope.pt' (for tile)"
    assert found[2] == "the server has no hed estimator for softedge (it offers: midas, lineart, pidinet)"
    assert control_offer.problems(bad.replace(model="other.safetensors"), CAPS)[0].startswith("the server's library")
    assert control_offer.problems(bad, None) == []


def test_a_real_servers_welcome_reads_the_same(server):
    with Client(server.url) as c:
        caps = c.capabilities
    assert control_offer.kind_available(caps, "depth") and not control_offer.kind_available(caps, "lineart")
    assert control_offer.problems(quick_settings(controlnets={"lineart": ControlNetSettings()}), caps) == [
        "the server's model has no lineart ControlNet"]


def test_an_empty_estimator_is_the_servers_first_for_that_kind():
    s = quick_settings(controlnets={"lineart": ControlNetSettings(), "softedge": ControlNetSettings()},
                       estimate={"lineart": "", "softedge": ""})
    filled = control_offer.fill_estimators(s, CAPS)
    assert filled.estimate == {"lineart": "lineart", "softedge": "pidinet"}
    assert control_offer.fill_estimators(s, None) is s
    none_here = control_offer.fill_estimators(s, Capabilities(control={"estimators": ["midas"]}))
    assert none_here.estimate == {"lineart": "", "softedge": ""}
    assert control_offer.problems(none_here, Capabilities(control={"estimators": ["midas"]}))[-1] == \
        "the server has no estimator for softedge maps (it offers: midas)"
