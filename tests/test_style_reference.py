"""Style reference (IP-Adapter): settings on the wire, library detection, and real jobs on tiny models."""
import json

import pytest

from controlbridge_protocol import ErrorCode, JobSettings, ProtocolError, StyleSettings


def test_style_settings_survive_the_wire_and_are_strict():
    s = JobSettings(prompt="a", style=StyleSettings(weight=0.8, model="ip-adapter_sd15.safetensors"))
    back = JobSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and isinstance(back.style, StyleSettings)
    assert JobSettings.from_dict({"prompt": "a", "style": None}).style is None
    assert JobSettings.from_dict({"prompt": "a", "style": {}}).style == StyleSettings(weight=0.6)
    with pytest.raises(ProtocolError, match="settings.style.weight must be a number") as e:
        JobSettings.from_dict({"prompt": "a", "style": {"weight": "strong"}})
    assert e.value.code == ErrorCode.BAD_MESSAGE
    with pytest.raises(ProtocolError, match="settings.style: unknown field"):
        JobSettings.from_dict({"prompt": "a", "style": {"scale": 1}})


def test_capabilities_carry_the_style_entry():
    from controlbridge_protocol import Capabilities
    caps = Capabilities(style={"families": ["sd15"], "adapters": [{"name": "a.safetensors", "family": "sd15"}]})
    assert Capabilities.from_dict(json.loads(json.dumps(caps.to_dict()))).style == caps.style
