"""Every controlnet_aux estimator end to end through a real server job, on random-weight annotator files written
in controlnet_aux's `Annotators` layout (lllyasviel/Annotators' file names, side by side), found in a models
folder's `annotators/` or in a ComfyUI install's comfyui_controlnet_aux folder. The hub is never asked.

ZoeDepth runs only with CONTROLBRIDGE_TEST_ZOE=1: its BEiT-L backbone (345M parameters) always looks at 384x512,
about a minute to build and run on a 2-core CPU, more than this whole file's budget. Its loading is the same code
path as MiDaS' (controlnet_aux's from_pretrained on a local folder), which runs here.
"""
import functools
import math
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from controlbridge_protocol import Client, ControlNetSettings, ErrorCode, JobFailed
from controlbridge.imaging.annotator_files import COMFY_CKPTS
from controlbridge.imaging.estimators import ESTIMATORS
from controlbridge.server.outputs import read_job
from helpers import blockout_images, live_result, quick_settings

W, H = 64, 48
RUN_ZOE = os.environ.get("CONTROLBRIDGE_TEST_ZOE") == "1"
BUILT = [name for name in ESTIMATORS if name != "zoe" or RUN_ZOE]
SMALL = 1024        # float tensors up to this many values are written as the network initialised them
POOL = 1 << 20      # random values per scale a file holds (fp16): larger weights overlap in it


def compact_state(state: dict, seed: int) -> dict:
    """A state dict of random weights that is small on disk: each larger weight (2-D and up) is a view into one
    shared random pool per scale (torch.save writes a storage once, however many tensors view it), of standard
    deviation ~sqrt(2 / fan-in) so that deep networks neither vanish nor overflow; biases, norms, running
    statistics and integer buffers stay as the network initialised them."""
    generator = torch.Generator().manual_seed(seed)
    big = {k: v for k, v in state.items() if v.is_floating_point() and v.dim() > 1 and v.numel() > SMALL}
    scales = {}
    for key, value in big.items():
        fan_in = value[0].numel()
        scales.setdefault(max(0, round(math.log2(fan_in / 2) / 2)), []).append(key)
    out = {k: v.detach().clone() for k, v in state.items() if k not in big}
    for scale, keys in scales.items():
        length = max([min(POOL, sum(big[k].numel() for k in keys))] + [big[k][0].numel() + 997 for k in keys])
        pool = (torch.randn(length, generator=generator) * 2.0 ** -scale).half()
        for key in keys:
            shape, rows, row = big[key].shape, big[key].shape[0], big[key][0].numel()
            # Rows (output channels) start `step` values apart: overlapping when the tensor outgrows the pool.
            step = row if rows * row <= length else max(1, (length - row) // (rows - 1))
            start = int(torch.randint(0, length - ((rows - 1) * step + row) + 1, (1,), generator=generator))
            out[key] = pool.as_strided(shape, (step,) + big[key].contiguous().stride()[1:], start)
    return out


def annotator_files(name: str) -> dict:
    """{file name: what controlnet_aux's loader for `name` reads from it}, random weights."""
    torch.manual_seed(ESTIMATORS_ORDER.index(name))
    seed = ESTIMATORS_ORDER.index(name) + 100
    if name == "midas":
        from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel
        net = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
        return {"dpt_hybrid-midas-501f0c75.pt": compact_state(net.state_dict(), seed)}
    if name == "zoe":
        from controlnet_aux.zoe.zoedepth.models.zoedepth import ZoeDepth
        from controlnet_aux.zoe.zoedepth.utils.config import get_config
        net = ZoeDepth.build_from_config(get_config("zoedepth", "infer"))
        return {"ZoeD_M12_N.pt": {"model": compact_state(net.state_dict(), seed)}}
    if name == "lineart":
        from controlnet_aux.lineart import Generator
        return {"sk_model.pth": compact_state(Generator(3, 1, 3).state_dict(), seed),
                "sk_model2.pth": compact_state(Generator(3, 1, 3).state_dict(), seed + 1)}
    if name == "lineart_anime":
        from controlnet_aux.lineart_anime import UnetGenerator
        norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
        net = UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
        return {"netG.pth": compact_state(net.state_dict(), seed)}
    if name == "hed":
        from controlnet_aux.hed import ControlNetHED_Apache2
        return {"ControlNetHED.pth": compact_state(ControlNetHED_Apache2().state_dict(), seed)}
    if name == "pidinet":
        from controlnet_aux.pidi.model import pidinet
        return {"table5_pidinet.pth": {"state_dict": compact_state(pidinet().state_dict(), seed)}}
    if name == "normalbae":
        from controlnet_aux.normalbae.nets.NNET import NNET
        args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4,
                                     importance_ratio=0.7)
        return {"scannet.pt": {"model": compact_state(NNET(args).state_dict(), seed)}}
    if name == "openpose":   # its loader drops each key's first part (the caffe block name)
        from controlnet_aux.open_pose.model import bodypose_model
        state = compact_state(bodypose_model().state_dict(), seed)
        return {"body_pose_model.pth": {k.split(".", 1)[1]: v for k, v in state.items()}}
    if name == "mlsd":
        from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large
        return {"mlsd_large_512_fp32.pth": compact_state(MobileV2_MLSD_Large().state_dict(), seed)}
    raise KeyError(name)


ESTIMATORS_ORDER = list(ESTIMATORS)


def write_annotators(folder: Path, names) -> Path:
    import warnings
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        with warnings.catch_warnings():      # timm's and controlnet_aux's deprecation notes
            warnings.simplefilter("ignore")
            files = annotator_files(name)
        for file_name, content in files.items():
            torch.save(content, folder / file_name)
    return folder


@pytest.fixture(scope="session")
def annotators(tmp_path_factory) -> Path:
    """Random-weight files for every estimator (Zoe only when asked), as lllyasviel/Annotators names them."""
    folder = write_annotators(tmp_path_factory.mktemp("hub-files") / "Annotators", BUILT)
    for spec_name in BUILT:
        assert all((folder / f).is_file() for f in ESTIMATORS[spec_name].files), spec_name
    return folder


@pytest.fixture(scope="module")
def no_hub(tmp_path_factory):
    """The hub switched off (HF_HUB_OFFLINE) and an empty hub cache: only the folders under test count."""
    from huggingface_hub import constants
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))
        yield


def tiny_controlnets(models: Path) -> Path:
    """A tiny random ControlNet for each role an estimator feeds (depth is the tiny model's own)."""
    from controlbridge.engine.tiny_model import ensure_tiny_model
    for role in {spec.role for spec in ESTIMATORS.values()} - {"depth"}:
        target = models / "controlnet" / f"tiny-{role}"
        if not target.exists():
            shutil.copytree(ensure_tiny_model().controlnets["depth"], target)
    return models


def job(name: str, **changes):
    role = ESTIMATORS[name].role
    net = ControlNetSettings(1.0) if role == "depth" else ControlNetSettings(1.0, model=f"tiny-{role}")
    return quick_settings(controlnets={role: net}, estimate={role: name}, **changes)


def start_server(tiny_model, models_dir: Path, output_dir: Path):
    from controlbridge.server.app import ServerThread
    from controlbridge.server.config import ServerConfig
    return ServerThread(ServerConfig(models_dir=models_dir, output_dir=output_dir, port=0), model=tiny_model).start()


def saved_map(result, kind: str, name: str) -> np.ndarray:
    path = Path(result.saved_path)
    meta = read_job(path)
    entry = meta[kind][name]
    return np.asarray(Image.open(path.parent / (entry["file"] if isinstance(entry, dict) else entry)).convert("RGB"))


@pytest.fixture(scope="module")
def runs(tiny_model, annotators, no_hub, tmp_path_factory):
    """One server whose models folder has every estimator's files in annotators/; one job per estimator."""
    models = tiny_controlnets(tmp_path_factory.mktemp("ComfyUI") / "models")
    (models / "annotators").symlink_to(annotators, target_is_directory=True)
    server = start_server(tiny_model, models, tmp_path_factory.mktemp("outputs"))
    color = blockout_images(W, H)[0]
    try:
        with Client(server.url) as c:
            caps = c.capabilities
            results = {name: c.run(job(name), [color], timeout=300) for name in BUILT}
    finally:
        server.stop()
    return types.SimpleNamespace(caps=caps, results=results, color=color, models=models)


def test_capabilities_list_every_estimator_whose_files_are_here(runs):
    assert runs.caps.control["estimators"] == [{"name": n, "role": ESTIMATORS[n].role} for n in BUILT]


@pytest.mark.parametrize("name", BUILT)
def test_each_estimator_feeds_its_controlnet_in_a_job(runs, name):
    role = ESTIMATORS[name].role
    result = runs.results[name]
    assert result.image.width == W and result.image.height == H
    meta = read_job(Path(result.saved_path))
    assert meta["settings"]["estimate"] == {role: name}
    assert meta["estimated"][role]["estimator"] == name
    estimated = saved_map(result, "estimated", role)        # kept with the job's inputs, at the color's size
    assert estimated.shape == (H, W, 3)
    assert Path(result.saved_path).parent / meta["estimated"][role]["file"] == \
        Path(result.saved_path).parent / f"{Path(result.saved_path).stem}.inputs/estimated-{role}.png"
    # What the ControlNet saw is that map at the working size.
    seen = saved_map(result, "controls", role)
    resized = np.asarray(Image.fromarray(estimated).resize(seen.shape[1::-1], Image.BILINEAR), np.int16)
    assert np.abs(seen.astype(np.int16) - resized).mean() < 4
    # And it is this estimator's own map: every other estimator's differs.
    for other in BUILT:
        if other != name:
            other_map = saved_map(runs.results[other], "estimated", ESTIMATORS[other].role)
            assert not np.array_equal(estimated, other_map), (name, other)


def test_estimated_maps_rerun_the_job_as_sent_maps(runs, tiny_model, tmp_path):
    """A job re-run without the estimator, its saved map sent instead, makes the same pixels."""
    from controlbridge_protocol import ImageAttachment
    from helpers import decode_png
    result = runs.results["hed"]
    estimated = saved_map(result, "estimated", "softedge")
    rgba = np.concatenate([estimated, np.full((H, W, 1), 255, np.uint8)], axis=2)
    server = start_server(tiny_model, runs.models, tmp_path / "outputs")
    try:
        with Client(server.url) as c:
            again = c.run(quick_settings(controlnets={"softedge": ControlNetSettings(1.0, model="tiny-softedge")}),
                          [runs.color, ImageAttachment.raw_rgba8("softedge", W, H, rgba.tobytes())])
    finally:
        server.stop()
    assert np.array_equal(decode_png(again.image.data), decode_png(result.image.data))


@pytest.fixture(scope="module")
def comfy_install(annotators, tmp_path_factory) -> Path:
    """A ComfyUI folder whose comfyui_controlnet_aux node holds the hed and mlsd files; its models/ has none."""
    comfy = tmp_path_factory.mktemp("ComfyUI-with-node")
    ckpts = comfy / COMFY_CKPTS
    ckpts.mkdir(parents=True)
    for name in ("hed", "mlsd"):
        for file_name in ESTIMATORS[name].files:
            shutil.copy(annotators / file_name, ckpts / file_name)
    tiny_controlnets(comfy / "models")
    return comfy


def test_weights_in_a_comfyui_install_are_found(runs, comfy_install, tiny_model, no_hub, tmp_path):
    server = start_server(tiny_model, comfy_install / "models", tmp_path / "outputs")
    try:
        with Client(server.url) as c:
            caps = c.capabilities
            result = c.run(job("hed"), [runs.color])
    finally:
        server.stop()
    assert [e["name"] for e in caps.control["estimators"]] == ["hed", "mlsd"]
    assert np.array_equal(saved_map(result, "estimated", "softedge"),
                          saved_map(runs.results["hed"], "estimated", "softedge"))     # the same files


def test_missing_weights_are_unavailable_naming_the_file_and_where_they_were_looked_for(
        comfy_install, tiny_model, no_hub, tmp_path):
    server = start_server(tiny_model, comfy_install / "models", tmp_path / "outputs")
    color = blockout_images(W, H)[0]
    try:
        with Client(server.url) as c:
            with pytest.raises(JobFailed) as missing:
                c.run(job("midas"), [color])
            with pytest.raises(JobFailed) as wrong_role:
                c.run(quick_settings(controlnets={"depth": ControlNetSettings(1.0)}, estimate={"depth": "hed"}),
                      [color])
            assert c.run(job("mlsd"), [color]).image.width == W       # and the server keeps serving
    finally:
        server.stop()
    message = str(missing.value)
    assert missing.value.code == ErrorCode.UNAVAILABLE
    assert "dpt_hybrid-midas-501f0c75.pt" in message
    assert str(comfy_install / "models" / "annotators") in message and str(comfy_install / COMFY_CKPTS) in message
    assert "HF_HUB_OFFLINE" in message
    assert wrong_role.value.code == ErrorCode.OUT_OF_RANGE
    assert "makes softedge maps, not depth" in str(wrong_role.value) and "midas" in str(wrong_role.value)


def test_weights_the_hub_cannot_give_fail_the_job_as_unavailable(make_server, tmp_path, monkeypatch):
    """Online (the hub not switched off) and nothing here: the job is accepted, the download is tried on the
    device thread, and its failure is `unavailable` with the file and the folders, not an internal error."""
    from huggingface_hub import constants
    from controlbridge.imaging import estimators
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    asked = []

    def unreachable(files):
        asked.append(list(files))
        raise OSError("We couldn't connect to 'https://huggingface.co'")
    monkeypatch.setattr(estimators, "download", unreachable)
    (tmp_path / "models").mkdir()
    server = make_server(models_dir=tmp_path / "models")
    with Client(server.url) as c:
        assert c.capabilities.control["estimators"] == []
        with pytest.raises(JobFailed) as failed:
            c.run(quick_settings(controlnets={"depth": ControlNetSettings(1.0)}, estimate={"depth": "midas"}),
                  blockout_images(W, H)[:1])
    assert asked == [["dpt_hybrid-midas-501f0c75.pt"]]
    assert failed.value.code == ErrorCode.UNAVAILABLE
    assert "dpt_hybrid-midas-501f0c75.pt" in str(failed.value) and str(tmp_path / "models" / "annotators") in \
        str(failed.value) and "couldn't connect" in str(failed.value)


def test_live_frames_run_their_estimator(runs, tiny_model, tmp_path):
    server = start_server(tiny_model, runs.models, tmp_path / "outputs")
    frames = []
    try:
        with Client(server.url) as c:
            for name in ("lineart", "lineart_anime"):       # only the estimator changes
                live = job(name, steps=2, sampler="lcm", cfg=1.0, denoise=0.8, result_encoding="jpeg")
                frames.append(live_result(c, c.send_live_frame(live, [runs.color])).image.data)
    finally:
        server.stop()
    assert frames[0] != frames[1]


@pytest.mark.parametrize("on_device", [False, True], ids=["host-ops", "device-ops"])
def test_a_live_frame_sees_the_estimated_map_a_job_sees(runs, tiny_model, on_device):
    # 160x128 in, 128x128 out: the color is cropped, not resized (so the two paths' resize filters play no
    # part). The estimator runs on the whole color image for both, then its map is cropped with the color.
    from controlbridge.engine.generate import JobInputs, JobResources, generate
    from controlbridge.engine.live_engine import LiveEngine
    from controlbridge.demo_scene import render_blockout
    from controlbridge.imaging.estimators import load
    model = tiny_model
    settings = job("midas", width=128, height=128, steps=4, sampler="euler", cfg=1.0, denoise=0.6, seed=11)
    resources = JobResources(estimators={"depth": load("midas", [runs.models])})
    inputs = JobInputs(np.ascontiguousarray(render_blockout(160, 128)[0][:, :, :3]))
    one_shot = generate(model, settings, inputs, resources=resources)
    live = LiveEngine(on_device=on_device).render(model, settings, inputs, resources)
    assert live.image.shape == one_shot.image.shape == (128, 128, 3)
    difference = np.abs(live.image.astype(int) - one_shot.image.astype(int))
    assert difference.max() <= 1 and difference.mean() < 0.01, (difference.max(), difference.mean())
