"""Network plumbing of the test node: one bridge per agent run, one network namespace + veth per pod.

Data flow: `node.Node` makes a `Network` at start (bridge `a2cb<run>` with 10.244.<X>.1/24, X free among the
runs alive on this machine), asks it for a `PodNet` per pod (netns `a2c-<run>-<n>`, veth `a2cv<run><n>` whose
peer becomes the pod's eth0 at 10.244.<X>.<k>/24, default route via the bridge) and writes each pod's
`/etc/netns/<netns>/hosts` in place when pods come and go.

Names: every run id is 6 characters (the agent's pid in base 36, padded, + a per-process counter), and a run
holds an flock on `/run/a2c-node/<run>.lock` while it lives. `sweep()` removes every netns, link,
/etc/netns dir, state dir and lock whose run holds no lock any more (a crashed or killed run).

Only this bridge carries pod traffic: IPv4 forwarding is off for packets that arrive on it (the host never
routes them elsewhere) and bridge netfilter is off for it (a host firewall's FORWARD policy cannot drop
pod-to-pod frames).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass

PREFIX = "a2c"
LOCK_DIR = "/run/a2c-node"
STATE_ROOT = "/tmp/a2c-node"
NETNS_DIR = "/etc/netns"
SUBNET = "10.244"
_RUN = re.compile(r"^a2c(?:b|v|p|-)([0-9a-z]{6})")
_counter = iter(range(36))
_counter_lock = threading.Lock()


def _b36(n: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(width, "0")[-width:]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ip <args>`; raises with ip's own message when `check` and it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def alive(run: str) -> bool:
    """The run still holds its lock (flock locks go away with the process that held them)."""
    path = f"{LOCK_DIR}/{run}.lock"
    if not os.path.exists(path):
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _our_netns() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.startswith(f"{PREFIX}-")]


def _our_links() -> list[str]:
    out = []
    for line in ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if _RUN.match(name):
            out.append(name)
    return out


def netns_pids(netns: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", netns, check=False).stdout.split()]


def remove_netns(netns: str) -> None:
    """Kill whatever still runs in `netns` (escaped children included), then delete it and its /etc/netns dir."""
    for pid in netns_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    ip("netns", "del", netns, check=False)
    shutil.rmtree(f"{NETNS_DIR}/{netns}", ignore_errors=True)


def sweep(keep: str = "") -> list[str]:
    """Remove what dead runs left (netns, links, /etc/netns dirs, state dirs, locks); returns what went."""
    gone: list[str] = []
    dirs = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    states = os.listdir(STATE_ROOT) if os.path.isdir(STATE_ROOT) else []
    locks = [f[:-5] for f in os.listdir(LOCK_DIR) if f.endswith(".lock") and len(f) == 11] \
        if os.path.isdir(LOCK_DIR) else []
    dead: dict[str, bool] = {}

    def is_dead(run: str) -> bool:
        if run not in dead:
            dead[run] = run != keep and not alive(run)
        return dead[run]

    for name in _our_netns() + [d for d in dirs if d.startswith(f"{PREFIX}-")]:
        m = _RUN.match(name)
        if m and is_dead(m.group(1)):
            remove_netns(name)
            gone.append(f"netns {name}")
    for name in _our_links():
        m = _RUN.match(name)
        if m and is_dead(m.group(1)):
            ip("link", "del", name, check=False)
            gone.append(f"link {name}")
    for run in states:
        if len(run) == 6 and is_dead(run):
            _remove_state(f"{STATE_ROOT}/{run}")
            gone.append(f"state {run}")
    for run in locks:
        if is_dead(run):
            with contextlib.suppress(OSError):
                os.unlink(f"{LOCK_DIR}/{run}.lock")
    return gone


def _remove_state(path: str) -> None:
    """rmtree that first detaches any mount left under `path` (never follows into a mounted filesystem)."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for target in sorted((m for m in mounts if m.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class PodNet:
    netns: str
    ip: str
    veth: str

    @property
    def hosts_path(self) -> str:
        return f"{NETNS_DIR}/{self.netns}/hosts"

    def write_hosts(self, text: str) -> None:
        """Rewrite the hosts file in place: running processes see it through a bind mount of this inode."""
        with open(self.hosts_path, "r+") as f:
            if f.read() == text:
                return
            f.seek(0)
            f.write(text)
            f.truncate()


class Network:
    """The bridge of one agent run and the pods' namespaces on it."""

    def __init__(self) -> None:
        os.makedirs(LOCK_DIR, exist_ok=True)
        with _counter_lock:
            self.run = _b36(os.getpid(), 5) + _b36(next(_counter), 1)
        self._lock = open(f"{LOCK_DIR}/{self.run}.lock", "w")  # noqa: SIM115 (held for the run's life)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.bridge = f"{PREFIX}b{self.run}"
        self.octet, self._net_lock = self._claim_subnet()
        self.gateway = f"{SUBNET}.{self.octet}.1"
        self._next = 0
        self._free = list(range(2, 255))
        self._pods: dict[str, PodNet] = {}
        self._mutex = threading.Lock()
        self.state_dir = f"{STATE_ROOT}/{self.run}"
        os.makedirs(self.state_dir, exist_ok=True)
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0", check=False)
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            _sysctl(f"net/ipv4/conf/{self.bridge}/forwarding", "0")
            _sysctl(f"net/ipv6/conf/{self.bridge}/disable_ipv6", "1")
        except Exception:
            self.close()
            raise

    def _claim_subnet(self) -> tuple[int, object]:
        used = ip("-o", "-4", "addr", "show").stdout
        octets = list(range(1, 255))
        random.shuffle(octets)
        for octet in octets:
            if f" {SUBNET}.{octet}." in used:
                continue
            lock = open(f"{LOCK_DIR}/net-{octet}", "w")  # noqa: SIM115 (held for the run's life)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            return octet, lock
        raise RuntimeError(f"no free /24 left in {SUBNET}.0.0/16")

    def add_pod(self, key: str, hosts: str, resolv: str) -> PodNet:
        """A namespace with lo up, eth0 on the bridge, a default route, and its /etc/netns files."""
        with self._mutex:
            if not self._free:
                raise RuntimeError("no pod address left on this node")
            host_part = self._free.pop(0)
            n = _b36(self._next, 3)
            self._next += 1
        pod = PodNet(f"{PREFIX}-{self.run}-{n}", f"{SUBNET}.{self.octet}.{host_part}", f"{PREFIX}v{self.run}{n}")
        self._pods[key] = pod
        peer = f"{PREFIX}p{self.run}{n}"
        os.makedirs(f"{NETNS_DIR}/{pod.netns}", exist_ok=True)
        with open(pod.hosts_path, "w") as f:
            f.write(hosts)
        with open(f"{NETNS_DIR}/{pod.netns}/resolv.conf", "w") as f:
            f.write(resolv)
        ip("netns", "add", pod.netns)
        ip("link", "add", pod.veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", pod.netns)
        ip("link", "set", pod.veth, "master", self.bridge)
        _sysctl(f"net/ipv6/conf/{pod.veth}/disable_ipv6", "1")
        ip("link", "set", pod.veth, "up")
        ip("-n", pod.netns, "link", "set", peer, "name", "eth0")
        ip("-n", pod.netns, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
        ip("-n", pod.netns, "link", "set", "lo", "up")
        ip("-n", pod.netns, "link", "set", "eth0", "up")
        ip("-n", pod.netns, "route", "add", "default", "via", self.gateway)
        return pod

    def remove_pod(self, key: str) -> None:
        pod = self._pods.pop(key, None)
        if pod is None:
            return
        remove_netns(pod.netns)  # the veth pair goes with the namespace
        ip("link", "del", pod.veth, check=False)
        with self._mutex:
            self._free.append(int(pod.ip.rsplit(".", 1)[1]))  # reused last: a stale peer sees no stranger

    def pods(self) -> list[PodNet]:
        return list(self._pods.values())

    def close(self) -> None:
        for key in list(self._pods):
            self.remove_pod(key)
        ip("link", "del", self.bridge, check=False)
        _remove_state(self.state_dir)
        self._net_lock.close()  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            os.unlink(f"{LOCK_DIR}/{self.run}.lock")
        self._lock.close()


def _sysctl(key: str, value: str) -> None:
    with contextlib.suppress(OSError), open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


class Relay:
    """TCP from `listen` (the bridge address) to `target` (a server on loopback), so pods can reach it.

    A server that already listens on every address answers there itself: then the relay stays idle.
    """

    def __init__(self, host: str, port: int, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.sock: socket.socket | None = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            self.sock = None
            return
        self.sock.listen(64)
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="api-relay", daemon=True).start()

    def _accept(self) -> None:
        while self.sock is not None:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
