"""ControlBridge wire protocol v1 and its client: standard library + websockets only.

Add-ons vendor this package into Blender's and Unreal's Pythons, so it imports nothing heavier and uses
relative imports only. See PROTOCOL.md beside this folder for the wire format.
"""
from .client import DEFAULT_URL, Client
from .errors import (AuthenticationFailed, ConnectionFailed, ControlBridgeError, ErrorCode, JobFailed, ProtocolError,
                     ProtocolMismatch)
from .images import ENCODINGS, SCALAR_ENCODINGS, ImageAttachment
from .messages import (PROTOCOL_VERSION, Accepted, Cancel, Cancelled, Capabilities, Disconnected, Generate, Hello,
                       HistoryEntry, HistoryGet, HistoryItem, HistoryPage, HistoryRequest, JobError, LiveFrame,
                       LiveReady, LiveResult, LiveSkipped, LiveStart, LiveStop, Ping, Pong, Progress, Result, Welcome)
from .settings import RANDOM_SEED, ControlNetSettings, HiresSettings, JobSettings, LoraSettings, StyleSettings

__version__ = "0.1.0"
