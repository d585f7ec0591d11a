"""The HTTP API over the service core: FastAPI on uvicorn, inside the bridge's own process and event loop.

A thin adapter, like zmq_frontend: it parses requests, calls the same ``EncodingService`` (never a second ZeroMQ hop,
never a thread per request) and renders replies. Routes (docs/HTTP.md):

- the original's ``POST /encode``, ``GET /status/server``, ``GET /status/client``;
- OpenAI's ``POST /v1/embeddings`` (and ``/embeddings``), ``GET /v1/models``;
- for models with heads: text-embeddings-inference's ``POST /rerank``, ``POST /predict`` and ``POST /embed_sparse``,
  Cohere's and Jina's ``POST /v1/rerank``;
- ``GET /health``, ``GET /ready``, ``GET /metrics`` (Prometheus), ``GET /status/activity`` (the dashboard's data);
- ``GET /dashboard``, ``GET /docs`` and ``GET /openapi.json``, with every asset served from this package or
  swagger-ui-bundle-v2, never from a CDN.

Each route serving a model finds it through the registry's one ``lookup`` (core/registry.py), which knows the tasks
each route serves: ``model`` names it (optional on ``/encode``). The bridge's closed error set becomes HTTP in one
place, ``error_response``: one table of status codes, the original's envelope ``{"description", "type", "status"}`` on
its routes and OpenAI's ``{"error": {...}}`` on /v1/*.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import logging
import socket
from pathlib import Path
from dataclasses import dataclass
from importlib import resources
import uuid
from typing import Any, Awaitable, Callable, Literal, Optional, Union

import numpy as np
import orjson
import pydantic_core
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response

from bert_serving.client.protocol import SHOW_STATUS
from bert_serving.client.protocol import Request as ZmqRequest

from .. import package_version
from ..config import ServerConfig
from ..errors import (BackendError, BackendUnavailable, BridgeError, ClientGone, InvalidRequest, ModelNotFound,
                     Overloaded, RequestTooLarge, ShuttingDown, StartupError, TooManyConcurrentRequests, Unauthorized)
from ..metrics import CONTENT_TYPE_LATEST, BridgeMetrics
from ..core.registry import ModelRegistry
from ..core.scores import labelled, ranking, sparse
from ..core.service import EncodeResult
from ..statistics import ServerStatistic

log = logging.getLogger("bert_bridge.http")

__all__ = ["HttpFrontend", "error_response", "HTTP_ERRORS"]

# Pages and descriptions that carry no data: served without the API key, so a browser can open them and the page
# itself asks for the key. Everything else but /health and /ready needs it.
PUBLIC_PATHS = ("/health", "/ready", "/dashboard", "/docs", "/openapi.json")
OPENAI_PATHS = ("/v1/", "/embeddings")
RETRY_AFTER_S = 1
TIMING_HEADERS = ("x-tokenization-time", "x-inference-time", "x-total-time")
TRUNCATED_HEADER = "x-truncated-inputs"  # how many inputs were longer than the model reads, and cut
SHUTDOWN_TIMEOUT_S = 30  # how long in-flight HTTP requests may take to finish when the bridge stops
LISTEN_BACKLOG = 2048
JSON = "application/json"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


# -- errors: the one mapping ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HttpError:
    status: int
    openai_type: str
    openai_code: str


# The first class an error is an instance of decides; the order goes from specific to general.
HTTP_ERRORS: tuple[tuple[type, HttpError], ...] = (
    (Unauthorized, HttpError(401, "invalid_request_error", "invalid_api_key")),
    (ModelNotFound, HttpError(404, "invalid_request_error", "model_not_found")),
    (RequestTooLarge, HttpError(413, "invalid_request_error", "request_too_large")),
    (InvalidRequest, HttpError(422, "invalid_request_error", "invalid_value")),
    (Overloaded, HttpError(429, "rate_limit_error", "rate_limit_exceeded")),
    (BackendUnavailable, HttpError(503, "server_error", "backend_unavailable")),
    (ShuttingDown, HttpError(503, "server_error", "shutting_down")),
    (BackendError, HttpError(502, "server_error", "backend_error")),
    (ClientGone, HttpError(499, "invalid_request_error", "client_closed_request")),  # nginx's code; nobody reads it
)
INTERNAL_ERROR = HttpError(500, "server_error", "internal_error")


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PATHS)


def error_response(error: BaseException, path: str, *, param: Optional[str] = None, request_id: Any = None,
                   has_request_id: bool = False) -> Response:
    """The HTTP reply to any failure: status from HTTP_ERRORS, OpenAI's envelope on /v1/*, else the original's."""
    if isinstance(error, BridgeError):
        kind, message = error.kind, error.message
        mapping = next((m for cls, m in HTTP_ERRORS if isinstance(error, cls)), INTERNAL_ERROR)
    else:
        log.exception("internal error while serving %s", path, exc_info=error)
        kind, message, mapping = "InternalError", f"internal server error: {type(error).__name__}", INTERNAL_ERROR
    headers = {}
    if mapping.status == 429:
        headers["retry-after"] = str(RETRY_AFTER_S)
    elif mapping.status == 401:
        headers["www-authenticate"] = "Bearer"
    if is_openai_path(path):
        body = {"error": {"message": message, "type": mapping.openai_type, "param": param,
                          "code": mapping.openai_code}}
    else:
        body = {"description": message, "type": kind, "status": mapping.status}
        if has_request_id:
            body = {"id": request_id, **body}
    return Response(orjson.dumps(body), status_code=mapping.status, headers=headers, media_type=JSON)


def _json_errors(body: bytes) -> list:
    """Why ``body`` is not JSON, as pydantic's parser words it (line and column), in pydantic's error format."""
    try:
        pydantic_core.from_json(body)
    except ValueError as e:
        return [{"type": "json_invalid", "loc": (), "msg": f"Invalid JSON: {e}"}]
    return [{"type": "json_invalid", "loc": (), "msg": "Invalid JSON"}]


def _validation_message(errors: list) -> tuple[str, Optional[str]]:
    """A one-line message and the offending parameter from pydantic's errors."""
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = location[0] if location else None
    where = ".".join(location) if location else "the request body"
    message = f"{where}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message, param


# -- request and response models ------------------------------------------------------------------------------------

class EncodeRequest(BaseModel):
    """The original's POST /encode body."""

    model_config = ConfigDict(extra="ignore")
    id: Any = Field(description="echoed back, to match replies with requests")
    texts: Union[list[StrictStr], list[list[StrictStr]]] = Field(
        description="sentences ('a ||| b' for a pair), or token lists with is_tokenized; at least one")
    is_tokenized: StrictBool = Field(default=False, description="texts are lists of tokens")
    model: Optional[StrictStr] = Field(default=None, description="the model (GET /v1/models); default: the default "
                                       "model, as ZeroMQ")


class EncodeResponse(BaseModel):
    id: Any
    result: list = Field(description="one vector per sentence (the original code's key)")
    results: list = Field(description="the same vectors (the original docs' key)")
    status: int = 200


class OriginalError(BaseModel):
    id: Any = Field(default=None, description="the request's id, when it could be read")
    description: str
    type: str
    status: int


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request."""

    model_config = ConfigDict(extra="ignore")
    input: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]] = Field(
        description="a string, a list of strings, a list of token ids or a list of lists of token ids (vocabulary "
                    "ids of the served model)")
    model: Optional[StrictStr] = Field(default=None, description=(
        "a model of GET /v1/models (with one model served, any name is that model); absent: the first model served "
        "with sentence-transformers semantics, else the default model"))
    encoding_format: Optional[str] = Field(default="float", pattern="^(float|base64)$",
                                           description="'float' or 'base64' (little-endian float32)")
    dimensions: Optional[StrictInt] = Field(default=None, description=(
        "the model's width, or for a model whose vectors are normalized fewer: the first ones, renormalized"))
    user: Optional[StrictStr] = Field(default=None, description="ignored")


class Embedding(BaseModel):
    object: str = "embedding"
    embedding: Union[list[float], str]
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class RerankRequest(BaseModel):
    """text-embeddings-inference's POST /rerank body (``model`` added: several models may be served)."""

    model_config = ConfigDict(extra="ignore")
    query: StrictStr = Field(description="what the texts are ranked for")
    texts: list[StrictStr] = Field(min_length=1, description="the texts to rank; at least one")
    raw_scores: StrictBool = Field(default=False, description="the logits instead of the model's scores")
    return_text: StrictBool = Field(default=False, description="each result carries its text")
    truncate: Optional[StrictBool] = Field(default=False, description=(
        "cut a (query, text) pair longer than the model reads; false: such a request gets 413"))
    truncation_direction: Literal["right", "Right"] = Field(default="right", description="only right is supported")
    model: Optional[StrictStr] = Field(default=None, description="a rerank model of GET /v1/models; default: the "
                                       "first one served")


class Rank(BaseModel):
    index: int = Field(description="the text's position in the request")
    score: float
    text: Optional[str] = Field(default=None, description="with return_text")


class CohereDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: StrictStr


class CohereRerankRequest(BaseModel):
    """Cohere's (and Jina's) POST /v1/rerank body."""

    model_config = ConfigDict(extra="ignore")
    model: Optional[StrictStr] = Field(default=None, description="a rerank model of GET /v1/models; absent: the "
                                       "first one served")
    query: StrictStr
    documents: list[Union[StrictStr, CohereDocument]] = Field(min_length=1, description=(
        "strings or {\"text\": ...} objects; at least one"))
    top_n: Optional[StrictInt] = Field(default=None, ge=1, description="return the best n (default: all)")
    return_documents: StrictBool = Field(default=False, description="each result carries {\"text\": ...}")


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[CohereDocument] = None


class RerankUsage(BaseModel):
    total_tokens: int


class CohereRerankResponse(BaseModel):
    id: str
    model: str
    results: list[CohereResult]
    usage: RerankUsage


class PredictRequest(BaseModel):
    """text-embeddings-inference's POST /predict body (``model`` added)."""

    model_config = ConfigDict(extra="ignore")
    inputs: Union[StrictStr, list[Union[StrictStr, list[StrictStr]]]] = Field(description=(
        "a text; a pair [text, text]; or a list of texts and pairs, answered with one list per input"))
    raw_scores: StrictBool = Field(default=False, description="the logits instead of the model's scores")
    truncate: Optional[StrictBool] = Field(default=False, description=(
        "cut an input longer than the model reads; false: such a request gets 413"))
    model: Optional[StrictStr] = Field(default=None, description="a rerank or classify model of GET /v1/models")


class Prediction(BaseModel):
    label: str
    score: float


class EmbedSparseRequest(BaseModel):
    """text-embeddings-inference's POST /embed_sparse body (``model`` added)."""

    model_config = ConfigDict(extra="ignore")
    inputs: Union[StrictStr, list[StrictStr]] = Field(description="a text or a list of texts")
    truncate: Optional[StrictBool] = Field(default=False, description=(
        "cut a text longer than the model reads; false: such a request gets 413"))
    model: Optional[StrictStr] = Field(default=None, description="a sparse (SPLADE) model of GET /v1/models")


class SparseValue(BaseModel):
    index: int = Field(description="a vocabulary id")
    value: float


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


ORIGINAL_ERRORS = {status: {"model": OriginalError} for status in (401, 404, 413, 422, 429, 502, 503)}
OPENAI_ERRORS = {status: {"model": OpenAIError} for status in (401, 404, 413, 422, 429, 502, 503)}


# -- the gate in front of every route: API key and body size ---------------------------------------------------------

class RequestGate:
    """ASGI middleware: 401 without the API key, 413 for a body over the limit, decided before the app parses it."""

    def __init__(self, app, *, api_key: Optional[str], max_request_bytes: int):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope["headers"])
        if self.expected is not None and not path.startswith(PUBLIC_PATHS):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                error = Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")
                return await error_response(error, path)(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_request_bytes:
                return await self._too_large(path, int(declared))(scope, receive, send)
            return await self.app(scope, receive, send)
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            return await self.app(scope, receive, send)
        # A chunked body has no length up front: read it up to the limit before the app sees any of it.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_request_bytes:
                return await self._too_large(path, size)(scope, receive, send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self, path: str, size: int) -> Response:
        return error_response(RequestTooLarge(f"the request body has {size} bytes or more; this server accepts at "
                                              f"most {self.max_request_bytes} (--http-max-request-bytes)"), path)


# -- the front end ------------------------------------------------------------------------------------------------

class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn's server inside the bridge's event loop: the bridge, not uvicorn, owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):  # uvicorn would replace the bridge's signal handlers for the duration of serve()
        yield


class HttpFrontend:
    """Serve the HTTP API with ``await serve()``; ``await shutdown()`` stops accepting and finishes what is in flight.

    ``listening_socket`` is the HTTP port, bound by ``listen`` at start-up before anything slow, like the ZeroMQ ports.
    """

    def __init__(self, *, listening_socket: socket.socket, registry: ModelRegistry, statistic: ServerStatistic,
                 metrics: BridgeMetrics, config: ServerConfig, config_reply: Callable[[ZmqRequest], dict]):
        self.registry = registry
        self.statistic = statistic
        self.metrics = metrics
        self.config = config
        self.config_reply = config_reply
        self.active_encodes = 0
        self._requests_per_client: dict[bytes, int] = {}
        self._finished = asyncio.Event()
        self.app = self._build_app()
        self.socket = listening_socket
        self._server = _EmbeddedUvicorn(uvicorn.Config(
            self.app, log_level="debug" if config.verbose else "warning", access_log=False, lifespan="off",
            server_header=False, timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S, backlog=LISTEN_BACKLOG))

    @property
    def bound_address(self) -> str:
        """HOST:PORT the HTTP port is bound to, as the ZeroMQ ports are logged (0.0.0.0: every interface)."""
        host, port = self.socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        host = "localhost" if self.config.ip in ("0.0.0.0", "::") else self.config.ip
        return f"http://{host}:{self.config.http_port}"

    async def serve(self) -> None:
        try:
            await self._server.serve(sockets=[self.socket])
        finally:
            self.socket.close()
            self._finished.set()

    async def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop accepting connections, let requests in flight finish (at most timeout_s), then return."""
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._finished.wait(), timeout_s)
        except asyncio.TimeoutError:
            log.warning("HTTP requests still running after %.0fs: closing their connections", timeout_s)
            self._server.force_exit = True

    # -- the app ----------------------------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="bert-serving HTTP API", version=package_version(), docs_url=None, redoc_url=None,
                      description="bert-as-service's HTTP API, OpenAI-compatible embeddings, health and metrics, "
                                  "over the same service as the ZeroMQ protocol. See docs/HTTP.md.")
        app.add_exception_handler(BridgeError, self._on_bridge_error)
        app.add_exception_handler(RequestValidationError, self._on_validation_error)
        app.add_exception_handler(StarletteHTTPException, self._on_http_exception)
        app.add_exception_handler(Exception, self._on_unexpected_error)
        # Added last, so it runs first: even a 401 or 413 carries the CORS headers a browser needs to read it.
        app.add_middleware(RequestGate, api_key=self.config.api_key,
                           max_request_bytes=self.config.http_max_request_bytes)
        origins = [origin.strip() for origin in self.config.cors.split(",") if origin.strip()]
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                           expose_headers=[*TIMING_HEADERS, TRUNCATED_HEADER, "retry-after"])

        encode_body = {"required": True, "content": {
            JSON: {"schema": EncodeRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["id", "texts"],
                "properties": {"id": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}},
                               "is_tokenized": {"type": "boolean", "enum": [False]}, "model": {"type": "string"}}}},
        }}
        app.post("/encode", tags=["bert-as-service"], summary="Encode sentences (the original API)",
                 response_model=EncodeResponse, responses=ORIGINAL_ERRORS,
                 openapi_extra={"requestBody": encode_body})(self.encode)
        app.get("/status/server", tags=["bert-as-service"], summary="The server's config and statistic "
                "(SHOW_STATUS)")(self.status_server)
        app.get("/status/client", tags=["bert-as-service"], summary="This HTTP client's view of the server")(
            self.status_client)
        for path in ("/v1/embeddings", "/embeddings"):
            app.post(path, tags=["OpenAI"], summary="Create embeddings (OpenAI-compatible)",
                     response_model=EmbeddingsResponse, responses=OPENAI_ERRORS,
                     include_in_schema=path.startswith("/v1"))(self.embeddings)
        app.post("/rerank", tags=["rerank, classify, sparse"], summary="Rank texts for a query "
                 "(text-embeddings-inference's shape)", response_model=list[Rank], responses=ORIGINAL_ERRORS)(
            self.rerank)
        app.post("/v1/rerank", tags=["rerank, classify, sparse"], summary="Rank documents for a query (Cohere's and "
                 "Jina's shape)", response_model=CohereRerankResponse, responses=OPENAI_ERRORS)(self.cohere_rerank)
        app.post("/predict", tags=["rerank, classify, sparse"], summary="Scores per label of texts or pairs "
                 "(text-embeddings-inference's shape)",
                 response_model=Union[list[Prediction], list[list[Prediction]]], responses=ORIGINAL_ERRORS)(
            self.predict)
        app.post("/embed_sparse", tags=["rerank, classify, sparse"], summary="SPLADE vectors, non-zero entries only "
                 "(text-embeddings-inference's shape)", response_model=list[list[SparseValue]],
                 responses=ORIGINAL_ERRORS)(self.embed_sparse)
        app.get("/v1/models", tags=["OpenAI"], summary="The served models")(self.models)
        app.get("/v1/models/{model_id}", tags=["OpenAI"], summary="One model",
                responses={404: {"model": OpenAIError}})(self.model)
        app.get("/health", tags=["operations"], summary="The process is alive and its event loop answers")(
            self.health)
        app.get("/ready", tags=["operations"], summary="Triton is reachable and every served model is ready (else 503)",
                responses={503: {"model": OriginalError}})(self.ready)
        app.get("/metrics", tags=["operations"], summary="Prometheus metrics (text format)",
                response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})(self.prometheus)
        app.get("/status/activity", tags=["operations"], summary="Recent rates, latencies and errors (the "
                "dashboard's data)")(self.activity)
        app.get("/dashboard", tags=["operations"], summary="The live dashboard (HTML)", response_class=FileResponse,
                include_in_schema=False)(self.dashboard)
        app.mount("/dashboard/static", StaticFiles(directory=str(_package_folder("dashboard"))), name="dashboard")
        app.get("/docs", include_in_schema=False)(self.docs)
        app.mount("/docs/static", StaticFiles(directory=_swagger_ui_folder()), name="swagger-ui")
        app.openapi = _with_bearer_auth(app.openapi)
        return app

    # -- the original API -------------------------------------------------------------------------------------------

    async def encode(self, request: Request) -> Response:
        path = request.url.path
        try:
            payload = await _read_encode_request(request)
        except InvalidRequest as e:
            self.metrics.rejected("http", e.kind)
            has_request_id, request_id = await _readable_id(request)
            return error_response(e, path, request_id=request_id, has_request_id=has_request_id)
        try:
            try:
                service = self.registry.lookup(payload.model, route="encode")
                if payload.texts and payload.is_tokenized != all(isinstance(item, list) for item in payload.texts):
                    raise InvalidRequest("is_tokenized is true but texts are strings" if payload.is_tokenized
                                         else "texts are token lists: set is_tokenized to true")
            except BridgeError as e:
                self.metrics.rejected("http", e.kind)
                raise
            result = await self._encode("http", request, payload.texts, service.encode, service.name)
        except BridgeError as e:
            return error_response(e, path, request_id=payload.id, has_request_id=True)
        request_id = payload.id
        vectors = orjson.dumps(np.ascontiguousarray(result.embeddings), option=orjson.OPT_SERIALIZE_NUMPY)
        body = b"".join((b'{"id":', orjson.dumps(request_id), b',"result":', vectors, b',"results":', vectors,
                         b',"status":200}'))
        return Response(body, media_type=JSON, headers=_result_headers(result))

    async def status_server(self, request: Request) -> Response:
        identity = _identity(request)
        reply = self.config_reply(ZmqRequest(identity=identity, message=SHOW_STATUS, request_id=b"0", length=0))
        return _json({**reply, "statistic": self.statistic.value(), "status": 200})

    async def status_client(self, request: Request) -> Response:
        identity = _identity(request)
        return _json({
            "identity": identity.decode(),
            "num_request": self._requests_per_client.get(identity, 0),
            "num_concurrent_request": self.active_encodes,
            "http_max_connect": self.config.http_max_connect,
            "server_url": self.url,
            "server_version": "1.10.0",
            "status": 200,
        })

    # -- OpenAI -----------------------------------------------------------------------------------------------------

    async def embeddings(self, body: EmbeddingsRequest, request: Request) -> Response:
        path = request.url.path
        try:
            service = self.registry.lookup(body.model, route="embeddings")
        except BridgeError as e:
            self.metrics.rejected("openai", e.kind)
            return error_response(e, path, param="model")
        try:
            service.check_dimensions(body.dimensions)
        except InvalidRequest as e:
            self.metrics.rejected("openai", e.kind, service.name)
            return error_response(e, path, param="dimensions")
        if service.model.token_level:
            error = InvalidRequest(f"model '{service.name}' returns token embeddings (-pooling_strategy NONE); "
                                   "/v1/embeddings needs one vector per input: name a pooled model")
            self.metrics.rejected("openai", error.kind, service.name)
            return error_response(error, path, param="model")
        try:
            inputs, run = self._openai_inputs(body.input, service)
        except InvalidRequest as e:  # refused before the service sees it, counted all the same
            self.metrics.rejected("openai", e.kind, service.name)
            return error_response(e, path, param="input")
        try:
            result = await self._encode("openai", request, inputs, functools.partial(run, dimensions=body.dimensions),
                                        service.name)
        except BridgeError as e:
            return error_response(e, path, param="input" if isinstance(e, InvalidRequest) else None)
        vectors = np.ascontiguousarray(result.embeddings, dtype="<f4")
        if body.encoding_format == "base64":
            data = [{"object": "embedding", "embedding": base64.b64encode(row.tobytes()).decode("ascii"), "index": i}
                    for i, row in enumerate(vectors)]
        else:
            data = [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(vectors)]
        reply = {"object": "list", "data": data, "model": service.name,
                 "usage": {"prompt_tokens": result.num_tokens, "total_tokens": result.num_tokens}}
        return Response(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON,
                        headers=_result_headers(result))

    @staticmethod
    def _openai_inputs(value, service) -> tuple[list, Callable[..., Awaitable[EncodeResult]]]:
        """The inputs as a list, and the service call for their kind (text or token ids)."""
        if isinstance(value, str):
            value = [value]
        if not value:
            raise InvalidRequest("input must not be empty")
        if all(isinstance(item, int) for item in value):
            return [value], service.encode_token_ids
        if all(isinstance(item, list) for item in value):
            return value, service.encode_token_ids
        for i, text in enumerate(value):
            if not text:
                raise InvalidRequest(f"input {i} is an empty string")
        return value, service.encode_texts

    # -- heads: rerank, classify, sparse ------------------------------------------------------------------------------

    async def rerank(self, body: RerankRequest, request: Request) -> Response:
        """text-embeddings-inference's /rerank: ``[{index, score, text?}]`` from the best text to the worst."""
        service = self._head_service(request, body.model, "rerank")
        if isinstance(service, Response):
            return service
        try:
            result = await self._encode("http", request, body.texts, functools.partial(
                service.rerank, body.query, truncate=bool(body.truncate), raw_scores=body.raw_scores), service.name)
        except BridgeError as e:
            return error_response(e, request.url.path)
        scores = result.embeddings
        ranks = [{"index": i, "score": float(scores[i]), **({"text": body.texts[i]} if body.return_text else {})}
                 for i in ranking(scores)]
        return _json(ranks, headers=_result_headers(result))

    async def cohere_rerank(self, body: CohereRerankRequest, request: Request) -> Response:
        """Cohere's and Jina's /v1/rerank: ``{results: [{index, relevance_score, document?}], usage}``, best first;
        documents longer than the model reads are cut, as those services do."""
        service = self._head_service(request, body.model, "rerank", param="model")
        if isinstance(service, Response):
            return service
        texts = [document if isinstance(document, str) else document.text for document in body.documents]
        try:
            result = await self._encode("http", request, texts, functools.partial(service.rerank, body.query),
                                        service.name)
        except BridgeError as e:
            return error_response(e, request.url.path, param="documents" if isinstance(e, InvalidRequest) else None)
        scores = result.embeddings
        order = ranking(scores)[:body.top_n]
        results = [{"index": i, "relevance_score": float(scores[i]),
                    **({"document": {"text": texts[i]}} if body.return_documents else {})} for i in order]
        return _json({"id": str(uuid.uuid4()), "model": service.name, "results": results,
                      "usage": {"total_tokens": result.num_tokens}}, headers=_result_headers(result))

    async def predict(self, body: PredictRequest, request: Request) -> Response:
        """text-embeddings-inference's /predict: ``[{label, score}]`` best first, for one input; a list of those for
        a list of inputs."""
        service = self._head_service(request, body.model, "predict")
        if isinstance(service, Response):
            return service
        try:
            pairs, single = _predict_inputs(body.inputs)
            result = await self._encode("http", request, pairs, functools.partial(
                service.encode_pairs, truncate=bool(body.truncate), raw_scores=body.raw_scores), service.name)
        except BridgeError as e:
            return error_response(e, request.url.path)
        predictions = labelled(result.embeddings, service.model.labels)
        return _json(predictions[0] if single else predictions, headers=_result_headers(result))

    async def embed_sparse(self, body: EmbedSparseRequest, request: Request) -> Response:
        """text-embeddings-inference's /embed_sparse: per input, its non-zero ``[{index, value}]``."""
        service = self._head_service(request, body.model, "embed_sparse")
        if isinstance(service, Response):
            return service
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        try:
            if not texts:
                raise InvalidRequest("inputs must not be empty")
            result = await self._encode("http", request, [(text, None) for text in texts], functools.partial(
                service.encode_pairs, truncate=bool(body.truncate)), service.name)
        except BridgeError as e:
            return error_response(e, request.url.path)
        return _json(sparse(result.embeddings), headers=_result_headers(result))

    def _head_service(self, request: Request, name: Optional[str], route: str, *, param: Optional[str] = None):
        """The model serving ``route`` (the registry's lookup), or the error reply saying why none does."""
        try:
            return self.registry.lookup(name, route=route)
        except BridgeError as e:
            self.metrics.rejected("http", e.kind)
            return error_response(e, request.url.path, param=param)

    async def models(self) -> Response:
        return _json({"object": "list", "data": [self._model_card(name) for name in self.registry.names]})

    async def model(self, model_id: str, request: Request) -> Response:
        if model_id not in self.registry.names:
            return error_response(ModelNotFound(f"the model '{model_id}' does not exist here; this server serves "
                                                f"{', '.join(repr(n) for n in self.registry.names)}"),
                                  request.url.path, param="model")
        return _json(self._model_card(model_id))

    def _model_card(self, name: str) -> dict:
        """OpenAI's model object, with what the registry says about the model: task, semantics, width, maximum
        tokens, readiness, which defaults it is."""
        return {"id": name, "object": "model", "created": int(self.metrics.started_at_epoch_s),
                "owned_by": "bert-serving", **self.registry.card(name)}

    # -- operations -------------------------------------------------------------------------------------------------

    async def health(self) -> Response:
        return _json({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """Ready while every served model is ready on at least one Triton endpoint; the body has each model's state
        and each endpoint's. A model that could not be served at start is listed as not ready, with why, but does not
        make the bridge unready: the others serve."""
        services = list(self.registry)
        outcomes = await asyncio.gather(*(s.backend.check_ready() for s in services), return_exceptions=True)
        models = {}
        for service, outcome in zip(services, outcomes):
            if isinstance(outcome, BaseException) and not isinstance(outcome, BackendUnavailable):
                raise outcome
            models[service.name] = ({"ready": True} if outcome is None else
                                    {"ready": False, "error": outcome.message})
        models.update({name: {"ready": False, "error": reason} for name, reason in self.registry.unserved.items()})
        default = self.registry.default
        details = {"model": default.name, "triton": default.backend.url, "models": models,
                   "endpoints": default.backend.endpoint_states()}
        down = next((o for o in outcomes if isinstance(o, BackendUnavailable)), None)
        if down is not None:
            unavailable = error_response(down, request.url.path)
            body = {**orjson.loads(unavailable.body), **details}
            return Response(orjson.dumps(body), status_code=unavailable.status_code, media_type=JSON)
        return _json({"status": "ready", **details})

    async def prometheus(self) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def activity(self) -> Response:
        """The dashboard's data: the default model's settings at the top level, as with one model, and every model
        under ``models`` with its requests."""
        config, model = self.config, self.registry.default.model
        activity = self.metrics.activity()
        requests = activity.pop("models")
        return _json({
            "model": model.name,
            "pooling_strategy": model.pooling_strategy,
            "pooling_layer": list(model.pooling_layer),
            "max_seq_len": model.max_seq_len,
            "output_dim": model.output_dim,
            "http_max_connect": config.http_max_connect,
            **activity,
            "models": [{**self.registry.card(name), "requests": requests.get(name, {"success": 0, "error": 0})}
                       for name in self.registry.names],
        })

    async def dashboard(self) -> FileResponse:
        return FileResponse(_package_folder("dashboard") / "index.html", media_type="text/html")

    async def docs(self) -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="bert-serving HTTP API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

    # -- shared -----------------------------------------------------------------------------------------------------

    async def _encode(self, frontend: str, request: Request, inputs: list,
                      run: Callable[..., Awaitable[EncodeResult]], model: str) -> EncodeResult:
        """Count the request (statistic and metrics), enforce -http_max_connect, call the service; stop it (ClientGone)
        when the client closes its connection first."""
        identity = _identity(request)
        self.statistic.record_data(identity, len(inputs))
        self._requests_per_client[identity] = self._requests_per_client.get(identity, 0) + 1
        with self.metrics.track(frontend, len(inputs), model) as tracker:
            if self.active_encodes >= self.config.http_max_connect:
                error = TooManyConcurrentRequests(
                    f"{self.active_encodes} HTTP encode requests are running, the limit is "
                    f"{self.config.http_max_connect} (-http_max_connect): retry in {RETRY_AFTER_S}s")
                tracker.failed(error.kind)
                raise error
            self.active_encodes += 1
            try:
                result = await _unless_disconnected(request, run(inputs, client=identity))
            except BridgeError as e:
                tracker.failed(e.kind)
                raise
            except Exception:
                tracker.failed("InternalError")
                raise
            finally:
                self.active_encodes -= 1
            tracker.succeeded(result)
            return result

    # -- exception handlers: everything goes through error_response ------------------------------------------------

    async def _on_bridge_error(self, request: Request, error: BridgeError) -> Response:
        return error_response(error, request.url.path)

    async def _on_validation_error(self, request: Request, error: RequestValidationError) -> Response:
        errors = error.errors()
        if errors and errors[0].get("type") == "json_invalid":
            # FastAPI's json module gives "26: JSON decode error"; pydantic's parser says what /encode says.
            errors = _json_errors(await request.body())
        message, param = _validation_message(errors)
        path = request.url.path
        self.metrics.rejected("openai" if is_openai_path(path) else "http", InvalidRequest.kind)
        return error_response(InvalidRequest(message), path, param=param)

    async def _on_http_exception(self, request: Request, error: StarletteHTTPException) -> Response:
        path = request.url.path
        if is_openai_path(path):
            body = {"error": {"message": str(error.detail), "type": "invalid_request_error", "param": None,
                              "code": "not_found" if error.status_code == 404 else None}}
        else:
            body = {"description": str(error.detail), "type": "HTTPError", "status": error.status_code}
        return _json(body, status=error.status_code, headers=getattr(error, "headers", None))

    async def _on_unexpected_error(self, request: Request, error: Exception) -> Response:
        return error_response(error, request.url.path)


def _with_bearer_auth(make_schema: Callable[[], dict]) -> Callable[[], dict]:
    """The OpenAPI description with the API key as a Bearer scheme on every route that requires it (the key itself
    is checked by RequestGate), so /docs offers an Authorize button."""

    def schema() -> dict:
        description = make_schema()  # FastAPI builds it once and caches it; adding the same keys again is harmless
        description.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "the server's --api-key, when it has one"}}
        for path, operations in description["paths"].items():
            if not path.startswith(PUBLIC_PATHS):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
        return description

    return schema


async def _read_encode_request(request: Request) -> EncodeRequest:
    """The /encode body, JSON or form (repeated ``texts`` fields), validated; InvalidRequest otherwise."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in FORM_TYPES:
            form = await request.form()
            if "is_tokenized" in form and form["is_tokenized"].strip().lower() in ("true", "1", "yes", "on"):
                raise InvalidRequest("tokenized input cannot be sent as a form: post JSON")
            texts = [value for value in form.getlist("texts") if isinstance(value, str)]
            fields = {name: form.get(name) for name in ("id", "model") if name in form}
            return EncodeRequest.model_validate({**fields, "texts": texts})
        return EncodeRequest.model_validate_json(await request.body())
    except ValidationError as e:
        raise InvalidRequest(_validation_message(e.errors(include_url=False))[0]) from e
    except (ValueError, KeyError) as e:  # a malformed form body
        raise InvalidRequest(f"cannot read the form: {e}") from e


async def _readable_id(request: Request) -> tuple[bool, Any]:
    """(True, id) when a body that failed validation still names its id: the error reply carries it (docs/HTTP.md)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in FORM_TYPES:
            form = await request.form()  # parsed once already; starlette keeps it
            return "id" in form, form.get("id")
        body = orjson.loads(await request.body())
    except (ValueError, KeyError):  # not JSON (orjson.JSONDecodeError is a ValueError), or a malformed form
        return False, None
    return (True, body["id"]) if isinstance(body, dict) and "id" in body else (False, None)


def _predict_inputs(inputs: Union[str, list]) -> tuple[list[tuple], bool]:
    """/predict's inputs as text-embeddings-inference reads them: a text, or a list of exactly two texts, is one
    input (the list a pair); any other list holds inputs, each a text or a [text, text] pair ([text] too). Returns
    the explicit pairs (second None for a text) and whether the request was one input."""
    if isinstance(inputs, str):
        return [(inputs, None)], True
    if len(inputs) == 2 and all(isinstance(item, str) for item in inputs):
        return [(inputs[0], inputs[1])], True
    if not inputs:
        raise InvalidRequest("inputs must not be empty")
    pairs = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            pairs.append((item, None))
        elif len(item) in (1, 2):  # [text] too: unambiguous where a bare list of two texts reads as a pair
            pairs.append((item[0], item[1] if len(item) == 2 else None))
        else:
            raise InvalidRequest(f"inputs.{i}: a list input is [text] or a pair [text, text], this one has "
                                 f"{len(item)} texts")
    return pairs, False


async def _unless_disconnected(request: Request, encoding: Awaitable[EncodeResult]) -> EncodeResult:
    """The encode's result; or, when the client closes its connection first, the encode is cancelled (its chunks not
    yet sent to Triton are dropped) and ClientGone raised. The body has been read, so the next ASGI message this
    request can receive is http.disconnect."""
    encode = asyncio.ensure_future(encoding)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((encode, watch), return_when=asyncio.FIRST_COMPLETED)
        if not encode.done() and watch.exception() is not None:  # cannot tell: serve the request to its end
            log.debug("cannot watch %s for a disconnect: %r", request.url.path, watch.exception())
            return await encode
        if not encode.done():
            encode.cancel()
            await asyncio.gather(encode, return_exceptions=True)
            log.info("client %s closed its connection: %s stopped unfinished", _identity(request).decode(),
                     request.url.path)
            raise ClientGone("the client closed its connection before the reply was ready")
        return encode.result()
    finally:
        for task in (encode, watch):
            if not task.done():
                task.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _identity(request: Request) -> bytes:
    """How the statistic names an HTTP client: by its address, as the ZeroMQ front names clients by identity."""
    host = request.client.host if request.client else "unknown"
    return f"http:{host}".encode()


def _result_headers(result: EncodeResult) -> dict:
    """Every encode reply's headers: its times in milliseconds, and how many inputs were cut to the model's length."""
    times = (result.tokenization_s, result.inference_s, result.total_s)
    return {**{name: f"{seconds * 1000:.3f}" for name, seconds in zip(TIMING_HEADERS, times)},
            TRUNCATED_HEADER: str(result.truncated)}


def _json(body: Any, *, status: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS), status_code=status,
                    headers=headers, media_type=JSON)


def listen(host: str, port: int) -> socket.socket:
    """The HTTP port, bound first thing at start-up like the ZeroMQ ports: a port in use is refused in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)  # connections made before uvicorn starts accepting wait in the backlog
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on -http_port {port} at {host}: {e.strerror or e}") from e
    return sock


def _package_folder(name: str) -> Path:
    return Path(str(resources.files(__package__) / name))


def _swagger_ui_folder() -> str:
    from swagger_ui_bundle import swagger_ui_path

    return str(swagger_ui_path)
