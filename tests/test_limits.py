"""Issue 12: memory bounds, bad input that used to slip through, graceful shutdown, unusable output folder."""
import json
import math
import signal
import socket
import time

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.uri import parse_uri

from controlbridge_protocol import Client, ErrorCode, ImageAttachment, JobFailed
from controlbridge_protocol.framing import encode
from controlbridge_protocol.messages import Generate, Hello
from controlbridge.server.config import Limits, ServerConfig
from helpers import blockout_images, quick_settings
from test_bad_input import RawPeer, assert_still_serving


def raw_http_status(port, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return int(sock.recv(4096).split(b" ", 2)[1])


def handshake(port, extra_headers: str) -> bytes:
    return (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n").encode()


def port_of(server):
    return int(server.url.rsplit(":", 1)[1])


def test_welcome_reports_every_limit(client):
    limits = client.capabilities.limits
    for name in ("max_queued_input_bytes", "max_outbox_bytes", "max_message_attachment_bytes",
                 "attachment_deadline_s", "max_connections", "max_connections_per_address"):
        assert limits[name] == getattr(Limits(), name)


def test_deeply_nested_json_is_a_bad_message(server):                       # item 6
    peer = RawPeer(server.url)
    peer.send("[" * 100000 + "]" * 100000)
    err = peer.next_error()
    assert err["code"] == ErrorCode.BAD_MESSAGE and "nested too deeply" in err["message"]
    peer.close()
    assert_still_serving(server)


def test_lone_surrogate_in_prompt_is_refused(server):                       # item 7
    peer = RawPeer(server.url)
    frames = encode(Generate("r1", quick_settings(), blockout_images(64, 48)))
    header = json.loads(frames[0])
    header["settings"]["prompt"] = "a house \ud800"
    peer.send(json.dumps(header), *frames[1:])
    err = peer.next_error()
    assert err["code"] == ErrorCode.BAD_MESSAGE and "settings.prompt is not valid Unicode" in err["message"]
    assert err["request_id"] == "r1"
    peer.close()


@pytest.mark.parametrize("header", ["Origin: http://a\r\nOrigin: http://b\r\n",
                                    "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"])
def test_duplicate_security_headers_are_400(server, header):               # item 8
    assert raw_http_status(port_of(server), handshake(port_of(server), header)) == 400


def test_duplicate_host_header_is_400(server):
    port = port_of(server)
    request = handshake(port, "").replace(b"\r\n\r\n", f"\r\nHost: localhost:{port}\r\n\r\n".encode())
    assert raw_http_status(port, request) == 400
    assert_still_serving(server)


@pytest.mark.parametrize("far", [math.nan, -1.0, 0.0, math.inf])
def test_depth_far_must_be_a_positive_distance(client, far):               # item 9
    color, depth = blockout_images(64, 48)
    depth = ImageAttachment.raw_depth("depth", 64, 48, depth.data, far)
    with pytest.raises(JobFailed, match="far is") as e:
        client.run(quick_settings(steps=2), [color, depth], timeout=60)
    assert e.value.code == ErrorCode.OUT_OF_RANGE


@pytest.mark.parametrize("host", ["127.0.0.1:x@evil.example", "localhost@evil.example", "evil.example",
                                  "127.0.0.1:80:80"])
def test_host_header_is_parsed_strictly(server, host):                      # item 10
    port = port_of(server)
    request = handshake(port, "").replace(f"Host: 127.0.0.1:{port}".encode(), f"Host: {host}".encode())
    assert raw_http_status(port, request) in (400, 403)


def test_queued_input_budget_is_server_wide(make_server):                  # item 2
    images = blockout_images(256, 256)
    server = make_server(limits=Limits(max_queued_input_bytes=int(1.2 * 2**20)))   # one such job (~0.95 MiB)
    with Client(server.url) as a, Client(server.url) as b:
        first = a.submit(quick_settings(steps=40), images)
        refused = b.submit(quick_settings(steps=2), images)
        errors = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not errors:
            event = b.next_event(timeout=5)
            if getattr(event, "code", None):
                errors.append(event)
        assert errors and errors[0].code == ErrorCode.LIMIT_EXCEEDED and "MiB" in errors[0].message
        assert errors[0].request_id == refused
        a.cancel()
        assert first
    assert_still_serving(server)
    # Given back as the jobs are freed; the device worker holds on to its latest job (a small one here).
    deadline = time.monotonic() + 30
    while server.server.transport.budget.used > 100_000 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.server.transport.budget.used <= 100_000


def test_connection_limits(make_server):                                   # item 2
    server = make_server(limits=Limits(max_connections=3, max_connections_per_address=2))
    held = [connect(server.url, proxy=None, legacy=True) for _ in range(2)]
    with pytest.raises(InvalidStatus) as e:
        connect(server.url, proxy=None)
    assert e.value.response.status_code == 503 and b"per address" in e.value.response.body
    for ws in held:
        ws.close()
    time.sleep(0.3)
    assert_still_serving(server)


def test_overdue_attachments_are_dropped(make_server):                     # item 3
    server = make_server(limits=Limits(attachment_deadline_s=1))
    peer = RawPeer(server.url)
    frames = encode(Generate("r9", quick_settings(), blockout_images(64, 48)))
    peer.send(frames[0], frames[1])              # depth never comes
    err = peer.next_error()
    assert err["code"] == ErrorCode.MISSING_ATTACHMENT and "within 1 s" in err["message"]
    assert err["request_id"] == "r9"
    peer.close()


def never_reading_client(server, job_id: str, requests: int = 300) -> socket.socket:
    """A client with a tiny receive buffer that asks for a saved result `requests` times and never reads."""
    proto = ClientProtocol(parse_uri(server.url))
    sock = socket.create_connection(("127.0.0.1", port_of(server)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    proto.send_request(proto.connect())
    sock.sendall(b"".join(proto.data_to_send()))
    proto.receive_data(sock.recv(65536))
    for frame in encode(Hello(1, "never-reads")):
        proto.send_text(frame.encode())
    for i in range(requests):
        proto.send_text(json.dumps({"type": "history_get", "request_id": str(i), "job_id": job_id}).encode())
    sock.sendall(b"".join(proto.data_to_send()))
    return sock


def test_a_client_that_never_reads_is_closed(make_server):                 # item 1
    server = make_server(limits=Limits(max_outbox_bytes=2 * 2**20))
    with Client(server.url) as c:
        result = c.run(quick_settings(steps=1), blockout_images(512, 512), timeout=120)
    sock = never_reading_client(server, result.job_id)
    transport = server.server.transport
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(c.client_name == "never-reads" for c in transport.connections.values()):
        time.sleep(0.2)
    assert not any(c.client_name == "never-reads" for c in transport.connections.values())
    assert transport.peak_outbox_bytes <= 2 * 2**20
    sock.close()
    assert_still_serving(server)


def test_unusable_output_folder_is_a_start_up_error(tmp_path):             # item 5
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(ValueError, match="output folder .* is not usable"):
        ServerConfig(output_dir=blocker).check()


def test_saving_fails_but_the_image_still_arrives(server):                 # item 5
    out = server.server.config.output_dir
    out.rename(out.with_name("moved"))
    out.write_text("now a file")
    server.server.worker.output_dir = out
    with Client(server.url) as c:
        result = c.run(quick_settings(steps=2), blockout_images(64, 48), timeout=60)
    assert result.saved_path == "" and "saving failed" in result.save_error and str(out) in result.save_error
    assert result.image.width == 64 and result.image.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigterm_lets_the_running_job_finish(spawn_server):               # item 4
    spawned = spawn_server()
    with Client(spawned.url) as c:
        running = c.submit(quick_settings(steps=60, preview_every=0), blockout_images(256, 256))
        queued = c.submit(quick_settings(steps=2), blockout_images(64, 48))
        while True:
            event = c.next_event(timeout=60)
            if type(event).__name__ == "Progress":
                break
        spawned.process.send_signal(signal.SIGTERM)
        got = {}
        while len(got) < 2:
            event = c.next_event(timeout=120)
            rid = getattr(event, "request_id", None)
            if type(event).__name__ in ("Result", "JobError") and rid in (running, queued):
                got[rid] = event
    assert type(got[running]).__name__ == "Result" and got[running].saved_path
    assert got[queued].code == ErrorCode.SHUTTING_DOWN
    assert spawned.process.wait(timeout=60) == 0
    output = spawned.process.stdout.read()
    assert "SIGTERM received" in output and "ControlBridge stopped" in output


def test_a_busy_port_is_one_clear_line_before_any_model_loads(capsys):   # item 12
    from controlbridge.cli import main
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        started = time.monotonic()
        assert main(["serve", "--port", str(port), "--model", "nosuch-model-folder"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: port {port} on 127.0.0.1 is already in use (another ControlBridge server?); "
                   f"choose one with --port"]
    assert time.monotonic() - started < 30


def test_demo_folder_is_ignored_by_git():                                  # item 21
    from pathlib import Path
    assert "controlbridge-demo/" in (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()


def test_the_input_budget_books_what_a_job_holds(server):
    # The bytes received, plus each decoded copy: the colour becomes RGB, raw depth is read in place over its
    # received bytes (not booked twice).
    from controlbridge.server.budget import job_input_bytes
    from controlbridge.server.jobs import prepare_job
    images = blockout_images(64, 32)
    job = prepare_job(Generate("r1", quick_settings(), images), "client", server.server.transport.offer)
    assert job_input_bytes(job) == 64 * 32 * 4 + 64 * 32 * 4 + 64 * 32 * 3
