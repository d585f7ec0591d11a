"""``bert-serving-start``: wire the config, the model, Triton and the front ends."""
from __future__ import annotations

import asyncio
import datetime
import logging
import signal
import sys
from typing import Optional, Sequence

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
    """One running bridge: the served models, Triton (embedded or external) and the front ends.

    Start-up order: bind the ports (refused in one line if taken), resolve or export the models, start Triton, serve.
    An embedded tritonserver that dies while serving is restarted (triton/server.TritonSupervisor); one that fails
    to start, the first time or too often in a row, ends the bridge with status 2.
    Whatever ends it -- SIGINT, SIGTERM, TERMINATION, a tritonserver that cannot be restarted, an error -- it stops
    accepting, answers every request in flight (vectors or an error, within --drain-timeout-s), then stops Triton:
    nothing it started outlives it.
    """

    def __init__(self, config: ServerConfig):
        self.config = config
        self.unserved: dict[str, str] = {}  # model name -> why it is not served (a whole --model-repository only)
        self.triton = None
        self.supervisor = None
        self.registry = None
        self.started_at = datetime.datetime.now()

    def run(self) -> int:
        from .model_source import settle_models
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
            self.config, unserved = settle_models(config)
            self._not_served({model.name: (model.folder, model.reason) for model in unserved})
            urls = (self._start_embedded_triton(),) if self.config.embedded_triton else self.config.triton_urls
            return asyncio.run(self._serve(urls, sockets, http_socket))
        finally:
            # Triton first: the request port closing is how bert-serving-terminate sees that everything has stopped.
            if self.triton is not None:
                self.triton.stop()
            sockets.close()
            if http_socket is not None:
                http_socket.close()

    def _not_served(self, models: dict) -> None:
        """One log line per model that cannot be served (name -> (folder, reason)); the others serve."""
        for name, (folder, reason) in models.items():
            log.warning("model '%s' (%s) is not served: %s", name, folder, reason)
            self.unserved[name] = reason

    def _start_embedded_triton(self) -> str:
        """The embedded tritonserver on a repository of links to the served exports, loading exactly them."""
        from .triton.server import EmbeddedTriton, link_repository

        config = self.config
        repository = link_repository(config.cache_dir / "served" / f"bridge-{config.port}",
                                     {model.name: model.folder for model in config.models})
        self.triton = EmbeddedTriton(
            model_repository=repository, models=[model.name for model in config.models], cache_dir=config.cache_dir,
            instance_groups={model.name: [{"count": model.num_worker, "kind": "KIND_CPU"}] for model in config.models},
            skip_unloadable=config.serves_whole_repository,
            log_path=config.cache_dir / "logs" / f"tritonserver-{config.port}.log")
        grpc_url = self.triton.start().grpc_url
        folders = {model.name: model.folder for model in config.models}
        self._not_served({name: (folders[name], f"tritonserver could not load it: {reason}")
                          for name, reason in self.triton.unloadable.items()})
        return grpc_url

    async def _serve(self, urls: Sequence[str], sockets, http_socket) -> int:
        from .core.registry import ModelRegistry
        from .metrics import BridgeMetrics
        from .statistics import ServerStatistic
        from .triton.pool import TritonPool
        from .frontends.zmq_frontend import ZmqFrontend

        config = self.config
        backends = {model.name: TritonPool(targets=urls, model_name=model.triton_name,
                                           timeout_s=config.triton_timeout_s,
                                           endpoint_timeout_s=config.triton_endpoint_timeout_s,
                                           refresh_s=config.triton_resolve_interval_s)
                    for model in config.models if model.name not in self.unserved}
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        outcomes = await asyncio.gather(*(backend.wait_until_ready(timeout_s=60 if self.triton else 10)
                                          for backend in backends.values()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BackendUnavailable):
                if self.triton is not None:
                    raise StartupError(str(outcome)) from outcome
                # An external Triton may come up later: serve anyway; requests fail with a clear reply until it does.
                log.warning("%s; serving anyway, requests fail until it is ready", outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        registry = self.registry = ModelRegistry.build(config, backends, self.unserved)
        # shared by the ZeroMQ and HTTP front ends
        statistic, metrics = ServerStatistic(), BridgeMetrics(models=registry.names)
        frontend = ZmqFrontend(sockets=sockets, service=registry.default, statistic=statistic, metrics=metrics,
                               config_reply=self.config_reply, on_terminate=stop.set)
        ending = [asyncio.create_task(frontend.serve()), asyncio.create_task(stop.wait())]
        http = http_serving = None
        if http_socket is not None:
            from .frontends.http_frontend import HttpFrontend

            http = HttpFrontend(listening_socket=http_socket, registry=registry, statistic=statistic, metrics=metrics,
                                config=config, config_reply=self.config_reply)
            http_serving = asyncio.create_task(http.serve())  # ends only through http.shutdown(), or by failing
            log.info("HTTP on http://%s (OpenAI-compatible /v1/embeddings, /metrics, /docs, /dashboard)%s",
                     http.bound_address,
                     "; API key required" if config.api_key else "")
        if self.triton is not None:
            ending.append(asyncio.create_task(self._supervise_triton()))
        self._log_ready(urls)
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
            await asyncio.gather(*(backend.close() for backend in backends.values()))
        failed = [task.exception() for task in done if not task.cancelled() and task.exception() is not None]
        if failed:
            raise failed[0]
        log.info("bye")
        return 0

    def _log_ready(self, urls: Sequence[str]) -> None:
        """One line per further model, then the ready line, which describes the default model as it always did."""
        config, registry = self.config, self.registry
        for service in list(registry)[1:]:
            model = service.model
            log.info("also serving model %s (%s, %s), %s semantics: %s, max_seq_len %s, %d-dim%s%s", model.name,
                     model.folder, model.manifest.source, model.semantics, model.output, model.max_seq_len or "NONE",
                     model.output_dim, ", normalized" if model.normalize else "",
                     "; the default of /v1/embeddings" if service is registry.default_for("embeddings") else "")
        model = registry.default.model
        log.info("%s: ZeroMQ on tcp://%s:%d (requests) and tcp://%s:%d (replies); model %s (%s), %s, max_seq_len "
                 "%s, %d-dim %s output; Triton %s%s",
                 READY_MESSAGE, config.ip, config.port, config.ip, config.port_out, model.folder,
                 model.manifest.source, model.output, model.max_seq_len or "NONE",
                 model.output_dim, model.manifest.output_dtype, ",".join(urls),
                 f"; models {', '.join(registry.names)}" if len(registry.names) > 1 else "")

    async def _supervise_triton(self) -> None:
        """Restart the embedded tritonserver when it dies; while it is down, every chunk of every model fails at once
        with the reason. Raises StartupError when it cannot be brought back (see RestartPolicy)."""
        from .triton.server import TritonSupervisor

        backends = [service.backend for service in self.registry]

        def down(reason: str) -> None:
            for backend in backends:
                backend.suspend(reason)

        async def back_at(grpc_url: str) -> None:
            await asyncio.gather(*(backend.resume(targets=[grpc_url]) for backend in backends))

        self.supervisor = TritonSupervisor(self.triton, on_down=down, on_up=back_at)
        await self.supervisor.run()

    def config_reply(self, request) -> dict:
        """The original's ``{**runtime, **args, **static}`` (later dicts win) for the default model, which ZeroMQ
        serves; then our additions under new keys, ``models`` describing every model."""
        import zmq

        config, registry = self.config, self.registry
        default = registry.default
        model, backend = default.model, default.backend
        runtime = {
            "client": request.identity.decode("ascii", "replace"),
            "num_process": model.num_worker,
            "ventilator -> worker": [f"grpc://{address}" for address in backend.addresses],
            "worker -> sink": [],
            "ventilator <-> sink": None,
            "server_current_time": str(datetime.datetime.now()),
            "device_map": list(model.device_map),
            "num_concurrent_socket": max(8, 2 * model.num_worker),
        }
        static = {
            "tensorflow_version": model.manifest.extra.get("tensorflow_version"),
            "python_version": sys.version,
            "server_version": "1.10.0",
            "pyzmq_version": zmq.pyzmq_version(),
            "zmq_version": zmq.zmq_version(),
            "server_start_time": str(self.started_at),
        }
        ours = {
            "bridge_version": package_version(),
            "model_name": model.name,
            "model_folder": str(model.folder),
            "model_source": model.manifest.source,
            "model_type": model.manifest.model_type,  # the family: bert, roberta, xlm-roberta, ...
            "output_dim": model.output_dim,
            "output_dtype": model.manifest.output_dtype,
            "normalize": model.normalize,
            "sentence_transformers": model.manifest.sentence_transformers,  # what -pooling_strategy AUTO resolved to
            "triton": {**backend.details, "url": backend.url, "model": backend.model_name,
                       "endpoints": backend.endpoint_states(),
                       **({"restarts": self.supervisor.restarts} if self.supervisor else {})},
            "models": [registry.card(name) for name in registry.names],
        }
        return {**runtime, **config.original_args(model), **static, **ours}


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
