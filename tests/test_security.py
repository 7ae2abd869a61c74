"""Who may drive the server: no web pages, no foreign Host names, a token when set."""
import socket

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from controlbridge_protocol import AuthenticationFailed, Client, ConnectionFailed
from controlbridge.cli import main
from controlbridge.server.config import ServerConfig
from helpers import blockout_images, quick_settings


def status_of(url, **kwargs):
    try:
        with connect(url, proxy=None, **kwargs):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:8000"])
def test_browser_origins_are_refused_by_default(server, origin):
    assert status_of(server.url, origin=origin) == 403


def test_an_allowed_origin_may_connect(make_server):
    server = make_server(allowed_origins=["http://localhost:3000"])
    assert status_of(server.url, origin="http://localhost:3000") == 101
    assert status_of(server.url, origin="http://localhost:3001") == 403
    assert status_of(server.url) == 101                 # tools send no Origin


def test_dns_rebinding_host_is_refused(server):
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    assert status_of(f"ws://attacker.example:{port}", sock=sock) == 403
    assert status_of(f"ws://localhost:{port}") == 101


def test_token_required_when_set(make_server):
    server = make_server(token="s3cret")
    with pytest.raises(AuthenticationFailed, match="requires a token"):
        Client(server.url).connect()
    with pytest.raises(AuthenticationFailed, match="wrong token"):
        Client(server.url, token="guess").connect()
    with Client(server.url, token="s3cret") as c:
        assert c.capabilities.token_required
        assert c.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64


def test_listening_beyond_loopback_needs_a_token(capsys):
    with pytest.raises(ValueError, match="--token"):
        ServerConfig(host="0.0.0.0").check()
    ServerConfig(host="0.0.0.0", token="t").check()
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    assert "--token" in capsys.readouterr().err


def test_server_down_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                       # nothing listens here once closed
    with pytest.raises(ConnectionFailed, match=f"cannot reach a ControlBridge server at ws://127.0.0.1:{port}"):
        Client(f"ws://127.0.0.1:{port}").connect(timeout=3)
