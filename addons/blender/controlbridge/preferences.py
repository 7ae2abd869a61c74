"""Add-on preferences: where the server is and the token it wants."""
import bpy
from bpy.props import StringProperty

ADDON_ID = __package__   # "bl_ext.<repo>.controlbridge" once installed as an extension


class ControlBridgePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    server_url: StringProperty(name="Server URL", default="ws://127.0.0.1:8765",
                               description="Websocket address of `controlbridge serve`")
    token: StringProperty(name="Token", subtype="PASSWORD", default="",
                          description="The server's --token, if it was started with one")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "server_url")
        layout.prop(self, "token")
        layout.label(text="Start the server with: controlbridge serve  (see the ControlBridge README)", icon="INFO")


def get(context=None) -> ControlBridgePreferences:
    return (context or bpy.context).preferences.addons[ADDON_ID].preferences


classes = (ControlBridgePreferences,)
