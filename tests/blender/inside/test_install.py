"""The zip installs like a user's extension, with its dependencies bundled."""
import os
import subprocess
import sys
from pathlib import Path

import bpy

from conftest import ADDON_MODULE


def test_zip_passes_blenders_own_validation():
    tool = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    proc = subprocess.run([sys.executable, str(tool), "validate", os.environ["CONTROLBRIDGE_ADDON_ZIP"]],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout


def test_installed_and_enabled_as_an_extension(installed, cb):
    assert ADDON_MODULE in bpy.context.preferences.addons
    assert Path(cb.package.__file__).parent == installed
    user = Path(os.environ["BLENDER_USER_RESOURCES"]).resolve()
    assert installed.resolve().is_relative_to(user)
    # The shared protocol package travels inside the add-on, imported relatively.
    assert (installed / "vendor" / "controlbridge_protocol" / "client.py").is_file()
    assert cb.protocol.__name__ == f"{ADDON_MODULE}.vendor.controlbridge_protocol"
    import tomllib
    manifest = tomllib.loads((installed / "blender_manifest.toml").read_text())
    assert manifest["wheels"] == ["./wheels/websockets-15.0.1-py3-none-any.whl"]
    assert "network" in manifest["permissions"]
    assert cb.bridge.addon_version() == manifest["version"]


def test_websockets_comes_from_the_bundled_wheel(cb):
    import websockets
    # Blender installs the manifest's wheels into the user folder's extension site-packages.
    user = Path(os.environ["BLENDER_USER_RESOURCES"]).resolve()
    assert Path(websockets.__file__).resolve().is_relative_to(user / "extensions" / ".local"), websockets.__file__
    assert websockets.version.version == "15.0.1"


def test_ui_is_registered(cb):
    assert hasattr(bpy.types, "VIEW3D_PT_controlbridge")
    for op in ("generate", "variation", "cancel", "connect", "history_apply", "history_load",
               "remove_projection"):
        assert hasattr(bpy.ops.controlbridge, op)
    prefs = cb.preferences.get()
    assert prefs.server_url.startswith("ws://")
    assert hasattr(bpy.context.scene, "controlbridge")


def test_panel_draws_only_existing_properties(installed, cb):
    """The panels cannot be drawn headless (no UI); at least every property they name must exist."""
    import re
    source = (installed / "panels.py").read_text()
    settings = {p.identifier for p in cb.properties.ControlBridgeSettings.bl_rna.properties}
    server = {p.identifier for p in cb.properties.ControlBridgeServerInfo.bl_rna.properties}
    names = set()
    for match in re.finditer(r'\.prop(?:_search)?\(p, f?"([\w{}]+)"', source):
        kinds = ("lineart", "softedge") if match.group(1) == "{name}_estimator" else cb.properties.CONTROL_KINDS
        names |= {match.group(1).replace("{name}", n) for n in kinds}
    assert len(names) > 20 and names <= settings, names - settings
    searched = set(re.findall(r'prop_search\(p, f?"[\w{}]+", info, "(\w+)"', source))
    assert searched and searched <= server
    used = set(re.findall(r"\binfo\.(\w+)", source)) | set(re.findall(r"\bst\.(\w+)", source))
    state_fields = set(cb.bridge.State.__dataclass_fields__) | {"active"}
    assert used <= server | state_fields, used - server - state_fields
    operators = set(re.findall(r'operator\("controlbridge\.(\w+)"', source))
    assert operators and all(hasattr(bpy.ops.controlbridge, op) for op in operators)


def test_panels_name_only_existing_icons_and_engine(installed, cb):
    """A wrong icon name fails only when a panel draws, which headless Blender never does: check them here."""
    import re
    source = (installed / "panels.py").read_text()
    icons = {i.identifier for i in bpy.types.UILayout.bl_rna.functions["prop"].parameters["icon"].enum_items}
    named = set(re.findall(r'icon="(\w+)"', source))
    assert len(named) > 10 and named <= icons, named - icons
    r = bpy.context.scene.render
    before = r.engine
    r.engine = "CONTROLBRIDGE"              # a registered engine (the RNA enum lists only built-in ones)
    r.engine = before
    assert "CONTROLBRIDGE" in bpy.types.RENDER_PT_format.COMPAT_ENGINES   # Blender's Format panel shows for it
