"""More ControlNet kinds and the style reference from the Blender panel: the properties become the one JobSettings
(weights, windows, library files, estimators, style) and back; the panel says which kinds the connected server
lacks; enabling the Normal ControlNet sends the normal pass, which a real server's normal ControlNet sees in
NormalBae colours; a style image goes with generations (not live frames) as the `style` attachment."""
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest

from conftest import env_or_skip, read_image


class Recorder:
    """A stand-in for a panel's `layout` that keeps every label drawn (bpy panels draw only in a UI)."""

    def __init__(self, labels):
        self.labels = labels

    def label(self, text="", **kwargs):
        self.labels.append(text)

    def __getattr__(self, name):            # row(), box(), column(), prop(), prop_search(), ...: more layout
        return lambda *args, **kwargs: self

    def __setattr__(self, name, value):
        if name == "labels":
            object.__setattr__(self, name, value)


def draw(panel, context):
    labels = []
    panel.draw(SimpleNamespace(layout=Recorder(labels)), context)
    return labels


def test_each_kind_becomes_a_controlnet_and_loads_back(cb, scene):
    p = scene.controlbridge
    p.use_depth, p.use_canny = True, False
    p.use_normal, p.normal_weight, p.normal_start, p.normal_end = True, 0.75, 0.125, 0.875   # exact in float32
    p.normal_model = "tiny-normalbae"
    p.use_lineart, p.lineart_weight = True, 0.5
    p.use_softedge, p.softedge_estimator = True, "pidinet"
    p.use_tile, p.tile_weight = True, 0.25
    p.use_style, p.style_weight = True, 0.875
    s = cb.jobs.settings_from_props(p)
    CN = cb.protocol.ControlNetSettings
    assert s.controlnets == {"depth": CN(1.0), "normal": CN(0.75, 0.125, 0.875, model="tiny-normalbae"),
                             "lineart": CN(0.5), "softedge": CN(1.0), "tile": CN(0.25)}
    assert s.estimate == {"lineart": "", "softedge": "pidinet"}      # empty: the server's first lineart estimator
    caps = cb.protocol.Capabilities(control={"estimators": [{"name": "lineart_anime", "role": "lineart"}]})
    assert cb.jobs.live_settings(p, caps).estimate == {"lineart": "lineart_anime", "softedge": "pidinet"}
    assert s.style == cb.protocol.StyleSettings(weight=0.875)
    assert cb.jobs.live_settings(p, None).style is None               # live frames never carry the style
    assert cb.capture.options_from_props(p).normals                   # the normal ControlNet brings its pass

    p.use_normal, p.use_lineart, p.use_softedge, p.use_tile, p.use_style = False, False, False, False, False
    assert not cb.capture.options_from_props(p).normals
    cb.jobs.props_from_settings(p, s)
    assert (p.use_normal, p.normal_weight, p.normal_model) == (True, 0.75, "tiny-normalbae")
    assert (p.use_softedge, p.softedge_estimator, p.use_style) == (True, "pidinet", True)
    assert cb.jobs.settings_from_props(p) == s


def test_every_kind_the_protocol_offers_has_its_settings_and_reaches_the_job(cb, scene):
    p = scene.controlbridge
    offer = cb.protocol.control_offer
    for kind in offer.DCC_KINDS:
        for other in offer.DCC_KINDS:
            setattr(p, f"use_{other}", other == kind)
        setattr(p, f"{kind}_weight", 0.75)   # these values are exact in float32
        setattr(p, f"{kind}_start", 0.125)
        setattr(p, f"{kind}_end", 0.875)
        setattr(p, f"{kind}_model", f"{kind}-file.safetensors")
        if kind in offer.ESTIMATED_KINDS:
            setattr(p, f"{kind}_estimator", f"{kind}-estimator")
        s = cb.jobs.settings_from_props(p)
        assert s.controlnets == {kind: cb.protocol.ControlNetSettings(0.75, 0.125, 0.875,
                                                                      model=f"{kind}-file.safetensors")}, kind
        assert s.estimate == ({kind: f"{kind}-estimator"} if kind in offer.ESTIMATED_KINDS else {}), kind


def test_the_panel_says_which_kinds_the_server_lacks(cb, scene, server_url):
    info = cb.properties.server_info()
    caps = cb.protocol.Capabilities(controlnets=["canny", "depth"], control={"estimators": ["lineart"]},
                                    library={"controlnet": [{"name": "tiny-normalbae", "family": "sd15"},
                                                            {"name": "promax", "family": "sdxl",
                                                             "variant": "union"}]})
    try:
        cb.properties.store_capabilities(info, server_url, caps)
        p = scene.controlbridge
        p.use_lineart = p.use_softedge = True
        p.tile_model = "promax"
        panels = cb.panels
        labels = draw(panels.VIEW3D_PT_controlbridge_controlnets, bpy.context)
        assert "choose a model from the library" in labels          # normal: only as a library file
        assert labels.count("not on this server") == 2               # lineart and softedge: nowhere
        assert "estimator for softedge not on this server" in labels  # and no estimator for it
        assert "union: tile mode" in labels                          # tile: the union file, in its tile mode
        p.tile_model = "nope.safetensors"
        assert "not in the server's library" in draw(panels.VIEW3D_PT_controlbridge_controlnets, bpy.context)
        assert "not on this server (no IP-Adapter)" in draw(panels.VIEW3D_PT_controlbridge_style, bpy.context)
        server = draw(panels.VIEW3D_PT_controlbridge_server, bpy.context)
        assert "Kinds it can run: depth, canny, normal" in server and "Estimators: lineart" in server
    finally:
        cb.properties.clear_capabilities(info)


def test_the_normal_controlnet_gets_the_normal_pass(cb, scene, use_server, wait_idle):
    use_server(env_or_skip("CONTROLBRIDGE_TEST_LIBRARY_SERVER_URL"))
    p = scene.controlbridge
    p.prompt, p.steps, p.use_canny = "a cube", 4, False
    p.use_normal, p.normal_model = True, "tiny-normalbae"
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    st = wait_idle(timeout=120)
    assert st.phase == "finished", st.line
    info = cb.results.job_info(bpy.data.images[st.image_name])
    assert info["settings"]["controlnets"]["normal"]["model"] == "tiny-normalbae"
    inputs = Path(info["saved_path"]).with_suffix(".inputs")
    # The Normal pass went in world space as exr (the server refuses one without the camera's rotation)
    assert [p.name for p in inputs.glob("normal.*")] == ["normal.exr"]
    seen = read_image(inputs / "control-normal.png")
    sh, sw = seen.shape[:2]
    assert np.abs(seen[sh // 2, sw // 2, :3] - (128, 128, 255)).max() <= 3   # the cube's face: toward the camera
    assert np.abs(seen[2, 2, :3] - (128, 128, 255)).max() <= 3               # nothing there: facing the camera too


def test_a_kind_the_server_lacks_fails_before_the_capture(cb, scene, server_url, use_server, wait_idle):
    use_server(server_url)
    p = scene.controlbridge
    p.prompt, p.steps, p.use_lineart = "a cube", 4, True
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    st = wait_idle()
    assert st.phase == "failed" and st.error
    assert st.line.startswith("Not on this server: the server's model has no lineart ControlNet")


def test_a_style_image_goes_with_the_job(cb, scene, tmp_path):
    p = scene.controlbridge
    p.use_style = True
    style = cb.style
    with pytest.raises(cb.capture.CaptureError, match="choose an image"):
        style.attachments(p)
    painted = bpy.data.images.new("look", 4, 2)                     # no file: its pixels go, top row first
    px = np.zeros((2, 4, 4), np.float32)
    px[0], px[1] = (1.0, 0.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0)        # Blender's bottom row red, top row blue
    painted.pixels.foreach_set(px.ravel())
    p.style_image = painted
    att, = style.attachments(p)
    assert (att.name, att.encoding, att.width, att.height) == ("style", "raw_rgba8", 4, 2)
    assert att.data[:4] == bytes((0, 0, 255, 255)) and att.data[-4:] == bytes((255, 0, 0, 255))
    painted.filepath_raw = str(tmp_path / "look.png")                 # saved as a file: the file's bytes go
    painted.file_format = "PNG"
    painted.save()
    p.style_image = None
    p.style_path = str(tmp_path / "look.png")
    att, = style.attachments(p)
    assert (att.encoding, att.width, att.height) == ("png", 4, 2)
    assert att.data == (tmp_path / "look.png").read_bytes()
    images, _ = cb.jobs.capture_later(scene.name, bpy.context.view_layer.name,
                                      cb.capture.options_from_props(p))()
    assert [a.name for a in images] == ["color", "depth", "style"]


def test_a_style_reference_reaches_the_server_with_generate(cb, scene, use_server, wait_idle):
    use_server(env_or_skip("CONTROLBRIDGE_TEST_LIBRARY_SERVER_URL"))
    p = scene.controlbridge
    p.prompt, p.steps, p.use_canny = "a cube", 4, False
    look = bpy.data.images.new("look", 16, 8)                        # the server wants at least 8 x 8
    look.pixels.foreach_set(np.tile(np.array([0.9, 0.2, 0.1, 1.0], np.float32), 16 * 8))
    p.use_style, p.style_image, p.style_weight = True, look, 0.75
    assert bpy.ops.controlbridge.generate() == {"FINISHED"}
    st = wait_idle(timeout=120)
    assert st.phase == "finished", st.line
    info = cb.results.job_info(bpy.data.images[st.image_name])
    assert info["settings"]["style"] == {"weight": 0.75, "model": None, "image_encoder": None}
    kept = read_image(next(Path(info["saved_path"]).with_suffix(".inputs").glob("style.*")))
    assert kept.shape == (8, 16, 4) and tuple(kept[0, 0]) == (230, 51, 26, 255)     # the image's own pixels
