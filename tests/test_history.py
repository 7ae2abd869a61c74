"""History: listing and fetching this server's saved results, over a real websocket, with the tiny model."""
import datetime
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from controlbridge_protocol import (Accepted, Client, ControlBridgeError, ErrorCode, HistoryEntry, HistoryGet,
                                   HistoryItem, HistoryPage, HistoryRequest, ImageAttachment, JobError, JobSettings,
                                   ProtocolError, Result)
from controlbridge_protocol.framing import MessageReader, encode
from controlbridge_protocol.messages import CLIENT_MESSAGES, SERVER_MESSAGES
from controlbridge.server.history import MAX_PAGE, History
from controlbridge.server.outputs import load_input, read_job
from helpers import blockout_images, decode_png, quick_settings


def test_history_messages_survive_the_wire_and_clients_are_strict():
    entry = HistoryEntry("j", "2024-05-01T10:00:00", "/out/x.png", 3, 160, 96, {"prompt": "a house"}, "tiny", ["color"])
    png = ImageAttachment.encoded("image", "png", 160, 96, b"\x89PNG...")
    for msg, registry in [(HistoryRequest("r", 5, 10), CLIENT_MESSAGES), (HistoryGet("r", "j"), CLIENT_MESSAGES),
                          (HistoryPage("r", 5, 6, [entry]), SERVER_MESSAGES),
                          (HistoryItem("r", entry, png), SERVER_MESSAGES)]:
        reader = MessageReader(registry)
        assert [m for frame in encode(msg) for m in reader.feed(frame)] == [msg]
    [err] = MessageReader(CLIENT_MESSAGES).feed(json.dumps({"type": "history", "request_id": "r", "page": 2}))
    assert isinstance(err, ProtocolError) and err.request_id == "r" and "unknown field" in err.message
    # A newer server's extra fields, in the page and in an entry, are ignored.
    [page] = MessageReader(SERVER_MESSAGES).feed(json.dumps({"type": "history_page", "total": 1, "cursor": "z",
                                                             "items": [{**entry.to_dict(), "rating": 5}]}))
    assert page.items == [entry]


def test_listing_is_newest_first_and_paged(client):
    results = [client.run(quick_settings(seed=seed), blockout_images()) for seed in (1, 2, 3)]

    page = client.history()
    assert (page.offset, page.total) == (0, 3)
    assert [e.seed for e in page.items] == [3, 2, 1]
    assert [e.job_id for e in page.items] == [r.job_id for r in reversed(results)]
    newest = page.items[0]
    assert newest.saved_path == results[-1].saved_path and Path(newest.saved_path).is_file()
    assert (newest.width, newest.height, newest.model, newest.inputs) == (160, 96, "tiny", ["color", "depth"])
    assert newest.settings["prompt"] == "a house" and datetime.datetime.fromisoformat(newest.created)

    first, second = client.history(0, 2), client.history(2, 2)
    assert [e.seed for e in first.items] == [3, 2] and first.total == 3
    assert [e.seed for e in second.items] == [1] and (second.offset, second.total) == (2, 3)
    assert client.history(offset=10).items == [] and client.history(offset=10).total == 3


def test_history_get_returns_the_file_on_disk_and_settings_that_rerun(client):
    original = client.run(quick_settings(seed=-1), blockout_images())

    item = client.history_item(original.job_id)
    path = Path(item.entry.saved_path)
    assert item.image.encoding == "png" and item.image.data == path.read_bytes() == original.image.data
    assert item.entry.seed == original.seed and item.entry.job_id == original.job_id

    # Re-apply: the entry's settings plus the inputs kept beside the result give the same pixels.
    settings = JobSettings.from_dict(item.entry.settings)
    kept = read_job(path)["inputs"]
    inputs = [load_input(path, kept[name]) for name in item.entry.inputs]
    again = client.run(settings, inputs)
    assert np.array_equal(decode_png(again.image.data), decode_png(item.image.data))


def test_a_restarted_server_lists_earlier_results_and_ignores_foreign_pngs(make_server, tmp_path):
    out = tmp_path / "shared-outputs"
    first = make_server(output_dir=out)
    with Client(first.url) as c:
        earlier = [c.run(quick_settings(seed=seed), blockout_images()).job_id for seed in (21, 22)]
    first.stop()

    # Files that are not ControlBridge results: a plain PNG, one with a broken chunk, one that is no PNG at all.
    Image.new("RGB", (8, 8)).save(out / "photo.png")
    broken = PngImagePlugin.PngInfo()
    broken.add_text("controlbridge", "{not json")
    Image.new("RGB", (8, 8)).save(out / "broken.png", pnginfo=broken)
    (out / "junk.png").write_bytes(b"not a png")

    second = make_server(output_dir=out)
    with Client(second.url) as c:
        page = c.history()
        assert page.total == 2 and [e.job_id for e in page.items] == earlier[::-1]
        assert [e.seed for e in page.items] == [22, 21]
        assert c.history_item(earlier[0]).entry.seed == 21
        newer = c.run(quick_settings(seed=23), blockout_images())
        assert [e.seed for e in c.history().items] == [23, 22, 21] and c.history().items[0].job_id == newer.job_id


def test_errors_are_clear_and_the_connection_keeps_working(client):
    done = client.run(quick_settings(), blockout_images())

    for job_id in ("no-such-job", "../../etc", "../../etc/passwd", "", done.saved_path):
        with pytest.raises(ControlBridgeError, match="no saved result of job"):
            client.history_item(job_id)
    with pytest.raises(ControlBridgeError, match=r"history.limit must be an integer, got 'x'"):
        client.history(limit="x")
    with pytest.raises(ControlBridgeError, match="offset >= 0 and limit >= 1"):
        client.history(offset=-1)
    with pytest.raises(ControlBridgeError, match="offset >= 0 and limit >= 1"):
        client.history(limit=0)

    # The codes, read off the wire.
    client.poll_events()                 # run() leaves its job's accepted/progress events for the next poll
    client._send(HistoryGet("r1", "../../etc"))
    client._send(HistoryRequest("r2", -1, 20))
    errors = [client.next_event(timeout=10) for _ in range(2)]
    assert [(e.code, e.request_id, e.job_id) for e in errors] == [(ErrorCode.UNKNOWN_JOB, "r1", None),
                                                                   (ErrorCode.OUT_OF_RANGE, "r2", None)]
    assert all(isinstance(e, JobError) for e in errors)

    assert client.status().queued == 0
    assert client.history().total == 1 and client.history_item(done.job_id).entry.job_id == done.job_id


def test_asking_for_history_does_not_disturb_a_job_in_flight(client):
    request_id = client.submit(quick_settings(steps=12, preview_every=1), blockout_images())
    client.history()                     # while the job runs: its events are set aside, not lost
    client.status()
    events = []
    while not events or not isinstance(events[-1], Result):
        event = client.next_event(timeout=60)
        assert event is not None and not isinstance(event, JobError), event
        events.append(event)
    assert isinstance(events[0], Accepted) and events[0].request_id == request_id
    assert client.history().items[0].job_id == events[-1].job_id   # indexed before `result` was sent


def test_the_index_caps_pages_and_skips_bad_metadata(tmp_path):
    history = History(tmp_path / "missing")         # a folder that does not exist yet: an empty index
    assert history.page(0, 20) == (0, [])
    for i in range(MAX_PAGE + 20):
        history.add(tmp_path / f"{i}.png", {"job_id": f"j{i}", "created": f"2024-05-01T10:{i // 60:02d}:{i % 60:02d}",
                                            "settings": {"prompt": "x", "seed": i}, "size": [8, 8],
                                            "model": {"name": "tiny"}, "inputs": {}})
    history.add(tmp_path / "bad.png", {"job_id": "bad", "created": "yesterday"})   # skipped, no exception
    total, items = history.page(0, 1000)
    assert total == MAX_PAGE + 20 and len(items) == MAX_PAGE and items[0].job_id == f"j{MAX_PAGE + 19}"
    assert history.get("bad") is None and history.get("j0").seed == 0
