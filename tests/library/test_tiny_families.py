"""The tiny SDXL and FLUX models run their ControlNet img2img pipelines offline, deterministically, fast."""
import hashlib
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore:`FluxPosEmbed` is deprecated:FutureWarning")   # diffusers' own

SIZE = 64


def _images():
    rng = np.random.RandomState(0)
    color = Image.fromarray((rng.rand(SIZE, SIZE, 3) * 255).astype(np.uint8))
    control = Image.fromarray((rng.rand(SIZE, SIZE, 3) > 0.5).astype(np.uint8) * 255)
    return color, control


def _run(pipe, seed=3, **kwargs):
    color, control = _images()
    kwargs.setdefault("control_image", control)
    start = time.perf_counter()
    out = pipe(prompt="a red house", image=color, strength=0.75, num_inference_steps=4,
               height=SIZE, width=SIZE, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
               **kwargs).images[0]
    return out, time.perf_counter() - start


def test_sdxl_controlnet_img2img(tiny_sdxl):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetImg2ImgPipeline
    controlnet = ControlNetModel.from_pretrained(tiny_sdxl.controlnets["depth"])
    pipe = StableDiffusionXLControlNetImg2ImgPipeline.from_pretrained(tiny_sdxl.base, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    first, seconds = _run(pipe)
    again, _ = _run(pipe)
    unguided, _ = _run(pipe, controlnet_conditioning_scale=0.0)
    assert first.shape == (SIZE, SIZE, 3) and np.isfinite(first).all()
    assert np.array_equal(first, again)                 # same seed, same pixels
    assert np.abs(first - unguided).max() > 0.01        # the ControlNet steers
    print(f"tiny SDXL ControlNet img2img: {seconds:.2f} s")


def test_flux_controlnet_img2img(tiny_flux):
    from diffusers import FluxControlNetImg2ImgPipeline, FluxControlNetModel, FluxMultiControlNetModel
    depth = FluxControlNetModel.from_pretrained(tiny_flux.controlnets["depth"])
    pipe = FluxControlNetImg2ImgPipeline.from_pretrained(tiny_flux.base, controlnet=depth)
    pipe.set_progress_bar_config(disable=True)
    first, seconds = _run(pipe, guidance_scale=3.5, max_sequence_length=32)
    again, _ = _run(pipe, guidance_scale=3.5, max_sequence_length=32)
    unguided, _ = _run(pipe, guidance_scale=3.5, max_sequence_length=32, controlnet_conditioning_scale=0.0)
    assert first.shape == (SIZE, SIZE, 3) and np.isfinite(first).all()
    assert np.array_equal(first, again)
    assert np.abs(first - unguided).max() > 0.01
    print(f"tiny FLUX ControlNet img2img: {seconds:.2f} s")

    # Two ControlNets at once (control_mode must be given per ControlNet, even when unused).
    canny = FluxControlNetModel.from_pretrained(tiny_flux.controlnets["canny"])
    multi = FluxControlNetImg2ImgPipeline.from_pipe(pipe, controlnet=FluxMultiControlNetModel([depth, canny]))
    multi.set_progress_bar_config(disable=True)
    _, control = _images()
    out, _ = _run(multi, guidance_scale=3.5, max_sequence_length=32, control_image=[control, control],
                  control_mode=[None, None], controlnet_conditioning_scale=[0.5, 0.5])
    assert np.isfinite(out).all()


def test_flux_control_transformer_img2img(tiny_flux):
    """FLUX.1 Depth/Canny [dev]-style: a whole transformer taking the control latents as extra channels."""
    from diffusers import FluxControlImg2ImgPipeline, FluxPipeline, FluxTransformer2DModel
    transformer = FluxTransformer2DModel.from_pretrained(tiny_flux.control_transformer)
    base = FluxPipeline.from_pretrained(tiny_flux.base)
    pipe = FluxControlImg2ImgPipeline.from_pipe(base, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    out, seconds = _run(pipe, guidance_scale=3.5, max_sequence_length=32)
    assert out.shape == (SIZE, SIZE, 3) and np.isfinite(out).all()


def test_builds_are_deterministic(tmp_path, tiny_flux):
    from controlbridge.library.tiny_families import build_tiny_family
    rebuilt = build_tiny_family("flux", tmp_path / "again")

    def digest(folder):
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*.safetensors"))}
    assert digest(rebuilt.root) == digest(tiny_flux.root)
    assert len(digest(rebuilt.root)) == 7     # transformer, VAE, 2 text encoders, 2 ControlNets, control transformer


def test_unknown_family_is_refused(tmp_path):
    from controlbridge.library.tiny_families import build_tiny_family
    with pytest.raises(ValueError, match="no tiny model for family 'sd3'"):
        build_tiny_family("sd3", tmp_path)
