"""One replica: a berthd with its workers, started and owned by a Ray actor.

:class:`ReplicaProcess` is the process part, usable without Ray: it starts
berthd on a host and free ports with the document in an inherited in-memory
file, waits for ``/v2/health/ready``, reads the load from ``/metrics``, and
stops it (SIGTERM: berthd drains what it accepted). berthd is started with
``PR_SET_PDEATHSIG`` = SIGKILL, so that the death of the process that started
it (the Ray actor's worker process, killed by ``ray.kill``, a lost node or an
out-of-memory kill) takes berthd with it; berthd's workers exit when their
socket to berthd closes. berthd runs in its own process group, which
:meth:`ReplicaProcess.kill` and the actor's exit path signal as a whole.

:class:`Replica` is the actor body; :func:`replica_actor_class` wraps it with
``ray.remote`` (Ray is imported only there).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..cli.launch import _config_fd, _to_json, find_berthd
from ..errors import BerthError
from .config import replica_document

_PR_SET_PDEATHSIG = 1

#: The one thread that forks berthd. An idle ThreadPoolExecutor thread waits
#: for work until the interpreter exits, so the child's parent thread never
#: ends before the process does.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="berth-spawn")


class ReplicaError(BerthError):
    """A replica's berthd did not start or stopped answering."""


def _pdeathsig_preexec() -> Any:
    """A ``preexec_fn`` that asks the kernel to SIGKILL the child when its
    parent thread dies (resolved before the fork: nothing is looked up in
    the child). It exits at once if the parent is already gone."""
    parent = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the process group still goes
        prctl = None

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_load(metrics_text: str) -> dict[str, float]:
    """In-flight, queued and answered requests, all models together, from
    berthd's Prometheus text (docs/metrics.md)."""
    sums = {"berth_inflight_requests": 0.0, "berth_queue_depth": 0.0, "berth_requests_total": 0.0}
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            try:
                sums[name] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return {
        "in_flight": sums["berth_inflight_requests"],
        "queued": sums["berth_queue_depth"],
        "requests": sums["berth_requests_total"],
    }


def log_errors(text: str, keep: int = 2) -> str:
    """The last errors of a berthd log, one line each (JSON logs: the
    message and its ``error`` field, without tracebacks), or the log's end."""
    found: list[str] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "fatal"):
            message = str(record.get("msg", ""))
            if record.get("error"):
                message += f" ({record['error']})"
            if message not in found:
                found.append(message)
    if found:
        return "; ".join(found[-keep:])
    return text.strip()[-800:]


@dataclass
class ReplicaProcess:
    """berthd serving ``doc`` on ``host`` and free ports."""

    doc: Mapping[str, Any]
    host: str = "127.0.0.1"
    env: Mapping[str, str] | None = None
    log_dir: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    grpc_port: int = 0
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.http_port}"

    def start(self, ready_timeout_s: float = 120.0, attempts: int = 3) -> None:
        """Starts berthd and waits until it is ready; retries with new ports
        when berthd exits at once (a port taken between the pick and the
        bind)."""
        last = ""
        for _ in range(attempts):
            self._spawn()
            state = self._wait_ready(ready_timeout_s)
            if state == "ready":
                return
            last = self.log_tail()
            self.kill()
            if state == "timeout":
                break
        raise ReplicaError(f"berthd did not become ready on {self.host}: {log_errors(last)}")

    def _spawn(self) -> None:
        self.http_port = free_port(self.host)
        self.grpc_port = free_port(self.host)
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port(self.host)
        doc = replica_document(self.doc, self.host, self.http_port, self.grpc_port)
        berthd = find_berthd(os.environ)
        fd = _config_fd(_to_json(doc))
        log_dir = self.log_dir or tempfile.gettempdir()
        self.log_path = os.path.join(log_dir, f"berth-replica-{os.getpid()}-{self.http_port}.log")
        env = dict(os.environ if self.env is None else self.env)
        log = doc.get("log", {})
        env["BERTH_LOG_LEVEL"] = str(log.get("level", "info"))
        env["BERTH_LOG_FORMAT"] = str(log.get("format", "json"))
        try:
            with open(self.log_path, "ab") as out:
                # Forked from the spawner thread, which lives as long as this
                # process: PR_SET_PDEATHSIG follows the parent *thread*.
                self.proc = _SPAWNER.submit(
                    subprocess.Popen,
                    [berthd, "--config-fd", str(fd)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                    env=env,
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec(),
                ).result()
        finally:
            os.close(fd)

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.http_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return "exited"
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._get("/v2/health/ready", timeout=2.0)[0] == 200:
                    return "ready"
            time.sleep(0.1)
        return "timeout"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if not self.alive():
            return False
        try:
            return self._get("/v2/health/ready", timeout=2.0)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def load(self) -> dict[str, float]:
        """In-flight, queued and answered requests (see :func:`parse_load`)."""
        status, body = self._get("/metrics", timeout=5.0)
        if status != 200:
            raise ReplicaError(f"GET /metrics answered {status}")
        return parse_load(body.decode(errors="replace"))

    def stop(self, drain_timeout_s: float) -> int | None:
        """SIGTERM (berthd stops intake and finishes what it accepted), then
        SIGKILL to the group after ``drain_timeout_s`` and a margin."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=drain_timeout_s + 10.0)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        if self.proc.returncode == 0:  # a clean stop: its log holds nothing to look at
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to berthd's process group (berthd and its workers)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10.0)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class Replica:
    """The body of a replica actor. Created with the app's document and the
    host to listen on (``None``: the Ray node's IP address, which is
    127.0.0.1 on a cluster started on loopback); starts berthd at once."""

    def __init__(
        self,
        name: str,
        doc: Mapping[str, Any],
        generation: int,
        host: str | None = None,
        ready_timeout_s: float = 120.0,
    ) -> None:
        import atexit

        import ray

        context = ray.get_runtime_context()
        self.name = name
        self.generation = generation
        self.node_id = context.get_node_id()
        self.host = host or ray.util.get_node_ip_address()
        self.process = ReplicaProcess(doc, host=self.host)
        self._lock = threading.Lock()
        self.error: str | None = None
        atexit.register(self.process.kill)
        try:
            self.process.start(ready_timeout_s=ready_timeout_s)
        except (ReplicaError, BerthError, OSError) as e:
            self.error = str(e)  # info() reports it; the controller ends this actor

    def info(self) -> dict[str, Any]:
        proc = self.process.proc
        return {
            "name": self.name,
            "generation": self.generation,
            "node_id": self.node_id,
            "host": self.host,
            "url": self.process.url,
            "grpc_port": self.process.grpc_port,
            "berthd_pid": proc.pid if proc else None,
            "actor_pid": os.getpid(),
            "error": self.error,
        }

    def stats(self) -> dict[str, Any]:
        """Health and load: ready, in_flight, queued, requests."""
        out: dict[str, Any] = {"ready": self.process.ready(), "alive": self.process.alive()}
        try:
            out.update(self.process.load())
        except (OSError, http.client.HTTPException, ReplicaError) as e:
            out["error"] = str(e)
        return out

    def stop(self, drain_timeout_s: float, grace_s: float = 0.0) -> int | None:
        """After ``grace_s`` (clients still reading an older replica set),
        SIGTERM: berthd finishes what it accepted within ``drain_timeout_s``."""
        time.sleep(grace_s)
        with self._lock:
            return self.process.stop(drain_timeout_s)

    def log_tail(self) -> str:
        return self.process.log_tail()


def replica_actor_class() -> Any:
    """``Replica`` as a Ray actor class (imports Ray)."""
    import ray

    # stats and stop must not wait for each other: a small thread pool.
    return ray.remote(max_restarts=0, max_concurrency=4)(Replica)


def info_json(info: Mapping[str, Any]) -> str:
    return json.dumps(dict(info), sort_keys=True)
