"""Cheap latent -> RGB previews, without the full VAE."""
from typing import Optional, Tuple

import numpy as np
import torch

# Approximate RGB contribution of each latent channel (+ a bias), ComfyUI's "latent2rgb" previews
# (comfy/latent_formats.py). They apply to latents in the model's scaled space, which is what pipelines step on.
_SD15_FACTORS = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
                 [-0.2120, -0.2616, -0.7177]]
_SDXL_FACTORS = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
                 [-0.3165, -0.2492, -0.2188]]
_FLUX_FACTORS = [[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
                 [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
                 [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
                 [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
                 [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
                 [-0.1262, -0.0982, -0.0778]]
_FLUX_BIAS = [-0.0329, -0.0718, -0.0851]
_FACTORS = {"sd15": (_SD15_FACTORS, None), "sdxl": (_SDXL_FACTORS, None), "flux": (_FLUX_FACTORS, _FLUX_BIAS)}


def unpack_flux_latents(latents: torch.Tensor, size: Tuple[int, int], vae_scale_factor: int) -> torch.Tensor:
    """FLUX steps on packed latents, (B, tokens, 64): 2x2 patches of 16 channels. Back to (B, 16, h, w) for an
    image of `size` (width, height) pixels, with the pipelines' own unpacking."""
    from diffusers import FluxPipeline
    width, height = size
    return FluxPipeline._unpack_latents(latents, height, width, vae_scale_factor)


def latent_preview(latents: torch.Tensor, family: str, taesd=None, size: Optional[Tuple[int, int]] = None,
                   vae_scale_factor: int = 8) -> np.ndarray:
    """uint8 HxWx3 of the first image of a latent batch: through the tiny autoencoder when there is one
    (full resolution, a few milliseconds on a GPU), else a linear map at latent resolution.

    Packed FLUX latents (3 dimensions) need `size`, the (width, height) in pixels the pipeline works at, and
    the VAE's `vae_scale_factor`."""
    if latents.ndim == 3:
        if size is None:
            raise ValueError("packed (FLUX) latents need the image size to be unpacked")
        latents = unpack_flux_latents(latents[:1], size, vae_scale_factor)
    if taesd is not None:
        with torch.inference_mode():
            image = taesd.decode(latents[:1].to(taesd.dtype)).sample[0].float().cpu()
        return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    factors, bias = _FACTORS.get(family, (_SD15_FACTORS, None))
    factors = torch.tensor(factors, dtype=torch.float32)
    lat = latents[0].detach().float().cpu()
    if lat.shape[0] != factors.shape[0]:          # other latent layouts: show the first channels as gray
        gray = lat[0]
        rgb = gray[None].repeat(3, 1, 1)
    else:
        rgb = torch.einsum("chw,cr->rhw", lat, factors)
        if bias is not None:
            rgb = rgb + torch.tensor(bias, dtype=torch.float32)[:, None, None]
    rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    return rgb.permute(1, 2, 0).contiguous().numpy()
