"""Step previews for FLUX: its packed latents (2x2 patches of 16 channels) unpacked and shown with FLUX's
latent -> RGB factors, through a real server job."""
import io

import numpy as np
import torch
from PIL import Image

from controlbridge_protocol import Client, Progress
from controlbridge.engine.previews import _FLUX_FACTORS, latent_preview
from controlbridge.server.outputs import read_job
from helpers import blockout_images, quick_settings

TINY_FLUX_VAE_FACTOR = 4      # the tiny FLUX VAE downsamples by 4 (three blocks)


def test_packed_flux_latents_preview_as_their_unpacked_image():
    from diffusers import FluxPipeline
    torch.manual_seed(0)
    h, w = 6, 10                                       # latent grid of a 80x48 image at VAE factor 8
    latents = torch.randn(1, 16, h, w)
    red = torch.tensor(_FLUX_FACTORS)[:, 0]
    latents[:, :, :, : w // 2] += 30.0 * red[None, :, None, None]      # the left half pushed towards red
    packed = FluxPipeline._pack_latents(latents, 1, 16, h, w)          # what the pipeline steps on
    assert packed.shape == (1, h * w // 4, 64)
    preview = latent_preview(packed, "flux", size=(w * 8, h * 8), vae_scale_factor=8)
    assert preview.shape == (h, w, 3) and preview.dtype == np.uint8
    assert np.array_equal(preview, latent_preview(latents, "flux"))    # same pixels as the unpacked latents
    assert preview[:, : w // 2, 0].mean() > preview[:, w // 2:, 0].mean() + 20


def test_flux_job_sends_previews_at_its_working_size(server):
    events = []
    with Client(server.url) as c:
        result = c.run(quick_settings(model="tiny-flux", cfg=3.5, negative_prompt="", steps=3, preview_every=1),
                       blockout_images(96, 64), events.append)
    assert (result.image.width, result.image.height) == (96, 64)
    work_w, work_h = read_job(result.saved_path)["working_size"]
    previews = [e.preview for e in events if isinstance(e, Progress) and e.preview is not None]
    assert len(previews) == 3
    for p in previews:
        assert p.encoding == "jpeg"
        image = np.asarray(Image.open(io.BytesIO(p.data)).convert("RGB"))
        assert image.shape == (work_h // TINY_FLUX_VAE_FACTOR, work_w // TINY_FLUX_VAE_FACTOR, 3)
        assert image.std() > 2.0                       # an image, not a constant
