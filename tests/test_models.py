"""Model sources and devices, and a client that outlives a server restart."""
import socket

import pytest

from controlbridge_protocol import Client, ConnectionFailed, Disconnected
from controlbridge.cli import main as cli_main
from controlbridge.engine.devices import pick_device, pick_dtype
from controlbridge.engine.models import ModelSpec, load_model
from controlbridge.engine.resolution import working_size
from helpers import blockout_images, quick_settings


def test_a_local_diffusers_folder_loads_like_a_hub_id(model_cache, make_server):
    from controlbridge.engine.tiny_model import ensure_tiny_model
    tiny = ensure_tiny_model()
    spec = ModelSpec(model=str(tiny.base), controlnets={n: str(p) for n, p in tiny.controlnets.items()})
    model = load_model(spec, log=lambda m: None)
    assert (model.name, model.family, model.native_resolution) == ("base", "sd15", 512)
    assert sorted(model.controlnets) == ["canny", "depth"] and model.size_multiple == 8

    from controlbridge.server.app import ServerThread
    from controlbridge.server.config import ServerConfig
    with ServerThread(ServerConfig(port=0, output_dir=model_cache / "folder-out"), model=model) as server:
        with Client(server.url) as c:
            assert c.capabilities.models[0] == {"name": "base", "family": "sd15", "native_resolution": 512,
                                                "loaded": True}
            assert c.run(quick_settings(steps=2, denoise=0.5), blockout_images(96, 64)).image.width == 96


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a diffusers model folder"):
        load_model(ModelSpec(model=str(tmp_path)), log=lambda m: None)


def test_device_and_precision_defaults():
    assert pick_device() == "cpu"                       # no GPU on the test machines
    assert pick_device("cuda:1") == "cuda:1"
    assert pick_dtype("cpu")[0] == "fp32" and pick_dtype("cuda")[0] == "fp16"
    assert pick_dtype("cuda", "bf16")[0] == "bf16"
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype("cuda", "fp8")


@pytest.mark.parametrize("size, native, expected", [
    ((1280, 720), 512, (704, 384)), ((1280, 720), 1024, (1344, 768)), ((512, 512), 512, (512, 512)),
    ((1000, 563), 512, (704, 384)), ((720, 1280), 512, (384, 704))])
def test_working_size_keeps_aspect_at_the_native_size_class(size, native, expected):
    assert working_size(*size, native, 64) == expected


def test_client_reconnects_to_a_restarted_server(make_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = make_server(port=port)
    client = Client(first.url)
    client.connect()
    first.stop()
    event = client.next_event(timeout=10)
    assert isinstance(event, Disconnected)
    with pytest.raises(ConnectionFailed):
        client.submit(quick_settings(), blockout_images(64, 48))
    make_server(port=port)
    client.reconnect(attempts=5, delay=0.2)
    assert client.run(quick_settings(steps=2), blockout_images(64, 48)).image.width == 64
    client.close()


def test_a_models_dir_that_does_not_exist_is_a_clear_startup_error(capsys, tmp_path):
    assert cli_main(["serve", "--port", "0", "--models-dir", str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err
