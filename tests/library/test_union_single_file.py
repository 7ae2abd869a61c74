"""xinsir's ControlNet++ (union) as ComfyUI users keep it, one diffusers-layout file without a config, loads offline."""
import torch

from controlbridge.engine.models import load_controlnet
from controlbridge.library.families import detect
from controlbridge.library.single_file import CONFIG_ROOT
from library_layouts import write_sparse_safetensors


def test_a_full_size_promax_union_file_loads_with_its_control_types(tmp_path):
    from diffusers import ControlNetUnionModel
    config = dict(ControlNetUnionModel.load_config(CONFIG_ROOT / "sdxl" / "controlnet"), num_control_type=8)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in ControlNetUnionModel.from_config(config).state_dict().items()}
    # The real file's header (xinsir's promax: 8 control types), its data a hole: zeros, no disk used.
    path = write_sparse_safetensors(tmp_path / "controlnet-union-sdxl-promax.safetensors", shapes)
    found = detect(path)
    assert (found.kind, found.family, found.variant) == ("controlnet", "sdxl", "union")

    net = load_controlnet(str(path), "sdxl", torch.float16, "cpu")
    assert type(net).__name__ == "ControlNetUnionModel" and net.config.num_control_type == 8
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == shapes     # every tensor in its place
    assert not any(p.is_meta for p in net.parameters()) and net.dtype == torch.float16
