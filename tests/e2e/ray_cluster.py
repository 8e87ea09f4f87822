"""Helpers of the Ray tests (test_ray.py): a loopback-only multi-node Ray
cluster on this machine, ``berth serve --ray`` apps on it, a load generator
that sends requests round-robin over the replicas (or through the gateway),
and the socket listing of the loopback check.

Loopback: every node is started with ``node_ip_address="127.0.0.1"`` and no
dashboard, and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set for this
process and its children. Ray's ``ray.init(_node_ip_address="127.0.0.1")``
passes the address through ``resolve_ip_for_localhost``, which on Linux
replaces a loopback address with the machine's outward address (found by
"connecting" a UDP socket towards 8.8.8.8) unless that variable is 0; a
node started with an explicit address and a driver that connects without
one (it takes the address of the node it attaches to) stay on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth_e2e import berth_executable, server_env, wait_until

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

#: Seconds an app may take to start its replicas (Ray schedules, berthd and
#: a Python worker start, on 2 busy cores).
APP_READY_TIMEOUT_S = 240.0

AFFINE_SOURCE = '''
import time
import berth

SCALE = @SCALE@
DELAY = @DELAY@


class Affine(berth.Model):
    """y = SCALE * x after DELAY seconds (so that requests are in flight)."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        time.sleep(DELAY)
        return {"y": inputs["x"] * SCALE}
'''


def write_affine_repo(root: Path, scale: float, delay: float = 0.005) -> Path:
    model = root / "affine"
    (model / "1").mkdir(parents=True, exist_ok=True)
    source = AFFINE_SOURCE.replace("@SCALE@", repr(scale)).replace("@DELAY@", repr(delay))
    (model / "1" / "model.py").write_text(source)
    (model / "berth.yaml").write_text("runtime: python\nclass: Affine\nmax_batch_size: 0\n")
    return root


def start_cluster(nodes: Sequence[Mapping[str, Any]]) -> Any:
    """A Ray cluster on 127.0.0.1: the first entry is the head."""
    from ray.cluster_utils import Cluster

    common = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**common, "include_dashboard": False, **nodes[0]},
    )
    try:
        for args in nodes[1:]:
            cluster.add_node(**common, **args)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


@dataclass
class RayApp:
    """A ``berth serve --ray`` process (the driver: controller owner and
    gateway parent)."""

    address: str
    workdir: Path
    args: Sequence[str]
    name: str = "berth"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    def start(self) -> RayApp:
        self.log_path = self.workdir / f"serve-{self.name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [berth_executable(), "serve", *self.args, "--ray", self.address],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
                start_new_session=True,
            )
        wait_until(
            lambda: "serving on Ray" in self.log() or self.proc.poll() is not None,
            APP_READY_TIMEOUT_S,
            f"app {self.name} to serve",
            interval=0.25,
            on_timeout=self.log,
        )
        assert self.proc.poll() is None, f"berth serve --ray exited:\n{self.log()}"
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def berth(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [berth_executable(), *args, "--ray", self.address, "--app", self.name],
            capture_output=True, text=True, timeout=timeout, env=server_env(),
        )

    def status(self) -> dict[str, Any]:
        done = self.berth("status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)


def infer(url: str, values: Sequence[float], timeout: float = 60.0) -> list[float]:
    """One request on a fresh connection; raises ConnectionRefusedError when
    nothing listens (nothing was sent), other errors otherwise."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)], "data": list(values)}]}
    )
    try:
        conn.request("POST", "/v2/models/affine/infer", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {raw[:300]!r}")
    return json.loads(raw)["outputs"][0]["data"]


@dataclass
class Load:
    """``clients`` threads sending requests until stopped. Each picks a
    replica round-robin from ``targets()`` (refreshed by a thread every
    ``refresh_s``) and sends on a fresh connection; when a replica refuses
    the connection (nothing was sent) it tries the next one, as the gateway
    does. Every other failure counts."""

    targets: Any  # () -> list of URLs
    clients: int = 4
    refresh_s: float = 0.1
    accept: Iterable[float] = (2.0,)
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    scales: dict[float, int] = field(default_factory=dict)
    _urls: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _refresh(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                urls = list(self.targets())
                if urls:
                    self._urls = urls
            self._stop.wait(self.refresh_s)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        turn = seed
        while not self._stop.is_set():
            x = float(rng.randint(1, 1000))
            error = None
            for _ in range(4):
                urls = self._urls
                turn += 1
                url = urls[turn % len(urls)]
                try:
                    y = infer(url, [x])
                except ConnectionRefusedError as e:
                    error = f"{url}: refused: {e}"
                    continue
                except Exception as e:  # noqa: BLE001 - counted and shown
                    error = f"{url}: {type(e).__name__}: {e}"
                    break
                error = None
                break
            with self._lock:
                self.sent += 1
                if error is not None:
                    self.failures.append(error)
                    continue
                scale = y[0] / x
                if scale not in self.accept:
                    self.failures.append(f"wrong answer {y} for {x}")
                else:
                    self.ok += 1
                    self.scales[scale] = self.scales.get(scale, 0) + 1

    def start(self) -> Load:
        self._urls = list(self.targets())
        assert self._urls, "no replica to send to"
        threads = [threading.Thread(target=self._refresh, daemon=True)]
        threads += [threading.Thread(target=self._client, args=(i,), daemon=True)
                    for i in range(self.clients)]
        self._threads = threads
        for t in threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=90)


# ------------------------------------------------------------------ sockets


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid]
        found.extend(kids)
        frontier.extend(kids)
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _addr(hex_addr: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
    return ip, int(port_hex, 16)


def inet_sockets(pid: int) -> list[dict[str, Any]]:
    """TCP and UDP sockets (v4 and v6) a process holds: proto, local, remote
    (address, port), state."""
    inodes = socket_inodes(pid)
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[9]) in inodes:
                out.append({"proto": proto, "local": _addr(parts[1]), "remote": _addr(parts[2]),
                            "state": parts[3], "pid": pid})
    return out


def is_loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def is_unset(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"

