"""The model library: what an artist already has on disk (a ComfyUI `models/` folder, diffusers folders,
single-file checkpoints), recognised from the files themselves and loaded offline.

- families:     which family (sd15, sdxl, flux) and kind a file or folder is, from its safetensors header
- scan:         list a ComfyUI-style models folder; resolve a job's model name safely
- single_file:  write / load one-file checkpoints in the original (non-diffusers) key layout, offline
- tiny_families: tiny random-weight SDXL and FLUX models (with ControlNets) for tests and demos
"""
