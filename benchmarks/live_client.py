"""The benchmark's live client, run as its own process so it never shares the server's interpreter (GIL).

    python benchmarks/live_client.py WS_URL SETTINGS_JSON SIZE

It connects, then for every line `frame` on stdin sends one live frame (color + raw depth of the synthetic
blockout with one pixel changed each frame, so the server never skips it as unchanged; one seed, as a live
session keeps), waits for its live_result and
writes one JSON line to stdout: {"ms": round trip, "elapsed_ms": ..., "timings": {...} or null}. `quit` ends it.
Only the protocol package, numpy and the demo scene are imported: no torch, nothing of the server.
"""
import json
import sys
import time


def main(url: str, settings_json: str, size: int) -> int:
    from controlbridge_protocol import Client, ImageAttachment, JobError, JobSettings, LiveResult, LiveSkipped
    from controlbridge_protocol.messages import Disconnected

    from controlbridge.demo_scene import render_blockout
    settings = JobSettings.from_dict(json.loads(settings_json))
    rgba, depth = render_blockout(size, size)
    depth_image = ImageAttachment.raw_depth("depth", size, size, depth.astype("<f4").tobytes())
    client = Client(url, client_name="benchmark")
    client.connect()
    frame = 0
    for line in sys.stdin:
        if line.strip() != "frame":
            break
        frame += 1
        rgba[0, 0, 0] = frame % 256
        images = [ImageAttachment.raw_rgba8("color", size, size, rgba.tobytes()), depth_image]
        start = time.perf_counter()
        request_id = client.send_live_frame(settings, images)
        while True:
            event = client.next_event(timeout=600)
            if isinstance(event, LiveResult) and event.request_id == request_id:
                break
            if event is None or isinstance(event, (LiveSkipped, JobError, Disconnected)):
                raise SystemExit(f"live frame not rendered: {event}")
        ms = (time.perf_counter() - start) * 1000
        timings = getattr(event, "timings", None) or None     # dict of ms; a dataclass is read as one
        if timings is not None and not isinstance(timings, dict):
            timings = dict(vars(timings))
        print(json.dumps({"ms": ms, "elapsed_ms": event.elapsed_ms, "timings": timings}), flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
