"""Tiny models of each family, built once per session into the session's private cache (see tests/conftest.py)."""
import pytest


@pytest.fixture(scope="module", autouse=True)
def quiet_libraries():
    """No per-file loading bars or notices in the test output; restored for the tests outside this folder."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    libs = (diffusers_logging, transformers_logging)
    before = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libs]
    for lib in libs:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    yield
    for lib, (verbosity, bars) in zip(libs, before):
        lib.set_verbosity(verbosity)
        if bars:
            lib.enable_progress_bar()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP's spinning threads make a
    0.15 s SDXL call take 2-10 s. Restored after each module, so other tests keep their setting."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_sd15(model_cache):
    from controlbridge.engine.tiny_model import ensure_tiny_model
    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tiny_sd15_pipe(tiny_sd15):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15.base, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_sdxl(model_cache):
    from controlbridge.library.tiny_families import ensure_tiny_family
    return ensure_tiny_family("sdxl")


@pytest.fixture(scope="session")
def tiny_flux(model_cache):
    from controlbridge.library.tiny_families import ensure_tiny_family
    return ensure_tiny_family("flux")
