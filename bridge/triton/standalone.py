"""``bert-serving-triton``: the bundled tritonserver on a model repository, in the foreground, for ``--triton-url``.

nvidia-pytriton's tritonserver is not on PATH and needs a prepared backend folder and environment (triton_server).
This command runs it the way the bridge does, on ports of your choosing, so several bridges -- or one on another
machine -- can share one Triton: ``bert-serving-start -model_dir REPO/NAME --triton-url HOST:GRPC_PORT``.

It listens on 127.0.0.1 unless told otherwise (``--address 0.0.0.0``): Triton has no authentication, and its HTTP
and gRPC ports offer model control as well as inference, so reaching it from other machines is an explicit choice.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from bert_exporter.manifest import MANIFEST_FILE, Target

from ..cli import configure_logging, interrupt_on_termination_signals
from ..config import default_cache_dir
from ..errors import StartupError

log = logging.getLogger("bert_bridge.triton")


def embedded_models(repository: Path) -> list[str]:
    """The models in the repository that the bundled tritonserver can run (bert-export -target embedded)."""
    from ..model_source import load_manifest

    folders = sorted(p.parent for p in repository.glob(f"*/{MANIFEST_FILE}") if not p.parent.name.startswith("."))
    return [folder.name for folder in folders if load_manifest(folder).target == Target.EMBEDDED.value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert-serving-triton", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"),
                        help="the repository bert-export wrote (default: model_repository)")
    parser.add_argument("--model", action="append", dest="models",
                        help="a model to load (repeatable; default: every -target embedded export in the repository)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address the gRPC, HTTP and metrics ports listen on (default: 127.0.0.1, this machine "
                             "only; 0.0.0.0 for every interface, for bridges on other machines: Triton has no "
                             "authentication)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port, for --triton-url (default: 8001)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default: 8002)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the backend folder and the log go (default: $XDG_CACHE_HOME/bert-serving)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    from .server import EmbeddedTriton

    args = build_parser().parse_args(argv)
    configure_logging(verbose=False)
    interrupt_on_termination_signals()
    cache_dir = args.cache_dir or default_cache_dir()
    triton = None
    try:
        models = args.models or embedded_models(args.model_repository)
        if not models:
            raise StartupError(f"{args.model_repository} holds no -target embedded export (bert-export -target "
                               "embedded -output DIR -name NAME)")
        triton = EmbeddedTriton(model_repository=args.model_repository.resolve(), models=models, cache_dir=cache_dir,
                                log_path=cache_dir / "logs" / f"tritonserver-standalone-{args.grpc_port}.log",
                                address=args.address, grpc_port=args.grpc_port, http_port=args.http_port,
                                metrics_port=args.metrics_port)
        endpoints = triton.start()
        log.info("tritonserver ready: gRPC %s (for --triton-url), HTTP %s, metrics %s; models %s",
                 endpoints.grpc_url, endpoints.http_url, endpoints.metrics_url, ", ".join(models))
        while triton.is_alive():
            time.sleep(0.5)
        raise StartupError(f"tritonserver exited with status {triton.process.returncode}:\n{triton.log_excerpt()}")
    except StartupError as e:
        log.error("%s", e.message)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(0)
    finally:
        if triton is not None:
            triton.stop()


if __name__ == "__main__":
    main()
