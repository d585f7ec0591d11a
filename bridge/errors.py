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


class ModelNotFound(InvalidRequest):
    """The request names a model this server does not serve (the message lists those it does)."""

    kind = "ModelNotFound"


class BackendUnavailable(BridgeError):
    """Triton is down, unreachable or not ready: retrying later may succeed."""

    kind = "BackendUnavailable"


class RequestTooLarge(BridgeError):
    """The request is over a configured size limit (its bytes, sentences, or characters of one sentence); the message
    names the limit and its flag."""

    kind = "RequestTooLarge"


class Unauthorized(BridgeError):
    """The request lacks the API key the server was started with."""

    kind = "Unauthorized"


class Overloaded(BridgeError):
    """The service refuses or gives up on a request because of load: the same request may succeed later."""

    kind = "Overloaded"


class TooManyConcurrentRequests(Overloaded):
    """More concurrent HTTP encodes than -http_max_connect: refused at once instead of queued."""

    kind = "TooManyConcurrentRequests"


class ServerBusy(Overloaded):
    """More sentences or bytes in flight across all clients than --max-inflight-sentences / --max-inflight-bytes:
    refused at once instead of queued."""

    kind = "ServerBusy"


class BackendOverloaded(Overloaded):
    """Triton did not answer in time: the request may succeed when the load is lower."""

    kind = "BackendOverloaded"


class BackendError(BridgeError):
    """Triton answered with an error for a well-formed request."""

    kind = "BackendError"


class ClientGone(BridgeError):
    """The client left before its reply was ready (its HTTP connection closed, or the last subscriber of its ZeroMQ
    identity left): the request was stopped and no reply can reach it."""

    kind = "ClientGone"


class StartupError(BridgeError):
    """The service cannot start: bad flags, a missing model, a tritonserver that would not come up."""

    kind = "StartupError"


class ShuttingDown(BridgeError):
    """The service is stopping: the request was not (or not completely) served; another instance, or a restarted
    one, will serve it."""

    kind = "ShuttingDown"
