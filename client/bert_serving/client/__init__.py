"""bert_serving.client: the drop-in bert-as-service 1.10 client for the Triton-based bert-serving server.

``from bert_serving.client import BertClient, ConcurrentBertClient`` keeps working; see docs/CLIENT.md for what changed.
``HTTPBertClient`` has the same encode API over the server's HTTP API (docs/HTTP.md).
Importing this package loads numpy, pyzmq and the standard library only (a test holds it to that).
"""
from ._version import __version__
from .bert_client import BertClient, Response
from .errors import (AuthenticationError, BertClientError, BertTimeoutError, ClientClosedError, InputError,
                     InputTypeError, InputValueError, ProtocolError, ServerError, VersionMismatchError)
from .http_client import HTTPBertClient
from .pool import ConcurrentBertClient

__all__ = [
    "__version__",
    "AuthenticationError",
    "BertClient",
    "BertClientError",
    "BertTimeoutError",
    "ClientClosedError",
    "ConcurrentBertClient",
    "HTTPBertClient",
    "InputError",
    "InputTypeError",
    "InputValueError",
    "ProtocolError",
    "Response",
    "ServerError",
    "VersionMismatchError",
]
