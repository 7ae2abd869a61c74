# tests/blender/inside runs inside Blender's Python (the `bpy` module, its own environment), started as a
# subprocess by test_blender_addon.py; the main test run must not collect it.
collect_ignore = ["inside"]
