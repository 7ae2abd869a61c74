"""ControlBridge: a local ControlNet img2img server for Blender and Unreal, with its CLI."""
__version__ = "0.1.0"
