"""Inputs and checks the tests share."""
import io
import time

import numpy as np
from PIL import Image

from controlbridge_protocol import ImageAttachment, JobSettings


def blockout_images(width=160, height=96):
    """Color + raw depth of the demo's synthetic blockout, as a client sends them."""
    from controlbridge.demo_scene import render_blockout
    rgba, depth = render_blockout(width, height)
    return [ImageAttachment.raw_rgba8("color", width, height, rgba.tobytes()),
            ImageAttachment.raw_depth("depth", width, height, depth.astype("<f4").tobytes())]


def quick_settings(**changes) -> JobSettings:
    """A fast job for the tiny model."""
    base = JobSettings(prompt="a house", negative_prompt="blurry", seed=7, steps=4, cfg=5.0, sampler="euler",
                       denoise=1.0)
    return base.replace(**changes)


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def live_result(client, request_id: str, timeout: float = 120.0):
    """The live_result answering `request_id`; any error, or none in time, fails the test."""
    from controlbridge_protocol import JobError, LiveResult
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.next_event(timeout=0.5)
        assert not isinstance(event, JobError), event
        if isinstance(event, LiveResult) and event.request_id == request_id:
            return event
    raise AssertionError(f"no live_result for {request_id} within {timeout:.0f} s")
