"""Style reference (IP-Adapter): settings on the wire, library detection, and real jobs on tiny models."""
import json
import re

import pytest

from controlbridge_protocol import ErrorCode, JobSettings, ProtocolError, StyleSettings


def test_style_settings_survive_the_wire_and_are_strict():
    s = JobSettings(prompt="a", style=StyleSettings(weight=0.8, model="ip-adapter_sd15.safetensors"))
    back = JobSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and isinstance(back.style, StyleSettings)
    assert JobSettings.from_dict({"prompt": "a", "style": None}).style is None
    assert JobSettings.from_dict({"prompt": "a", "style": {}}).style == StyleSettings(weight=0.6)
    with pytest.raises(ProtocolError, match="settings.style.weight must be a number") as e:
        JobSettings.from_dict({"prompt": "a", "style": {"weight": "strong"}})
    assert e.value.code == ErrorCode.BAD_MESSAGE
    with pytest.raises(ProtocolError, match="settings.style: unknown field"):
        JobSettings.from_dict({"prompt": "a", "style": {"scale": 1}})


def test_capabilities_carry_the_style_entry():
    from controlbridge_protocol import Capabilities
    caps = Capabilities(style={"families": ["sd15"], "adapters": [{"name": "a.safetensors", "family": "sd15"}]})
    assert Capabilities.from_dict(json.loads(json.dumps(caps.to_dict()))).style == caps.style


# --------------------------------------------------------------------------------------------- tiny files

ENCODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, image_size=32,
               patch_size=8, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)
DECLARED = {"sd15": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}


def tiny_encoder(seed=0):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**ENCODER)).eval()


def write_encoder_file(path, seed=0):
    """ComfyUI's clip_vision/ single file: transformers key names, no config beside it."""
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in tiny_encoder(seed).state_dict().items() if not k.endswith("position_ids")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def plus_image_proj(cross, gen):
    """A "plus" adapter's resampler in h94's original key layout (diffusers' converter in reverse): 4 queries read
    the image encoder's hidden states (width 64: one head of 64)."""
    import torch
    from diffusers.models.embeddings import IPAdapterPlusImageProjection
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    resampler = IPAdapterPlusImageProjection(embed_dims=ENCODER["hidden_size"], output_dims=cross, hidden_dims=64,
                                             heads=1, num_queries=4)
    out, sd = {}, resampler.state_dict()
    for key, value in sd.items():
        original = re.sub(r"layers\.(\d)\.ln0\.", r"layers.\1.0.norm1.", key)
        original = re.sub(r"layers\.(\d)\.ln1\.", r"layers.\1.0.norm2.", original)
        original = re.sub(r"layers\.(\d)\.ff\.0\.", r"layers.\1.1.0.", original)
        original = re.sub(r"layers\.(\d)\.ff\.1\.net\.0\.proj\.", r"layers.\1.1.1.", original)
        original = re.sub(r"layers\.(\d)\.ff\.1\.net\.2\.", r"layers.\1.1.3.", original)
        original = re.sub(r"layers\.(\d)\.attn\.to_out\.0\.", r"layers.\1.0.to_out.", original)
        original = re.sub(r"layers\.(\d)\.attn\.to_q\.", r"layers.\1.0.to_q.", original)
        if ".attn.to_k." in key:
            original = re.sub(r"layers\.(\d)\.attn\.to_k\.", r"layers.\1.0.to_kv.", key)
            value = torch.cat([value, sd[key.replace("to_k.", "to_v.")]])
        elif ".attn.to_v." in key:
            continue
        out["image_proj." + original] = value.contiguous()
    return out


def write_adapter_file(unet_folder, family, path, seed=0, scale=1.0, plus=False):
    """ComfyUI's ipadapter/ single file (h94's layout): image_proj.{proj,norm}.* (or a plus adapter's resampler) and
    ip_adapter.<1,3,5...>.to_k_ip / to_v_ip for every cross-attention layer in the UNet's processor order, random
    weights."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    unet = UNet2DConditionModel.from_pretrained(unet_folder, subfolder="unet")
    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    state = plus_image_proj(cross, gen) if plus else {
        "image_proj.proj.weight": torch.randn(cross * 4, ENCODER["projection_dim"], generator=gen) * 0.2,
        "image_proj.proj.bias": torch.randn(cross * 4, generator=gen) * 0.1,
        "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        attn = unet.get_submodule(name[:-len(".processor")])
        for proj in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key}.{proj}.weight"] = torch.randn(attn.to_k.out_features, cross, generator=gen) * scale
        key += 2
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"modelspec.architecture": DECLARED[family]})
    return path


@pytest.fixture(scope="module")
def style_models(tmp_path_factory, model_cache):
    from controlbridge.engine.tiny_model import ensure_tiny_model
    from controlbridge.library.tiny_families import ensure_tiny_family
    models = tmp_path_factory.mktemp("ComfyUI") / "models"
    write_adapter_file(ensure_tiny_model().base, "sd15", models / "ipadapter" / "ip-adapter_tiny_sd15.safetensors")
    write_adapter_file(ensure_tiny_family("sdxl").base, "sdxl", models / "ipadapter" / "ip-adapter_tiny_sdxl.safetensors",
                       seed=1)
    write_adapter_file(ensure_tiny_model().base, "sd15", models / "ipadapter" / "style-plus_tiny_sd15.safetensors",
                       seed=4, plus=True)
    # Says SD1.5 in its metadata but was made for the SDXL UNet: loading it must fail cleanly.
    write_adapter_file(ensure_tiny_family("sdxl").base, "sd15", models / "ipadapter" / "wrong-widths_sd15.safetensors")
    write_encoder_file(models / "clip_vision" / "tiny-clip-vision.safetensors")
    tiny_encoder(seed=2).save_pretrained(models / "clip_vision" / "tiny-clip-vision-folder")
    return models


def reference_png(width=48, height=64, seed=3):
    """A style image of another size than the color image, as a client sends a picture."""
    import io

    import numpy as np
    from PIL import Image
    from controlbridge_protocol import ImageAttachment
    rng = np.random.default_rng(seed)
    pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    pixels[: height // 2] = (200, 40, 30)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return ImageAttachment.encoded("style", "png", width, height, buf.getvalue())


# --------------------------------------------------------------------------------------------- library

def test_the_library_finds_adapters_and_image_encoders_by_their_keys(style_models):
    from controlbridge.library.scan import scan
    entries = {e.name: e for e in scan([style_models]).entries}
    sd15, sdxl = entries["ip-adapter_tiny_sd15.safetensors"], entries["ip-adapter_tiny_sdxl.safetensors"]
    assert (sd15.kind, sd15.families, sd15.variant) == ("ipadapter", ("sd15",), "p32")
    assert (sdxl.kind, sdxl.families) == ("ipadapter", ("sdxl",))
    plus = entries["style-plus_tiny_sd15.safetensors"]
    assert (plus.kind, plus.families, plus.variant) == ("ipadapter", ("sd15",), "h64")
    for name in ("tiny-clip-vision.safetensors", "tiny-clip-vision-folder"):
        assert (entries[name].kind, entries[name].variant) == ("clip_vision", "h64-p32")


def test_real_sized_adapters_tell_their_family_and_image_encoder_from_shapes():
    from controlbridge.library.families import detect_keys
    from controlbridge.engine.style_reference import encoder_fits
    sd15 = detect_keys({"image_proj.proj.weight": (3072, 1024), "image_proj.norm.weight": (768,),
                        "ip_adapter.1.to_k_ip.weight": (320, 768), "ip_adapter.1.to_v_ip.weight": (320, 768)})
    sdxl_plus = detect_keys({"image_proj.proj_in.weight": (1280, 1280), "image_proj.latents": (1, 16, 1280),
                             "ip_adapter.1.to_k_ip.weight": (640, 2048)})
    vit_h = detect_keys({"vision_model.embeddings.patch_embedding.weight": (1280, 3, 14, 14),
                         "visual_projection.weight": (1024, 1280)})
    assert (sd15.kind, sd15.family, sd15.variant) == ("ipadapter", "sd15", "vit-h")
    assert (sdxl_plus.family, sdxl_plus.variant) == ("sdxl", "vit-h")
    assert (vit_h.kind, vit_h.variant) == ("clip_vision", "vit-h")
    assert encoder_fits("vit-h", "vit-h") and encoder_fits("p32", "h64-p32") and not encoder_fits("vit-h", "vit-bigg")


# --------------------------------------------------------------------------------------------- jobs

@pytest.fixture
def style_server(make_server, style_models):
    return make_server(models_dir=style_models)


def run(client, settings, images):
    from helpers import decode_png
    result = client.run(settings, images, timeout=300)
    return result, decode_png(result.image.data)


def test_a_style_job_changes_the_image_reproducibly_and_leaves_later_jobs_as_before(style_server):
    import numpy as np
    from controlbridge.server.outputs import read_job
    from controlbridge_protocol import Client
    from helpers import blockout_images, quick_settings
    images, style = blockout_images(), reference_png()
    plain = quick_settings()
    styled = plain.replace(style=StyleSettings(weight=1.0))
    with Client(style_server.url) as c:
        adapters = {a["name"]: a for a in c.capabilities.style["adapters"]}
        assert adapters["ip-adapter_tiny_sd15.safetensors"]["family"] == "sd15"
        assert "sd15" in c.capabilities.style["families"]
        _, fresh = run(c, plain, images)                       # before any style job
        result, first = run(c, styled, images + [style])
        _, again = run(c, styled, images + [style])
        _, after = run(c, plain, images)                       # the adapter must be out of the UNet again
        _, zero = run(c, plain.replace(style=StyleSettings(weight=0.0)), images + [style])
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - fresh.astype(int)).mean() > 1.0
    assert np.array_equal(after, fresh)
    # Weight 0: every IP-Adapter attention adds 0 x its output to the same text attention (measured: identical).
    assert np.array_equal(zero, fresh)
    saved = read_job(result.saved_path)
    assert saved["settings"]["style"] == {"weight": 1.0, "model": None, "image_encoder": None}
    assert saved["inputs"]["style"]["width"] == 48          # kept as sent, so the job can be re-run


def test_sdxl_style_with_a_named_transformers_image_encoder(style_server):
    import numpy as np
    from controlbridge_protocol import Client
    from helpers import blockout_images, quick_settings
    images, style = blockout_images(128, 128), reference_png()
    plain = quick_settings(model="tiny-sdxl")
    styled = plain.replace(style=StyleSettings(weight=1.5, image_encoder="tiny-clip-vision-folder"))
    with Client(style_server.url) as c:
        _, fresh = run(c, plain, images)
        _, first = run(c, styled, images + [style])
        _, again = run(c, styled, images + [style])
        _, after = run(c, plain, images)
    assert np.array_equal(first, again) and np.array_equal(after, fresh)
    assert np.abs(first.astype(int) - fresh.astype(int)).mean() > 1.0


def test_a_plus_adapter_reads_the_image_encoders_hidden_states(style_server):
    import numpy as np
    from controlbridge_protocol import Client
    from helpers import blockout_images, quick_settings
    images, style = blockout_images(), reference_png()
    plain = quick_settings()
    plus = plain.replace(style=StyleSettings(weight=1.0, model="style-plus_tiny_sd15.safetensors",
                                             image_encoder="tiny-clip-vision.safetensors"))
    with Client(style_server.url) as c:
        _, fresh = run(c, plain, images)
        _, first = run(c, plus, images + [style])
        _, plain_style = run(c, plus.replace(style=StyleSettings(weight=1.0)), images + [style])
        _, again = run(c, plus, images + [style])
        _, after = run(c, plain, images)
    assert np.array_equal(first, again) and np.array_equal(after, fresh)
    assert np.abs(first.astype(int) - fresh.astype(int)).mean() > 1.0
    assert not np.array_equal(first, plain_style)             # another adapter, another look


def expect_error(client, settings, images, code, words):
    from controlbridge_protocol import JobFailed
    with pytest.raises(JobFailed) as e:
        client.run(settings, images, timeout=300)
    assert e.value.code == code, e.value
    assert words in str(e.value), e.value


def test_bad_style_requests_get_specific_errors_and_the_server_keeps_serving(style_server):
    from controlbridge_protocol import Client
    from helpers import blockout_images, quick_settings
    images, style = blockout_images(), reference_png()
    styled = quick_settings(style=StyleSettings())
    with Client(style_server.url) as c:
        expect_error(c, styled, images, ErrorCode.MISSING_ATTACHMENT, "'style' attachment")
        expect_error(c, quick_settings(), images + [style], ErrorCode.BAD_MESSAGE, "set settings.style")
        expect_error(c, quick_settings(style=StyleSettings(weight=3)), images + [style], ErrorCode.OUT_OF_RANGE,
                     "style.weight is 3.0")
        expect_error(c, quick_settings(style=StyleSettings(model="nope.safetensors")), images + [style],
                     ErrorCode.UNKNOWN_MODEL, "nope.safetensors")
        expect_error(c, quick_settings(model="tiny-sdxl", style=StyleSettings(model="ip-adapter_tiny_sd15.safetensors")),
                     images + [style], ErrorCode.WRONG_FAMILY, "sd15")
        expect_error(c, quick_settings(model="tiny-flux", sampler="euler", style=StyleSettings()), images + [style],
                     ErrorCode.WRONG_FAMILY, "SD1.5 and SDXL")
        assert c.run(quick_settings(), images, timeout=300).image.data


def test_an_adapter_that_does_not_fit_the_unet_is_unavailable_and_leaves_it_as_it_was(style_server):
    import numpy as np
    from controlbridge_protocol import Client
    from helpers import blockout_images, quick_settings
    images = blockout_images()
    with Client(style_server.url) as c:
        _, fresh = run(c, quick_settings(), images)
        expect_error(c, quick_settings(style=StyleSettings(model="wrong-widths_sd15.safetensors")),
                     images + [reference_png()], ErrorCode.UNAVAILABLE, "does not fit model 'tiny'")
        _, after = run(c, quick_settings(), images)
    assert np.array_equal(after, fresh)


def test_no_adapter_in_the_library_is_unavailable_with_where_to_put_one(make_server, tmp_path):
    from controlbridge_protocol import Client
    from helpers import blockout_images, quick_settings
    (tmp_path / "models" / "clip_vision").mkdir(parents=True)
    server = make_server(models_dir=tmp_path / "models")
    with Client(server.url) as c:
        assert c.capabilities.style["adapters"] == []
        expect_error(c, quick_settings(style=StyleSettings()), blockout_images() + [reference_png()],
                     ErrorCode.UNAVAILABLE, str(tmp_path / "models" / "ipadapter"))


# --------------------------------------------------------------------------------------------- engine

@pytest.fixture(scope="module")
def blockout_inputs():
    import numpy as np
    from controlbridge.demo_scene import render_blockout
    from controlbridge.engine.generate import JobInputs
    rgba, depth = render_blockout(160, 96)
    style = (np.random.default_rng(0).random((64, 48, 3)) * 255).astype(np.uint8)
    return JobInputs(color=np.ascontiguousarray(rgba[..., :3]), depth_raw=depth), style


def manager_for(model, style_models):
    from controlbridge.engine.model_manager import ModelManager
    from controlbridge.engine.models import ModelSpec
    from controlbridge.library.scan import scan
    return ModelManager(model, ModelSpec("tiny"), scan([style_models]))


def test_a_bf16_model_keeps_its_dtypes_and_the_adapter_loads_in_bf16(style_models, blockout_inputs):
    import dataclasses

    import torch
    from controlbridge.engine.generate import JobResources, generate
    from controlbridge.engine.models import ModelSpec, load_model
    from controlbridge.engine.pipelines import component_report
    from helpers import quick_settings
    model = load_model(ModelSpec("tiny", dtype="bf16"), log=lambda m: None)
    before = component_report(model)
    adapter = manager_for(model, style_models).style_adapter(model, StyleSettings(), lambda text: None)
    assert adapter.encoder.dtype == torch.bfloat16
    assert {p.to_k_ip[0].weight.dtype for p in adapter.processors.values()} == {torch.bfloat16}
    assert {t.dtype for t in adapter.projection.parameters()} == {torch.bfloat16}
    inputs, style = blockout_inputs
    out = generate(model, quick_settings(style=StyleSettings()), dataclasses.replace(inputs, style=style),
                   resources=JobResources(style=adapter))
    assert out.image.dtype.name == "uint8"
    after = component_report(model)
    assert {k: after[k] for k in before} == before


def test_work_between_a_style_jobs_steps_runs_without_the_adapter(tiny_model, style_models, blockout_inputs):
    """A live frame may run between a job's steps: it must see the plain UNet, and the job its adapter again."""
    import dataclasses

    import numpy as np
    from controlbridge.engine.generate import JobResources, generate
    from helpers import quick_settings
    inputs, style = blockout_inputs
    styled_inputs = dataclasses.replace(inputs, style=style)
    resources = JobResources(style=manager_for(tiny_model, style_models).style_adapter(
        tiny_model, StyleSettings(), lambda text: None))
    styled = quick_settings(style=StyleSettings(weight=1.0))
    other = quick_settings(sampler="euler_a", seed=11)       # its own pipeline and scheduler, as a live frame's
    alone = generate(tiny_model, other, inputs).image
    uninterrupted = generate(tiny_model, styled, styled_inputs, resources=resources).image
    between = []
    out = generate(tiny_model, styled, styled_inputs, resources=resources,
                   between_steps=lambda: between.append(generate(tiny_model, other, inputs).image)).image
    assert len(between) == 3
    assert all(np.array_equal(b, alone) for b in between)
    assert np.array_equal(out, uninterrupted)


def test_the_cli_sends_a_style_image_and_a_saved_style_job_reruns_to_the_same_pixels(style_server, tmp_path, capsys):
    import numpy as np
    from PIL import Image
    from controlbridge.cli import main
    from controlbridge.demo_scene import render_blockout
    from controlbridge.server.outputs import read_job
    rgba, _ = render_blockout(160, 96)
    Image.fromarray(rgba[:, :, :3]).save(tmp_path / "color.png")
    Image.fromarray((np.random.default_rng(5).random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "look.jpg")
    common = ["generate", "--url", style_server.url, "--color", tmp_path / "color.png", "--prompt", "a house",
              "--seed", "5", "--steps", "4", "--strength", "1", "--sampler", "euler"]
    assert main([str(a) for a in common + ["--style", tmp_path / "look.jpg", "--style-weight", "1.2",
                                           "-o", tmp_path / "styled.png"]]) == 0
    assert main([str(a) for a in common + ["-o", tmp_path / "plain.png"]]) == 0
    assert read_job(tmp_path / "styled.png")["settings"]["style"]["weight"] == 1.2
    server_copy = next(p for p in style_server.server.config.output_dir.glob("*.png") if read_job(p)["settings"]["style"])
    assert read_job(server_copy)["inputs"]["style"]["encoding"] == "jpeg"          # kept as sent
    assert main(["generate", "--url", style_server.url, "--from-png", str(server_copy), "-o",
                 str(tmp_path / "again.png")]) == 0
    pixels = {name: np.asarray(Image.open(tmp_path / f"{name}.png")) for name in ("styled", "plain", "again")}
    assert np.array_equal(pixels["styled"], pixels["again"]) and not np.array_equal(pixels["styled"], pixels["plain"])
    assert main([str(a) for a in common + ["--style-weight", "1", "-o", tmp_path / "x.png"]]) != 0
    assert "--style-weight needs a style image" in capsys.readouterr().err


def test_live_frames_take_no_style_and_the_live_preset_leaves_it_out(style_server):
    import time

    from controlbridge_protocol import Client, JobError
    from controlbridge_protocol.presets import live_settings
    from helpers import blockout_images, quick_settings
    styled = quick_settings(style=StyleSettings())
    assert live_settings(styled).style is None
    with Client(style_server.url) as c:
        start = c.start_live(styled, 96, 64)
        frame = c.send_live_frame(styled, blockout_images() + [reference_png()])
        errors, deadline = {}, time.monotonic() + 60
        while len(errors) < 2 and time.monotonic() < deadline:
            event = c.next_event(timeout=0.5)
            if isinstance(event, JobError):
                errors[event.request_id] = event
    for request in (start, frame):
        assert errors[request].code == ErrorCode.OUT_OF_RANGE and "not in live frames" in errors[request].message
