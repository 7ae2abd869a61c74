"""Scanning a ComfyUI-style models folder, and resolving the names jobs send."""
import json
import os
import shutil

import pytest
from library_layouts import kohya_lora_shapes, real_checkpoint_shapes, write_sparse_safetensors

from controlbridge.library.scan import ModelNotFound, UnsafeName, WrongKind, check_name, scan


@pytest.fixture
def comfy(tmp_path, tiny_sd15, tiny_sdxl):
    """<tmp>/ComfyUI/models with one of everything, a few broken files, and a server-owned second root."""
    models = tmp_path / "ComfyUI" / "models"
    sd15, _ = real_checkpoint_shapes("sd15")
    write_sparse_safetensors(models / "checkpoints" / "SD1.5" / "dreamshaper_8.safetensors", sd15)
    write_sparse_safetensors(models / "checkpoints" / "broken.safetensors", sd15, truncate_by=1000)
    (models / "checkpoints" / "old.ckpt").write_bytes(b"PK\x03\x04 pickle inside")
    (models / "checkpoints" / "put_checkpoints_here").write_text("")
    (models / "checkpoints" / "dreamshaper_8.preview.png").write_bytes(b"\x89PNG")
    (models / "checkpoints" / "not_a_model.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    write_sparse_safetensors(models / "loras" / "zx_style.safetensors", kohya_lora_shapes("sdxl"),
                             metadata={"ss_tag_frequency": json.dumps({"1_zx": {"zx_style": 5, "sky": 1}})})
    shutil.copytree(tiny_sd15.controlnets["depth"], models / "controlnet" / "tiny-depth")
    shutil.copytree(tiny_sdxl.base, models / "diffusers" / "tiny-sdxl")
    (models / "upscale_models").mkdir()
    (models / "upscale_models" / "4x-UltraSharp.pth").write_bytes(b"PK\x03\x04")
    # A symlink leading out of the folder: refused, however it is named.
    outside = write_sparse_safetensors(tmp_path / "elsewhere" / "secret.safetensors", kohya_lora_shapes("sd15"))
    os.symlink(outside, models / "loras" / "innocent.safetensors")

    own = tmp_path / "own-models"
    write_sparse_safetensors(own / "loras" / "zx_style.safetensors", kohya_lora_shapes("sd15"))   # shadowed
    write_sparse_safetensors(own / "loras" / "house.safetensors", kohya_lora_shapes("sd15"))
    return models, own, outside


def test_scan_lists_typed_entries_and_flags_problems(comfy):
    models, own, outside = comfy
    library = scan([models, own])
    by_name = {(e.kind, e.name): e for e in library.entries}
    assert set(by_name) == {("checkpoint", "SD1.5/dreamshaper_8.safetensors"), ("checkpoint", "tiny-sdxl"),
                            ("controlnet", "tiny-depth"), ("lora", "zx_style.safetensors"),
                            ("lora", "house.safetensors"), ("upscaler", "4x-UltraSharp.pth")}
    sd15 = by_name["checkpoint", "SD1.5/dreamshaper_8.safetensors"]
    assert (sd15.family, sd15.folder, sd15.layout) == ("sd15", "checkpoints", "original")
    assert sd15.size > 2_000_000_000                   # the real size, though the test file is a hole
    assert by_name["checkpoint", "tiny-sdxl"].family == "sdxl"
    assert by_name["controlnet", "tiny-depth"].family == "sd15"
    lora = by_name["lora", "zx_style.safetensors"]
    assert (lora.family, lora.path.parent.parent, lora.trigger_words) == ("sdxl", models, ("zx_style", "sky"))

    problems = {p.path.name: p.reason for p in library.problems}
    assert "truncated" in problems["broken.safetensors"]
    assert "pickle" in problems["old.ckpt"]
    assert "PNG image" in problems["not_a_model.safetensors"]
    assert "outside" in problems["innocent.safetensors"]
    assert "shadowed by" in problems["zx_style.safetensors"]
    assert len(problems) == 5                          # previews and placeholder files are not problems
    json.dumps([e.describe() for e in library.entries] + [p.describe() for p in library.problems])
    assert library.list("checkpoint") == [by_name["checkpoint", "SD1.5/dreamshaper_8.safetensors"],
                                          by_name["checkpoint", "tiny-sdxl"]]


def test_resolve_names(comfy):
    models, own, outside = comfy
    library = scan([models, own])
    assert library.resolve("SD1.5/dreamshaper_8.safetensors", "checkpoint").family == "sd15"
    assert library.resolve("SD1.5\\dreamshaper_8.safetensors", "checkpoint").family == "sd15"   # from Windows
    assert library.resolve("house.safetensors", "lora").path == own / "loras" / "house.safetensors"
    assert library.resolve("zx_style.safetensors", "lora").family == "sdxl"   # the artist's folder wins

    with pytest.raises(WrongKind, match="'zx_style.safetensors' is a sdxl lora .*not a checkpoint"):
        library.resolve("zx_style.safetensors", "checkpoint")
    with pytest.raises(ModelNotFound, match="no checkpoint named 'nope.safetensors'; checkpoints here: "
                                            "SD1.5/dreamshaper_8.safetensors, tiny-sdxl"):
        library.resolve("nope.safetensors", "checkpoint")
    # A file added after the scan is found; one behind a symlink leading out never is.
    write_sparse_safetensors(models / "loras" / "new.safetensors", kohya_lora_shapes("sd15"))
    assert library.resolve("new.safetensors", "lora").family == "sd15"
    with pytest.raises(ModelNotFound):
        library.resolve("innocent.safetensors", "lora")


@pytest.mark.parametrize("name", ["../checkpoints/x.safetensors", "a/../../b", "/etc/passwd", "C:\\models\\x",
                                  "..\\..\\x", "c:x", "sub//x", "./x", "x\x00.safetensors", "", "  ", None])
def test_unsafe_names_are_refused(name, comfy):
    models, own, _ = comfy
    with pytest.raises(UnsafeName):
        check_name(name)
    with pytest.raises(UnsafeName):
        scan([models, own]).resolve(name, "lora")


def test_missing_root_is_a_problem_not_a_crash(tmp_path):
    library = scan([tmp_path / "nowhere"])
    assert library.entries == [] and "not found" in library.problems[0].reason
