"""Issue 12 item 14: `controlbridge models` lists what the server found; unknown names say where it looked."""
import json

import numpy as np
import pytest
from library_layouts import kohya_lora_shapes, write_sparse_safetensors
from PIL import Image

from controlbridge.cli import main


@pytest.fixture
def small_library(tmp_path):
    models = tmp_path / "models"
    write_sparse_safetensors(models / "loras" / "zx_style.safetensors", kohya_lora_shapes("sd15"),
                             metadata={"modelspec.trigger_phrase": "zx_style, sky"})
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / "corrupt.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return models


def test_models_lists_checkpoints_loras_with_trigger_words_samplers_and_problems(make_server, small_library,
                                                                                 capsys):
    server = make_server(models_dir=small_library)
    assert main(["models", "--url", server.url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["tiny", "sd15", "default,"] for line in lines), out
    assert any(line.split()[:2] == ["tiny-sdxl", "sdxl"] for line in lines), out
    lora = next(line for line in lines if "zx_style.safetensors" in line)
    assert "sd15" in lora and "trigger words: zx_style, sky" in lora
    assert "Samplers: euler, " in out and "dpmpp_2m_karras" in out
    assert "Problems" in out and "corrupt.safetensors" in out and "looks like a PNG" in out

    assert main(["models", "--url", server.url, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["default_model"] == "tiny"
    assert listing["library"]["lora"][0]["trigger_words"] == ["zx_style", "sky"]


def test_list_samplers_needs_no_server_and_no_output(capsys):
    with pytest.raises(SystemExit) as done:
        main(["generate", "--list-samplers"])
    assert done.value.code == 0
    names = capsys.readouterr().out.split()
    assert names[0] == "euler" and {"euler_a", "dpmpp_2m_karras", "lcm"} <= set(names)


def test_unknown_model_or_lora_names_the_folder_or_its_absence(make_server, small_library, tmp_path, capsys):
    color = tmp_path / "color.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(color)
    bare = make_server()
    with_library = make_server(models_dir=small_library)
    cases = [(bare, ["--model", "nosuch"], "no checkpoint named 'nosuch'; this server has no models folder "
                                           "(start it with --models-dir"),
             (bare, ["--lora", "nosuch"], "no lora named 'nosuch'; this server has no models folder"),
             (with_library, ["--lora", "nosuch"], "no lora named 'nosuch'; loras here: zx_style.safetensors")]
    for server, flags, words in cases:
        assert main(["generate", "--url", server.url, "--color", str(color), "--prompt", "x", *flags,
                     "-o", str(tmp_path / "o.png")]) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and "`controlbridge models` lists what the server has" in err, err
        assert len(err.splitlines()) == 1
