"""Helpers of Berth's end-to-end tests: a real ``berth serve`` process, raw
HTTP calls, and the models the tests serve (trained or built here, in
temporary folders; nothing is downloaded).

The fixtures that use these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"

#: Seconds a server may take from start to ready.
READY_TIMEOUT_S = 60.0
#: Seconds a server may take to exit after SIGTERM at cleanup.
STOP_TIMEOUT_S = 10.0

#: Every server started by this test run that has not been closed yet.
LIVE_SERVERS: list[BerthServer] = []
#: Every server started by this test run (for logs attached to failures).
ALL_SERVERS: list[BerthServer] = []


# --------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def berth_executable() -> str:
    """The ``berth`` command: the one on PATH, else the project's venv."""
    found = shutil.which("berth")
    if found:
        return found
    candidate = VENV_BIN / "berth"
    if candidate.exists():
        return str(candidate)
    pytest.fail(
        "the `berth` command is not installed; run `make install` and put "
        f"{VENV_BIN} on PATH",
        pytrace=False,
    )


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("BERTH_PORT", None)
    env.pop("BERTH_GRPC_PORT", None)
    env.pop("BERTH_HOST", None)
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    reason: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(
                f"response {self.status} is not JSON ({e}): {self.body[:500]!r}"
            ) from None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def read_response(resp: http.client.HTTPResponse) -> Response:
    body = resp.read()
    return Response(
        resp.status,
        {k.lower(): v for k, v in resp.getheaders()},
        body,
        resp.reason,
    )


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    ca_file: str | None = None,
) -> Response:
    """One request on a fresh HTTP/1.1 connection to 127.0.0.1:port (over
    TLS, trusting ca_file, when ca_file is given)."""
    conn: http.client.HTTPConnection
    if ca_file is not None:
        ctx = ssl.create_default_context(cafile=ca_file)
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=hdrs)
        return read_response(conn.getresponse())
    finally:
        conn.close()


def assert_error(resp: Response, status: int | tuple[int, ...], *words: str) -> str:
    """Checks an error answer: the status (or one of several), a JSON body
    ``{"error": "..."}`` whose message contains every one of ``words``
    (case-insensitive). Returns the message."""
    allowed = status if isinstance(status, tuple) else (status,)
    assert resp.status in allowed, (
        f"expected HTTP {' or '.join(map(str, allowed))}, got {resp.status}: {resp.body[:800]!r}"
    )
    ctype = resp.header("content-type") or ""
    assert "application/json" in ctype, f"error content-type is {ctype!r}"
    doc = resp.json()
    assert isinstance(doc, dict), f"error body is not a JSON object: {doc!r}"
    msg = doc.get("error")
    assert isinstance(msg, str) and msg.strip(), f"no error message in {doc!r}"
    for word in words:
        # "a|b": the message must mention a or b.
        choices = [w.lower() for w in word.split("|")]
        assert any(w in msg.lower() for w in choices), (
            f"the error message should mention {' or '.join(map(repr, choices))}: {msg!r}"
        )
    return msg


def infer_body(
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": list(inputs)}
    if outputs is not None:
        doc["outputs"] = [{"name": n} for n in outputs]
    doc.update(extra)
    return doc


def tensor(name: str, datatype: str, shape: Sequence[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


def outputs_by_name(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    outs = doc.get("outputs")
    assert isinstance(outs, list), f"no outputs list in {doc!r}"
    by_name = {o["name"]: o for o in outs}
    assert len(by_name) == len(outs), f"duplicate output names in {doc!r}"
    return by_name


# ------------------------------------------------------------------ processes


def _read_proc(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    raw = _read_proc(f"/proc/{pid}/stat")
    if raw is None:
        return None
    text = raw.decode(errors="replace")
    rest = text[text.rfind(")") + 2 :].split()
    if len(rest) < 2:
        return None
    return rest[0], int(rest[1])


def proc_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def proc_env(pid: int) -> dict[str, str]:
    raw = _read_proc(f"/proc/{pid}/environ") or b""
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def children_of(pid: int) -> list[int]:
    """Direct children of a process (through /proc/<pid>/task/*/children when
    the kernel has it, else by scanning every process's parent)."""
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    found_file = False
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            raw = _read_proc(str(task / "children"))
            if raw is not None:
                found_file = True
                kids.extend(int(x) for x in raw.split())
    if found_file:
        return sorted(set(kids))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[1] == pid:
                kids.append(int(entry))
    return sorted(kids)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails after
    ``timeout`` seconds saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{extra}")
        time.sleep(interval)


# -------------------------------------------------------------------- server


@dataclass
class BerthServer:
    """One ``berth serve`` process on 127.0.0.1, in its own process group.

    ``wait_for`` says what "started" means: ``"server"`` (GET
    /v2/health/ready answers 200), a list of model names (each one's ready
    endpoint answers 200), or ``"listening"`` (GET /v2/health/live answers
    200).
    """

    target: Sequence[str]
    workdir: Path
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    wait_for: str | Sequence[str] = "server"
    ready_timeout: float = READY_TIMEOUT_S
    label: str = "berth"
    port: int = 0
    grpc_port: int = 0
    scheme: str = "http"
    ca_file: str | None = None  # trusted certificate when scheme is https
    token: str | None = None  # sent as a bearer token by get() and post()
    berth: str | None = None  # the `berth` command; None: berth_executable()
    command: str = "serve"  # the subcommand ("gateway": docs/gateway.md)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    started_at: float = 0.0
    closed_at: float | None = None
    returncode: int | None = None

    # ---- lifecycle

    def start(self) -> BerthServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):
            self.port = free_port()
            # Every server gets its own gRPC port too (the default, 8081,
            # would clash between servers running at once).
            grpc_args: list[str] = []
            if not any(str(a).startswith("--grpc-port") for a in self.extra_args):
                self.grpc_port = free_port()
                while self.grpc_port == self.port:
                    self.grpc_port = free_port()
                grpc_args = ["--grpc-port", str(self.grpc_port)]
            self.log_path = self.workdir / f"{self.label}-{self.port}.log"
            cmd = [
                self.berth or berth_executable(),
                self.command,
                *self.target,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *grpc_args,
                *self.extra_args,
            ]
            self.cmd = cmd
            with open(self.log_path, "wb") as log:
                log.write(("$ " + " ".join(cmd) + "\n").encode())
                log.flush()
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=server_env(self.env),
                    cwd=str(self.workdir),
                    start_new_session=True,
                )
            self.started_at = time.monotonic()
            self.closed_at = None
            self.returncode = None
            LIVE_SERVERS.append(self)
            ALL_SERVERS.append(self)
            try:
                self._wait_started()
                return self
            except _PortTaken as e:
                last_error = str(e)
                self.close()
                continue
            except BaseException:
                self.close()
                raise
        pytest.fail(f"could not find a free port for berth: {last_error}")

    def _wait_started(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                log = self.log_text()
                if "in use" in log.lower() and "address" in log.lower():
                    raise _PortTaken(log[-2000:])
                pytest.fail(
                    f"berth exited with code {rc} before it was ready\n"
                    f"command: {' '.join(self.cmd)}\n--- server log ---\n{self.log_tail()}",
                    pytrace=False,
                )
            if self._started_now():
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"berth was not ready after {self.ready_timeout:.0f}s "
                    f"(waiting for {self.wait_for!r})\ncommand: {' '.join(self.cmd)}\n"
                    f"--- server log ---\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.1)

    def _started_now(self) -> bool:
        try:
            if self.wait_for == "server":
                return self.get("/v2/health/ready", timeout=2).status == 200
            if self.wait_for == "listening":
                return self.get("/v2/health/live", timeout=2).status == 200
            return all(
                self.get(f"/v2/models/{m}/ready", timeout=2).status == 200
                for m in self.wait_for
            )
        except (OSError, http.client.HTTPException):
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode

    def close(self) -> None:
        """Stops the server however it is: SIGTERM, up to STOP_TIMEOUT_S,
        then SIGKILL to the whole process group (workers included)."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            # Whatever is left of the group (workers of a killed engine).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if self.returncode is None:
                self.returncode = proc.returncode
            if self.closed_at is None:
                self.closed_at = time.monotonic()
            if self in LIVE_SERVERS:
                LIVE_SERVERS.remove(self)

    def __enter__(self) -> BerthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- facts

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def triton_url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC service (tritonclient.grpc's url form)."""
        return f"127.0.0.1:{self.grpc_port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 150, chars: int = 20000) -> str:
        text = "\n".join(self.log_text().splitlines()[-lines:])
        return text[-chars:]

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        records.append(rec)
        return records

    def worker_pids(self) -> dict[str, int]:
        """Live worker processes: BERTH_WORKER_ID -> pid (the topmost process
        carrying that id among the engine's descendants)."""
        found: dict[str, int] = {}
        todo = list(children_of(self.pid)) if self.running() else []
        seen: set[int] = set()
        while todo:
            pid = todo.pop(0)
            if pid in seen:
                continue
            seen.add(pid)
            if not proc_alive(pid):
                continue
            wid = proc_env(pid).get("BERTH_WORKER_ID")
            if wid and wid not in found:
                found[wid] = pid
                continue
            todo.extend(children_of(pid))
        return found

    def wait_worker(self, worker_id: str, timeout: float = 30.0, not_pid: int | None = None) -> int:
        """Waits until a live worker with that id (and another pid than
        ``not_pid``) exists; returns its pid."""

        def check() -> int | None:
            pid = self.worker_pids().get(worker_id)
            if pid is not None and pid != not_pid:
                return pid
            return None

        return int(
            wait_until(
                check,
                timeout,
                f"worker {worker_id} (not pid {not_pid})",
                on_timeout=lambda: f"workers: {self.worker_pids()}\n{self.log_tail()}",
            )
        )

    # ---- requests

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, timeout: float = 60.0) -> Response:
        return http_call(self.port, "GET", path, headers=self._auth(), timeout=timeout,
                         ca_file=self.ca_file)

    def post(
        self,
        path: str,
        body: bytes | str | Mapping[str, Any] | list[Any] | None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Response:
        hdrs = {"Content-Type": "application/json", **self._auth(), **(headers or {})}
        return http_call(self.port, "POST", path, body, hdrs, timeout=timeout,
                         ca_file=self.ca_file)

    def infer(
        self,
        model: str,
        body: bytes | str | Mapping[str, Any],
        version: str | None = None,
        timeout: float = 60.0,
    ) -> Response:
        path = f"/v2/models/{model}"
        if version is not None:
            path += f"/versions/{version}"
        return self.post(path + "/infer", body, timeout=timeout)

    def infer_ok(self, model: str, body: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
        resp = self.infer(model, body, version=version)
        assert resp.status == 200, f"infer on {model!r} gave {resp.status}: {resp.body[:1000]!r}"
        doc = resp.json()
        assert isinstance(doc, dict)
        return doc

    def gauges(self, model: str, version: str = "1") -> dict[str, float]:
        """The model's berth_queue_depth (requests waiting, not yet on a
        worker) and berth_inflight_requests (queued or running), from /metrics."""
        text = self.get("/metrics").body.decode()
        found: dict[str, float] = {}
        for name in ("berth_queue_depth", "berth_inflight_requests"):
            m = re.search(rf'^{name}\{{model="{re.escape(model)}",version="{re.escape(version)}"\}} (\S+)$',
                          text, re.M)
            if m:
                found[name] = float(m.group(1))
        return found

    def wait_queue(self, model: str, *, inflight: int, queued: int, version: str = "1",
                   timeout: float = 60.0) -> None:
        """Waits until the model holds `inflight` requests of which `queued`
        wait in its queue (so inflight - queued run on its workers). Tests use
        this instead of a sleep to know that a request reached a worker or
        that the requests they sent are queued."""
        want = {"berth_queue_depth": float(queued), "berth_inflight_requests": float(inflight)}
        wait_until(
            lambda: self.gauges(model, version) == want,
            timeout,
            f"{model}: {inflight} in flight, {queued} queued",
            interval=0.02,
            on_timeout=lambda: f"last seen: {self.gauges(model, version)}\n{self.log_tail()}",
        )


class _PortTaken(Exception):
    pass


def start_server(
    target: str | Sequence[str],
    workdir: Path,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    wait_for: str | Sequence[str] = "server",
    label: str = "berth",
    scheme: str = "http",
    ca_file: str | None = None,
    berth: str | None = None,
) -> BerthServer:
    """Starts ``berth serve TARGET --host 127.0.0.1 --port P EXTRA...`` and
    waits until it is ready (see :class:`BerthServer`). ``berth`` names the
    command to run (default: :func:`berth_executable`)."""
    targets = [target] if isinstance(target, str) else list(target)
    server = BerthServer(
        target=targets,
        workdir=workdir,
        extra_args=extra_args,
        env=env,
        wait_for=wait_for,
        label=label,
        scheme=scheme,
        ca_file=ca_file,
        berth=berth,
    )
    return server.start()


def close_all_servers() -> None:
    for server in list(LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.close()


# ------------------------------------------------------------- custom models

#: The 13 JSON datatypes of the identity model, with the NumPy dtype name the
#: model should receive for each.
ALL_DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}

ALL_TYPES_SOURCE = '''
import numpy as np
import berth

TYPES = @TYPES@


class AllTypes(berth.Model):
    """Returns every input unchanged as out_<type>, and what it received."""

    inputs = [berth.TensorSpec("in_" + t.lower(), t, [-1, -1]) for t in TYPES]
    outputs = [berth.TensorSpec("out_" + t.lower(), t, [-1, -1]) for t in TYPES] + [
        berth.TensorSpec("seen", "BYTES", [-1])
    ]

    def predict(self, inputs):
        out = {}
        seen = []
        for t in TYPES:
            a = inputs["in_" + t.lower()]
            kind = a.dtype.name
            if a.dtype == object:
                kind += ":" + ",".join(sorted({type(v).__name__ for v in a.flat}))
            seen.append(t + "=" + kind)
            out["out_" + t.lower()] = np.array(a, copy=True)
        out["seen"] = np.array(seen, dtype=object)
        return out
'''.replace("@TYPES@", repr(list(ALL_DATATYPES)))

PARAMS_SOURCE = '''
import json
import numpy as np
import berth


class Params(berth.Model):
    """y = x * parameters["scale"]; "echo" holds the parameters it got."""

    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1]), berth.TensorSpec("echo", "BYTES", [1])]

    def predict(self, inputs, parameters=None):
        parameters = parameters or {}
        scale = float(parameters.get("scale", 1.0))
        echo = json.dumps(parameters, sort_keys=True)
        return {"y": inputs["x"] * scale, "echo": np.array([echo], dtype=object)}
'''

SLOW_SOURCE = '''
import os
import time
import numpy as np
import berth

MARKS = @MARKS@
DELAY = @DELAY@


class Slow(berth.Model):
    """y = x + 1 after DELAY seconds; appends "<pid> <x0>" to MARKS when a
    batch starts."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        with open(MARKS, "a") as f:
            f.write("%d %r\\n" % (os.getpid(), float(x[0]) if x.size else 0.0))
        time.sleep(DELAY)
        return {"y": x + 1}
'''

CRASH_SOURCE = '''
import os
import numpy as np
import berth


class Crash(berth.Model):
    """y = 2x; a negative first element makes the worker exit on the spot."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        if x.size and x[0] < 0:
            os._exit(3)
        return {"y": x * 2}
'''

RAISER_SOURCE = '''
import numpy as np
import berth


class Raiser(berth.Model):
    """y = x; a negative element makes predict raise a plain exception."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        if (x < 0).any():
            raise RuntimeError("boom: the model exploded on a negative value")
        return {"y": x}
'''

REJECTER_SOURCE = '''
import numpy as np
import berth


class Rejecter(berth.Model):
    """y = sqrt(x); non-positive values are the caller's fault."""

    inputs = [berth.TensorSpec("temperature", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1])]

    def predict(self, inputs):
        t = inputs["temperature"]
        if (t <= 0).any():
            raise berth.InvalidInput("temperature must be positive")
        return {"y": np.sqrt(t)}
'''

CHECKED_SOURCE = '''
import os
import numpy as np
import berth

MARKS = @MARKS@


class Checked(berth.Model):
    """Two inputs: total = vec.sum(axis=1) + offset. Appends a line to MARKS
    per batch, so tests can tell whether a request reached the model."""

    inputs = [
        berth.TensorSpec("vec", "FP32", [-1, 3]),
        berth.TensorSpec("offset", "INT64", [-1]),
    ]
    outputs = [berth.TensorSpec("total", "FP64", [-1])]

    def predict(self, inputs):
        with open(MARKS, "a") as f:
            f.write("%d\\n" % os.getpid())
        vec = inputs["vec"].astype(np.float64)
        return {"total": vec.sum(axis=1) + inputs["offset"]}
'''

TEXT_SOURCE = '''
import numpy as np
import berth


class Text(berth.Model):
    """length = UTF-8 byte length of each text."""

    inputs = [berth.TensorSpec("text", "BYTES", [-1])]
    outputs = [berth.TensorSpec("length", "INT64", [-1])]

    def predict(self, inputs):
        return {"length": np.array([len(t) for t in inputs["text"]], dtype=np.int64)}
'''

BROKEN_LOAD_SOURCE = '''
import berth


class Broken(berth.Model):
    """load() always fails."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def load(self):
        raise FileNotFoundError("weights file weights-missing.bin not found")

    def predict(self, inputs):
        return {"y": inputs["x"]}
'''

DIES_AT_LOAD_SOURCE = '''
import os
import signal
import berth

MARKS = @MARKS@


class Dies(berth.Model):
    """load() records that it ran, then the process kills itself."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def load(self):
        with open(MARKS, "a") as f:
            f.write("%d\\n" % os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)

    def predict(self, inputs):
        return {"y": inputs["x"]}
'''

SCALER_SOURCE = '''
from pathlib import Path
import numpy as np
import berth


class Scaler(berth.Model):
    """y = tanh(x @ W + b), W and b from weights.npz next to this file."""

    inputs = [berth.TensorSpec("x", "FP32", [-1, 3])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 2]), berth.TensorSpec("norm", "FP64", [-1])]

    def load(self):
        data = np.load(WEIGHTS)
        self.w = data["w"].astype(np.float32)
        self.b = data["b"].astype(np.float32)

    def predict(self, inputs):
        x = inputs["x"]
        y = np.tanh(x @ self.w + self.b).astype(np.float32)
        return {"y": y, "norm": np.linalg.norm(x.astype(np.float64), axis=1)}


WEIGHTS = @WEIGHTS@
'''


def write_python_model(folder: Path, filename: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(textwrap.dedent(source))
    return path


def add_python_model(
    repo: Path, name: str, source: str, cls: str, version: str = "1", yaml_extra: str = ""
) -> Path:
    """Adds ``<repo>/<name>/<version>/model.py`` and a ``berth.yaml`` saying
    ``runtime: python`` and which class to serve."""
    model_dir = repo / name
    write_python_model(model_dir / version, "model.py", source)
    (model_dir / "berth.yaml").write_text(f"runtime: python\nclass: {cls}\n{yaml_extra}")
    return model_dir


def fill(source: str, **values: Any) -> str:
    """Replaces each ``@KEY@`` in a model source with ``repr(value)``."""
    for key, value in values.items():
        source = source.replace(f"@{key}@", repr(value))
    left = re.findall(r"@[A-Z_]+@", source)
    assert not left, f"unfilled placeholders in model source: {left}"
    return source


# ------------------------------------------------------------ framework zoo


class ModelZoo:
    """Models trained or built once per test session, saved under ``root``.

    Every builder returns the saved file's path; the trained objects are kept
    on the zoo (``zoo.objects[key]``) so tests can compare the served output
    with the framework's own in-process output.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects: dict[str, Any] = {}
        self._paths: dict[str, Path] = {}
        self._by_path: dict[Path, Any] = {}

    def _once(self, key: str, build: Callable[[Path], Any], filename: str) -> Path:
        if key not in self._paths:
            folder = self.root / key
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / filename
            self.objects[key] = build(path)
            self._paths[key] = path
            self._by_path[path] = self.objects[key]
        return self._paths[key]

    def trained(self, path: Path) -> Any:
        """The in-process object a builder saved at ``path``."""
        return self._by_path[path]

    # ---- data

    @property
    def iris(self) -> tuple[Any, Any]:
        if "_iris" not in self.objects:
            from sklearn.datasets import load_iris

            X, y = load_iris(return_X_y=True)
            self.objects["_iris"] = (X.astype("float64"), y.astype("int64"))
        return self.objects["_iris"]

    @property
    def regression(self) -> tuple[Any, Any]:
        if "_reg" not in self.objects:
            import numpy as np

            rng = np.random.default_rng(7)
            X = rng.normal(size=(200, 5))
            y = X @ np.array([1.5, -2.0, 0.5, 3.0, 0.0]) + 0.1 * rng.normal(size=200)
            self.objects["_reg"] = (X, y)
        return self.objects["_reg"]

    # ---- scikit-learn

    def sklearn_classifier(self, filename: str = "iris.joblib") -> Path:
        def build(path: Path) -> Any:
            import joblib
            from sklearn.ensemble import RandomForestClassifier

            X, y = self.iris
            clf = RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0).fit(X, y)
            if path.suffix == ".pkl":
                import pickle

                with open(path, "wb") as f:
                    pickle.dump(clf, f)
            else:
                joblib.dump(clf, path)
            return clf

        return self._once(f"sk_clf_{filename}", build, filename)

    def sklearn_string_labels(self) -> Path:
        def build(path: Path) -> Any:
            import joblib
            import numpy as np
            from sklearn.tree import DecisionTreeClassifier

            X, y = self.iris
            names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
            clf = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, names)
            joblib.dump(clf, path)
            return clf

        return self._once("sk_strlabels", build, "species.joblib")

    def sklearn_regressor(self) -> Path:
        def build(path: Path) -> Any:
            import joblib
            from sklearn.linear_model import Ridge

            X, y = self.regression
            reg = Ridge(alpha=0.5).fit(X, y)
            joblib.dump(reg, path)
            return reg

        return self._once("sk_reg", build, "ridge.joblib")

    def sklearn_pipeline(self) -> Path:
        def build(path: Path) -> Any:
            import joblib
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import StandardScaler

            X, y = self.iris
            pipe = Pipeline(
                [("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000))]
            ).fit(X, y)
            joblib.dump(pipe, path)
            return pipe

        return self._once("sk_pipe", build, "pipeline.joblib")

    def sklearn_versions(self) -> tuple[Any, Any]:
        """Two different iris classifiers (version 1 and 2 of a repository
        model), unsaved: the caller saves them where it wants."""
        if "_versions" not in self.objects:
            from sklearn.tree import DecisionTreeClassifier

            X, y = self.iris
            v1 = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
            v2 = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, (y + 1) % 3)
            self.objects["_versions"] = (v1, v2)
        return self.objects["_versions"]

    # ---- XGBoost

    def xgboost_booster(self, suffix: str = ".json") -> Path:
        def build(path: Path) -> Any:
            import numpy as np
            import xgboost as xgb

            X, y = self.regression
            dtrain = xgb.DMatrix(X.astype(np.float32), label=y)
            booster = xgb.train(
                {"objective": "reg:squarederror", "max_depth": 3, "nthread": 1},
                dtrain,
                num_boost_round=12,
            )
            booster.save_model(str(path))
            return booster

        return self._once(f"xgb_booster{suffix}", build, f"booster{suffix.replace('.', '_')}{suffix}")

    def xgboost_classifier(self) -> Path:
        def build(path: Path) -> Any:
            import xgboost as xgb

            X, y = self.iris
            clf = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(X, y)
            clf.save_model(str(path))
            return clf

        return self._once("xgb_clf", build, "xgbclf.json")

    # ---- LightGBM

    def lightgbm_booster(self) -> Path:
        def build(path: Path) -> Any:
            import lightgbm as lgb

            X, y = self.regression
            booster = lgb.train(
                {"objective": "regression", "num_leaves": 7, "verbose": -1, "num_threads": 1},
                lgb.Dataset(X, label=y),
                num_boost_round=10,
            )
            booster.save_model(str(path))
            return booster

        return self._once("lgbm", build, "lgbm.txt")

    # ---- ONNX

    def onnx_linear(self) -> Path:
        """y = x @ W + B: x FP32 [N, 4], y FP32 [N, 3]."""

        def build(path: Path) -> Any:
            import numpy as np
            from onnx import TensorProto, helper, numpy_helper

            rng = np.random.default_rng(3)
            w = rng.normal(size=(4, 3)).astype(np.float32)
            b = rng.normal(size=(3,)).astype(np.float32)
            graph = helper.make_graph(
                [
                    helper.make_node("MatMul", ["x", "W"], ["xw"]),
                    helper.make_node("Add", ["xw", "B"], ["y"]),
                ],
                "linear",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
            )
            _save_onnx(graph, path)
            return None

        return self._once("onnx_linear", build, "linear.onnx")

    def onnx_int64(self) -> Path:
        """ids INT64 [N, 2] -> doubled INT64 [N, 2], total FP64 [N]."""

        def build(path: Path) -> Any:
            import numpy as np
            from onnx import TensorProto, helper, numpy_helper

            graph = helper.make_graph(
                [
                    helper.make_node("Mul", ["ids", "two"], ["doubled"]),
                    helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.DOUBLE),
                    helper.make_node("ReduceSum", ["ids_f", "axes"], ["total"], keepdims=0),
                ],
                "int64_graph",
                [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2])],
                [
                    helper.make_tensor_value_info("doubled", TensorProto.INT64, ["N", 2]),
                    helper.make_tensor_value_info("total", TensorProto.DOUBLE, ["N"]),
                ],
                initializer=[
                    numpy_helper.from_array(np.array(2, dtype=np.int64), "two"),
                    numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
                ],
            )
            _save_onnx(graph, path)
            return None

        return self._once("onnx_int64", build, "ids.onnx")

    def onnx_string(self) -> Path:
        """words STRING [N] -> same STRING [N] (Identity), and a FP32 score."""

        def build(path: Path) -> Any:
            from onnx import TensorProto, helper

            graph = helper.make_graph(
                [
                    helper.make_node("Identity", ["words"], ["words_out"]),
                    helper.make_node("Identity", ["score"], ["score_out"]),
                ],
                "string_graph",
                [
                    helper.make_tensor_value_info("words", TensorProto.STRING, ["N"]),
                    helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
                ],
                [
                    helper.make_tensor_value_info("words_out", TensorProto.STRING, ["N"]),
                    helper.make_tensor_value_info("score_out", TensorProto.FLOAT, ["N"]),
                ],
            )
            _save_onnx(graph, path)
            return None

        return self._once("onnx_string", build, "words.onnx")

    # ---- custom Python

    def python_scaler(self) -> Path:
        def build(path: Path) -> Any:
            import numpy as np

            rng = np.random.default_rng(11)
            weights = path.parent / "weights.npz"
            np.savez(weights, w=rng.normal(size=(3, 2)), b=rng.normal(size=(2,)))
            write_python_model(path.parent, path.name, fill(SCALER_SOURCE, WEIGHTS=str(weights)))
            return None

        return self._once("py_scaler", build, "scaler.py")


def _save_onnx(graph: Any, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="berth-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


import atexit  # noqa: E402

atexit.register(close_all_servers)


def copy_into(src: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


# ------------------------------------------------- a minimal HTTP/2 client
#
# curl 7.88 (Debian 12) cannot reuse a prior-knowledge HTTP/2 connection for
# a second request (curl issue #10634, fixed in 8.0), so the tests that need
# several streams on one connection speak HTTP/2 themselves: frames per RFC
# 9113, request headers as HPACK literals (RFC 7541), responses read from
# DATA frames, the status from HPACK's static table when the server indexes it.

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def _h2_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    # Literal header field without indexing, new name, no Huffman.
    return b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v


@dataclass
class H2Response:
    status: int | None = None  # None: the server sent :status in a form this client does not decode
    header_block: bytes = b""
    body: bytes = b""
    ended: bool = False
    reset: int | None = None


def h2_exchange(
    port: int,
    requests: Sequence[tuple[str, str, bytes | None]],
    timeout: float = 60.0,
) -> list[H2Response]:
    """Sends every request as its own stream on ONE HTTP/2 connection (all
    HEADERS first, then all DATA, so the streams interleave) and returns the
    responses in request order."""
    import select

    sids = [1 + 2 * i for i in range(len(requests))]
    responses = {sid: H2Response() for sid in sids}
    out = bytearray(_H2_PREFACE + _h2_frame(4, 0, 0))
    for sid, (method, path, body) in zip(sids, requests):
        block = (
            _hpack_literal(":method", method)
            + _hpack_literal(":scheme", "http")
            + _hpack_literal(":path", path)
            + _hpack_literal(":authority", f"127.0.0.1:{port}")
        )
        if body is not None:
            block += _hpack_literal("content-type", "application/json")
            block += _hpack_literal("content-length", str(len(body)))
        out += _h2_frame(1, 0x4 | (0 if body is not None else 0x1), sid, block)
    for sid, (_, _, body) in zip(sids, requests):
        if body is not None:
            assert len(body) <= 16384, "keep h2_exchange bodies within one frame"
            out += _h2_frame(0, 0x1, sid, body)
    total = sum(len(b or b"") for _, _, b in requests)
    assert total < 65535, "keep h2_exchange bodies within the initial connection window"

    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(out)
        buf = b""
        while not all(r.ended or r.reset is not None for r in responses.values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"HTTP/2 responses incomplete after {timeout}s: {responses}")
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the server closed the HTTP/2 connection early: {responses}")
            buf += chunk
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                ftype, flags = buf[3], buf[4]
                sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload = buf[9 : 9 + length]
                buf = buf[9 + length :]
                if ftype == 4 and not flags & 0x1:  # SETTINGS: acknowledge
                    sock.sendall(_h2_frame(4, 0x1, 0))
                elif ftype == 6 and not flags & 0x1:  # PING: answer
                    sock.sendall(_h2_frame(6, 0x1, 0, payload))
                elif ftype == 7:  # GOAWAY
                    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                    code = int.from_bytes(payload[4:8], "big")
                    if any(s > last for s, r in responses.items() if not r.ended):
                        raise AssertionError(f"GOAWAY (last stream {last}, error {code}): {responses}")
                elif sid in responses:
                    resp = responses[sid]
                    if flags & 0x8 and ftype in (0, 1):  # PADDED
                        pad = payload[0]
                        payload = payload[1 : len(payload) - pad]
                    if ftype == 1:
                        if flags & 0x20:  # PRIORITY
                            payload = payload[5:]
                        if not resp.header_block:
                            resp.status = _h2_status(payload)
                        resp.header_block += payload
                    elif ftype == 9:
                        resp.header_block += payload
                    elif ftype == 0:
                        resp.body += payload
                    elif ftype == 3:
                        resp.reset = int.from_bytes(payload[:4], "big")
                    if ftype in (0, 1) and flags & 0x1:
                        resp.ended = True
        with contextlib.suppress(OSError):
            sock.sendall(_h2_frame(7, 0, 0, (max(sids) if sids else 0).to_bytes(4, "big") + bytes(4)))
    return [responses[sid] for sid in sids]


def _h2_status(block: bytes) -> int | None:
    i = 0
    while i < len(block) and block[i] & 0xE0 == 0x20:  # dynamic table size update
        i += 1
        if block[i - 1] & 0x1F == 0x1F:
            while i < len(block) and block[i] & 0x80:
                i += 1
            i += 1
    if i < len(block) and block[i] & 0x80:
        return _H2_STATIC_STATUS.get(block[i] & 0x7F)
    return None
