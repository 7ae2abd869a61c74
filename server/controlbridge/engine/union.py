"""Union ControlNets (ControlNet++, xinsir's controlnet-union-sdxl; FLUX union): one network, a mode per use.

A union model is told which kind of map it gets (its "control type"). Each SDXL use of one in a job is wrapped as an
ordinary ControlNet in one mode, so it mixes with plain ControlNets in the same pipeline (diffusers' union pipeline
takes union models only) and its weight/start/end work as for any other. FLUX pipelines take a mode per ControlNet
themselves (`flux_control_mode`).
"""
from typing import Dict, Optional

import torch

# The control types in the order ControlNet++ was trained with (its README; tile and inpaint: the ProMax model).
SDXL_UNION_MODES: Dict[str, int] = {
    "openpose": 0, "depth": 1, "softedge": 2, "scribble": 2, "canny": 3, "lineart": 3, "mlsd": 3, "normal": 4,
    "seg": 5, "tile": 6, "inpaint": 7,
}
# FLUX union ControlNets (InstantX / Shakker-Labs FLUX.1-dev-ControlNet-Union(-Pro)), in their model cards' order.
FLUX_UNION_MODES: Dict[str, int] = {
    "canny": 0, "tile": 1, "depth": 2, "blur": 3, "openpose": 4, "gray": 5, "low_quality": 6,
}
UNION_MODES = {"sdxl": SDXL_UNION_MODES, "flux": FLUX_UNION_MODES}


def union_mode_problem(family: str, mode: str) -> Optional[str]:
    """None when a union ControlNet of `family` can run in `mode`, else one line saying why not."""
    modes = UNION_MODES.get(family)
    if modes is None:
        return f"union ControlNets run with SDXL and FLUX models, not {family}"
    if mode not in modes:
        return f"a union ControlNet has no {mode!r} mode; use one of {', '.join(modes)} (controlnets.<name>.mode)"
    return None


def mode_problem(name: str, cn, family: str, variant: Optional[str]) -> Optional[str]:
    """The job's ControlNet `name` (`cn`, of library variant `variant`): None when its mode is usable."""
    if variant == "union":
        return union_mode_problem(family, cn.mode or name)
    if cn.mode is not None:
        return f"controlnets.{name}.mode is for union ControlNets; {cn.model or 'the ' + name + ' ControlNet'} is not one"
    return None


def flux_control_mode(name: str, cn) -> Optional[int]:
    """The FLUX pipeline's `control_mode` entry for this ControlNet: a union one's index (plain ones ignore it)."""
    return FLUX_UNION_MODES.get(cn.mode or name)


def is_union(net) -> bool:
    return type(net).__name__ == "ControlNetUnionModel"


def load_union_file(path, dtype=None):
    """xinsir's ControlNet++ as ComfyUI users keep it: one safetensors file in diffusers' key layout and no config.
    The network is the shipped SDXL ControlNet's; the union part's sizes (how many control types: 6, or 8 for
    ProMax) are read from the weights."""
    from diffusers import ControlNetUnionModel
    from safetensors.torch import load_file

    from ..library.families import NotAModel
    from ..library.single_file import CONFIG_ROOT
    state = load_file(str(path))
    task = state.get("task_embedding")
    if task is None or "spatial_ch_projs.weight" not in state:
        raise NotAModel(f"{path}: not a union ControlNet (no task_embedding / spatial_ch_projs)")
    config = dict(ControlNetUnionModel.load_config(CONFIG_ROOT / "sdxl" / "controlnet"))
    config.update(num_control_type=task.shape[0], num_trans_channel=task.shape[1],
                  num_proj_channel=state["spatial_ch_projs.weight"].shape[0],
                  num_trans_layer=len({k.split(".")[1] for k in state if k.startswith("transformer_layes.")}))
    with torch.device("meta"):
        net = ControlNetUnionModel.from_config(config)
    missing, _ = net.load_state_dict(state, strict=False, assign=True)
    if missing:
        raise NotAModel(f"{path}: the weights do not fit the SDXL union ControlNet ({len(missing)} tensors missing, "
                        f"e.g. {missing[0]})")
    return net.to(dtype) if dtype is not None else net


class UnionInMode(torch.nn.Module):
    """A union model in one control mode, called as a plain ControlNetModel is."""

    def __init__(self, net, mode: str):
        super().__init__()
        self.net = net
        self.index = SDXL_UNION_MODES[mode]
        if self.index >= net.config.num_control_type:
            raise ValueError(f"this union ControlNet knows {net.config.num_control_type} control types; the {mode} "
                             f"mode needs the ProMax model")

    @property
    def config(self):
        return self.net.config

    @property
    def dtype(self):
        return self.net.dtype

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0, **kwargs):
        control_type = torch.zeros(sample.shape[0], self.net.config.num_control_type, device=sample.device,
                                   dtype=sample.dtype)
        control_type[:, self.index] = 1
        return self.net(sample, timestep, encoder_hidden_states, controlnet_cond=[controlnet_cond],
                        control_type=control_type, control_type_idx=[self.index],
                        conditioning_scale=[conditioning_scale], **kwargs)
