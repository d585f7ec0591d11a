"""The bridge's one frozen configuration, built in one place from ``bert-serving-start``'s flags.

Every flag of the original 1.10 server is accepted with its single-dash spelling and default (a double-dash form too).
Flags that shape the exported graph (pooling, layers, fp16, ...) are handed to ``bert-export`` when the bridge exports
a source model itself; flags with no meaning on Triton are accepted and logged as ignored (``IGNORED_FLAGS``).

A bridge serves one model or several (``-model_dir`` repeated, or ``--model-repository``). The flags apply to every
model; what a flag leaves open is read from each model's export. Once the models are resolved (model_source.py), the
config carries one ``ModelSpec`` per model: its name, task, export and settled flags. The first is the default.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from bert_exporter.manifest import CLASSIFY, EMBED, RERANK, SPARSE, ExportManifest, PoolingStrategy, parse_max_seq_len
from bert_exporter.manifest import TASKS as MANIFEST_TASKS
from bert_serving.client.protocol import SERVER_VERSION

# The packaged all-MiniLM-L6-v2's name when no -model_dir is given (what /v1/models has always called it).
PACKAGED_MODEL_NAME = "bert"
# A model's name: a folder name in Triton's repository and a segment of /v1/models/{id}.
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# What a model does, as its export records it; each route serves the tasks it knows (core/registry.py).
EMBED_TASK, RERANK_TASK, CLASSIFY_TASK, SPARSE_TASK = EMBED, RERANK, CLASSIFY, SPARSE
TASKS = MANIFEST_TASKS
# The semantics a model is served with (/v1/models): the 2019 server's, or the model card's (-pooling_strategy AUTO,
# a CrossEncoder's head); a head of a folder transformers saved follows transformers' conventions.
BERT_AS_SERVICE = "bert-as-service"
SENTENCE_TRANSFORMERS = "sentence-transformers"
TRANSFORMERS = "transformers"

# Accepted for compatibility; why each one has no effect here.
IGNORED_FLAGS = {
    "graph_tmp_dir": "the graph is frozen by bert-export into the model repository, not into a temp file",
    "xla": "Triton runs the exported ONNX model; XLA is TensorFlow's compiler",
    "gpu_memory_fraction": "Triton manages GPU memory itself",
    "prefetch_size": "Triton's dynamic batcher queues requests; there is no per-worker prefetch",
}

API_KEY_ENV = "BERT_SERVING_API_KEY"
DEFAULT_HTTP_MAX_REQUEST_BYTES = 10_000_000
# Request limits (bridge/core/admission.py, docs/FAQ.md): generous for real use -- a 50,000-sentence request is served by
# default -- and tight enough that no request, and no load of all clients together, grows memory without bound.
DEFAULT_ZMQ_MAX_REQUEST_BYTES = 100_000_000
DEFAULT_MAX_REQUEST_SENTENCES = 100_000
# The model reads at most max_seq_len (<= 512) tokens, a few thousand characters; longer text only costs tokenizing.
DEFAULT_MAX_SENTENCE_CHARS = 100_000
DEFAULT_MAX_INFLIGHT_SENTENCES = 200_000
DEFAULT_MAX_INFLIGHT_BYTES = 500_000_000

# Flags that change the exported model itself: they must agree with an already exported model. (-num_worker,
# -device_map and -cpu are Triton instance settings: see model_source.settle_model.)
EXPORT_FLAGS = (
    "tuned_model_dir", "ckpt_name", "config_name", "pooling_strategy", "pooling_layer", "no_position_embeddings",
    "fp16", "priority_batch_size", "normalize", "quantize",
)
# -pooling_strategy AUTO: the sentence-transformers model's own pooling, layer, length, normalization and tokenizer.
AUTO_STRATEGY = "AUTO"
# The flags that can differ from model to model: given on the command line they apply to every model, otherwise each
# model takes its export's (model_source.settle_model).
MODEL_FLAGS = (
    "pooling_strategy", "pooling_layer", "max_seq_len", "do_lower_case", "mask_cls_sep", "normalize", "fp16",
    "quantize", "no_position_embeddings", "priority_batch_size", "max_batch_size", "num_worker", "device_map", "cpu",
)


def _model_name(value: str) -> str:
    if not MODEL_NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"a model name is letters, digits, '.', '_' and '-', starting with a letter "
                                         f"or digit, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelSource:
    """One ``-model_dir``: ``NAME=PATH``, or ``PATH`` (named after its folder)."""

    path: Path
    name: Optional[str] = None

    def __str__(self) -> str:  # as given on the command line (bert_serving.server passes it on)
        return f"{self.name}={self.path}" if self.name else str(self.path)


def _model_source(value: str) -> ModelSource:
    name, equals, path = value.partition("=")
    if equals and "/" not in name and name:
        return ModelSource(path=Path(path), name=_model_name(name))
    return ModelSource(path=Path(value))


def _max_seq_len(value: str) -> Optional[int]:
    try:
        return parse_max_seq_len(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {value!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {number}")
    return number


def _triton_urls(value: str) -> tuple[str, ...]:
    """HOST:PORT of tritonserver gRPC endpoints, comma-separated; a HOST may be a name that resolves to several."""
    urls = tuple(part.strip() for part in value.split(","))
    for url in urls:
        host, _, port = url.rpartition(":")
        if not host or "/" in url:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT of tritonserver's gRPC endpoint, got {url!r}"
                                             + (f" in {value!r}" if len(urls) > 1 else ""))
        _port(port)
    return urls


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {value}")
    return number


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One served model as settled at start: its name and task, its export, and the flags as they apply to it (the
    command line's where given, else the export's). Built by model_source.settle_model, and nowhere else."""

    name: str  # what clients name it (/v1/embeddings' model); the embedded Triton knows it by this name too
    task: str = EMBED_TASK
    folder: Path  # the bert-export folder served
    manifest: ExportManifest
    model_dir: Optional[Path] = None  # the -model_dir it came from, or its folder in --model-repository; None: packaged
    triton_name: str  # its name in Triton: ``name`` in the embedded one, the export's folder name in an external one
    pooling_strategy: str
    pooling_layer: tuple
    max_seq_len: Optional[int]
    do_lower_case: bool
    mask_cls_sep: bool
    normalize: bool
    fp16: bool
    quantize: Optional[str]
    no_position_embeddings: bool
    priority_batch_size: int
    max_batch_size: int
    num_worker: int
    device_map: tuple
    cpu: bool

    @property
    def vocab_file(self) -> Optional[Path]:
        """BERT's vocab.txt; None for the other families, whose vocabulary is their tokenizer.json's."""
        return self.folder / self.manifest.vocab_file if self.manifest.vocab_file else None

    @property
    def tokenizer_file(self) -> Optional[Path]:
        """The model's own tokenizer.json (every family but BERT, AUTO and head exports), which then splits text
        instead of the original's rules."""
        return self.folder / self.manifest.tokenizer_file if self.manifest.tokenizer_file else None

    @property
    def template(self):
        """The family's special tokens, pair template and token types (a tokenization.SequenceTemplate), as the
        export recorded them."""
        from .core.tokenization import BERT_TEMPLATE, SequenceTemplate

        manifest = self.manifest
        special = manifest.special_tokens or {}
        return SequenceTemplate(cls=special.get("cls", BERT_TEMPLATE.cls), sep=special.get("sep", BERT_TEMPLATE.sep),
                                unk=special.get("unk", BERT_TEMPLATE.unk), pair_separators=manifest.pair_separators,
                                token_types=manifest.token_types)

    @property
    def output_dim(self) -> int:
        return self.manifest.output_dim

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads, [CLS]/[SEP] included; longer ones are truncated."""
        return self.max_seq_len or self.manifest.max_position_embeddings

    @property
    def token_level(self) -> bool:
        """Pooling NONE: a vector per token, [B, T, D]."""
        return PoolingStrategy.parse(self.pooling_strategy) is PoolingStrategy.NONE

    @property
    def semantics(self) -> str:
        """sentence-transformers: an AUTO export served at the length it was exported with, i.e. what
        ``SentenceTransformer(folder).encode`` gives, or a CrossEncoder's head; transformers: the head of a folder
        transformers saved; bert-as-service otherwise (the original's pooling, its flags)."""
        if self.manifest.head is not None:
            return SENTENCE_TRANSFORMERS if "CrossEncoder" in self.manifest.head.get("source", "") else TRANSFORMERS
        if self.manifest.sentence_transformers is not None and self.max_seq_len == self.manifest.max_seq_len:
            return SENTENCE_TRANSFORMERS
        return BERT_AS_SERVICE

    @property
    def labels(self) -> Optional[tuple]:
        """A classification head's labels, in the order of its scores."""
        return self.manifest.labels

    @property
    def activation(self) -> Optional[str]:
        """What makes scores of a classification head's logits (sigmoid, softmax, identity, tanh); None: no head."""
        return self.manifest.activation

    @property
    def pair_truncation(self) -> str:
        """How a pair too long for the model is cut: a head serves the model's own semantics (transformers' and
        sentence-transformers' longest-first), an embedding the original's (_truncate_seq_pair)."""
        return "longest_first" if self.manifest.head is not None else "original"

    @property
    def output(self) -> str:
        """What the model gives, for the log: its pooling, or its head."""
        head = self.manifest.head
        if head is None:
            return f"pooling {self.pooling_strategy} over layers {list(self.pooling_layer)}"
        if self.task == SPARSE_TASK:
            return f"its SPLADE head ({self.output_dim}-wide sparse vectors)"
        return f"its classification head ({self.task}: {', '.join(self.labels)}, {self.activation} scores)"

    def describe(self) -> dict:
        """What /v1/models, SHOW_CONFIG and the dashboard say about the model."""
        return {
            "task": self.task,
            "semantics": self.semantics,
            "dimensions": self.output_dim,
            "max_tokens": self.max_tokens,
            "normalized": self.normalize,
            "pooling_strategy": self.pooling_strategy,
            "pooling_layer": list(self.pooling_layer),
            "max_seq_len": self.max_seq_len,
            "output_dtype": self.manifest.output_dtype,
            "folder": str(self.folder),
            "source": self.manifest.source,
            **({"labels": list(self.labels), "activation": self.activation} if self.labels is not None else {}),
        }


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    # where the models come from: each -model_dir a source BERT folder or an exported model folder; then every model of
    # --model-repository (those of --model-name only, in that order); none of both: the packaged all-MiniLM-L6-v2
    model_dirs: tuple = ()  # ModelSource, in command-line order
    tuned_model_dir: Optional[Path] = None
    ckpt_name: str = "bert_model.ckpt"
    config_name: str = "bert_config.json"
    graph_tmp_dir: Optional[str] = None
    model_repository: Optional[Path] = None
    model_names: tuple = ()
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    # the served models, settled (model_source.settle_models); empty until then. The first is the default.
    models: tuple = ()
    # BERT parameters: as given, for every model (ModelSpec has what applies to each)
    max_seq_len: Optional[int] = 25
    do_lower_case: bool = True
    pooling_layer: tuple = (-2,)
    pooling_strategy: str = "REDUCE_MEAN"
    mask_cls_sep: bool = False
    no_special_token: bool = False
    show_tokens_to_client: bool = False
    no_position_embeddings: bool = False
    fixed_embed_length: bool = False
    # serving
    ip: str = "0.0.0.0"
    port: int = 5555
    port_out: int = 5556
    http_port: Optional[int] = None
    http_max_connect: int = 10
    cors: str = "*"
    api_key: Optional[str] = field(default=None, repr=False)  # HTTP: Bearer token every data route requires
    http_max_request_bytes: int = DEFAULT_HTTP_MAX_REQUEST_BYTES
    zmq_max_request_bytes: int = DEFAULT_ZMQ_MAX_REQUEST_BYTES  # all frames of one ZeroMQ request together
    max_request_sentences: int = DEFAULT_MAX_REQUEST_SENTENCES
    max_sentence_chars: int = DEFAULT_MAX_SENTENCE_CHARS
    max_inflight_sentences: int = DEFAULT_MAX_INFLIGHT_SENTENCES  # across all clients and both front ends
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES  # requests being encoded plus replies not yet sent
    # ZeroMQ CURVE (docs/SECURITY.md): the server's secret certificate, and the folder of allowed clients' public ones
    curve_certificate: Optional[Path] = None
    curve_allowed_clients: Optional[Path] = None
    num_worker: int = 1
    max_batch_size: int = 256
    priority_batch_size: int = 16
    cpu: bool = False
    xla: bool = False
    fp16: bool = False
    normalize: bool = False  # L2-normalized output vectors (in the exported graph)
    pad_to_max_seq_len: bool = False  # no length-adaptive padding: the baseline bert-serving-benchmark compares with
    quantize: Optional[str] = None  # "int8": bert-export -quantize int8 (an int8 ONNX model, checked against fp32)
    gpu_memory_fraction: float = 0.5
    device_map: tuple = ()
    prefetch_size: int = 10
    verbose: bool = False
    # Triton
    # HOST:PORT of external tritonservers' gRPC endpoints (a name may resolve to several); empty: start one
    triton_urls: tuple = ()
    triton_timeout_s: float = 300.0
    # an endpoint that owes an answer and says nothing this long is taken out, its chunks move to another
    triton_endpoint_timeout_s: float = 10.0
    triton_resolve_interval_s: float = 10.0  # how often --triton-url names are resolved again
    drain_timeout_s: float = 10.0  # on shutdown, how long requests in flight may take before they get an error reply
    # which flags the user gave explicitly (decides whether they may disagree with an exported model)
    explicit: frozenset = frozenset()

    @property
    def embedded_triton(self) -> bool:
        return not self.triton_urls

    @property
    def model_dir(self) -> Optional[Path]:
        """The first -model_dir's folder (the original's single ``model_dir``)."""
        return self.model_dirs[0].path if self.model_dirs else None

    @property
    def serves_whole_repository(self) -> bool:
        """--model-repository without --model-name: whatever it holds is served, and a model in it that cannot be
        served is reported instead of failing the start."""
        return self.model_repository is not None and not self.model_names

    def original_args(self, model: Optional[ModelSpec] = None) -> dict:
        """The original's ``args`` part of server_config: every CLI argument, pooling_strategy as its int; the
        model's own settings where it is given (the default model's, for ZeroMQ)."""
        flags = {flag: getattr(model or self, flag) for flag in MODEL_FLAGS}
        model_dir = model.model_dir if model is not None else self.model_dir
        return {
            "model_dir": str(model_dir) if model_dir else None,
            "tuned_model_dir": str(self.tuned_model_dir) if self.tuned_model_dir else None,
            "ckpt_name": self.ckpt_name,
            "config_name": self.config_name,
            "graph_tmp_dir": self.graph_tmp_dir,
            "max_seq_len": flags["max_seq_len"],
            "do_lower_case": flags["do_lower_case"],
            "pooling_layer": list(flags["pooling_layer"]),
            "pooling_strategy": int(PoolingStrategy.parse(flags["pooling_strategy"])),
            "mask_cls_sep": flags["mask_cls_sep"],
            "no_special_token": self.no_special_token,
            "show_tokens_to_client": self.show_tokens_to_client,
            "no_position_embeddings": flags["no_position_embeddings"],
            "port": self.port,
            "port_out": self.port_out,
            "http_port": self.http_port,
            "http_max_connect": self.http_max_connect,
            "cors": self.cors,
            "num_worker": flags["num_worker"],
            "max_batch_size": flags["max_batch_size"],
            "priority_batch_size": flags["priority_batch_size"],
            "cpu": flags["cpu"],
            "xla": self.xla,
            "fp16": flags["fp16"],
            "gpu_memory_fraction": self.gpu_memory_fraction,
            "device_map": list(flags["device_map"]),
            "prefetch_size": self.prefetch_size,
            "fixed_embed_length": self.fixed_embed_length,
            "verbose": self.verbose,
        }


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bert-serving"


def _flag(parser, group, name: str, *aliases: str, **kwargs):
    """An option spelled ``-name`` (the original) and ``--name``/``--name-with-dashes`` (the modern form)."""
    spellings = [f"-{name}", f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    spellings += [f"-{alias}" for alias in aliases]
    (group or parser).add_argument(*spellings, dest=name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert-serving-start",
        description="Start a bert-as-service compatible server (ZeroMQ protocol 1.10) backed by NVIDIA Triton.",
        allow_abbrev=False,
    )
    paths = parser.add_argument_group("File Paths", "the models to serve")
    _flag(parser, paths, "model_dir", type=_model_source, action="append", metavar="[NAME=]PATH",
          help="a BERT folder (Google TF checkpoint or Hugging Face) exported on the fly and cached, or a folder "
               "written by bert-export, served as NAME (default: the folder's name). Repeat it to serve several "
               "models; the first is the default (ZeroMQ, /encode). Default: the packaged all-MiniLM-L6-v2, as 'bert'")
    _flag(parser, paths, "tuned_model_dir", type=Path, help="directory of a fine-tuned BERT model")
    _flag(parser, paths, "ckpt_name", default="bert_model.ckpt", help="filename of the checkpoint file")
    _flag(parser, paths, "config_name", default="bert_config.json", help="filename of the JSON config file")
    _flag(parser, paths, "graph_tmp_dir", help="(ignored) path to graph temp file")
    _flag(parser, paths, "model_repository", type=Path, metavar="DIR",
          help="serve every model bert-export wrote into this folder (in name order, after any -model_dir), or those "
               "of --model-name; a model in it that cannot be served is reported and the others serve")
    _flag(parser, paths, "model_name", type=_model_name, action="append", metavar="NAME",
          help="with --model-repository: serve this model of it (repeatable, in this order) instead of all")
    _flag(parser, paths, "cache_dir", type=Path, default=None,
          help="where models exported on the fly are kept (default: $XDG_CACHE_HOME/bert-serving)")

    bert = parser.add_argument_group("BERT Parameters", "how BERT and pooling work")
    _flag(parser, bert, "max_seq_len", type=_max_seq_len, default=25,
          help="maximum sequence length, longer ones are trimmed on the right; NONE: the longest in each batch")
    _flag(parser, bert, "cased_tokenization", action="store_true",
          help="skip lower-casing and accent removal (cased models)")
    _flag(parser, bert, "pooling_layer", type=int, nargs="+", default=[-2],
          help="the encoder layer(s) that receive pooling; several are concatenated")
    _flag(parser, bert, "pooling_strategy", default="REDUCE_MEAN", type=str.upper,
          choices=["NONE", "REDUCE_MAX", "REDUCE_MEAN", "REDUCE_MEAN_MAX", "FIRST_TOKEN", "CLS_TOKEN", "LAST_TOKEN",
                   "SEP_TOKEN", "CLS_POOLED", "SPLADE", AUTO_STRATEGY],
          help="the pooling strategy for generating encoding vectors; AUTO: a sentence-transformers model's own "
               "(pooling, last layer, max_seq_length, Normalize, tokenizer); SPLADE: a *ForMaskedLM model's SPLADE "
               "vector. A *ForSequenceClassification (or CrossEncoder) model serves its scores unless a strategy is "
               "given")
    _flag(parser, bert, "mask_cls_sep", action="store_true", help="mask [CLS] and [SEP] out of pooling")
    _flag(parser, bert, "no_special_token", action="store_true",
          help="no [CLS]/[SEP] around tokenized input (is_tokenized=True)")
    _flag(parser, bert, "show_tokens_to_client", action="store_true", help="send tokenization results to clients")
    _flag(parser, bert, "no_position_embeddings", action="store_true", help="do not add position embeddings")
    _flag(parser, bert, "fixed_embed_length", action="store_true",
          help="with max_seq_len NONE and pooling NONE, pad T to max_position_embeddings")

    serving = parser.add_argument_group("Serving Configs", "sockets, batching and devices")
    _flag(parser, serving, "ip", default="0.0.0.0",
          help="address to bind the ZeroMQ ports and the HTTP port to (default: 0.0.0.0, every interface)")
    _flag(parser, serving, "port", "port_in", "port_data", type=_port, default=5555,
          help="port receiving requests from clients")
    _flag(parser, serving, "port_out", "port_result", type=_port, default=5556, help="port publishing results")
    _flag(parser, serving, "http_port", type=_port,
          help="serve the HTTP API (/encode, /v1/embeddings, /metrics, /dashboard, ...) on this port as well")
    _flag(parser, serving, "http_max_connect", type=_positive, default=10,
          help="concurrent HTTP encode requests; more get 429 with Retry-After at once")
    _flag(parser, serving, "cors", default="*",
          help="Access-Control-Allow-Origin for HTTP: '*' or comma-separated origins")
    _flag(parser, serving, "api_key", default=os.environ.get(API_KEY_ENV) or None,
          help=f"HTTP routes but /health and /ready require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})")
    _flag(parser, serving, "http_max_request_bytes", type=_positive, default=DEFAULT_HTTP_MAX_REQUEST_BYTES,
          help="larger HTTP request bodies get 413 before they are parsed")
    _flag(parser, serving, "zmq_max_request_bytes", type=_positive, default=DEFAULT_ZMQ_MAX_REQUEST_BYTES,
          help="a larger ZeroMQ request gets a RequestTooLarge error reply; a frame far larger is refused by "
               f"disconnecting its sender (default: {DEFAULT_ZMQ_MAX_REQUEST_BYTES})")
    _flag(parser, serving, "max_request_sentences", type=_positive, default=DEFAULT_MAX_REQUEST_SENTENCES,
          help=f"sentences per request, ZeroMQ or HTTP; more get a RequestTooLarge error (default: "
               f"{DEFAULT_MAX_REQUEST_SENTENCES})")
    _flag(parser, serving, "max_sentence_chars", type=_positive, default=DEFAULT_MAX_SENTENCE_CHARS,
          help=f"characters per sentence; a request with a longer one gets a RequestTooLarge error (default: "
               f"{DEFAULT_MAX_SENTENCE_CHARS})")
    _flag(parser, serving, "max_inflight_sentences", type=_positive, default=DEFAULT_MAX_INFLIGHT_SENTENCES,
          help=f"sentences being encoded across all clients; a request that would exceed it gets a ServerBusy "
               f"error (HTTP 429) at once (default: {DEFAULT_MAX_INFLIGHT_SENTENCES})")
    _flag(parser, serving, "max_inflight_bytes", type=_positive, default=DEFAULT_MAX_INFLIGHT_BYTES,
          help=f"bytes of requests being encoded plus replies not yet sent (slow readers' included), across all "
               f"clients; a request that would exceed it gets a ServerBusy error (HTTP 429) at once (default: "
               f"{DEFAULT_MAX_INFLIGHT_BYTES})")
    _flag(parser, serving, "curve_certificate", type=Path,
          help="encrypt and authenticate ZeroMQ with CURVE: the server's secret certificate (NAME.key_secret from "
               "bert-serving-keys); needs --curve-allowed-clients. Clients need the keys (docs/SECURITY.md)")
    _flag(parser, serving, "curve_allowed_clients", type=Path,
          help="with --curve-certificate: a folder of the public certificates (NAME.key) of the clients let in; "
               "any other client gets nothing")
    _flag(parser, serving, "num_worker", type=_positive, default=1, help="Triton instances of the model")
    _flag(parser, serving, "max_batch_size", type=_positive, default=256,
          help="largest batch sent to Triton; larger requests are split and reassembled")
    _flag(parser, serving, "priority_batch_size", type=int, default=16,
          help="requests up to this many sentences get Triton priority 1 and jump the queue")
    _flag(parser, serving, "cpu", action="store_true", help="run the model instances on CPU")
    _flag(parser, serving, "xla", action="store_true", help="(ignored) enable XLA")
    _flag(parser, serving, "fp16", action="store_true", help="float16 output")
    _flag(parser, serving, "normalize", action="store_true", help="L2-normalize every output vector")
    _flag(parser, serving, "pad_to_max_seq_len", action="store_true",
          help="pad every sentence to max_seq_len instead of its chunk's longest (for benchmarks: slower, same vectors)")
    _flag(parser, serving, "quantize", choices=["int8"], default=None,
          help="serve an int8 model (bert-export -quantize int8; the export checks its cosine to fp32)")
    _flag(parser, serving, "gpu_memory_fraction", type=float, default=0.5, help="(ignored) GPU memory per worker")
    _flag(parser, serving, "device_map", type=int, nargs="+", default=[], help="GPU ids for the model instances")
    _flag(parser, serving, "prefetch_size", type=int, default=10, help="(ignored) batches to prefetch per worker")
    _flag(parser, serving, "verbose", action="store_true", help="debug logging of the bridge (there is no TensorFlow)")
    parser.add_argument("-version", "--version", action="version", version=f"%(prog)s {SERVER_VERSION}")

    triton = parser.add_argument_group("Triton")
    _flag(parser, triton, "triton_url", type=_triton_urls, action="append",
          help="HOST:PORT of a running tritonserver's gRPC endpoint to use instead of starting the embedded one; "
               "repeat it or separate by commas for several, chunks go to the least busy; a HOST that resolves to "
               "several addresses (a headless Service) counts as one endpoint per address, resolved again every "
               "--triton-resolve-interval-s")
    _flag(parser, triton, "triton_timeout_s", type=float, default=300.0,
          help="seconds one inference call may take, queueing in Triton included, before the client gets an error")
    _flag(parser, triton, "triton_endpoint_timeout_s", type=_positive_seconds, default=10.0,
          help="seconds a Triton endpoint that owes an answer may say nothing at all (no reply, no health answer) "
               "before it is taken out and its chunks move to another endpoint (default: %(default)s)")
    _flag(parser, triton, "triton_resolve_interval_s", type=_positive_seconds, default=10.0,
          help="seconds between resolutions of the --triton-url names: replicas a name gains get chunks, those it "
               "loses get no new ones (default: %(default)s)")
    _flag(parser, serving, "drain_timeout_s", type=float, default=10.0,
          help="on shutdown, seconds requests in flight may take to finish before they are answered with an error")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> ServerConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Which flags were given: parse again with every default suppressed.
    given = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            else:
                kwargs["nargs"] = action.nargs
            given.add_argument(*action.option_strings, **kwargs)
    explicit = frozenset(vars(given.parse_known_args(argv)[0]))
    values = vars(args)
    if values["port"] == values["port_out"]:
        parser.error(f"-port and -port_out must differ (both are {values['port']})")
    if values["http_port"] in (values["port"], values["port_out"]):
        parser.error(f"-http_port {values['http_port']} is also a ZeroMQ port (-port / -port_out)")
    if (values["curve_certificate"] is None) != (values["curve_allowed_clients"] is None):
        parser.error("--curve-certificate and --curve-allowed-clients go together: CURVE admits only the clients in "
                     "the allowed folder (docs/SECURITY.md)")
    urls = [url for given in values.pop("triton_url") or () for url in given]
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        parser.error(f"--triton-url {repeated[0]} was given twice")
    values["triton_urls"] = tuple(urls)
    values["model_dirs"] = tuple(values.pop("model_dir") or ())
    values["model_names"] = tuple(values.pop("model_name") or ())
    if values["model_names"] and values["model_repository"] is None:
        parser.error("--model-name picks models of --model-repository; name a -model_dir with NAME=PATH")
    if values["tuned_model_dir"] is not None and len(values["model_dirs"]) > 1:
        parser.error("-tuned_model_dir goes with one -model_dir (the pretrained model it fine-tunes)")
    values["do_lower_case"] = not values.pop("cased_tokenization")
    values["pooling_strategy"] = {"CLS_TOKEN": "FIRST_TOKEN", "SEP_TOKEN": "LAST_TOKEN"}.get(
        values["pooling_strategy"], values["pooling_strategy"])
    values["pooling_layer"] = tuple(values["pooling_layer"])
    values["device_map"] = tuple(values["device_map"])
    if values["cache_dir"] is None:
        values.pop("cache_dir")
    if "cased_tokenization" in explicit:
        explicit = explicit - {"cased_tokenization"} | {"do_lower_case"}
    return ServerConfig(**values, explicit=explicit)
