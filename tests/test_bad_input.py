"""Every kind of bad input gets a specific error, and the server keeps serving everyone."""
import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from controlbridge_protocol import Client, ErrorCode, HiresSettings, ImageAttachment, JobFailed, Welcome
from controlbridge_protocol.framing import encode
from controlbridge_protocol.messages import Generate, Hello
from helpers import blockout_images, quick_settings


class RawPeer:
    """A hand-driven websocket client, for frames the real client never sends."""

    def __init__(self, url, hello=True):
        self.ws = connect(url, compression=None, proxy=None, legacy=True)
        if hello:
            self.send(*encode(Hello(1, "raw-test")))
            assert json.loads(self.ws.recv(timeout=10))["type"] == Welcome.type

    def send(self, *frames):
        for frame in frames:
            self.ws.send(frame)

    def next_error(self):
        while True:
            msg = json.loads(self.ws.recv(timeout=20))
            if msg["type"] == "error":
                return msg

    def close(self):
        self.ws.close()


def generate_frames(settings, images, request_id="r1"):
    return encode(Generate(request_id, settings, images))


def assert_still_serving(server):
    with Client(server.url) as c:
        assert c.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64


@pytest.mark.parametrize("frame, code, words", [
    ("{not json", ErrorCode.BAD_MESSAGE, "malformed JSON"),
    ("[1, 2]", ErrorCode.BAD_MESSAGE, "JSON object"),
    ('{"type": "teleport"}', ErrorCode.UNKNOWN_TYPE, "unknown message type 'teleport'"),
    ('{"no_type": 1}', ErrorCode.BAD_MESSAGE, "'type'"),
    ('{"type": "generate", "request_id": "x", "settings": {"prompt": "a", "steps": "many"}}',
     ErrorCode.BAD_MESSAGE, "settings.steps must be an integer"),
    ('{"type": "generate", "request_id": "x", "settings": {"prompt": "a", "stepz": 3}}',
     ErrorCode.BAD_MESSAGE, "unknown field(s) stepz"),
])
def test_malformed_messages(server, frame, code, words):
    peer = RawPeer(server.url)
    peer.send(frame)
    err = peer.next_error()
    assert err["code"] == code and words in err["message"]
    peer.close()
    assert_still_serving(server)


def test_messages_before_hello_are_refused(server):
    peer = RawPeer(server.url, hello=False)
    peer.send(*generate_frames(quick_settings(), blockout_images()))
    assert peer.next_error()["code"] == ErrorCode.NOT_READY
    peer.close()


def test_missing_attachment_frame(server):
    peer = RawPeer(server.url)
    frames = generate_frames(quick_settings(), blockout_images(), "req-7")
    peer.send(frames[0], frames[1])                      # the depth frame never comes
    peer.send('{"type": "ping"}')
    err = peer.next_error()
    assert err["code"] == ErrorCode.MISSING_ATTACHMENT and "'depth'" in err["message"]
    assert err["request_id"] == "req-7"
    peer.send(b"stray bytes")
    assert peer.next_error()["code"] == ErrorCode.MISSING_ATTACHMENT
    peer.close()
    assert_still_serving(server)


def run_error(client, settings, images):
    with pytest.raises(JobFailed) as info:
        client.run(settings, images, timeout=30)
    return info.value


def with_image(images, replacement):
    return [replacement if img.name == replacement.name else img for img in images]


def test_job_level_bad_inputs(client, server):
    images = blockout_images(64, 48)
    color_only = [images[0]]
    cases = [
        (quick_settings(), color_only, ErrorCode.MISSING_ATTACHMENT, "no 'depth' attachment"),
        (quick_settings(controlnets={}), [images[1]], ErrorCode.MISSING_ATTACHMENT, "'color'"),
        (quick_settings(), with_image(images, ImageAttachment.encoded("color", "png", 64, 48, b"\x89PNG garbage")),
         ErrorCode.BAD_IMAGE, "not a decodable image"),
        (quick_settings(), with_image(images, ImageAttachment.encoded("color", "jpeg", 64, 48, b"")),
         ErrorCode.BAD_IMAGE, "'color'"),
        (quick_settings(), with_image(images, ImageAttachment.raw_depth("depth", 32, 48, bytes(32 * 48 * 4))),
         ErrorCode.SIZE_MISMATCH, "'depth' is 32x48 but 'color' is 64x48"),
        (quick_settings(steps=0), images, ErrorCode.OUT_OF_RANGE, "steps is 0"),
        (quick_settings(steps=1000), images, ErrorCode.OUT_OF_RANGE, "between 1 and 150"),
        (quick_settings(denoise=1.5), images, ErrorCode.OUT_OF_RANGE, "denoise"),
        (quick_settings(sampler="lcm", steps=40, denoise=0.5), images, ErrorCode.OUT_OF_RANGE, "at most 25 steps"),
        # img2img runs int(steps x denoise): zero steps used to fail deep in diffusers as `internal`
        (quick_settings(steps=1, denoise=0.5), images, ErrorCode.OUT_OF_RANGE,
         "steps is 1; at denoise 0.5 img2img runs int(steps x denoise) = 0 steps: use at least 2 steps"),
        (quick_settings(steps=4, hires=HiresSettings(denoise=0.2, steps=2)), images, ErrorCode.OUT_OF_RANGE,
         "hires.steps is 2; at hires.denoise 0.2 img2img runs int(steps x denoise) = 0 steps: use at least 5"),
        (quick_settings(steps=3, hires=HiresSettings(denoise=0.1)), images, ErrorCode.OUT_OF_RANGE,
         "steps is 3; at hires.denoise 0.1 img2img runs int(steps x denoise) = 0 steps: use at least 10"),
        (quick_settings(sampler="k_lms_magic"), images, ErrorCode.UNKNOWN_SAMPLER, "euler_a"),
        (quick_settings(controlnets={"openpose": quick_settings().controlnets["depth"]}), images,
         ErrorCode.UNKNOWN_CONTROLNET, "'openpose'"),
        (quick_settings(model="sdxl-base"), images, ErrorCode.UNKNOWN_MODEL, "no checkpoint named 'sdxl-base'"),
        (quick_settings(model="../../etc/passwd"), images, ErrorCode.UNKNOWN_MODEL, "passwd"),
        (quick_settings(width=9000, height=9000), images, ErrorCode.LIMIT_EXCEEDED, "limits"),
        (quick_settings(width=512), images, ErrorCode.BAD_MESSAGE, "both width and height"),
    ]
    for settings, imgs, code, words in cases:
        err = run_error(client, settings, imgs)
        assert err.code == code, (code, str(err))
        assert words in str(err), (words, str(err))
    # the same connection still works after all of that
    assert client.run(quick_settings(steps=2), images).image.width == 64


def test_estimators_that_cannot_run_here(client, monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)          # no test downloads annotator weights
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))   # nor finds them in the user's hub cache
    color_only = blockout_images(64, 48)[:1]
    cases = [
        (quick_settings(estimate={"depth": "midas"}), ErrorCode.UNAVAILABLE, "needs dpt_hybrid-midas-501f0c75.pt"),
        (quick_settings(estimate={"depth": "x-ray"}), ErrorCode.UNAVAILABLE, "unknown estimator"),
    ]
    for settings, code, words in cases:
        err = run_error(client, settings, color_only)
        assert err.code == code and words in str(err), (code, words, str(err))
    assert client.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64


def test_image_sizes_beyond_the_limits(make_server):
    from controlbridge.server.config import Limits
    server = make_server(limits=Limits(max_pixels=100 * 100))
    with Client(server.url) as c:
        err = run_error(c, quick_settings(), blockout_images(160, 96))
        assert err.code == ErrorCode.LIMIT_EXCEEDED and "160x96" in str(err)


def test_message_larger_than_the_limit_closes_only_that_connection(make_server):
    from controlbridge.server.config import Limits
    server = make_server(limits=Limits(max_message_bytes=64 * 1024))
    bystander = Client(server.url)
    bystander.connect()
    big = blockout_images(256, 128)                       # 128 KiB of color: over the 64 KiB limit
    with Client(server.url) as c:
        with pytest.raises(Exception, match="65536"):     # the client checks the advertised limit first
            c.submit(quick_settings(), big)
    peer = RawPeer(server.url)                             # a client that ignores the limit gets cut off
    with pytest.raises(ConnectionClosed):                  # while sending, or when reading the answer
        peer.send(*generate_frames(quick_settings(), big))
        peer.next_error()
    assert peer.ws.protocol.close_code == 1009
    assert bystander.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64
    bystander.close()


def test_protocol_version_mismatch_is_a_clear_error(server):
    peer = RawPeer(server.url, hello=False)
    peer.send(*encode(Hello(99, "future-client")))
    err = peer.next_error()
    assert err["code"] == ErrorCode.PROTOCOL_VERSION and "protocol 1" in err["message"] and "99" in err["message"]
    peer.close()


def test_client_side_protocol_mismatch(server, monkeypatch):
    from controlbridge_protocol import ProtocolMismatch, client as client_module
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", 2)
    with pytest.raises(ProtocolMismatch, match="update the older"):
        Client(server.url).connect()


def test_filename_prefix_cannot_escape_the_output_folder(client, server):
    result = client.run(quick_settings(filename_prefix="../../etc/passwd"), blockout_images(64, 48))
    out = server.server.config.output_dir.resolve()
    from pathlib import Path
    saved = Path(result.saved_path)
    assert saved.parent == out and saved.name.startswith("etc_passwd_")
    assert not any(p for p in out.parent.iterdir() if p.name.endswith(".png"))


def test_a_server_bug_in_one_request_answers_an_error_and_keeps_the_connection(client, monkeypatch):
    from controlbridge.server import transport

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr(transport, "prepare_job", broken)
    err = run_error(client, quick_settings(), blockout_images(64, 48))
    assert err.code == ErrorCode.INTERNAL and "simulated bug" in str(err)
    monkeypatch.undo()
    assert client.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64
