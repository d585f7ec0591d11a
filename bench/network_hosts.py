"""Test hosts on one machine: Linux network namespaces on one virtual switch, each namespace one host with one address.

Used by the network tests (tests/network/) and the replica benchmark (bench/replica_scaling.py). Everything lives
inside namespaces of its own -- the switch too -- so the machine's own network (its routes, its firewall) is never
touched and two runs at once do not meet: names carry the creating process's id, addresses are private to the switch.

    with TestHosts(["clients", "bridge", "r1", "r2"]) as hosts:
        hosts["r1"].start("triton", ["bert-serving-triton", ...], log_path)   # runs inside r1's namespace
        hosts["r1"].partition_from(hosts["bridge"])                             # iptables DROP both ways
        hosts["bridge"].write_hosts_file({"replicas": [hosts["r1"].ip]})     # what names resolve to there

Faults, as a real network has them (this kernel may lack ``tc netem``): a partition is iptables DROP of every packet
between two hosts, with the connections left open; loss is iptables' ``statistic`` match dropping a random share of
packets; delay is a userspace TCP proxy (bench/delay_proxy.py) in the path. Leaving the ``with`` block stops every
process started on the hosts (and any other process still inside their namespaces), deletes the namespaces with
their interfaces and iptables rules, and removes the hosts files; so does a later run for a run that was killed.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

SUBNET = "10.231.0"  # /24 on the switch; the switch is reachable from nowhere else
NAME_PREFIX = "bst"  # bert-serving test hosts: bst<pid>-<host>
NETNS_ETC = Path("/etc/netns")  # ip netns exec bind-mounts /etc/netns/NAME/hosts over /etc/hosts
STOP_TIMEOUT_S = 30


class HostsUnavailable(RuntimeError):
    """This machine cannot make test hosts (no iproute2, no iptables, or no permission): the reason says which."""


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def why_hosts_unavailable() -> Optional[str]:
    """None when this machine can make test hosts; else why not, in one line."""
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (make test installs iproute2 and iptables)"
    probe = f"{NAME_PREFIX}{os.getpid()}-probe"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace (`ip netns add` needs root): {made.stderr.strip()}"
    try:
        rule = _run("ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-m", "statistic", "--mode", "random",
                    "--probability", "0.1", "-j", "DROP", check=False)
        if rule.returncode != 0:
            return f"iptables cannot add rules in a namespace: {rule.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class HostProcess:
    name: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        """SIGTERM: the bridge and bert-serving-triton stop their children on it (SIGINT may be ignored by a process
        started in the background)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> Optional[int]:
        """``terminate``, then SIGKILL of its group if it has not ended within ``timeout_s``."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(self.process.pid)
                self.process.wait()
        return self.process.returncode


@dataclass
class Host:
    """One namespace, one address on the switch."""

    name: str
    netns: str
    ip: str
    processes: dict[str, HostProcess] = field(default_factory=dict)
    known_names: dict[str, list[str]] = field(default_factory=dict)  # every host's name, in its hosts file

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace (ip netns exec execs it: the process id is the program's)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def start(self, name: str, argv: Sequence[str], log_path: Path, env: Optional[dict] = None) -> HostProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(self.command(argv), stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, **(env or {})}, start_new_session=True)
        running = self.processes[name] = HostProcess(name=name, process=process, log_path=log_path)
        return running

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(*self.command(argv), check=check)

    def iptables(self, *rule: str) -> None:
        self.run("iptables", "-w", *rule)

    def partition_from(self, other: "Host") -> None:
        """Every packet between the two hosts is dropped; open connections stay open (no RST, no FIN)."""
        self.iptables("-I", "INPUT", "-s", other.ip, "-j", "DROP")
        self.iptables("-I", "OUTPUT", "-d", other.ip, "-j", "DROP")

    def lose_packets_with(self, other: "Host", probability: float) -> None:
        """Each packet between the two hosts, either way, is dropped with this probability."""
        for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
            self.iptables("-I", chain, side, other.ip, "-m", "statistic", "--mode", "random", "--probability",
                          f"{probability:g}", "-j", "DROP")

    def heal(self) -> None:
        """Every fault rule of this host removed."""
        self.iptables("-F", "INPUT")
        self.iptables("-F", "OUTPUT")

    def dropped_packets(self) -> int:
        """Packets this host's rules dropped so far (proof that a fault was on the wire)."""
        listing = self.run("iptables", "-w", "-L", "-n", "-v", "-x").stdout
        return sum(int(line.split()[0]) for line in listing.splitlines() if " DROP " in f" {line} ")

    @property
    def hosts_file(self) -> Path:
        return NETNS_ETC / self.netns / "hosts"

    def write_hosts_file(self, names: dict[str, Sequence[str]]) -> None:
        """What ``names`` (and every host's name) resolve to on this host: for processes started from now on, and --
        the file is rewritten in place, so the bind mount still shows it -- for those already running, at their next
        lookup. A name with several addresses resolves to all of them (glibc's ``multi on``)."""
        names = {**self.known_names, **names}
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ips in names.items() for ip in ips]
        self.hosts_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.hosts_file, "r+" if self.hosts_file.exists() else "w") as hosts:
            hosts.seek(0)
            hosts.write("\n".join(lines) + "\n")
            hosts.truncate()


class TestHosts:
    """Hosts on one switch, built on entering and removed, with everything on them, on leaving."""

    __test__ = False  # not a pytest class

    def __init__(self, names: Sequence[str]):
        self.prefix = f"{NAME_PREFIX}{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = {name: Host(name=name, netns=f"{self.prefix}-{name}", ip=f"{SUBNET}.{10 + index}")
                      for index, name in enumerate(names)}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> "TestHosts":
        reason = why_hosts_unavailable()
        if reason:
            raise HostsUnavailable(reason)
        remove_abandoned_hosts()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "add", "sw", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "sw", "up")
        for index, host in enumerate(self.hosts.values()):
            _run("ip", "netns", "add", host.netns)
            port = f"p{index}"
            # Made inside the namespaces: the machine's own namespace never sees these interfaces.
            _run("ip", "link", "add", "eth0", "netns", host.netns, "type", "veth", "peer", "name", port, "netns",
                 self.switch)
            _run("ip", "-n", self.switch, "link", "set", port, "master", "sw", "up")
            _run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _run("ip", "-n", host.netns, "link", "set", "eth0", "up")
            _run("ip", "-n", host.netns, "link", "set", "lo", "up")
            host.known_names = {name: [other.ip] for name, other in self.hosts.items()}
            host.write_hosts_file({})

    def close(self) -> None:
        running = [process for host in self.hosts.values() for process in host.processes.values()]
        for process in running:  # all at once: each takes seconds to stop
            process.terminate()
        for process in running:
            process.stop()
        for netns in [h.netns for h in self.hosts.values()] + [self.switch]:
            _remove_namespace(netns)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_namespace(netns: str) -> None:
    """Kill what still runs inside (a child that outlived its parent), delete the namespace (its interfaces and
    iptables rules go with it) and its /etc/netns folder."""
    if (Path("/run/netns") / netns).exists():
        for attempt in range(50):
            pids = [int(p) for p in _run("ip", "netns", "pids", netns, check=False).stdout.split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM if attempt < 20 else signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        _run("ip", "netns", "del", netns, check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
    try:
        NETNS_ETC.rmdir()  # only if no other namespace has a folder there
    except OSError:
        pass


def remove_abandoned_hosts() -> None:
    """Test hosts of a run that was killed before it could remove them (its process is gone)."""
    listed = _run("ip", "netns", "list", check=False).stdout.split("\n")
    for line in listed:
        match = re.match(rf"^({NAME_PREFIX}(\d+)-\S+)", line.strip())
        if match and not Path(f"/proc/{match.group(2)}").exists():
            _remove_namespace(match.group(1))
