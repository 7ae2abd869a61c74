"""The `exr` encoding: a client sends the depth EXR its renderer wrote, the server reads the depth channel."""
import numpy as np
import pytest

from controlbridge.server.outputs import load_input, read_job
from controlbridge_protocol import Client, ErrorCode, ImageAttachment, JobFailed

from helpers import blockout_images, decode_png, quick_settings

W, H = 160, 96


def exr_bytes(tmp_path, channels: dict, name="depth.exr") -> bytes:
    import OpenEXR
    path = tmp_path / name
    with OpenEXR.File({"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}, channels) as f:
        f.write(str(path))
    return path.read_bytes()


def blender_like_exr(tmp_path, depth: np.ndarray) -> bytes:
    """What Blender's multilayer EXR output holds: half-float Combined RGBA, float Depth.Z (sky = 1e10)."""
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 1e10).astype(np.float32)
    half = np.full(depth.shape, 0.5, np.float16)
    return exr_bytes(tmp_path, {"ViewLayer.Combined.R": half, "ViewLayer.Combined.G": half,
                                "ViewLayer.Combined.B": half, "ViewLayer.Combined.A": half,
                                "ViewLayer.Depth.Z": depth})


def test_server_offers_exr(server):
    with Client(server.url) as c:
        assert "exr" in c.capabilities.encodings


def test_exr_depth_gives_the_pixels_raw_depth_gives(client, tmp_path):
    color, raw = blockout_images(W, H)
    depth = np.frombuffer(raw.data, "<f4").reshape(H, W)
    exr = ImageAttachment.exr_depth("depth", W, H, blender_like_exr(tmp_path, depth))
    settings = quick_settings(width=W, height=H)

    from_raw = client.run(settings, [color, raw], timeout=300)
    from_exr = client.run(settings, [color, exr], timeout=300)
    assert np.array_equal(decode_png(from_raw.image.data), decode_png(from_exr.image.data))

    # The EXR is kept beside the result as it was sent, and re-sending it from there gives the same job.
    meta = read_job(from_exr.saved_path)
    assert meta["inputs"]["depth"]["encoding"] == "exr"
    kept = load_input(from_exr.saved_path, meta["inputs"]["depth"])
    assert kept.encoding == "exr" and kept.data == exr.data


def test_exr_far_marks_background(client, tmp_path):
    """A half-float writer's sky (65504) is background by default; `far` moves that line for other writers."""
    color, raw = blockout_images(W, H)
    depth = np.frombuffer(raw.data, "<f4").reshape(H, W)
    settings = quick_settings(width=W, height=H)
    sky_at_9000 = np.where(np.isfinite(depth) & (depth > 0), depth, 9000.0).astype(np.float32)
    with_far = ImageAttachment.exr_depth("depth", W, H, exr_bytes(tmp_path, {"Z": sky_at_9000}), far=9000.0)
    reference = client.run(settings, [color, raw], timeout=300)
    result = client.run(settings, [color, with_far], timeout=300)
    assert np.array_equal(decode_png(reference.image.data), decode_png(result.image.data))


@pytest.mark.parametrize("case, words", [
    ("garbage", "not a readable EXR"),
    ("wrong_size", "the EXR is 80x48, the descriptor says 160x96"),
    ("as_color", "a color image cannot be exr"),
    ("as_canny", "expected an image, not exr"),
])
def test_bad_exr_is_a_clear_error_and_the_server_keeps_serving(client, tmp_path, case, words):
    color, raw = blockout_images(W, H)
    depth = np.frombuffer(raw.data, "<f4").reshape(H, W)
    good = blender_like_exr(tmp_path, depth)
    images = {
        "garbage": [color, ImageAttachment.exr_depth("depth", W, H, b"v/1\x01" + b"\0" * 300)],
        "wrong_size": [color, ImageAttachment.exr_depth("depth", W, H, exr_bytes(tmp_path, {"Z": depth[::2, ::2]}))],
        "as_color": [ImageAttachment.exr_depth("color", W, H, good), raw],
        "as_canny": [color, raw, ImageAttachment.encoded("canny", "exr", W, H, good)],
    }[case]
    with pytest.raises(JobFailed) as failed:
        client.run(quick_settings(width=W, height=H), images, timeout=300)
    assert failed.value.code == ErrorCode.BAD_IMAGE and words in str(failed.value)
    assert client.run(quick_settings(width=W, height=H, steps=2), [color, raw], timeout=300).image
