"""``bert-serving-start``: wire the config, the model, Triton and the front ends."""
from __future__ import annotations

import asyncio
import datetime
import logging
import signal
import sys
from typing import Optional, Sequence

from bert_exporter.manifest import Target

from . import package_version
from .config import IGNORED_FLAGS, ServerConfig, parse_args
from .errors import BackendUnavailable, StartupError

log = logging.getLogger("bert_bridge")

READY_MESSAGE = "ready to serve"


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_ignored_flags(config: ServerConfig) -> None:
    for flag in sorted(config.explicit & IGNORED_FLAGS.keys()):
        log.info("-%s is accepted for compatibility and has no effect here: %s", flag, IGNORED_FLAGS[flag])


class Server:
    """One running bridge: the served model, Triton (embedded or external) and the ZeroMQ front end.

    Start-up order: bind the ports (refused in one line if taken), resolve or export the model, start Triton, serve.
    An embedded tritonserver that dies while serving is restarted (triton_server.TritonSupervisor); one that fails
    to start, the first time or too often in a row, ends the bridge with status 2.
    Whatever ends it -- SIGINT, SIGTERM, TERMINATION, a tritonserver that cannot be restarted, an error -- it stops
    accepting, answers every request in flight (vectors or an error, within --drain-timeout-s), then stops Triton:
    nothing it started outlives it.
    """

    def __init__(self, config: ServerConfig):
        self.config = config
        self.model = None
        self.triton = None
        self.supervisor = None
        self.backend = None
        self.started_at = datetime.datetime.now()

    def run(self) -> int:
        from .model_source import resolve_model, settle_config
        from .frontends.zmq_frontend import ZmqSockets

        config = self.config
        sockets = ZmqSockets.bind(ip=config.ip, port=config.port, port_out=config.port_out,
                                  max_request_bytes=config.zmq_max_request_bytes,
                                  curve_certificate=config.curve_certificate,
                                  curve_allowed_clients=config.curve_allowed_clients)
        http_socket = None
        try:
            if config.http_port is not None:
                from .frontends.http_frontend import listen

                http_socket = listen(config.ip, config.http_port)
            self.model = resolve_model(config)
            self.config = config = settle_config(config, self.model)
            if config.embedded_triton:
                urls = (self._start_embedded_triton(),)
            else:
                urls = config.triton_urls
            return asyncio.run(self._serve(urls, sockets, http_socket))
        finally:
            sockets.close()
            if http_socket is not None:
                http_socket.close()
            if self.triton is not None:
                self.triton.stop()

    def _start_embedded_triton(self) -> str:
        from .triton.server import EmbeddedTriton

        config, manifest = self.config, self.model.manifest
        if manifest.target != Target.EMBEDDED.value:
            raise StartupError(f"{self.model.folder} is a -target {manifest.target} export, which the embedded "
                               "tritonserver cannot run (it has only the python backend): serve it with --triton-url "
                               "HOST:PORT of a tritonserver that has that backend, or export -target embedded")
        self.triton = EmbeddedTriton(
            model_repository=self.model.repository, models=[self.model.name], cache_dir=config.cache_dir,
            instance_group=[{"count": config.num_worker, "kind": "KIND_CPU"}],
            log_path=config.cache_dir / "logs" / f"tritonserver-{config.port}.log")
        return self.triton.start().grpc_url

    async def _serve(self, urls: Sequence[str], sockets, http_socket) -> int:
        from .metrics import BridgeMetrics
        from .core.service import EncodingService
        from .statistics import ServerStatistic
        from .triton.pool import TritonPool
        from .frontends.zmq_frontend import ZmqFrontend

        config = self.config
        backend = self.backend = TritonPool(targets=urls, model_name=self.model.name,
                                            timeout_s=config.triton_timeout_s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            await backend.wait_until_ready(timeout_s=60 if self.triton else 10)
        except BackendUnavailable as e:
            if self.triton is not None:
                raise StartupError(str(e)) from e
            # An external Triton may come up later: serve anyway; requests fail with a clear reply until it does.
            log.warning("%s; serving anyway, requests fail until it is ready", e)
        service = EncodingService(config=config, vocab_file=self.model.vocab_file,
                                  max_position_embeddings=self.model.manifest.max_position_embeddings,
                                  backend=backend, tokenizer_file=self.model.tokenizer_file,
                                  template=self.model.template)
        statistic, metrics = ServerStatistic(), BridgeMetrics()  # shared by the ZeroMQ and HTTP front ends
        frontend = ZmqFrontend(sockets=sockets, service=service, statistic=statistic, metrics=metrics,
                               config_reply=self.config_reply, on_terminate=stop.set)
        ending = [asyncio.create_task(frontend.serve()), asyncio.create_task(stop.wait())]
        http = http_serving = None
        if http_socket is not None:
            from .frontends.http_frontend import HttpFrontend

            http = HttpFrontend(listening_socket=http_socket, service=service, statistic=statistic, metrics=metrics,
                                config=config, backend=backend, output_dim=self.model.manifest.output_dim,
                                config_reply=self.config_reply)
            http_serving = asyncio.create_task(http.serve())  # ends only through http.shutdown(), or by failing
            log.info("HTTP on %s (OpenAI-compatible /v1/embeddings, /metrics, /docs, /dashboard)%s", http.url,
                     "; API key required" if config.api_key else "")
        if self.triton is not None:
            ending.append(asyncio.create_task(self._supervise_triton()))
        manifest = self.model.manifest
        log.info("%s: ZeroMQ on tcp://%s:%d (requests) and tcp://%s:%d (replies); model %s (%s), pooling %s over "
                 "layers %s, max_seq_len %s, %d-dim %s output; Triton %s",
                 READY_MESSAGE, config.ip, config.port, config.ip, config.port_out, self.model.folder, manifest.source,
                 config.pooling_strategy, list(config.pooling_layer), config.max_seq_len or "NONE",
                 manifest.output_dim, manifest.output_dtype, backend.url)
        try:
            done, _ = await asyncio.wait(ending + [t for t in (http_serving,) if t],
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in ending:
                task.cancel()
            await asyncio.gather(*ending, return_exceptions=True)
            # A second signal while draining cuts the wait short: what is still in flight gets an error reply.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, frontend.cut_drain_short)
            drains = [frontend.shutdown(timeout_s=config.drain_timeout_s)]
            if http is not None:
                drains.append(http.shutdown(timeout_s=config.drain_timeout_s))
            await asyncio.gather(*drains)
            if http_serving is not None:
                await asyncio.gather(http_serving, return_exceptions=True)
            await backend.close()
        failed = [task.exception() for task in done if not task.cancelled() and task.exception() is not None]
        if failed:
            raise failed[0]
        log.info("bye")
        return 0

    async def _supervise_triton(self) -> None:
        """Restart the embedded tritonserver when it dies; while it is down, every chunk fails at once with the
        reason. Raises StartupError when it cannot be brought back (see RestartPolicy)."""
        from .triton.server import TritonSupervisor

        backend = self.backend

        async def back_at(grpc_url: str) -> None:
            await backend.resume(targets=[grpc_url])

        self.supervisor = TritonSupervisor(self.triton, on_down=backend.suspend, on_up=back_at)
        await self.supervisor.run()

    def config_reply(self, request) -> dict:
        """The original's ``{**runtime, **args, **static}`` (later dicts win), then our additions under new keys."""
        import zmq

        config, manifest = self.config, self.model.manifest
        runtime = {
            "client": request.identity.decode("ascii", "replace"),
            "num_process": config.num_worker,
            "ventilator -> worker": [f"grpc://{address}" for address in self.backend.addresses],
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
            "bridge_version": package_version(),
            "model_folder": str(self.model.folder),
            "model_source": manifest.source,
            "model_type": manifest.model_type,  # the family: bert, roberta, xlm-roberta, ...
            "output_dim": manifest.output_dim,
            "output_dtype": manifest.output_dtype,
            "normalize": manifest.normalize,
            "sentence_transformers": manifest.sentence_transformers,  # what -pooling_strategy AUTO resolved to
            "triton": {**self.backend.details, "url": self.backend.url, "model": self.backend.model_name,
                       "endpoints": self.backend.endpoint_states(),
                       **({"restarts": self.supervisor.restarts} if self.supervisor else {})},
        }
        return {**runtime, **config.original_args(), **static, **ours}


def interrupt_on_termination_signals() -> None:
    """SIGTERM and SIGHUP (systemd, docker stop, a closed terminal) raise KeyboardInterrupt like Ctrl-C does, so a
    start in progress unwinds through every step's cleanup. The event loop takes signals over once serving."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Few glibc malloc arenas for the whole bridge, set before any thread starts. By default every thread that
    allocates (tokenizer executor, gRPC, tokenizers' own) gets an arena of its own, each keeping the high-water mark of
    what it once held: over a 10-minute soak the bridge's RSS climbed 15% that way and stayed there
    (docs/RELIABILITY.md). Elsewhere than glibc this does nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def start(argv: Optional[Sequence[str]] = None) -> None:
    limit_malloc_arenas()
    config = parse_args(argv)
    configure_logging(config.verbose)
    _log_ignored_flags(config)
    interrupt_on_termination_signals()
    try:
        sys.exit(Server(config).run())
    except StartupError as e:
        log.error("%s", e.message)
        sys.exit(2)
    except KeyboardInterrupt as e:
        log.info("stopped before serving (%s)", e or "SIGINT")
        sys.exit(0)


if __name__ == "__main__":
    start()
