"""The bert-as-service 1.10 ZeroMQ wire format: the one place both the client and the bridge encode and decode frames.

Requests (client PUSH -> server PULL) are ``[ID, MSG, RID, LEN]``; replies (server XPUB -> client SUB) start with ``ID``
and end with ``RID``: ``[ID, JSON, RID]`` for config/status/errors, ``[ID, JSON{dtype,shape,tokens}, bytes, RID]`` for
embeddings. See shared/reference/zmq-wire-protocol.md for the measured contract.

Only numpy and the standard library are imported here: the client must stay light.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import ProtocolError

__all__ = [
    "COMMANDS",
    "ERROR_KEY",
    "SERVER_VERSION",
    "SHOW_CONFIG",
    "SHOW_STATUS",
    "TERMINATION",
    "ProtocolError",
    "Reply",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_error_reply",
    "encode_json_reply",
    "encode_ndarray_reply",
    "encode_request",
    "reply_request_id",
    "request_address",
]

SERVER_VERSION = "1.10.0"

SHOW_CONFIG = b"SHOW_CONFIG"
SHOW_STATUS = b"SHOW_STATUS"
TERMINATION = b"TERMINATION"
COMMANDS = (SHOW_CONFIG, SHOW_STATUS, TERMINATION)

# Key of the JSON object that marks an error reply. The protocol has no error frame; see encode_error_reply.
ERROR_KEY = "error"

Texts = Union[Sequence[str], Sequence[Sequence[str]]]


@dataclass(frozen=True)
class Request:
    """A decoded request, as the server sees it."""

    identity: bytes
    message: bytes  # a command literal or a JSON array (UTF-8)
    request_id: bytes  # ASCII decimal, echoed back verbatim
    length: int  # number of sentences the client says it sent (0 for commands)

    @property
    def is_command(self) -> bool:
        return self.message in COMMANDS

    def texts(self) -> list:
        """The JSON payload of an encode request, parsed. ProtocolError when it is not a JSON array, or when LEN
        disagrees with its length (the original server then waited for sentences that never came, or replied early)."""
        try:
            texts = json.loads(self.message.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, an int of 5,000 digits
            raise ProtocolError(f"the request is not UTF-8 JSON: {e}") from e
        if not isinstance(texts, list):
            raise ProtocolError(f"the request must be a JSON array of sentences, got {type(texts).__name__}")
        if len(texts) != self.length:
            raise ProtocolError(f"the LEN frame says {self.length} sentences but the payload has {len(texts)}")
        return texts


@dataclass(frozen=True)
class Reply:
    """A decoded reply: a dict (config, status, error) or an embedding array, with the tokens the server sent."""

    identity: bytes
    request_id: int
    payload: Any  # dict for config/status/error replies, np.ndarray for embeddings
    tokens: Any = ""

    @property
    def error(self) -> Optional[str]:
        if isinstance(self.payload, dict) and ERROR_KEY in self.payload:
            return str(self.payload[ERROR_KEY])
        return None

    @property
    def error_type(self) -> str:
        return str(self.payload.get("type", "ServerError")) if self.error is not None else ""


def encode_request(identity: bytes, texts: Union[bytes, Texts], request_id: int) -> list:
    """Frames of a request: a command literal (bytes) or a list of sentences / token lists."""
    if isinstance(texts, bytes):
        return [identity, texts, b"%d" % request_id, b"0"]
    return [identity, json.dumps(texts, ensure_ascii=False).encode("utf-8"), b"%d" % request_id, b"%d" % len(texts)]


def decode_request(frames: Sequence[bytes]) -> Request:
    if len(frames) != 4:
        raise ProtocolError(f"a request has 4 frames [ID, MSG, RID, LEN], got {len(frames)}")
    identity, message, request_id, length = frames
    if not identity:
        raise ProtocolError("the identity frame is empty")
    if not request_id.isdigit() or not length.isdigit():
        raise ProtocolError(f"RID and LEN must be ASCII decimals, got {request_id[:20]!r} and {length[:20]!r}")
    return Request(identity=identity, message=message, request_id=request_id, length=int(length))


def request_address(frames: Sequence[bytes]) -> Optional[tuple[bytes, bytes]]:
    """(ID, RID) of a request that may be malformed, when a reply could reach its sender: frame 0 a non-empty
    identity, frame 2 an ASCII decimal RID. None when the frames do not say where to answer."""
    if len(frames) < 3 or not frames[0] or not frames[2].isdigit():
        return None
    return bytes(frames[0]), bytes(frames[2])


def encode_json_reply(identity: bytes, obj: dict, request_id: bytes) -> list:
    return [identity, json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8"), request_id]


def encode_error_reply(identity: bytes, message: str, error_type: str, request_id: bytes) -> list:
    """An error reply both clients raise on, with the server's message.

    The unmodified 1.10 client passes ``header['dtype']`` straight to ``np.frombuffer``, so a dtype that *is* the
    message makes it raise ``TypeError: data type 'bert-serving error (...): <message>' not understood`` at once,
    instead of hanging or raising a bare ``KeyError``. Our client reads ``error`` and ``type``.
    """
    # numpy reads a comma in a dtype string as a structured dtype and raises ValueError instead of TypeError; no
    # other character makes it parse a string that starts with "bert-serving error".
    readable = message.replace(",", ";")
    header = {"dtype": f"bert-serving error ({error_type}): {readable}", ERROR_KEY: message, "type": error_type}
    return encode_json_reply(identity, header, request_id)


def encode_ndarray_reply(identity: bytes, array: np.ndarray, request_id: bytes, tokens: Any = "") -> list:
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    header = {"dtype": str(array.dtype), "shape": list(array.shape), "tokens": tokens}
    return [identity, json.dumps(header, ensure_ascii=False).encode("utf-8"), memoryview(array).cast("B"), request_id]


def reply_request_id(frames: Sequence[bytes]) -> Optional[int]:
    """The RID of a reply (its last frame), or None when the frames cannot be a reply at all."""
    if len(frames) not in (3, 4):
        return None
    try:
        return int(frames[-1])
    except ValueError:
        return None


def decode_reply(frames: Sequence[bytes]) -> Reply:
    """Parse a reply. Embedding arrays come back writable (the 1.10 client returned read-only views)."""
    request_id = reply_request_id(frames)
    if request_id is None:
        raise ProtocolError(f"a reply is [ID, JSON, RID] or [ID, JSON, bytes, RID], got {len(frames)} frames")
    try:
        header = json.loads(bytes(frames[1]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"the reply header is not UTF-8 JSON: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolError(f"the reply header must be a JSON object, got {type(header).__name__}")
    if len(frames) == 3:
        return Reply(identity=bytes(frames[0]), request_id=request_id, payload=header)
    try:
        # copy(): frombuffer over immutable bytes is read-only, and users write into embeddings (normalize in place).
        array = np.frombuffer(frames[2], dtype=np.dtype(str(header["dtype"]))).reshape(header["shape"]).copy()
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"the embedding reply does not match its header {header!r}: {e!r}") from e
    return Reply(identity=bytes(frames[0]), request_id=request_id, payload=array, tokens=header.get("tokens", ""))
