"""The models a bridge serves, by name: each one's ``EncodingService``, and the models that could not be served.

Front ends route through ``lookup`` and only there, so the rules hold for every protocol:

- each route serves some tasks (``ROUTE_TASKS``): ZeroMQ every task (the 1.10 protocol returns whatever the default
  model gives: vectors, or a classifier's scores), ``/encode`` and ``/v1/embeddings`` embed models, ``/rerank`` and
  ``/v1/rerank`` rerank models (one score per pair), ``/predict`` rerank and classify models, ``/embed_sparse``
  sparse (SPLADE) models;
- no name: the default model -- the first one served (ZeroMQ, whose protocol has no model field, and ``/encode``),
  or on a route it does not serve the first model that route serves; ``/v1/embeddings`` asks for the modern default
  instead: the first embed model served with its own (sentence-transformers) semantics, else the first embed model;
- one model configured: any name is that model, as before a bridge could serve several (OpenAI clients send names
  of their own);
- several: an unknown name is ``ModelNotFound`` (HTTP 404), a model that could not be loaded ``BackendUnavailable``
  with its reason;
- a model whose task the route does not serve is ``InvalidRequest`` naming the model's task and the models that do.

Built once at start (``ModelRegistry.build``) and never changed: one ``FairScheduler`` and one ``Admission`` are
shared by all services, so clients take turns across models and the load limits hold for all of them together.
"""
from __future__ import annotations

import functools
import types
from typing import Iterator, Mapping, Optional, Sequence

from ..config import (CLASSIFY_TASK, EMBED_TASK, RERANK_TASK, SENTENCE_TRANSFORMERS, SPARSE_TASK, TASKS,
                      ServerConfig)
from ..errors import BackendUnavailable, InvalidRequest, ModelNotFound
from .admission import Admission
from .scheduler import FairScheduler
from .chunking import CHUNK_POSITIONS
from .service import INFLIGHT_CHUNK_POSITIONS, EncodingService, scheduler_capacity

__all__ = ["ModelRegistry", "ROUTE_TASKS"]

# The tasks each route serves; a route is named by its path (zmq: the ZeroMQ protocol).
ROUTE_TASKS = {
    "zmq": TASKS,
    "encode": (EMBED_TASK,),
    "embeddings": (EMBED_TASK,),
    "rerank": (RERANK_TASK,),
    "predict": (RERANK_TASK, CLASSIFY_TASK),
    "embed_sparse": (SPARSE_TASK,),
}


class ModelRegistry:
    """Immutable: ``services`` in the configured order (the first is the default), ``unserved`` name -> why (kept in
    name order)."""

    def __init__(self, services: Sequence[EncodingService], unserved: Optional[Mapping[str, str]] = None):
        if not services:
            raise ValueError("a registry needs at least one served model")
        self._services: Mapping[str, EncodingService] = types.MappingProxyType({s.name: s for s in services})
        self.unserved: Mapping[str, str] = types.MappingProxyType(dict(sorted((unserved or {}).items())))
        self.default = services[0]
        self.admission = self.default.admission

    @classmethod
    def build(cls, config: ServerConfig, backends: Mapping[str, object],
              unserved: Optional[Mapping[str, str]] = None) -> "ModelRegistry":
        """One service per model of ``config.models`` that is not ``unserved``, on its backend (model name -> Triton
        pool), all sharing one scheduler and one admission."""
        served = [model for model in config.models if model.name not in (unserved or {})]
        per_endpoint, positions_per_endpoint = scheduler_capacity(served), INFLIGHT_CHUNK_POSITIONS * CHUNK_POSITIONS
        scheduler = FairScheduler(capacity=per_endpoint, position_capacity=positions_per_endpoint)
        # N replicas up keep N times the work in flight, as the pools see them (one out gives its share back). Every
        # model's pool watches the same endpoints; the one that sees the most up speaks for them.
        endpoints_up = {}

        def endpoints_changed(name: str, up: int) -> None:
            endpoints_up[name] = up
            replicas = max(1, *endpoints_up.values())
            scheduler.resize(per_endpoint * replicas, positions_per_endpoint * replicas)

        for model in served:
            backends[model.name].watch_endpoints_up(functools.partial(endpoints_changed, model.name))
        admission = Admission(config)
        return cls([EncodingService(config=config, model=model, backend=backends[model.name], scheduler=scheduler,
                                    admission=admission) for model in served], unserved)

    def __iter__(self) -> Iterator[EncodingService]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    @property
    def names(self) -> list[str]:
        """Every model configured: those served, then those that could not be."""
        return [*self._services, *self.unserved]

    def lookup(self, name: Optional[str], *, route: str = "encode") -> EncodingService:
        """The service for a request naming ``name`` (None: not naming one) on ``route`` (a key of ROUTE_TASKS); see
        the module's docstring for the rules."""
        tasks = ROUTE_TASKS[route]
        if name is None:
            service = self.default_for(route)
            if service is None:
                raise InvalidRequest(f"no model here serves {_route_label(route)} ({' or '.join(tasks)} models); "
                                     f"this server serves {self._served_with_tasks()}")
        elif len(self.names) == 1:
            service = self.default
        elif name in self._services:
            service = self._services[name]
        elif name in self.unserved:
            raise BackendUnavailable(f"model '{name}' is not served: {self.unserved[name]}")
        else:
            raise ModelNotFound(f"the model '{name}' does not exist here; this server serves "
                                f"{', '.join(repr(n) for n in self._services)}")
        if service.model.task not in tasks:
            fitting = ", ".join(repr(s.name) for s in self if s.model.task in tasks) or "none here"
            task = service.model.task
            raise InvalidRequest(f"model '{service.name}' is {'an' if task[0] in 'aeiou' else 'a'} {task} model; "
                                 f"{_route_label(route)} serves {' or '.join(tasks)} models: {fitting}")
        return service

    def default_for(self, route: str) -> Optional[EncodingService]:
        """The model a request naming none gets on ``route``, or None when no model serves it."""
        fitting = [s for s in self if s.model.task in ROUTE_TASKS[route]]
        if route == "embeddings":
            return next((s for s in fitting if s.model.semantics == SENTENCE_TRANSFORMERS), fitting[0] if fitting
                        else None)
        return self.default if self.default in fitting else next(iter(fitting), None)

    def _served_with_tasks(self) -> str:
        return ", ".join(f"'{s.name}' ({s.model.task})" for s in self)

    def get(self, name: str) -> Optional[EncodingService]:
        """The service of exactly this name (no defaults), or None."""
        return self._services.get(name)

    def card(self, name: str) -> dict:
        """What the server says about one model (/v1/models, SHOW_CONFIG): its settings and semantics, and which
        defaults it is; a model that could not be served says why. KeyError for a name never configured."""
        service = self._services.get(name)
        if service is None:
            return {"id": name, "task": EMBED_TASK, "ready": False, "error": self.unserved[name]}
        defaults = [route for route in ROUTE_TASKS if self.default_for(route) is service]
        ready = any(endpoint["state"] == "ready" for endpoint in service.backend.endpoint_states())
        return {"id": name, **service.model.describe(), "ready": ready, "default_for": defaults}


def _route_label(route: str) -> str:
    return "ZeroMQ" if route == "zmq" else {"rerank": "/rerank (and /v1/rerank)",
                                            "embeddings": "/v1/embeddings"}.get(route, f"/{route}")
