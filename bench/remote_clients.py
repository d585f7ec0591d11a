"""Clients on another host: a process on the clients' test host that runs the clients this process asks for.

The driving process (a test, the benchmark) stays in the machine's own namespace, where the test hosts cannot be
reached. ``RemoteClients.start(host, folder)`` runs this module on the clients' host (``ip netns exec``) and talks to
it over a Unix socket it listens on (a file: namespaces do not separate those) with ``multiprocessing.connection``:
each message is ``(function name, keyword arguments)``, each answer ``("ok", value)`` or ``("error", one line)``.
The clients are the real ones: the unmodified PyPI bert-serving-client 1.10.0 (ZeroMQ), the openai SDK (HTTP), and
our client with CURVE keys.

Under load (``load_start`` ... ``load_stop``), every request's row order is rotated by its sequence number, so a reply
that belonged to another request does not match; each reply is compared with the reference vectors here and its
largest difference recorded, with the request's send and answer times (``time.monotonic``, one clock for every
process on the machine).
"""
from __future__ import annotations

import importlib.util
import secrets
import sys
import threading
import time
import traceback
from multiprocessing.connection import Client, Listener
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIENT_TIMEOUT_MS = 120_000  # only to end a broken run: the callers judge the times recorded
START_TIMEOUT_S = 120


class RemoteError(Exception):
    """What a client on the clients' host raised, as one line."""


class RemoteClients:
    """The clients' host, driven from here: ``clients.call("zmq_encode", bridge=..., sentences=...)``."""

    def __init__(self, connection, process):
        self.connection, self.process = connection, process

    @classmethod
    def start(cls, host, folder: Path) -> "RemoteClients":
        """This module running on ``host`` (a network_hosts.Host), connected."""
        control, authkey = folder / "control.sock", secrets.token_hex(16)
        process = host.start("clients", [sys.executable, "-m", "bert_bench.remote_clients", str(control), authkey],
                             folder / "clients.log")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not control.exists():  # it listens once its imports are done
            if process.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the clients' host did not start:\n{process.log()}")
            time.sleep(0.1)
        return cls(Client(str(control), authkey=authkey.encode()), process)

    def call(self, name: str, **kwargs):
        self.connection.send((name, kwargs))
        status, value = self.connection.recv()
        if status != "ok":
            raise RemoteError(value)
        return value

    def close(self) -> None:
        self.connection.close()


# -- what runs on the clients' host ---------------------------------------------------------------------------------

def legacy_module():
    """The unmodified 1.10 client, from its own folder (as tests/conftest.py's legacy_client)."""
    name = "legacy_bert_serving_client"
    if name in sys.modules:
        return sys.modules[name]
    folder = REPO_ROOT / ".venv" / "legacy-client" / "bert_serving" / "client"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def legacy_client(bridge: dict, timeout_ms: int = CLIENT_TIMEOUT_MS):
    return legacy_module().BertClient(ip=bridge["ip"], port=bridge["port"], port_out=bridge["port_out"],
                                      timeout=timeout_ms, check_length=False)


def openai_client(bridge: dict):
    from openai import OpenAI

    return OpenAI(base_url=f"http://{bridge['ip']}:{bridge['http_port']}/v1", api_key="unused", max_retries=0,
                  timeout=CLIENT_TIMEOUT_MS / 1000)


def openai_embed(client, sentences: list[str]) -> np.ndarray:
    response = client.embeddings.create(input=sentences, model="bert")
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def zmq_encode(bridge: dict, sentences: list[str]) -> np.ndarray:
    with legacy_client(bridge) as bc:
        return bc.encode(sentences)


def http_embed(bridge: dict, sentences: list[str]) -> np.ndarray:
    return openai_embed(openai_client(bridge), sentences)


def endpoints(bridge: dict) -> dict:
    """The bridge's Triton endpoints as SHOW_STATUS reports them, by address."""
    with legacy_client(bridge, timeout_ms=30_000) as bc:
        return {e["url"]: e for e in bc.server_status["triton"]["endpoints"]}


def curve_encode(bridge: dict, sentences: list[str], server_public_key: str, client_certificate: str) -> np.ndarray:
    """Our client with CURVE keys; a refusal comes back as its one-line error."""
    from bert_serving.client import BertClient

    with BertClient(ip=bridge["ip"], port=bridge["port"], port_out=bridge["port_out"], timeout=30_000,
                    server_public_key=server_public_key, client_certificate=client_certificate) as bc:
        return bc.encode(sentences)


class Load:
    """Clients of each kind sending rotated copies of the sentences until stopped; every reply checked."""

    def __init__(self, bridge: dict, sentences: list[str], references: dict, zmq_clients: int, http_clients: int):
        self.bridge, self.sentences, self.references = bridge, sentences, references
        self.records: list[dict] = []
        self.stray_replies: list[int] = []  # request ids a 1.10 client received beyond one reply per request
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._zmq, args=(i,), daemon=True) for i in range(zmq_clients)]
        self.threads += [threading.Thread(target=self._http, args=(i,), daemon=True) for i in range(http_clients)]
        for thread in self.threads:
            thread.start()

    def _request(self, kind: str, client: int, sequence: int, send) -> None:
        shift = (client * 7 + sequence) % len(self.sentences)
        rows = np.roll(np.arange(len(self.sentences)), -shift)
        record = {"kind": kind, "client": client, "sequence": sequence, "sent": time.monotonic()}
        try:
            vectors = send([self.sentences[r] for r in rows])
            record["deviation"] = float(np.max(np.abs(vectors - self.references[kind][rows])))
        except Exception as e:  # recorded: the caller asserts there are none
            record["error"] = f"{type(e).__name__}: {e}"
        record["answered"] = time.monotonic()
        with self.lock:
            self.records.append(record)

    def _zmq(self, index: int) -> None:
        import zmq

        bc = legacy_client(self.bridge)
        try:
            sequence = 0
            while not self.stopping.is_set():
                self._request("zmq", index, sequence, bc.encode)
                sequence += 1
            # A reply sent twice would arrive after the first: anything received now, or buffered as the reply of an
            # earlier request id, is one too many.
            bc.receiver.setsockopt(zmq.RCVTIMEO, 1000)
            try:
                while True:
                    self.stray_replies.append(int(bc.receiver.recv_multipart()[-1]))
            except zmq.Again:
                pass
            self.stray_replies.extend(bc.pending_response)
        finally:
            bc.close()

    def _http(self, index: int) -> None:
        client = openai_client(self.bridge)
        sequence = 0
        while not self.stopping.is_set():
            self._request("http", index, sequence, lambda texts: openai_embed(client, texts))
            sequence += 1

    def progress(self) -> dict:
        with self.lock:
            return {"replies": len(self.records), "at": time.monotonic()}

    def stop(self) -> dict:
        self.stopping.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT_MS / 1000 + 30)
        return {"records": self.records, "stray_replies": self.stray_replies,
                "stuck_clients": sum(thread.is_alive() for thread in self.threads)}


LOADS: list[Load] = []


def load_start(**kwargs) -> None:
    LOADS.append(Load(**kwargs))


def load_progress() -> dict:
    return LOADS[-1].progress()


def load_stop() -> dict:
    return LOADS.pop().stop()


FUNCTIONS = {f.__name__: f for f in (zmq_encode, http_embed, endpoints, curve_encode, load_start, load_progress,
                                     load_stop)}


def main() -> None:
    address, authkey = sys.argv[1], sys.argv[2].encode()
    legacy_module()
    import openai  # noqa: F401  (imported before listening: the first call is then as quick as the others)

    with Listener(address, authkey=authkey) as listener, listener.accept() as connection:
        while True:
            try:
                name, kwargs = connection.recv()
            except EOFError:
                return
            try:
                connection.send(("ok", FUNCTIONS[name](**kwargs)))
            except Exception as e:  # one line back to the caller; the traceback to this process's log
                traceback.print_exc()
                connection.send(("error", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    main()
