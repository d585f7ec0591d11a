"""Replicas, bridges and clients on test hosts (network_hosts.py), and the faults put between them.

One implementation for both users: the network tests (tests/network/) run each scenario briefly and assert on what
it returns; the replica benchmark (replica_scaling.py) runs them longer and writes the figures to docs/SCALING.md.

- ``Network``: the hosts -- ``clients``, ``bridge``, replicas ``r1``, ``r2``, ... -- with the clients' host driven
  through remote_clients.py. Each replica host runs ``bert-serving-triton`` on REPLICA_PORT (the same port on every
  host, as pods of one Deployment), optionally pinned to one core (``taskset``) and optionally behind a delay proxy
  (delay_proxy.py). Bridges run ``bert-serving-start`` on the bridge's host.
- ``Load``: ZeroMQ (the unmodified 1.10 client) and HTTP (the openai SDK) clients on the clients' host, every reply
  checked against reference vectors; ``LoadOutcome`` holds each request's record.
- The scenarios: ``delayed_replica``, ``partitioned_replica``, ``lossy_clients``, ``renamed_replicas``,
  ``throughput``. Each returns its figures (seconds, chunks, sentences/s) and the load's outcome.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .network_hosts import Host, HostProcess, TestHosts
from .process_memory import descendants
from .remote_clients import RemoteClients

REPLICA_PORT = 8001  # every replica host's gRPC port, as the bridges see it
BEHIND_PROXY_PORT = 9001  # where a replica's tritonserver listens (locally) when its proxy holds REPLICA_PORT
BRIDGE_PORTS = {"port": 5555, "port_out": 5556, "http_port": 8125}  # the bridge host's own: nothing else there
READY_TIMEOUT_S = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def bin_path(program: str) -> str:
    return str(Path(sys.executable).parent / program)


def wait_for_line(process: HostProcess, line: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while line not in process.log():
        if process.process.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.process.returncode} before '{line}':\n"
                               f"{process.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not log '{line}' within {timeout_s:.0f}s:\n{process.log()}")
        time.sleep(0.2)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> float:
    """Seconds until ``condition()`` held; AssertionError naming ``what`` if it did not within ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s}s: {what}"
        time.sleep(every_s)
    return time.monotonic() - started


@dataclass
class Replica:
    host: Host
    proxy_port: Optional[int] = None  # the delay proxy's port on the host, if it has one
    delay_file: Optional[Path] = None

    @property
    def url(self) -> str:
        """HOST:PORT as the bridges reach it."""
        return f"{self.host.ip}:{REPLICA_PORT}"

    @property
    def delayed_url(self) -> str:
        """HOST:PORT through its delay proxy."""
        return f"{self.host.ip}:{self.proxy_port}"

    def set_delay_ms(self, milliseconds: float) -> None:
        self.delay_file.write_text(f"{milliseconds:g}")


@dataclass
class Bridge:
    address: dict  # ip and ports, as remote_clients.py takes them
    process: HostProcess

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Network:
    """Test hosts with replicas, bridges and clients on them. ``with Network(folder, replicas=3) as net: ...``"""

    folder: Path
    replica_names: Sequence[str] = ("r1", "r2", "r3")
    hosts: TestHosts = field(init=False)
    replicas: dict = field(default_factory=dict)
    clients: Optional[RemoteClients] = None

    def __post_init__(self):
        self.hosts = TestHosts(["clients", "bridge", *self.replica_names])

    def __enter__(self) -> "Network":
        self.hosts.__enter__()
        try:
            self.clients = RemoteClients.start(self.hosts["clients"], self.folder)
        except BaseException:
            self.hosts.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.clients is not None:
            self.clients.close()
        self.hosts.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def start_replicas(self, export, *, cores: Optional[dict] = None, proxies: Optional[dict] = None) -> None:
        """``bert-serving-triton`` on every replica host, in parallel. ``cores``: replica -> the CPU core it is pinned
        to. ``proxies``: replica -> the port of a delay proxy in front of it (REPLICA_PORT itself: only through the
        proxy)."""
        for name in self.replica_names:
            host, core, proxy_port = self.hosts[name], (cores or {}).get(name), (proxies or {}).get(name)
            behind_proxy = proxy_port == REPLICA_PORT
            address, port = ("127.0.0.1", BEHIND_PROXY_PORT) if behind_proxy else ("0.0.0.0", REPLICA_PORT)
            argv = [bin_path("bert-serving-triton"), "--model-repository", str(export.repository), "--model",
                    export.name, "--address", address, "--grpc-port", str(port), "--http-port", "8000",
                    "--metrics-port", "8002", "--cache-dir", str(self.folder / name)]
            if core is not None:  # the whole tree (tritonserver, the python backend's stub) inherits the affinity
                argv = ["taskset", "-c", str(core), *argv]
            host.start("triton", argv, self.folder / f"{name}.log")
            replica = self.replicas[name] = Replica(host=host, proxy_port=proxy_port)
            if proxy_port is not None:
                replica.delay_file = self.folder / f"{name}-delay-ms"
                replica.set_delay_ms(0)
                host.start("proxy", [sys.executable, "-m", "bert_bench.delay_proxy", "-listen",
                                     f"{host.ip}:{proxy_port}", "-upstream", f"127.0.0.1:{port}", "-delay_file",
                                     str(replica.delay_file)], self.folder / f"{name}-proxy.log")
        for name, replica in self.replicas.items():
            wait_for_line(replica.host.processes["triton"], "tritonserver ready: gRPC", READY_TIMEOUT_S)
            if replica.proxy_port is not None:
                wait_for_line(replica.host.processes["proxy"], "delay proxy on", 60)

    def start_bridge(self, name: str, export, *flags: str, **ports: int) -> Bridge:
        """``bert-serving-start -model_dir EXPORT`` with ``flags`` on the bridge's host."""
        ports = {**BRIDGE_PORTS, **ports}
        argv = [bin_path("bert-serving-start"), "-model_dir", str(export.folder),
                *[f"-{flag}={value}" for flag, value in ports.items()], *flags]
        process = self.hosts["bridge"].start(name, argv, self.folder / f"{name.replace(' ', '-')}.log")
        wait_for_line(process, "ready to serve", READY_TIMEOUT_S)
        return Bridge(address={"ip": self.hosts["bridge"].ip, **ports}, process=process)

    def resolve_on_bridge_host(self, name: str, replicas: Sequence[str]) -> None:
        """What ``name`` resolves to on the bridge's host from now on."""
        self.hosts["bridge"].write_hosts_file({name: [self.hosts[r].ip for r in replicas]})

    def endpoints(self, bridge: Bridge) -> dict:
        """The bridge's endpoints as SHOW_STATUS reports them to a client, by address."""
        return self.clients.call("endpoints", bridge=bridge.address)

    def served(self, bridge: Bridge, *urls: str) -> list[int]:
        states = self.endpoints(bridge)
        return [states.get(url, {}).get("served_chunks", 0) for url in urls]

    def references(self, bridge: Bridge, sentences: list[str], kinds: Sequence[str] = ("zmq", "http")) -> dict:
        """The vectors of ``sentences`` by kind of client, to compare every later reply with."""
        calls = {"zmq": "zmq_encode", "http": "http_embed"}
        return {kind: self.clients.call(calls[kind], bridge=bridge.address, sentences=sentences) for kind in kinds}


@dataclass
class LoadOutcome:
    """Every request a load sent: kind, client, sequence, sent and answered (time.monotonic), deviation or error."""

    records: list[dict]
    stray_replies: list[int]  # replies beyond one per request
    stuck_clients: int  # clients still waiting for a reply when the load stopped

    @property
    def errors(self) -> list[str]:
        return [r["error"] for r in self.records if "error" in r]

    @property
    def worst_deviation(self) -> float:
        return max((r["deviation"] for r in self.records if "deviation" in r), default=float("nan"))

    @property
    def kinds(self) -> set[str]:
        return {r["kind"] for r in self.records}

    def waits(self, sent_before: float = float("inf"), answered_after: float = float("-inf")) -> list[float]:
        """Seconds each request waited, of those sent before and answered after the given times."""
        return [r["answered"] - r["sent"] for r in self.records
                if r["sent"] < sent_before and r["answered"] > answered_after]

    def lost_nothing(self) -> bool:
        return not self.errors and not self.stray_replies and not self.stuck_clients


class Load:
    """Clients on the clients' host sending ``sentences`` (rotated per request) through ``bridge`` until ``stop``."""

    def __init__(self, net: Network, bridge: Bridge, sentences: list[str], references: dict, *, zmq_clients: int = 2,
                 http_clients: int = 1):
        self.net, self.sentences = net, sentences
        net.clients.call("load_start", bridge=bridge.address, sentences=sentences, references=references,
                         zmq_clients=zmq_clients, http_clients=http_clients)

    def progress(self) -> dict:
        return self.net.clients.call("load_progress")

    def wait_for_replies(self, count: int, timeout_s: float = 120) -> None:
        start = self.progress()["replies"]
        wait_for(lambda: self.progress()["replies"] >= start + count, timeout_s, f"{count} more replies under load")

    def stop(self) -> LoadOutcome:
        return LoadOutcome(**self.net.clients.call("load_stop"))


# -- the scenarios ----------------------------------------------------------------------------------------------------

def delayed_replica(net: Network, bridge: Bridge, sentences, references, *, fast_url: str, delayed: Replica,
                    delay_ms: float = 100, replies: int = 30) -> dict:
    """``delay_ms`` added to what ``delayed`` sends (its replies), under load: the chunks each replica served, and
    the mean time each held a chunk as the bridge saw it (SHOW_STATUS's chunk_seconds over served_chunks)."""
    urls = (fast_url, delayed.delayed_url)
    before = net.endpoints(bridge)
    delayed.set_delay_ms(delay_ms)
    try:
        load = Load(net, bridge, sentences, references)
        load.wait_for_replies(replies)
        outcome = load.stop()
    finally:
        delayed.set_delay_ms(0)
    after = net.endpoints(bridge)
    chunks = [after[url]["served_chunks"] - before[url]["served_chunks"] for url in urls]
    chunk_ms = [1000 * (after[url]["chunk_seconds"] - before[url]["chunk_seconds"]) / max(count, 1)
                for url, count in zip(urls, chunks)]
    return {"outcome": outcome, "fast_chunks": chunks[0], "delayed_chunks": chunks[1], "fast_chunk_ms": chunk_ms[0],
            "delayed_chunk_ms": chunk_ms[1], "delayed_state": after[delayed.delayed_url]}


def partitioned_replica(net: Network, bridge: Bridge, sentences, references, *, victim: Replica,
                        endpoint_timeout_s: float, replies_while_cut: int = 10) -> dict:
    """Every packet between the bridge's host and ``victim`` dropped, connections left open, under load; then healed.

    Figures: seconds until the bridge took the victim out, the longest wait of a request that overlapped the
    partition, a request's usual wait before it (90th percentile), seconds from the healing until the victim served
    a chunk again; the chunks moved off it; packets dropped."""
    def victim_state() -> dict:
        return net.endpoints(bridge)[victim.url]

    load = Load(net, bridge, sentences, references)
    try:
        load.wait_for_replies(10)
        cut_at = time.monotonic()
        victim.host.partition_from(net["bridge"])
        taken_out_s = wait_for(lambda: victim_state()["state"] == "unavailable", 4 * endpoint_timeout_s,
                               "the bridge took the partitioned replica out")
        load.wait_for_replies(replies_while_cut)  # served by the others meanwhile
        dropped = victim.host.dropped_packets()
        served_before = victim_state()["served_chunks"]
        victim.host.heal()
        healed_at = time.monotonic()
        back_s = wait_for(lambda: victim_state()["served_chunks"] > served_before, 30,
                          "the healed replica served a chunk again")
    finally:
        victim.host.heal()
        outcome = load.stop()
    return {"outcome": outcome, "taken_out_after_s": taken_out_s,
            "longest_wait_s": max(outcome.waits(sent_before=healed_at, answered_after=cut_at)),
            "usual_wait_s": float(np.percentile(outcome.waits(sent_before=cut_at), 90)),
            "used_again_after_s": back_s, "moved_chunks": victim_state()["moved_chunks"], "dropped_packets": dropped}


def lossy_clients(net: Network, bridge: Bridge, sentences, references, *, probability: float = 0.1,
                  replies: int = 40) -> dict:
    """Each packet between the clients' host and the bridge's dropped with ``probability``, under load."""
    bridge_host = net["bridge"]
    bridge_host.lose_packets_with(net["clients"], probability)
    try:
        load = Load(net, bridge, sentences, references)
        started = time.monotonic()
        load.wait_for_replies(replies, timeout_s=240)
        elapsed_s = time.monotonic() - started
        outcome = load.stop()
        dropped = bridge_host.dropped_packets()
    finally:
        bridge_host.heal()
    return {"outcome": outcome, "dropped_packets": dropped,
            "sentences_per_s": len(outcome.records) * len(sentences) / elapsed_s}


def renamed_replicas(net: Network, bridge: Bridge, sentences, references, *, name: str,
                     steps: Sequence[Sequence[str]], replies: int = 10) -> dict:
    """Under load, ``name`` on the bridge's host resolves to ``steps[0]``, then each next set of replicas: seconds
    until the bridge's endpoints followed each step, and until an added replica served a chunk."""
    load = Load(net, bridge, sentences, references)
    followed_s, first_chunk_s = [], []
    try:
        load.wait_for_replies(4)
        previous = set(steps[0])
        for replicas in steps[1:]:
            net.resolve_on_bridge_host(name, replicas)
            urls = {net.replicas[r].url for r in replicas}
            started = time.monotonic()
            followed_s.append(wait_for(lambda: set(net.endpoints(bridge)) == urls, 30,
                                       f"the bridge's endpoints became {sorted(replicas)}"))
            for added in set(replicas) - previous:
                url = net.replicas[added].url
                wait_for(lambda: net.served(bridge, url)[0] > 0, 30, f"{added} got work")
                first_chunk_s.append(time.monotonic() - started)
            previous = set(replicas)
            load.wait_for_replies(replies)
    finally:
        net.resolve_on_bridge_host(name, steps[0])
        outcome = load.stop()
    return {"outcome": outcome, "followed_after_s": followed_s, "added_served_after_s": first_chunk_s}


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by ``root`` and every process below it that is alive."""
    total = 0
    for pid in {root} | descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent on anything but idling and waiting for I/O, so far."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS  # all but idle and iowait (guest is in user)


def throughput(net: Network, bridge: Bridge, sentences, references, *, clients: int, warmup_s: float,
               duration_s: float) -> dict:
    """Sentences per second through ``bridge`` from ``clients`` 1.10 clients, after a warm-up; and the cores each
    replica, the bridge, the clients' host and the whole machine used meanwhile (a replica short of 1.0 waited for
    work, or for a core the machine gave to something else: the machine's figure, near its core count, says which)."""
    roots = {name: replica.host.processes["triton"].process.pid for name, replica in net.replicas.items()}
    roots.update(bridge=bridge.process.process.pid, clients=net.clients.process.process.pid)
    load = Load(net, bridge, sentences, references, zmq_clients=clients, http_clients=0)
    time.sleep(warmup_s)
    first, cpu_before = load.progress(), {name: cpu_seconds(pid) for name, pid in roots.items()}
    cpu_before["machine"] = machine_busy_seconds()
    time.sleep(duration_s)
    last, cpu_after = load.progress(), {name: cpu_seconds(pid) for name, pid in roots.items()}
    cpu_after["machine"] = machine_busy_seconds()
    outcome = load.stop()
    elapsed_s = last["at"] - first["at"]
    return {"outcome": outcome, "sentences_per_s": (last["replies"] - first["replies"]) * len(sentences) / elapsed_s,
            "p50_wait_s": float(np.percentile(outcome.waits(), 50)),
            "cores_used": {name: (cpu_after[name] - cpu_before[name]) / elapsed_s for name in cpu_before}}
