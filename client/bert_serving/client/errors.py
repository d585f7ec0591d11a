"""The client's one exception tree: everything ``bert_serving.client`` raises on purpose derives from BertClientError.

Each error also derives from the builtin the 1.10 client raised in the same situation (TimeoutError, ValueError,
TypeError, AttributeError), so existing ``except`` clauses keep working while new code can catch precisely.
zmq and protocol failures are translated into this tree where the client calls them, with ``raise ... from e``.
"""
from __future__ import annotations

from typing import Iterable, Optional

__all__ = [
    "AuthenticationError",
    "BertClientError",
    "BertTimeoutError",
    "ClientClosedError",
    "InputError",
    "InputTypeError",
    "InputValueError",
    "ProtocolError",
    "ServerError",
    "VersionMismatchError",
]


class BertClientError(Exception):
    """Base of every error the client raises."""


class BertTimeoutError(BertClientError, TimeoutError):
    """No reply within the client's ``timeout``. The requests waited for are abandoned: late replies are ignored."""

    def __init__(self, message: str, *, timeout_ms: int, request_ids: Iterable[int] = ()):
        super().__init__(message)
        self.timeout_ms = timeout_ms
        self.request_ids = tuple(sorted(request_ids))


class AuthenticationError(BertClientError, ConnectionError):
    """The server does not accept this client's CURVE keys (a key it does not allow, or a wrong server key).

    The 1.10 protocol cannot carry this as a reply: the client reads it from its sockets' handshake events."""


class ServerError(BertClientError):
    """The server answered a request with an error; ``message`` is the server's own text, ``type`` its kind."""

    def __init__(self, message: str, *, error_type: str = "ServerError", request_id: Optional[int] = None):
        super().__init__(f"{error_type}: {message}")
        self.message = message
        self.type = error_type
        self.request_id = request_id


class InputError(BertClientError):
    """The texts (or an argument) given to the client are invalid; nothing was sent."""


class InputValueError(InputError, ValueError):
    """An empty list, a blank sentence or token, an unknown option value."""


class InputTypeError(InputError, TypeError):
    """Not a list, or elements that are not strings (or not lists of strings when ``is_tokenized=True``)."""


class VersionMismatchError(BertClientError, AttributeError):
    """The server speaks another protocol version (the 1.10 client raised AttributeError here)."""


class ProtocolError(BertClientError, ValueError):
    """Frames that do not follow the wire format (shared with the bridge through ``protocol``)."""


class ClientClosedError(BertClientError, RuntimeError):
    """The client was used after ``close()``."""
