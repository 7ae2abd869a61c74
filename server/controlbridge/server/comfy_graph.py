"""A saved job as a ComfyUI API-format graph ("Open in ComfyUI"): embedded in the result PNG as the `prompt` text
chunk, which ComfyUI loads when the PNG is dropped on it (the same chunk ComfyUI's own SaveImage writes).

API format: {node id: {"class_type", "inputs", "_meta"}}; an input is a value or a link [node id, output index].
Node and input names are ComfyUI's own (nodes.py and comfy_extras/nodes_canny.py, nodes_upscale_model.py);
COMFY_NODES below lists every one this module writes, with its outputs, and tests check the graph against it.

Same job, not same pixels: ComfyUI's noise and samplers are its own. Images are named as saved beside the result
(`<stem>.inputs/...`): copy that folder into ComfyUI's `input/`. Two readings differ from ComfyUI's defaults:
KSampler gets the job's `steps` and `denoise` (ComfyUI then runs all `steps` over the last `denoise` of the
schedule, where diffusers runs steps x denoise of them), and `hires.steps` 0 is written as the base steps.
"""
from typing import Dict, Optional

from controlbridge_protocol import JobSettings

# class_type -> (required inputs, outputs in order), as ComfyUI defines them.
COMFY_NODES: Dict[str, tuple] = {
    "CheckpointLoaderSimple": (("ckpt_name",), ("MODEL", "CLIP", "VAE")),
    "VAELoader": (("vae_name",), ("VAE",)),
    "LoraLoader": (("model", "clip", "lora_name", "strength_model", "strength_clip"), ("MODEL", "CLIP")),
    "CLIPTextEncode": (("text", "clip"), ("CONDITIONING",)),
    "LoadImage": (("image",), ("IMAGE", "MASK")),
    "ImageScale": (("image", "upscale_method", "width", "height", "crop"), ("IMAGE",)),
    "ImageScaleBy": (("image", "upscale_method", "scale_by"), ("IMAGE",)),
    "Canny": (("image", "low_threshold", "high_threshold"), ("IMAGE",)),
    "ControlNetLoader": (("control_net_name",), ("CONTROL_NET",)),
    "ControlNetApplyAdvanced": (("positive", "negative", "control_net", "image", "strength", "start_percent",
                                 "end_percent"), ("CONDITIONING", "CONDITIONING")),
    "VAEEncode": (("pixels", "vae"), ("LATENT",)),
    "KSampler": (("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                  "latent_image", "denoise"), ("LATENT",)),
    "LatentUpscaleBy": (("samples", "upscale_method", "scale_by"), ("LATENT",)),
    "UpscaleModelLoader": (("model_name",), ("UPSCALE_MODEL",)),
    "ImageUpscaleWithModel": (("upscale_model", "image"), ("IMAGE",)),
    "VAEDecode": (("samples", "vae"), ("IMAGE",)),
    "SaveImage": (("images", "filename_prefix"), ()),
}

# Our sampler base names -> ComfyUI's sampler_name; the suffix picks ComfyUI's scheduler.
COMFY_SAMPLERS = {"euler": "euler", "euler_a": "euler_ancestral", "heun": "heun", "dpmpp_2m": "dpmpp_2m",
                  "dpmpp_2m_sde": "dpmpp_2m_sde", "ddim": "ddim", "unipc": "uni_pc", "lcm": "lcm"}
COMFY_SCHEDULERS = {"_karras": "karras", "_trailing": "sgm_uniform"}   # none of these: "normal"


def comfy_sampler(sampler: str) -> tuple:
    """Our sampler name -> (ComfyUI sampler_name, scheduler)."""
    for suffix, scheduler in COMFY_SCHEDULERS.items():
        if sampler.endswith(suffix):
            return COMFY_SAMPLERS[sampler[:-len(suffix)]], scheduler
    return COMFY_SAMPLERS[sampler], "normal"


class _Graph:
    def __init__(self):
        self.nodes: Dict[str, dict] = {}

    def add(self, class_type: str, title: str = "", **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title or class_type}}
        return node_id


def comfy_prompt(settings: JobSettings, metadata: dict) -> dict:
    """The job in `metadata` (outputs.job_metadata) as a ComfyUI API-format prompt."""
    g = _Graph()
    inputs, controls = metadata.get("inputs", {}), metadata.get("controls", {})
    work_w, work_h = metadata["working_size"]
    out_w, out_h = metadata["size"]

    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=settings.model or metadata["model"]["name"])
    model, clip, vae = [ckpt, 0], [ckpt, 1], [ckpt, 2]
    if settings.vae:
        vae = [g.add("VAELoader", vae_name=settings.vae), 0]
    for lora in settings.loras:      # diffusers applies a LoRA's weight to the UNet and the text encoder alike
        node = g.add("LoraLoader", model=model, clip=clip, lora_name=lora.name, strength_model=lora.weight,
                     strength_clip=lora.weight)
        model, clip = [node, 0], [node, 1]
    positive = [g.add("CLIPTextEncode", "Positive", text=settings.prompt, clip=clip), 0]
    negative = [g.add("CLIPTextEncode", "Negative", text=settings.negative_prompt, clip=clip), 0]

    def load(file: str, title: str) -> list:
        # The server centre-crops to the output's aspect and resizes to the working size; so does ImageScale.
        loaded = g.add("LoadImage", title, image=file)
        return [g.add("ImageScale", image=[loaded, 0], upscale_method="lanczos", width=work_w, height=work_h,
                      crop="center"), 0]

    color = load(_file(inputs, "color"), "Color")
    for name, cn in settings.controlnets.items():
        made_here = getattr(cn, "input", None) is None and name not in inputs and name not in settings.estimate
        if name == "canny" and made_here:     # edges made from the color, as the server does (thresholds kept)
            image = [g.add("Canny", image=color, low_threshold=settings.canny_low / 255,
                           high_threshold=settings.canny_high / 255), 0]
        else:   # what this ControlNet saw (a raw depth buffer cannot be loaded by LoadImage), else its input
            image = load(controls.get(name) or _file(inputs, name), f"{name} map")
        loader = g.add("ControlNetLoader", f"{name} ControlNet", control_net_name=cn.model or name)
        apply = g.add("ControlNetApplyAdvanced", f"{name} ControlNet", positive=positive, negative=negative,
                      control_net=[loader, 0], image=image, strength=cn.weight, start_percent=cn.start,
                      end_percent=cn.end)
        positive, negative = [apply, 0], [apply, 1]

    sampler_name, scheduler = comfy_sampler(settings.sampler)

    def sample(latent: list, steps: int, denoise: float, title: str) -> list:
        return [g.add("KSampler", title, model=model, seed=settings.seed, steps=steps, cfg=settings.cfg,
                      sampler_name=sampler_name, scheduler=scheduler, positive=positive, negative=negative,
                      latent_image=latent, denoise=denoise), 0]

    latent = sample([g.add("VAEEncode", pixels=color, vae=vae), 0], settings.steps, settings.denoise, "KSampler")
    hires = settings.hires
    if hires is not None:
        if hires.upscaler == "latent":
            bigger = [g.add("LatentUpscaleBy", latent, samples=latent, upscale_method="bislerp",
                            scale_by=hires.scale), 0]
        else:
            pixels = [g.add("VAEDecode", samples=latent, vae=vae), 0]
            if hires.upscaler == "lanczos":
                pixels = [g.add("ImageScaleBy", image=pixels, upscale_method="lanczos", scale_by=hires.scale), 0]
            else:   # an upscale model multiplies by its own factor; then to the hires scale
                loader = g.add("UpscaleModelLoader", model_name=hires.upscaler)
                pixels = [g.add("ImageUpscaleWithModel", upscale_model=[loader, 0], image=pixels), 0]
                pixels = [g.add("ImageScale", image=pixels, upscale_method="lanczos",
                                width=round(work_w * hires.scale), height=round(work_h * hires.scale),
                                crop="disabled"), 0]
            bigger = [g.add("VAEEncode", pixels=pixels, vae=vae), 0]
        latent = sample(bigger, hires.steps or settings.steps, hires.denoise, "Hires fix")
    image = [g.add("VAEDecode", samples=latent, vae=vae), 0]
    image = [g.add("ImageScale", "Output size", image=image, upscale_method="lanczos", width=out_w, height=out_h,
                   crop="disabled"), 0]
    g.add("SaveImage", images=image, filename_prefix=settings.filename_prefix or "ControlBridge")
    return g.nodes


def _file(inputs: dict, name: str) -> str:
    entry: Optional[dict] = inputs.get(name)
    return entry["file"] if entry else f"{name}.png"    # not kept (a save that failed): the user picks one

