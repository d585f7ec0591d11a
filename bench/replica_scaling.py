"""Sentences per second with 1, 2 and 3 Triton replicas on hosts of their own, and the time to route around faults.

The hosts are network namespaces on one virtual switch (network_hosts.py): the clients, one bridge, three replicas,
each replica (``bert-serving-triton``, the packaged all-MiniLM-L6-v2 exported with default flags) pinned to one CPU
core with ``taskset`` -- replica i to core i modulo the machine's cores, so that on two cores the third shares the
first one's core. The 1.10 clients run on the clients' host, the bridge unpinned on its own host.

1. Throughput: a bridge over the first 1, 2, 3 replicas (``--triton-url`` with their addresses), ``-clients`` 1.10
   clients each sending ``-client_batch_size`` sentences again and again; sentences/s after a warm-up.
2. Faults, over two replicas, with the bridge's default endpoint timeout and resolution interval unless given:
   100 ms added to one replica's replies (its share of chunks); a partition of one replica under load (time until
   the bridge took it out, the longest wait of a request, time until it served again after the healing); 10% packet
   loss between the clients and the bridge (sentences/s against none); a name resolving to two, three, then one
   replica (time until the bridge followed, until the added one served).

    .venv/bin/python -m bert_bench.replica_scaling -output bench/results/replica-scaling
    .venv/bin/python -m bert_bench.replica_scaling -warmup_s 3 -duration_s 5 -output /tmp/scaling   # short

Needs root (network namespaces, iptables). Writes OUTPUT.json (every figure, the machine, its load before and after).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from . import network_faults
from .network_faults import REPLICA_PORT, Network
from .network_hosts import why_hosts_unavailable
from .replica_capacity import SENTENCE, machine

REPLICAS = ("r1", "r2", "r3")
DELAY_PROXY_PORT = 8011  # r2's delay proxy, beside its direct port (the throughput runs go direct)


def served_model():
    """The packaged model as bert-export writes it with default flags (exported on first use, then cached)."""
    from bert_bridge.config import parse_args
    from bert_bridge.model_source import resolve_model

    return resolve_model(parse_args([]))


def without_records(figures: dict) -> dict:
    """The figures of a scenario, its load summarized instead of every request's record."""
    outcome = figures.pop("outcome")
    waits = outcome.waits()
    return {**figures, "requests": len(outcome.records), "errors": len(outcome.errors),
            "stray_replies": len(outcome.stray_replies), "worst_deviation": outcome.worst_deviation,
            "longest_request_s": max(waits) if waits else None}


def run(args, folder: Path) -> dict:
    export = served_model()
    sentences = [SENTENCE.format(i) for i in range(args.client_batch_size)]
    bridge_flags = ("--triton-endpoint-timeout-s", str(args.endpoint_timeout_s),
                    "--triton-resolve-interval-s", str(args.resolve_interval_s))
    result: dict = {"throughput": [], "faults": {}}
    with Network(folder) as net:
        cores = {name: index % os.cpu_count() for index, name in enumerate(REPLICAS)}
        net.start_replicas(export, cores=cores, proxies={"r2": DELAY_PROXY_PORT})
        result["cores"] = cores
        for count in range(1, len(REPLICAS) + 1):
            urls = ",".join(net.replicas[name].url for name in REPLICAS[:count])
            bridge = net.start_bridge(f"bridge-{count}", export, *bridge_flags, "--triton-url", urls)
            try:
                references = net.references(bridge, sentences, kinds=["zmq"])
                point = without_records(network_faults.throughput(
                    net, bridge, sentences, references, clients=args.clients, warmup_s=args.warmup_s,
                    duration_s=args.duration_s))
            finally:
                bridge.stop()
            point["replicas"] = count
            result["throughput"].append(point)
            cores_used = ", ".join(f"{name} {share:.2f}" for name, share in point["cores_used"].items())
            print(f"{count} replica(s): {point['sentences_per_s']:7.1f} sentences/s, p50 {point['p50_wait_s']:.2f} s "
                  f"per request; cores used: {cores_used}", flush=True)
        alone = result["throughput"][0]["sentences_per_s"]
        for point in result["throughput"]:
            point["speedup"] = point["sentences_per_s"] / alone if alone else None

        faults = result["faults"]
        r1, r2 = net.replicas["r1"], net.replicas["r2"]
        bridge = net.start_bridge("bridge-delay", export, *bridge_flags, "--triton-url", f"{r1.url},{r2.delayed_url}")
        try:
            references = net.references(bridge, sentences)
            faults["delay_100ms"] = without_records(network_faults.delayed_replica(
                net, bridge, sentences, references, fast_url=r1.url, delayed=r2, delay_ms=100, replies=args.replies))
        finally:
            bridge.stop()
        print(f"100 ms delay: chunks {faults['delay_100ms']['fast_chunks']} fast, "
              f"{faults['delay_100ms']['delayed_chunks']} delayed", flush=True)

        net.resolve_on_bridge_host("replicas", ["r1", "r2"])
        bridge = net.start_bridge("bridge-faults", export, *bridge_flags, "--triton-url", f"replicas:{REPLICA_PORT}")
        try:
            references = net.references(bridge, sentences)
            partition = faults["partition"] = without_records(network_faults.partitioned_replica(
                net, bridge, sentences, references, victim=r1, endpoint_timeout_s=args.endpoint_timeout_s,
                replies_while_cut=args.replies))
            print(f"partition: taken out after {partition['taken_out_after_s']:.1f} s, longest request "
                  f"{partition['longest_wait_s']:.1f} s (usually {partition['usual_wait_s']:.1f} s), used again "
                  f"{partition['used_again_after_s']:.1f} s after healing", flush=True)
            clean = network_faults.throughput(net, bridge, sentences, references, clients=args.clients,
                                              warmup_s=args.warmup_s, duration_s=args.duration_s)
            loss = faults["loss_10pct"] = without_records(network_faults.lossy_clients(
                net, bridge, sentences, references, probability=0.1, replies=args.replies))
            loss["sentences_per_s_without_loss"] = clean["sentences_per_s"]
            print(f"10% loss: {loss['sentences_per_s']:.1f} sentences/s against {clean['sentences_per_s']:.1f} "
                  "without", flush=True)
            dns = faults["dns_2_3_1"] = without_records(network_faults.renamed_replicas(
                net, bridge, sentences, references, name="replicas", steps=[["r1", "r2"], ["r1", "r2", "r3"], ["r1"]],
                replies=args.replies))
            print(f"DNS 2 -> 3 -> 1: followed after {', '.join(f'{s:.1f}' for s in dns['followed_after_s'])} s, "
                  f"the added replica served after {dns['added_served_after_s'][0]:.1f} s", flush=True)
        finally:
            bridge.stop()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="replica_scaling", description=__doc__.splitlines()[0])
    parser.add_argument("-output", type=Path, default=Path("bench/results/replica-scaling"))
    parser.add_argument("-clients", type=int, default=6, help="concurrent 1.10 clients")
    parser.add_argument("-client_batch_size", type=int, default=256, help="sentences per request")
    parser.add_argument("-warmup_s", type=float, default=10)
    parser.add_argument("-duration_s", type=float, default=30, help="measured seconds per throughput point")
    parser.add_argument("-replies", type=int, default=10, help="replies to wait for under each fault")
    parser.add_argument("-endpoint_timeout_s", type=float, default=10.0, help="the bridge's --triton-endpoint-timeout-s")
    parser.add_argument("-resolve_interval_s", type=float, default=10.0,
                        help="the bridge's --triton-resolve-interval-s")
    args = parser.parse_args(argv)
    reason = why_hosts_unavailable()
    if reason:
        parser.exit(2, f"replica_scaling: cannot make test hosts: {reason}\n")
    # SIGTERM (a timeout, a supervisor) unwinds as Ctrl-C does, so Network's exit takes the hosts and replicas down.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    before, started = machine(), time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        result = run(args, Path(folder))
    result.update({"what": __doc__.splitlines()[0], "settings": vars(args) | {"output": str(args.output)},
                   "machine_before": before, "machine_after": machine(), "seconds": time.monotonic() - started})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
