"""What a saved result carries (issue 12 items 19, 20): software, device and dtype, the checkpoint's sha256 (hashed
off the device thread), the depth map the ControlNet actually saw, and the job as a ComfyUI graph."""
import hashlib
import json
import threading

import numpy as np
import pytest
from PIL import Image

from controlbridge_protocol import Client, ControlNetSettings, HiresSettings, JobSettings, LoraSettings
from controlbridge.imaging.codecs import read_png_text, resize_map
from controlbridge.imaging.depth import depth_to_control
from controlbridge.library import hashing
from controlbridge.server.comfy_graph import COMFY_NODES, COMFY_SAMPLERS, COMFY_SCHEDULERS, comfy_prompt
from controlbridge.server.outputs import read_job
from helpers import blockout_images, quick_settings

# The type each ComfyUI input that takes a link carries (nodes.py INPUT_TYPES); a link must come from an output
# of that type (COMFY_NODES lists each node's outputs).
LINK_TYPES = {"model": "MODEL", "clip": "CLIP", "vae": "VAE", "positive": "CONDITIONING",
              "negative": "CONDITIONING", "control_net": "CONTROL_NET", "image": "IMAGE", "pixels": "IMAGE",
              "images": "IMAGE", "latent_image": "LATENT", "samples": "LATENT", "upscale_model": "UPSCALE_MODEL"}


def check_graph(graph: dict) -> None:
    """As ComfyUI validates a prompt: known nodes, exactly their required inputs, links to outputs of the right type."""
    for node_id, node in graph.items():
        required, _ = COMFY_NODES[node["class_type"]]
        assert set(node["inputs"]) == set(required), (node_id, node)
        for name, value in node["inputs"].items():
            if name in LINK_TYPES and not (node["class_type"] == "LoadImage" and name == "image"):
                source, index = value
                assert int(source) < int(node_id), "links point back to nodes made earlier"
                assert COMFY_NODES[graph[source]["class_type"]][1][index] == LINK_TYPES[name], (node_id, name)
    assert [n["class_type"] for n in graph.values()].count("SaveImage") == 1


def settings_from_graph(graph: dict) -> dict:
    """Read the job back from the graph alone, by following its links as ComfyUI would run them."""
    def at(link):
        return graph[link[0]]

    samplers = [n["inputs"] for n in graph.values() if n["class_type"] == "KSampler"]
    base = samplers[0]
    names = {v: k for k, v in COMFY_SAMPLERS.items()}
    suffixes = {v: k for k, v in COMFY_SCHEDULERS.items()}
    s = {"seed": base["seed"], "steps": base["steps"], "cfg": base["cfg"], "denoise": base["denoise"],
         "sampler": names[base["sampler_name"]] + suffixes.get(base["scheduler"], ""), "controlnets": {}}
    node = at(base["positive"])
    while node["class_type"] == "ControlNetApplyAdvanced":
        i = node["inputs"]
        name = node["_meta"]["title"].split()[0]
        loader = at(i["control_net"])["inputs"]["control_net_name"]
        s["controlnets"][name] = {"weight": i["strength"], "start": i["start_percent"], "end": i["end_percent"],
                                  "model": None if loader == name else loader}
        image = at(i["image"])
        if image["class_type"] == "Canny":
            s["canny_low"] = round(image["inputs"]["low_threshold"] * 255)
            s["canny_high"] = round(image["inputs"]["high_threshold"] * 255)
        node = at(i["positive"])
    s["prompt"] = node["inputs"]["text"]
    node = at(base["negative"])
    while node["class_type"] == "ControlNetApplyAdvanced":
        node = at(node["inputs"]["negative"])
    s["negative_prompt"] = node["inputs"]["text"]
    node, s["loras"] = at(base["model"]), []
    while node["class_type"] == "LoraLoader":
        s["loras"].insert(0, {"name": node["inputs"]["lora_name"], "weight": node["inputs"]["strength_model"]})
        node = at(node["inputs"]["model"])
    s["model"] = node["inputs"]["ckpt_name"]
    save = next(n for n in graph.values() if n["class_type"] == "SaveImage")["inputs"]
    s["filename_prefix"] = "" if save["filename_prefix"] == "ControlBridge" else save["filename_prefix"]
    resize = at(save["images"])["inputs"]
    s["width"], s["height"] = resize["width"], resize["height"]
    vae = at(at(resize["image"])["inputs"]["vae"])
    s["vae"] = vae["inputs"]["vae_name"] if vae["class_type"] == "VAELoader" else None
    s["hires"] = None
    if len(samplers) == 2:
        hires, source = samplers[1], at(samplers[1]["latent_image"])
        s["hires"] = {"steps": hires["steps"], "denoise": hires["denoise"]}
        if source["class_type"] == "LatentUpscaleBy":
            s["hires"].update(upscaler="latent", scale=source["inputs"]["scale_by"])
        else:
            pixels = at(source["inputs"]["pixels"])
            if pixels["class_type"] == "ImageScaleBy":
                s["hires"].update(upscaler="lanczos", scale=pixels["inputs"]["scale_by"])
            else:   # upscale model, then ImageScale to the hires size
                upscaled = at(pixels["inputs"]["image"])
                work_w = at(at(base["latent_image"])["inputs"]["pixels"])["inputs"]["width"]   # the colour's
                s["hires"].update(upscaler=at(upscaled["inputs"]["upscale_model"])["inputs"]["model_name"],
                                  scale=pixels["inputs"]["width"] / work_w)
    return s


def expected(settings: dict, model_name: str, size) -> dict:
    """The settings a graph carries, as the job ran them (defaults resolved as the server resolves them).
    Not in a ComfyUI graph: how the result is delivered (preview_every, result_encoding, fast_decode, batch_size:
    each saved file is one image)."""
    hires = settings["hires"] and dict(settings["hires"], steps=settings["hires"]["steps"] or settings["steps"])
    want = {k: settings[k] for k in ("prompt", "negative_prompt", "seed", "steps", "cfg", "sampler", "denoise",
                                     "vae", "filename_prefix", "loras")}
    want.update(model=settings["model"] or model_name, width=size[0], height=size[1], hires=hires,
                controlnets={n: {k: c[k] for k in ("weight", "start", "end", "model")}
                             for n, c in settings["controlnets"].items()})
    return want


def round_trip(got: dict, want: dict) -> None:
    if want["hires"] and want["hires"]["upscaler"] not in ("lanczos", "latent"):   # written as a pixel size
        assert got["hires"].pop("scale") == pytest.approx(want["hires"].pop("scale"), rel=0.02)
    canny = {k: got.pop(k) for k in ("canny_low", "canny_high") if k in got}
    assert got == want
    return canny


def test_a_result_carries_software_device_dtype_and_the_depth_map_used(server, tmp_path):   # item 19
    images = blockout_images(160, 96)
    with Client(server.url) as c:
        result = c.run(quick_settings(steps=2), images, timeout=120)
    meta = read_job(result.saved_path)
    assert meta["model"]["device"] == "cpu" and meta["model"]["dtype"] == "fp32"
    assert set(meta["software"]) >= {"controlbridge", "python", "torch", "diffusers", "transformers"}
    assert all(meta["software"].values())
    # The depth map the ControlNet saw, beside the inputs: the raw depth normalized, at the working size.
    depth_png = server.server.config.output_dir / meta["controls"]["depth"]
    saw = np.asarray(Image.open(depth_png).convert("L")).astype(int)
    work_w, work_h = meta["working_size"]
    assert saw.shape == (work_h, work_w)
    raw = np.frombuffer(images[1].data, "<f4").reshape(96, 160)
    mine = np.round(resize_map(depth_to_control(raw), work_w, work_h) * 255).astype(int)
    assert np.abs(saw - mine).max() <= 1


def test_the_checkpoint_hash_is_read_off_the_device_thread_and_lands_in_the_png(make_server, tmp_path,
                                                                                 monkeypatch):   # item 19
    # The tiny model has no file; stand a 48 MiB checkpoint in for it where the server looks its file up.
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(np.random.default_rng(0).bytes(1 << 20) * 48)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    monkeypatch.setattr("controlbridge.server.worker.model_file", lambda models, name: checkpoint)
    monkeypatch.setattr("controlbridge.server.jobs.model_file", lambda models, name: checkpoint)
    hashed_on = []
    real = hashing.file_sha256

    def spy(path):
        hashed_on.append(threading.current_thread().name)
        return real(path)
    monkeypatch.setattr(hashing, "file_sha256", spy)
    server = make_server()
    images = blockout_images(64, 48)
    with Client(server.url) as c:
        first = c.run(quick_settings(steps=1), images, timeout=120)
        for thread in list(hashing._running.values()):
            thread.join(60)
        second = c.run(quick_settings(steps=1, seed=8), images, timeout=120)
    assert hashed_on and all(name.startswith("controlbridge-sha256") for name in hashed_on), hashed_on
    assert read_job(first.saved_path)["model"]["sha256"] in (digest, None)     # never waited for
    assert read_job(second.saved_path)["model"]["sha256"] == digest
    assert f"Model hash: {digest[:10]}" in read_png_text(second.saved_path)["parameters"]


def test_the_png_opens_in_comfyui_as_the_same_job(server):   # item 20
    images = blockout_images(160, 96)
    settings = quick_settings(prompt="a tower", negative_prompt="fog", seed=11, steps=4, cfg=6.5,
                              sampler="dpmpp_2m_karras", denoise=0.8, width=200, height=120,
                              controlnets={"depth": ControlNetSettings(0.8, 0.1, 0.9),
                                           "canny": ControlNetSettings(0.5)},
                              canny_low=80, canny_high=160, filename_prefix="tower",
                              hires=HiresSettings(scale=1.5, denoise=0.4, steps=5))
    with Client(server.url) as c:
        result = c.run(settings, images, timeout=300)
    graph = json.loads(read_png_text(result.saved_path)["prompt"])
    check_graph(graph)
    meta = read_job(result.saved_path)
    canny = round_trip(settings_from_graph(graph), expected(meta["settings"], "tiny", (200, 120)))
    assert canny == {"canny_low": 80, "canny_high": 160}
    # Every image it loads is a file beside the result that ComfyUI's LoadImage (PIL) can open.
    output_dir = server.server.config.output_dir
    loaded = [n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage"]
    assert len(loaded) == 2
    for name in loaded:
        Image.open(output_dir / name).load()


@pytest.mark.parametrize("changes", [
    dict(loras=[LoraSettings("detail.safetensors", 0.7), LoraSettings("style.safetensors", 0.3)],
         vae="vae-ft-mse.safetensors", model="dreamshaper_8.safetensors", sampler="euler_a_trailing"),
    dict(controlnets={"depth": ControlNetSettings(1.2, 0.0, 0.5, model="control_v11f1p_sd15_depth.pth")},
         hires=HiresSettings(scale=2.0, denoise=0.3, upscaler="latent"), sampler="unipc"),
    dict(hires=HiresSettings(scale=1.5, denoise=0.35, steps=6, upscaler="4x-UltraSharp.pth"), sampler="lcm",
         controlnets={}),
], ids=["loras-vae-checkpoint", "library-controlnet-latent-hires", "upscale-model-no-controlnets"])
def test_every_setting_round_trips_through_the_comfyui_graph(changes):   # item 20
    settings = JobSettings(prompt="a street", negative_prompt="blur", seed=5, steps=30, cfg=4.0).replace(**changes)
    inputs = {"color": {"file": "x.inputs/color.png"}, "depth": {"file": "x.inputs/depth.npy"}}
    metadata = {"model": {"name": "tiny"}, "working_size": [512, 288], "size": [1280, 720], "inputs": inputs,
                "controls": {"depth": "x.inputs/control-depth.png"}}
    graph = comfy_prompt(settings, metadata)
    check_graph(graph)
    round_trip(settings_from_graph(graph), expected(settings.to_dict(), "tiny", (1280, 720)))
    assert {n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage"} <= \
        {"x.inputs/color.png", "x.inputs/control-depth.png"}     # raw depth: the map it made, not the .npy


def test_a_ready_made_map_is_loaded_not_recomputed():   # item 20: a sent canny image is what the ControlNet saw
    settings = JobSettings(prompt="p", seed=1, controlnets={"canny": ControlNetSettings()})
    metadata = {"model": {"name": "tiny"}, "working_size": [128, 128], "size": [128, 128],
                "inputs": {"color": {"file": "j.inputs/color.png"}, "canny": {"file": "j.inputs/canny.png"}},
                "controls": {"canny": "j.inputs/control-canny.png"}}
    graph = comfy_prompt(settings, metadata)
    assert "Canny" not in {n["class_type"] for n in graph.values()}
    assert [n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage"] == \
        ["j.inputs/color.png", "j.inputs/control-canny.png"]
