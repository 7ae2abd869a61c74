"""A full-size SD1.5 ControlNet in lllyasviel's single-file layout (as ComfyUI users keep them) loads offline."""
import torch
from safetensors.torch import save_file

from controlbridge.engine.models import load_controlnet
from controlbridge.library.families import detect
from controlbridge.library.single_file import CONFIG_ROOT, controlnet_to_original


def test_full_size_sd15_controlnet_single_file_round_trip(tmp_path):
    from diffusers import ControlNetModel
    config = ControlNetModel.load_config(CONFIG_ROOT / "sd15" / "controlnet")
    torch.manual_seed(0)
    with torch.device("meta"):
        original = ControlNetModel.from_config(config)
    original = original.to_empty(device="cpu").to(torch.float16)
    with torch.no_grad():
        for p in original.parameters():       # cheap, distinct values: every tensor must land in its place
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (1 + hash(p.shape) % 7))
    state = controlnet_to_original(original.state_dict(), config["layers_per_block"])
    path = tmp_path / "control_v11f1p_sd15_depth.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert (detect(path).kind, detect(path).family) == ("controlnet", "sd15")

    loaded = load_controlnet(str(path), "sd15", torch.float16, "cpu")
    theirs = loaded.state_dict()
    for name, tensor in original.state_dict().items():
        assert torch.equal(theirs[name], tensor), name
