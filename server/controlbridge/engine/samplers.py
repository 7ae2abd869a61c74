"""ComfyUI sampler names -> diffusers schedulers. A fresh scheduler per job: schedulers keep per-run state."""
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LCMScheduler, UniPCMultistepScheduler)

# name -> (scheduler class, config overrides). Karras variants only change the sigma spacing.
SAMPLERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler,
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "ddim": (DDIMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
    # Few-step models (SD-Turbo / SDXL-Turbo, Hyper-SD, LCM-LoRA) are distilled for timesteps that start at the
    # very end of the schedule ("trailing", close to ComfyUI's sgm_uniform): 1-4 steps at CFG 1.
    "euler_a_trailing": (EulerAncestralDiscreteScheduler, {"timestep_spacing": "trailing"}),
    "ddim_trailing": (DDIMScheduler, {"timestep_spacing": "trailing"}),
    "lcm_trailing": (LCMScheduler, {"timestep_spacing": "trailing"}),
}


def make_scheduler(name: str, base_config):
    """A new scheduler for `name`, built on the model's own scheduler config (betas, offsets, prediction type)."""
    cls, overrides = SAMPLERS[name]
    return cls.from_config(base_config, **overrides)


LCM_ORIGINAL_STEPS = 50   # LCMScheduler's default original_inference_steps (the distillation schedule)


def step_limit(name: str, denoise: float):
    """The most steps a sampler can run at this denoise, or None for no limit of its own.
    LCM picks its steps from the distillation schedule, of which img2img uses the `denoise` fraction."""
    if name in ("lcm", "lcm_trailing"):
        return max(1, int(LCM_ORIGINAL_STEPS * denoise))
    return None
