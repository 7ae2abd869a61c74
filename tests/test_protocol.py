"""The sans-I/O protocol core: frames in, messages out, no sockets."""
import json

import pytest

from controlbridge_protocol import (Accepted, Cancel, Cancelled, ErrorCode, Generate, Hello, ImageAttachment,
                                   JobError, JobSettings, Ping, Pong, Progress, ProtocolError, Result, Welcome)
from controlbridge_protocol.framing import MessageReader, encode
from controlbridge_protocol.messages import CLIENT_MESSAGES, SERVER_MESSAGES


def roundtrip(message, registry):
    reader = MessageReader(registry)
    out = []
    for frame in encode(message):
        out += reader.feed(frame)
    assert len(out) == 1
    return out[0]


def test_every_message_survives_the_wire():
    png = ImageAttachment.encoded("image", "png", 2, 1, b"\x89PNG...")
    depth = ImageAttachment.raw_depth("depth", 2, 1, bytes(8), far=65504.0)
    settings = JobSettings("a house", seed=3, width=64, height=32)
    for msg in [Hello(1, "blender 4.2 / controlbridge-addon 0.1"), Generate("r", settings, [png, depth]),
                Cancel("j1"), Cancel(None), Ping()]:
        assert roundtrip(msg, CLIENT_MESSAGES) == msg
    for msg in [Welcome(), Accepted("r", "j", 2), Progress("j", 1, 4), Progress("j", 2, 4, png),
                Result("j", "r", settings, 3, "/out/x.png", png), JobError("bad_image", "no", "j", "r"),
                Cancelled("j"), Pong(1, "j", ["k"])]:
        assert roundtrip(msg, SERVER_MESSAGES) == msg


def test_images_travel_as_binary_frames_after_their_message():
    frames = encode(Generate("r", JobSettings("x"), [ImageAttachment.raw_rgba8("color", 1, 1, b"\1\2\3\4")]))
    header = json.loads(frames[0])
    assert header["attachments"] == [{"name": "color", "encoding": "raw_rgba8", "width": 1, "height": 1, "bytes": 4}]
    assert frames[1:] == [b"\1\2\3\4"]


def test_settings_are_strict_about_types_and_names():
    with pytest.raises(ProtocolError, match="settings.cfg must be a number"):
        JobSettings.from_dict({"prompt": "a", "cfg": "high"})
    with pytest.raises(ProtocolError, match="unknown field"):
        JobSettings.from_dict({"prompt": "a", "sampler_name": "euler"})
    with pytest.raises(ProtocolError, match="prompt is required"):
        JobSettings.from_dict({})
    s = JobSettings.from_dict({"prompt": "a", "cfg": 7, "controlnets": {"depth": {"weight": 0.5}}})
    assert s.cfg == 7.0 and isinstance(s.cfg, float) and list(s.controlnets) == ["depth"]
    assert JobSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_clients_ignore_fields_a_newer_server_adds():
    reader = MessageReader(SERVER_MESSAGES)
    [msg] = reader.feed(json.dumps({"type": "accepted", "request_id": "r", "job_id": "j", "queue_position": 0,
                                    "eta_seconds": 3}))
    assert msg == Accepted("r", "j", 0)


@pytest.mark.parametrize("descriptor, words", [
    ({"name": "color", "encoding": "bmp", "width": 1, "height": 1, "bytes": 1}, "unknown encoding"),
    ({"name": "color", "encoding": "png", "width": 0, "height": 1, "bytes": 1}, "'width'"),
    ({"name": "color", "encoding": "raw_rgba8", "width": 2, "height": 2, "bytes": 4}, "needs 16 bytes"),
    ({"encoding": "png", "width": 1, "height": 1, "bytes": 1}, "'name'"),
])
def test_bad_descriptors_are_reported_and_their_frames_swallowed(descriptor, words):
    reader = MessageReader(CLIENT_MESSAGES)
    header = {"type": "generate", "request_id": "r9", "settings": {"prompt": "a"}, "attachments": [descriptor]}
    [err] = reader.feed(json.dumps(header))
    assert isinstance(err, ProtocolError) and words in err.message and err.request_id == "r9"
    assert reader.feed(b"x") == []                      # the announced frame is dropped quietly
    assert reader.feed('{"type": "ping"}') == [Ping()]  # and the next message is read normally


def test_a_frame_with_the_wrong_length_is_a_bad_image():
    reader = MessageReader(CLIENT_MESSAGES)
    frames = encode(Generate("r", JobSettings("x"), [ImageAttachment.raw_rgba8("color", 1, 1, b"1234")]))
    reader.feed(frames[0])
    [err] = reader.feed(b"12")
    assert err.code == ErrorCode.BAD_IMAGE


def test_too_many_attachments():
    reader = MessageReader(CLIENT_MESSAGES, max_attachments=2)
    images = [ImageAttachment.raw_rgba8(f"i{i}", 1, 1, b"1234") for i in range(3)]
    [err] = reader.feed(encode(Generate("r", JobSettings("x"), images))[0])
    assert err.code == ErrorCode.LIMIT_EXCEEDED


def test_protocol_package_stays_light():
    import subprocess
    import sys
    code = ("import sys, controlbridge_protocol; "
            "heavy = [m for m in ('numpy', 'torch', 'PIL', 'diffusers', 'cv2') if m in sys.modules]; "
            "print(heavy)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_the_live_preset_is_few_steps_at_cfg_1_with_what_the_server_offers():
    from controlbridge_protocol import Capabilities, JobSettings, LoraSettings
    from controlbridge_protocol.presets import live_settings
    art = JobSettings(prompt="a lighthouse", seed=3, steps=30, cfg=7.0, sampler="dpmpp_2m", preview_every=5,
                      loras=[LoraSettings("style.safetensors", 0.8)], batch_size=4)
    offers = Capabilities(samplers=["euler", "lcm"], features=["live", "fast_decode"])
    live = live_settings(art, offers, denoise=0.55)
    assert (live.sampler, live.steps, live.cfg, live.denoise) == ("lcm", 4, 1.0, 0.55)
    assert live.fast_decode and live.result_encoding == "jpeg" and live.preview_every == 0 and live.batch_size == 1
    assert (live.prompt, live.seed, live.loras) == (art.prompt, art.seed, art.loras)   # the artist's choices stay
    plain = live_settings(art, Capabilities(samplers=["euler"], features=["live"]))
    assert (plain.sampler, plain.steps, plain.cfg, plain.fast_decode) == ("dpmpp_2m", 30, 7.0, False)
