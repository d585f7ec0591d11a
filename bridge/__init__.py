"""bert_bridge: ``bert-serving-start`` and its three wings (DESIGN.md).

``frontends/`` speaks the protocols (ZeroMQ with CURVE, HTTP with its dashboard), ``core/`` is the service every front
end calls (tokenization, chunking, fair scheduling, admission limits), ``triton/`` talks to Triton (gRPC calls, the
pool of endpoints, the embedded tritonserver). Wiring, configuration, model sources, the error set and measurements
stay at the top.
"""
from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """This distribution's version, as the HTTP API and server_config report it."""
    try:
        return version("bert-serving-triton")
    except PackageNotFoundError:
        return "unknown"
