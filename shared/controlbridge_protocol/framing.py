"""Frames <-> messages, with no I/O (the sans-I/O core both the server and the client wrap).

A message is one text frame holding JSON. When it carries images, its "attachments" list describes them
and exactly that many binary frames follow it, in the same order, before the sender's next text frame.
Senders send a message and its attachments as one unit (one sender at a time per connection).
"""
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Type, Union

from .errors import ErrorCode, ProtocolError
from .images import ImageAttachment
from .messages import Message

Frame = Union[str, bytes]
MAX_ATTACHMENTS = 8


def encode(message: Message) -> List[Frame]:
    """The frames to send for `message`, in order."""
    attachments = message.attachments()
    d = message.to_json()
    if attachments:
        d["attachments"] = [a.descriptor() for a in attachments]
    return [json.dumps(d, separators=(",", ":"))] + [a.data for a in attachments]


@dataclass
class _Pending:
    """A text frame whose binary attachments are still arriving."""

    header: dict
    descriptors: List[dict]
    received: List[bytes] = field(default_factory=list)
    discard: bool = False   # its header was already rejected: swallow the frames that follow it


class MessageReader:
    """Feed it every received frame; it returns decoded messages and ProtocolErrors.

    Errors carry `request_id` when the bad message named one, so a server can tell the client which of its
    requests failed. One bad message never poisons the ones after it.
    """

    def __init__(self, registry: Dict[str, Type[Message]], max_attachments: int = MAX_ATTACHMENTS,
                 max_attachment_bytes: Optional[int] = None):
        self._registry = registry
        self._max_attachments = max_attachments
        self._max_attachment_bytes = max_attachment_bytes   # all attachments of one message together
        self._pending: Optional[_Pending] = None

    @property
    def waiting_for_attachments(self) -> bool:
        return self._pending is not None and not self._pending.discard

    @property
    def pending_bytes(self) -> int:
        """Bytes of attachments received for a message that is not complete yet."""
        return sum(len(d) for d in self._pending.received) if self._pending else 0

    def give_up_waiting(self, why: str) -> List[ProtocolError]:
        """Drop a message whose attachments are overdue (and the bytes already received for it)."""
        pending, self._pending = self._pending, None
        if pending is None or pending.discard:
            return []
        missing = [d["name"] for d in pending.descriptors[len(pending.received):]]
        return [_error(ErrorCode.MISSING_ATTACHMENT,
                       f"'{pending.header.get('type')}' announced {len(pending.descriptors)} attachment(s) but "
                       f"{', '.join(repr(m) for m in missing)} did not arrive {why}", pending.header)]

    def feed(self, frame: Frame) -> List[Union[Message, ProtocolError]]:
        if isinstance(frame, (bytes, bytearray, memoryview)):
            return self._feed_binary(bytes(frame))
        out: List[Union[Message, ProtocolError]] = []
        pending, self._pending = self._pending, None
        if pending is not None and not pending.discard:
            missing = [d["name"] for d in pending.descriptors[len(pending.received):]]
            out.append(_error(ErrorCode.MISSING_ATTACHMENT,
                              f"'{pending.header.get('type')}' announced {len(pending.descriptors)} attachment(s) but "
                              f"the next message came before {', '.join(repr(m) for m in missing)} arrived",
                              pending.header))
        out.extend(self._feed_text(frame))
        return out

    def _feed_text(self, text: str) -> List[Union[Message, ProtocolError]]:
        try:
            header = json.loads(text)
        except ValueError as e:
            return [_error(ErrorCode.BAD_MESSAGE, f"malformed JSON in text frame: {e}", {})]
        except RecursionError:   # "[[[[..." many thousands deep: json recurses once per level
            return [_error(ErrorCode.BAD_MESSAGE, "JSON nested too deeply in text frame", {})]
        if not isinstance(header, dict):
            return [_error(ErrorCode.BAD_MESSAGE, "a message must be a JSON object with a 'type'", {})]
        descriptors = header.get("attachments", [])
        if not isinstance(descriptors, list):
            return [_error(ErrorCode.BAD_MESSAGE, "'attachments' must be a list of image descriptors", header)]
        pending = _Pending(header, descriptors)
        try:
            if len(descriptors) > self._max_attachments:
                raise ProtocolError(ErrorCode.LIMIT_EXCEEDED,
                                    f"{len(descriptors)} attachments; at most {self._max_attachments} per message")
            for d in descriptors:
                ImageAttachment.check_descriptor(d)
            announced = sum(d["bytes"] for d in descriptors)
            if self._max_attachment_bytes is not None and announced > self._max_attachment_bytes:
                raise ProtocolError(ErrorCode.LIMIT_EXCEEDED,
                                    f"the attachments announced come to {announced} bytes; at most "
                                    f"{self._max_attachment_bytes} per message")
            names = [d["name"] for d in descriptors]
            if len(set(names)) != len(names):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"attachment names repeat: {names}")
            self._message_class(header)
        except ProtocolError as e:
            pending.discard = True
            if descriptors:
                self._pending = pending
            return [_error(e.code, e.message, header)]
        if descriptors:
            self._pending = pending
            return []
        return self._complete(pending)

    def _feed_binary(self, data: bytes) -> List[Union[Message, ProtocolError]]:
        pending = self._pending
        if pending is None:
            return [_error(ErrorCode.MISSING_ATTACHMENT,
                           "binary frame with no message announcing it (send the JSON message first)", {})]
        pending.received.append(b"" if pending.discard else data)   # a refused message's bytes are not kept
        if len(pending.received) < len(pending.descriptors):
            return []
        self._pending = None
        return [] if pending.discard else self._complete(pending)

    def _message_class(self, header: dict) -> Type[Message]:
        kind = header.get("type")
        if not isinstance(kind, str):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message needs a 'type' string")
        if kind not in self._registry:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE,
                                f"unknown message type {kind!r}; expected one of {', '.join(sorted(self._registry))}")
        return self._registry[kind]

    def _complete(self, pending: _Pending) -> List[Union[Message, ProtocolError]]:
        try:
            attachments = [ImageAttachment.from_descriptor(d, data)
                           for d, data in zip(pending.descriptors, pending.received)]
            return [self._message_class(pending.header).from_json(pending.header, attachments)]
        except ProtocolError as e:
            return [_error(e.code, e.message, pending.header)]
        except (TypeError, ValueError) as e:   # a server message whose fields have the wrong shape
            return [_error(ErrorCode.BAD_MESSAGE, f"malformed '{pending.header.get('type')}' message: {e}",
                           pending.header)]


def _error(code: str, message: str, header: dict) -> ProtocolError:
    err = ProtocolError(code, message)
    rid = header.get("request_id")
    err.request_id = rid if isinstance(rid, str) else None
    return err
