"""The bridge's closed set of errors. Every protocol front end maps these, and only these, to its replies.

Third-party errors (tritonclient, zmq, tokenizers) are translated into this tree at the one place that calls them,
with ``raise ... from e``.
"""


class BridgeError(Exception):
    """Base of every error the bridge reports to a client."""

    kind = "BridgeError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(BridgeError):
    """The client sent something the service cannot encode: the client's fault, the service keeps serving."""

    kind = "InvalidRequest"


class BackendUnavailable(BridgeError):
    """Triton is down, unreachable or not ready: retrying later may succeed."""

    kind = "BackendUnavailable"


class BackendOverloaded(BridgeError):
    """Triton did not answer in time: the request may succeed when the load is lower."""

    kind = "BackendOverloaded"


class BackendError(BridgeError):
    """Triton answered with an error for a well-formed request."""

    kind = "BackendError"


class StartupError(BridgeError):
    """The service cannot start: bad flags, a missing model, a tritonserver that would not come up."""

    kind = "StartupError"


class ShuttingDown(BridgeError):
    """The service is stopping: the request was not (or not completely) served; another instance, or a restarted
    one, will serve it."""

    kind = "ShuttingDown"
