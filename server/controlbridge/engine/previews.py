"""Cheap latent -> RGB previews, without the full VAE."""
import numpy as np
import torch

# Approximate RGB contribution of each latent channel, as used by ComfyUI's "latent2rgb" previews.
_SD15_FACTORS = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
                 [-0.2120, -0.2616, -0.7177]]
_SDXL_FACTORS = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
                 [-0.3165, -0.2492, -0.2188]]


def latent_preview(latents: torch.Tensor, family: str, taesd=None) -> np.ndarray:
    """uint8 HxWx3 of the first image of a latent batch: through the tiny autoencoder when there is one
    (full resolution, a few milliseconds on a GPU), else a linear map at latent resolution."""
    if taesd is not None:
        with torch.inference_mode():
            image = taesd.decode(latents[:1].to(taesd.dtype)).sample[0].float().cpu()
        return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    factors = torch.tensor(_SDXL_FACTORS if family == "sdxl" else _SD15_FACTORS, dtype=torch.float32)
    lat = latents[0].detach().float().cpu()
    if lat.shape[0] != factors.shape[0]:          # other latent layouts: show the first channels as gray
        gray = lat[0]
        rgb = gray[None].repeat(3, 1, 1)
    else:
        rgb = torch.einsum("chw,cr->rhw", lat, factors)
    rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    return rgb.permute(1, 2, 0).contiguous().numpy()
