"""LoRAs load once while consecutive jobs want the same ones, and unloading restores the base bitwise."""
import torch

from controlbridge.engine.generate import JobInputs, JobResources, generate
from helpers import quick_settings


def write_lora(model, path):
    """A real (peft, non-zero) LoRA for the tiny SD1.5 UNet, made from the model's own UNet config."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    unet = UNet2DConditionModel.from_config(model.base.unet.config)
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_v"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name)
    return path


def test_same_loras_load_once_and_the_base_comes_back_bitwise(tmp_path):
    from controlbridge.demo_scene import render_blockout
    from controlbridge.engine.models import ModelSpec, load_model
    model = load_model(ModelSpec("tiny"), log=lambda m: None)
    original = {k: v.clone() for k, v in model.base.unet.state_dict().items()}
    rgba, depth = render_blockout(96, 64)
    inputs = JobInputs(rgba[:, :, :3].copy(), depth)
    plain = generate(model, quick_settings(steps=3), inputs).image
    lora = JobResources(loras=[(str(write_lora(model, tmp_path / "a.safetensors")), 1.0)])
    first = generate(model, quick_settings(steps=3), inputs, resources=lora).image
    second = generate(model, quick_settings(steps=3), inputs, resources=lora).image
    assert model.loras.loads == 1 and (first == second).all()
    assert not (first == plain).all()                         # the LoRA does change the image
    again = generate(model, quick_settings(steps=3), inputs).image
    assert (again == plain).all()
    assert all(torch.equal(original[k], v) for k, v in model.base.unet.state_dict().items())
