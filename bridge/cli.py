"""``bert-serving-start`` and ``bert-serving-terminate``: wire the config, the model, Triton and the front ends."""
from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Optional, Sequence

from .config import IGNORED_FLAGS, ServerConfig, parse_args
from .errors import BackendUnavailable, StartupError

log = logging.getLogger("bert_bridge")

READY_MESSAGE = "ready to serve"


def _package_version() -> str:
    try:
        return version("bert-serving-triton")
    except PackageNotFoundError:
        return "unknown"


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_ignored_flags(config: ServerConfig) -> None:
    for flag in sorted(config.explicit & IGNORED_FLAGS.keys()):
        log.info("-%s is accepted for compatibility and has no effect here: %s", flag, IGNORED_FLAGS[flag])


class Server:
    """One running bridge: the served model, Triton (embedded or external) and the ZeroMQ front end."""

    def __init__(self, config: ServerConfig):
        from .model_source import resolve_model, settle_config

        self.model = resolve_model(config)
        self.config = settle_config(config, self.model)
        self.triton = None
        self.backend = None
        self.started_at = datetime.datetime.now()

    def run(self) -> int:
        from .triton_server import EmbeddedTriton

        config = self.config
        if config.embedded_triton:
            self.triton = EmbeddedTriton(
                model_repository=self.model.repository, cache_dir=config.cache_dir,
                log_path=config.cache_dir / "logs" / f"tritonserver-{config.port}.log")
            url = self.triton.start().grpc_url
        else:
            url = config.triton_url
        try:
            return asyncio.run(self._serve(url))
        finally:
            if self.triton is not None:
                self.triton.stop()

    async def _serve(self, url: str) -> int:
        from .metrics import BridgeMetrics
        from .service import EncodingService
        from .statistics import ServerStatistic
        from .triton_backend import TritonBackend
        from .zmq_frontend import ZmqFrontend

        config = self.config
        backend = self.backend = TritonBackend(url=url, model_name=self.model.name, timeout_s=config.triton_timeout_s)
        try:
            await backend.wait_until_ready(timeout_s=60 if self.triton else 10)
        except BackendUnavailable as e:
            if self.triton is not None:
                raise StartupError(str(e)) from e
            # An external Triton may come up later: serve anyway; requests fail with a clear reply until it does.
            log.warning("%s; serving anyway, requests fail until it is ready", e)
        service = EncodingService(config=config, vocab_file=self.model.vocab_file,
                                  max_position_embeddings=self.model.manifest.max_position_embeddings,
                                  backend=backend)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        statistic, metrics = ServerStatistic(), BridgeMetrics()  # shared by the ZeroMQ and HTTP front ends
        frontend = ZmqFrontend(service=service, statistic=statistic, metrics=metrics, bind_ip=config.ip,
                               port=config.port, port_out=config.port_out, config_reply=self.config_reply,
                               on_terminate=stopped.set)
        tasks = [asyncio.create_task(frontend.serve()), asyncio.create_task(stopped.wait())]
        http = None
        if config.http_port is not None:
            from .http_frontend import HttpFrontend

            http = HttpFrontend(service=service, statistic=statistic, metrics=metrics, config=config,
                                backend=backend, output_dim=self.model.manifest.output_dim,
                                config_reply=self.config_reply)
            tasks.append(asyncio.create_task(http.serve()))
            log.info("HTTP on %s (OpenAI-compatible /v1/embeddings, /metrics, /docs, /dashboard)%s", http.url,
                     "; API key required" if config.api_key else "")
        if self.triton is not None:
            tasks.append(asyncio.create_task(self._watch_triton()))
        manifest = self.model.manifest
        log.info("%s: ZeroMQ on tcp://%s:%d (requests) and tcp://%s:%d (replies); model %s (%s), pooling %s over "
                 "layers %s, max_seq_len %s, %d-dim %s output; Triton %s",
                 READY_MESSAGE, config.ip, config.port, config.ip, config.port_out, self.model.folder, manifest.source,
                 config.pooling_strategy, list(config.pooling_layer), config.max_seq_len or "NONE",
                 manifest.output_dim, manifest.output_dtype, url)
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if http is not None:
            await http.shutdown()  # stop accepting, finish the HTTP requests in flight
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        frontend.close()
        await backend.close()
        failed = [task.exception() for task in done if task.exception() is not None]
        if failed:
            raise failed[0]
        log.info("bye")
        return 0

    async def _watch_triton(self) -> None:
        while self.triton.is_alive():
            await asyncio.sleep(1)
        raise StartupError(f"the embedded tritonserver died (status {self.triton.process.returncode}):\n"
                           f"{self.triton.log_excerpt()}")

    def config_reply(self, request) -> dict:
        """The original's ``{**runtime, **args, **static}`` (later dicts win), then our additions under new keys."""
        import zmq

        config, manifest = self.config, self.model.manifest
        runtime = {
            "client": request.identity.decode("ascii", "replace"),
            "num_process": config.num_worker,
            "ventilator -> worker": [f"grpc://{self.backend.url}"],
            "worker -> sink": [],
            "ventilator <-> sink": None,
            "server_current_time": str(datetime.datetime.now()),
            "device_map": list(config.device_map),
            "num_concurrent_socket": max(8, 2 * config.num_worker),
        }
        static = {
            "tensorflow_version": manifest.extra.get("tensorflow_version"),
            "python_version": sys.version,
            "server_version": "1.10.0",
            "pyzmq_version": zmq.pyzmq_version(),
            "zmq_version": zmq.zmq_version(),
            "server_start_time": str(self.started_at),
        }
        ours = {
            "bridge_version": _package_version(),
            "model_folder": str(self.model.folder),
            "model_source": manifest.source,
            "output_dim": manifest.output_dim,
            "output_dtype": manifest.output_dtype,
            "triton": {"url": self.backend.url, "model": self.backend.model_name, **self.backend.details},
        }
        return {**runtime, **config.original_args(), **static, **ours}


def start(argv: Optional[Sequence[str]] = None) -> None:
    config = parse_args(argv)
    _configure_logging(config.verbose)
    _log_ignored_flags(config)
    try:
        sys.exit(Server(config).run())
    except StartupError as e:
        log.error("%s", e.message)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def terminate(argv: Optional[Sequence[str]] = None) -> None:
    """Ask a running server to shut down, as the original's bert-serving-terminate did."""
    import zmq

    from bert_serving.client.protocol import TERMINATION, encode_request

    parser = argparse.ArgumentParser(prog="bert-serving-terminate", description="Shut down a bert-serving server.")
    parser.add_argument("-ip", "--ip", default="localhost", help="the server's address")
    parser.add_argument("-port", "--port", "-port_in", "-port_data", dest="port", type=int, default=5555,
                        help="the server's request port")
    args = parser.parse_args(argv)
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.LINGER, 2000)
    socket.connect(f"tcp://{args.ip}:{args.port}")
    socket.send_multipart(encode_request(b"0", TERMINATION, 0))  # [b"0", b"TERMINATION", b"0", b"0"]
    socket.close()
    context.term()
    print(f"sent TERMINATION to tcp://{args.ip}:{args.port}")


if __name__ == "__main__":
    start()
