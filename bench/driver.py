"""The benchmark harness: starts each server, drives it with wrk, measures.

Run by bench/run.sh in the bench venv; see bench/README.md. For each server
and workload it starts the server pinned to the server core (taskset), waits
until an inference answers correctly, warms up, then runs wrk pinned to the
load core at rising concurrency, `reps` times per point, and keeps medians.
Server CPU time is the utime+stime of the server's process tree and session
read from /proc before and after each wrk run. Raw results go to
bench/work/raw-<stamp>.json; bench/report.py turns them into the Markdown
table and the chart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
VENVS = HERE / ".venvs"
LOGS = WORK / "logs"
SERVER_CORE = os.environ.get("BENCH_SERVER_CORE", "1")
LOAD_CORE = os.environ.get("BENCH_LOAD_CORE", "0")
HZ = os.sysconf("SC_CLK_TCK")

# Identical settings for every server.
SETTINGS = {
    "workers": 1,  # model worker processes (instances / replicas) per model
    "threads": 1,  # intra-op threads in the model (OMP/MKL/OpenBLAS/ORT)
    "W1": {"max_batch": 32, "delay_us": 2000},
    "W2": {"max_batch": 32, "delay_us": 2000},
    "W3": {"max_batch": 16, "delay_us": 5000},
    "W1N": {"max_batch": 32, "delay_us": 2000},
    "W2N": {"max_batch": 32, "delay_us": 2000},
}
# The max batch delays of the sweep (µs): every server with a delay knob runs
# the "sweep" workloads at each, so that each can be shown at its best delay.
DELAYS_US = [0, 500, 2000]

WORKLOADS = {
    # name: model, cases (body names), p99 bound in µs (None: max throughput),
    # concurrencies (at the shared delay), sweep_conc (at the sweep's other
    # delays), inproc (the in-process case of each case's model, None: no
    # limit), floor (the workload whose throughput at the same concurrency is
    # the server's protocol floor), sweep (runs at every delay of the sweep)
    "W1": {"model": "identity", "cases": ["identity"], "bound_us": None,
           "conc": [1, 4, 8, 16, 32, 64], "quick_conc": [1, 8, 16],
           "sweep_conc": [1, 4, 16, 64], "inproc": [None], "floor": "W1", "sweep": True},
    "W2": {"model": "tabular", "cases": ["tabular"], "bound_us": 10_000,
           "conc": [1, 2, 4, 8, 16, 32, 64], "quick_conc": [1, 8],
           "sweep_conc": [1, 4, 16], "inproc": ["tabular"], "floor": "W1", "sweep": True},
    "W3": {"model": "embed", "cases": ["short", "long"], "bound_us": 100_000,
           "conc": [1, 2, 4, 8, 16, 32], "quick_conc": [1, 4],
           "inproc": ["short", "long"], "floor": "W1", "sweep": False},
    # the ONNX variants: the same requests and checks as W1/W2, the model an
    # ONNX graph (bench/prepare.py) run by ONNX Runtime: natively in berthd
    # for Berth, in the model code of every peer and of Berth's Python worker.
    # W1N is W2N's protocol floor; in the default set it runs on Berth's rows
    # only (a peer's W1N is its W1 plus one onnxruntime call: its W2N floor
    # is its W1); named in --workloads, it runs on every server.
    "W1N": {"model": "identity_onnx", "cases": ["identity"], "bound_us": None,
            "conc": [1, 4, 8, 16, 32, 64], "quick_conc": [1, 8, 16],
            "sweep_conc": [1, 4, 16, 64], "inproc": [None], "floor": "W1N", "sweep": True,
            "default_servers": ["berth", "berth_py"]},
    "W2N": {"model": "tabular_onnx", "cases": ["tabular"], "bound_us": 10_000,
            "conc": [1, 2, 4, 8, 16, 32, 64], "quick_conc": [1, 8],
            "sweep_conc": [1, 4, 16], "inproc": ["tabular_onnx"], "floor": "W1N", "sweep": True},
}

DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W1N", "W2N")
# the sweep's other delays run with this many repetitions per point (at most
# --reps): fewer points, fewer repetitions, so that a full run stays near 70 min
SWEEP_REPS = 2

# How each server is reached: protocol of the body, URL path.
# venv: whose bench/.venvs/<venv> it runs from (default: its own); only: the
# workloads it runs (default: all); delay_knob: False where the server has no
# fixed max batch delay to sweep.
SERVERS = {
    "berth": {"proto": "oip", "path": "/v2/models/{m}/infer"},
    # Berth with its ONNX models in a Python worker (backend: python), where
    # "berth" runs them natively: only the ONNX workloads differ
    "berth_py": {"proto": "oip", "path": "/v2/models/{m}/infer", "venv": "berth",
                 "only": ["W1N", "W2N"]},
    "kserve": {"proto": "oip", "path": "/v2/models/{m}/infer", "delay_knob": False},
    "mlserver": {"proto": "oip", "path": "/v2/models/{m}/infer"},
    "pytriton": {"proto": "oip", "path": "/v2/models/{m}/infer"},
    "bentoml": {"proto": "json", "path": "/{m}", "delay_knob": False},
    "ray": {"proto": "json", "path": "/{m}"},
    "mosec": {"proto": "json", "path": "/inference"},
    "litserve": {"proto": "json", "path": "/predict"},
}
BERTH_CLASS = {"identity": "Identity", "tabular": "Tabular", "embed": "Embed",
               "identity_onnx": "IdentityOnnx", "tabular_onnx": "TabularOnnx"}


def venv_of(server: str) -> str:
    return SERVERS[server].get("venv", server)


def effective_delay_us(server: str, delay_us: int) -> int:
    """The delay the server really gets: Mosec's max_wait_time is in whole
    milliseconds (bench/servers/mosec_server.py rounds up to 1 ms; 0 runs
    without its batcher)."""
    if server == "mosec" and delay_us > 0:
        return max(1, round(delay_us / 1000)) * 1000
    return delay_us
# Every OIP server here listens for gRPC on its HTTP port + 1 (the adapters
# and launch_cmd set it so); perf_analyzer measures them over both.
GRPC_PORT_OFFSET = 1
PA_PROTOCOLS = ("http", "grpc")


def free_port(start: int) -> int:
    """The first port from start on where this server and its neighbours
    (port+1, port+2: gRPC and metrics of some servers) can listen."""
    import socket

    port = start
    while True:
        try:
            for p in (port, port + 1, port + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            port += 10


def say(msg: str) -> None:
    print(f">> [bench] {msg}", flush=True)


# ------------------------------------------------------------------ processes


def berth_entry(server: str, model: str, srv: Path, s: dict) -> str:
    """One models[] entry of Berth's app config: a berth.Model class, or for
    the ONNX models the graph with backend native ("berth") or python
    ("berth_py"), one intra-op thread either way."""
    head = f"  - name: {model}\n"
    if model.endswith("_onnx"):
        backend = "python" if server == "berth_py" else "native"
        body = (f"    runtime: onnx\n    path: {WORK / (model[:-5] + '.onnx')}\n"
                f"    backend: {backend}\n    parameters: {{intra_op_threads: 1}}\n")
    else:
        body = (f"    runtime: python\n    path: {srv / 'berth_models.py'}\n"
                f"    class: {BERTH_CLASS[model]}\n")
    return (head + body + f"    instances: {SETTINGS['workers']}\n    max_batch_size: {s['max_batch']}\n"
            f"    max_queue_delay_us: {s['delay_us']}\n")


def launch_cmd(server: str, model: str, port: int, wl: str,
               delay_us: int | None = None) -> tuple[list[str], dict[str, str], Path]:
    s = dict(SETTINGS[wl])
    if delay_us is not None:
        s["delay_us"] = delay_us
    py = str(VENVS / venv_of(server) / "bin" / "python")
    bin_ = VENVS / venv_of(server) / "bin"
    env = {
        "BENCH_MODEL": model, "BENCH_MAX_BATCH": str(s["max_batch"]),
        "BENCH_DELAY_US": str(s["delay_us"]), "BENCH_WORKERS": str(SETTINGS["workers"]),
    }
    common = ["--model", model, "--port", str(port), "--workers", str(SETTINGS["workers"])]
    batch = ["--max-batch", str(s["max_batch"]), "--delay-us", str(s["delay_us"])]
    srv = HERE / "servers"
    if server in ("berth", "berth_py"):
        cfg = WORK / "run" / f"{server}-{model}.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text("models:\n" + berth_entry(server, model, srv, s))
        env["BERTH_GRPC_PORT"] = str(port + GRPC_PORT_OFFSET)  # default 8081 may be taken
        return ([str(bin_ / "berth"), "serve", "--config", str(cfg), "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"], env, srv)
    if server == "kserve":
        return [py, str(srv / "kserve_server.py"), *common], env, srv
    if server == "mlserver":
        return ([py, str(srv / "mlserver_server.py"), *common, *batch,
                 "--dir", str(WORK / "run" / f"mlserver-{model}")], env, srv)
    if server == "bentoml":
        env["BENTOML_HOME"] = str(WORK / "bentoml-home")
        env["BENTOML_DO_NOT_TRACK"] = "True"
        return ([str(bin_ / "bentoml"), "serve", f"bentoml_svc:{BERTH_CLASS[model]}",
                 "--host", "127.0.0.1", "--port", str(port)], env, srv)
    if server == "ray":
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        return [py, str(srv / "ray_server.py"), *common, *batch], env, srv
    if server == "pytriton":
        # Triton's Python-backend stub links libpython3.11.so.1.0 by name: without
        # this it takes the system's (Debian's 3.11.2) and then fails in this
        # interpreter's newer 3.11 standard library (RLock._recursion_count).
        import sysconfig

        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
        return [py, str(srv / "pytriton_server.py"), *common, *batch], env, srv
    if server == "mosec":
        return ([py, str(srv / "mosec_server.py"), "--address", "127.0.0.1",
                 "--port", str(port), "--timeout", "60000"], env, srv)
    if server == "litserve":
        return [py, str(srv / "litserve_server.py"), "--port", str(port)], env, srv
    raise ValueError(server)


def proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, session, utime+stime ticks) for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                raw = f.read().decode("latin-1")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        # rest[0] is field 3 (state): ppid=4, session=6, utime=14, stime=15
        out[int(d)] = (int(rest[1]), int(rest[3]), int(rest[11]) + int(rest[12]))
    return out


def tree(root: int, table: dict[int, tuple[int, int, int]]) -> set[int]:
    """The root, its descendants and every process of its session."""
    pids = {p for p, (_, sid, _) in table.items() if sid == root}
    pids.add(root)
    grew = True
    while grew:
        grew = False
        for p, (pp, _, _) in table.items():
            if pp in pids and p not in pids:
                pids.add(p)
                grew = True
    return pids


def cpu_seconds(root: int) -> tuple[float, int]:
    t = proc_table()
    pids = tree(root, t)
    return sum(t[p][2] for p in pids if p in t) / HZ, len(pids)


def core_busy(core: str) -> float:
    """Busy seconds of one core since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                return (sum(v[:8]) - idle) / HZ
    return float("nan")


class Server:
    def __init__(self, name: str, model: str, port: int, wl: str, delay_us: int | None = None):
        self.name, self.model, self.port = name, model, port
        argv, extra, cwd = launch_cmd(name, model, port, wl, delay_us)
        env = dict(os.environ)
        env.update(extra)
        n = str(SETTINGS["threads"])
        env.update({
            "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "NUMEXPR_NUM_THREADS": n, "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "BENCH_WORK": str(WORK), "PATH": f"{VENVS / venv_of(name) / 'bin'}{os.pathsep}{env['PATH']}",
            "VIRTUAL_ENV": str(VENVS / venv_of(name)),
            "PYTHONPATH": f"{HERE / 'models'}{os.pathsep}{HERE / 'servers'}",
        })
        self.log_path = LOGS / f"server-{name}-{model}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *argv], cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        pids = tree(self.proc.pid, proc_table())
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while time.time() < deadline:
                self.proc.poll()
                left = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
                if not left:
                    break
                time.sleep(0.2)
            else:
                continue
            break
        self.proc.poll()
        if self.name == "ray":  # Ray's daemons may outlive the driver
            subprocess.run([str(VENVS / "ray" / "bin" / "ray"), "stop", "--force"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        self.log.close()

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rfind(")") + 2] == "Z"
    except OSError:
        return True


# ------------------------------------------------------------------ requests


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def numbers(doc) -> list[float]:
    """Every number in a JSON document, in order (the outputs, whatever the format)."""
    if isinstance(doc, bool):
        return []
    if isinstance(doc, (int, float)):
        return [float(doc)]
    if isinstance(doc, list):
        return [v for d in doc for v in numbers(d)]
    if isinstance(doc, dict):
        # OIP: only the outputs' data (not shapes); other formats: all values
        if "outputs" in doc:
            return [v for o in doc["outputs"] for v in numbers(o.get("data", []))]
        return [v for k, d in doc.items() if k not in ("shape", "id") for v in numbers(d)]
    return []


def check_answer(got: list[float], want: list[float]) -> str | None:
    """None if the server's numbers match the in-process model's, else why not."""
    if len(got) != len(want):
        return f"{len(got)} numbers in the answer, expected {len(want)}"
    err = max((abs(a - b) for a, b in zip(got, want)), default=0.0)
    return None if err < 1e-3 else f"answer differs from the model's by up to {err:.3g}"


def wait_ready(srv: Server, url: str, body: bytes, timeout: float) -> str | None:
    deadline = time.time() + timeout
    last = "no answer"
    while time.time() < deadline:
        if not srv.alive():
            return f"server exited with code {srv.proc.returncode}:\n{srv.tail()}"
        try:
            code, data = post(url, body, timeout=5)
            if code == 200:
                return None
            last = f"HTTP {code}: {data[:300]!r}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.5)
    return f"not ready after {timeout:.0f}s (last: {last})\n{srv.tail()}"


def all_busy() -> tuple[float, float]:
    """(busy, total) jiffies summed over every core, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4], sum(v[:8])


def wait_quiet(max_wait: float = 3.0, threshold: float = 0.3) -> float:
    """Waits (at most max_wait s) until the machine is nearly idle between runs:
    other people's builds and tests share these two cores. Returns the busy
    fraction of the last 0.5 s sample."""
    deadline = time.time() + max_wait
    while True:
        b0, t0 = all_busy()
        time.sleep(0.5)
        b1, t1 = all_busy()
        frac = (b1 - b0) / max(t1 - t0, 1)
        if frac < threshold or time.time() > deadline:
            return frac


def run_wrk(url: str, body_file: Path, conc: int, seconds: float, root: int) -> dict:
    idle_busy = wait_quiet()
    out = WORK / "run" / "wrk-out.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_BODY=str(body_file), BENCH_OUT=str(out))
    cpu0, _ = cpu_seconds(root)
    busy0 = core_busy(SERVER_CORE)
    t0 = time.time()
    r = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conc}",
                        f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(HERE / "wrk.lua"), url],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.time() - t0
    cpu1, npids = cpu_seconds(root)
    busy1 = core_busy(SERVER_CORE)
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout[-500:]}")
    d = json.loads(out.read_text())
    ok = d["requests"] - d["err_status"]
    d["conc"] = conc
    d["rps"] = ok / (d["duration_us"] / 1e6)
    d["errors"] = d["err_status"] + d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
    d["server_cpu_s"] = cpu1 - cpu0
    d["core_busy_s"] = busy1 - busy0
    d["wall_s"] = wall
    d["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / max(d["requests"], 1)
    d["server_pids"] = npids
    d["busy_before"] = idle_busy
    # CPU on the server core that was not the server's: other processes
    # (someone else's build or test) competing with it during the run
    d["foreign_cpu_frac"] = max(0.0, d["core_busy_s"] - d["server_cpu_s"]) / max(wall, 1e-9)
    return d


def run_perf_analyzer(server: str, model: str, port: int, conc: int, seconds: float,
                      protocol: str = "http") -> dict:
    """Triton's perf_analyzer (C++) against an OIP server, with its own random
    input data: over HTTP (binary tensor extension, as perf_analyzer sends by
    default) at `port`, or over gRPC (raw_input_contents) at the server's
    gRPC port, port + 1 for every server here (GRPC_PORT_OFFSET)."""
    pa = VENVS / "bench" / "bin" / "perf_analyzer"
    if not pa.exists():
        return {"error": "perf_analyzer is not installed"}
    import glob

    env = dict(os.environ)
    libs = glob.glob(str(VENVS / "bench" / "lib" / "python3*" / "site-packages" / "nvidia"
                         / "cuda_runtime" / "lib"))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
    csv = WORK / "run" / "pa.csv"
    csv.unlink(missing_ok=True)
    wait_quiet()
    url_port = port + GRPC_PORT_OFFSET if protocol == "grpc" else port
    cmd = ["taskset", "-c", LOAD_CORE, str(pa), "-m", model, "-u", f"127.0.0.1:{url_port}",
           "-i", protocol, "--concurrency-range", str(conc),
           "--measurement-interval", str(int(seconds * 1000)), "--max-trials", "8",
           "--stability-percentage", "50", "--percentile", "99", "-f", str(csv)]
    if server == "pytriton":
        cmd += ["-H", "triton-access-token:bench-token"]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"error": "perf_analyzer timed out after 120 s"}
    if r.returncode != 0 or not csv.exists():
        lines = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
        return {"error": f"exit {r.returncode}: " + " | ".join(lines[-4:])[:600]}
    rows = [line.split(",") for line in csv.read_text().splitlines() if line.strip()]
    head, vals = rows[0], rows[1]
    col = dict(zip(head, vals))
    return {"conc": conc, "rps": float(col["Inferences/Second"]),
            "p50_us": float(col["p50 latency"]), "p99_us": float(col["p99 latency"])}


# A run during which other work took more than this share of the server's
# core is measured again (at most FOREIGN_RETRIES times; the quietest kept):
# one neighbour's burst would otherwise move a point, and with "stop at the
# first point over the bound", end a curve.
FOREIGN_MAX = 0.05
FOREIGN_RETRIES = 2


def quiet_run(url: str, body_file: Path, conc: int, seconds: float, root: int) -> dict:
    tries = [run_wrk(url, body_file, conc, seconds, root)]
    while tries[-1]["foreign_cpu_frac"] > FOREIGN_MAX and len(tries) <= FOREIGN_RETRIES:
        say(f"   c={conc}: {tries[-1]['foreign_cpu_frac']:.0%} foreign CPU on the server "
            "core, measuring again")
        tries.append(run_wrk(url, body_file, conc, seconds, root))
    best = min(tries, key=lambda d: d["foreign_cpu_frac"])
    best["tries"] = len(tries)
    return best


def merge_rounds(old: dict, new: dict) -> dict:
    """A later round's result for one server, workload and delay folded into
    the earlier ones': each point's runs are pooled and the median taken again,
    so that every point is the median over runs spread across the whole run
    (the host's speed drifts; servers measured minutes apart are compared)."""
    if "error" in new and "error" not in old:
        old.setdefault("round_errors", []).append(new["error"])
        return old
    if "error" in old:
        return new
    for case, c in new.get("cases", {}).items():
        mine = old.setdefault("cases", {}).setdefault(case, {"points": []})
        by_conc = {p["conc"]: p for p in mine["points"]}
        for p in c["points"]:
            have = by_conc.get(p["conc"])
            by_conc[p["conc"]] = median_point(have["runs"] + p["runs"]) if have else p
        mine["points"] = [by_conc[k] for k in sorted(by_conc)]
    old["rounds"] = old.get("rounds", 1) + 1
    return old


def median_point(runs: list[dict]) -> dict:
    keys = ["rps", "p50_us", "p90_us", "p99_us", "cpu_us_per_req", "errors", "server_cpu_s",
            "core_busy_s", "requests", "foreign_cpu_frac"]
    p = {k: statistics.median(r[k] for r in runs) for k in keys}
    p["conc"] = runs[0]["conc"]
    p["runs"] = runs
    return p


def sweep(srv: Server, url: str, body_file: Path, wl: dict, reps: int, seconds: float,
          concs: list[int]) -> list[dict]:
    points = []
    bound = wl["bound_us"]
    best = 0.0
    for c in concs:
        runs = [quiet_run(url, body_file, c, seconds, srv.proc.pid) for _ in range(reps)]
        p = median_point(runs)
        points.append(p)
        say(f"   c={c:<3d} {p['rps']:9.1f} req/s  p50 {p['p50_us'] / 1e3:7.2f} ms  "
            f"p99 {p['p99_us'] / 1e3:7.2f} ms  cpu {p['cpu_us_per_req']:7.0f} us/req"
            + (f"  errors {p['errors']:.0f}" if p["errors"] else ""))
        if not srv.alive():
            raise RuntimeError(f"server died during the run:\n{srv.tail()}")
        if bound is not None and p["p99_us"] > bound:
            break  # higher concurrency only queues more: the bound is passed
        best = max(best, p["rps"])
    return points


def expected_outputs(cases: list[str]) -> dict[str, list[float]]:
    sys.path.insert(0, str(HERE / "models"))
    import common
    import numpy as np

    want = {}
    texts = json.loads((WORK / "texts.json").read_text())
    emb = None
    for case in cases:
        body = json.loads((WORK / "bodies" / f"json-{case}.json").read_text())
        if case in ("short", "long"):
            emb = emb or common.Embed()
            want[case] = emb([texts[case]]).reshape(-1).tolist()
        else:
            x = np.asarray(body["x"], dtype=np.float32)
            want[case] = common.MODELS[case]()(x).reshape(-1).tolist()
    return want


# ------------------------------------------------------------------ main


def versions(server: str) -> dict[str, str]:
    pkgs = {"berth": "berth", "berth_py": "berth", "kserve": "kserve", "mlserver": "mlserver", "bentoml": "bentoml",
            "ray": "ray", "pytriton": "nvidia-pytriton", "mosec": "mosec", "litserve": "litserve"}
    code = ("import importlib.metadata as m, json, sys; out={}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p]=m.version(p)\n"
            "    except Exception: out[p]='?'\n"
            "print(json.dumps(out))")
    try:
        r = subprocess.run([str(VENVS / venv_of(server) / "bin" / "python"), "-c", code, pkgs[server],
                            "numpy", "scikit-learn", "onnxruntime", "tokenizers"],
                           capture_output=True, text=True, timeout=60)
        return json.loads(r.stdout)
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}


def berth_build() -> str:
    try:
        return (VENVS / "berth" / ".berth-build").read_text().strip()
    except OSError:
        return "?"


def measure(name: str, w: str, delay_us: int, port: int, a: argparse.Namespace,
            want: dict[str, list[float]]) -> dict:
    """One server on one workload at one max batch delay: start, check the
    answer, warm up, sweep the concurrencies; the shared delay gets the full
    list (and perf_analyzer), the sweep's other delays sweep_conc, a 1 s
    warm-up and SWEEP_REPS repetitions."""
    wl = WORKLOADS[w]
    shared = delay_us == SETTINGS[w]["delay_us"]
    concs = wl["quick_conc"] if a.quick else wl["conc"] if shared else wl["sweep_conc"]
    eff = effective_delay_us(name, delay_us)
    say(f"{name} {w} (delay {delay_us} us" + (f", {eff} us effective" if eff != delay_us else "")
        + f"): starting ({wl['model']}, port {port}, core {SERVER_CORE})")
    t0 = time.time()
    srv = Server(name, wl["model"], port, w, delay_us)
    res: dict = {"cases": {}, "delay_us": delay_us, "effective_delay_us": eff}
    try:
        url = f"http://127.0.0.1:{port}" + SERVERS[name]["path"].format(m=wl["model"])
        proto = SERVERS[name]["proto"]
        first = WORK / "bodies" / f"{proto}-{wl['cases'][0]}.json"
        err = wait_ready(srv, url, first.read_bytes(), timeout=240)
        if err:
            raise RuntimeError(err)
        res["startup_s"] = time.time() - t0
        say(f"   ready in {res['startup_s']:.1f}s")
        for case in wl["cases"]:
            body = WORK / "bodies" / f"{proto}-{case}.json"
            code, data = post(url, body.read_bytes())
            bad = (f"HTTP {code}" if code != 200
                   else check_answer(numbers(json.loads(data)), want[case]))
            if bad:
                raise RuntimeError(f"wrong answer for {case}: {bad}: {data[:300]!r}")
            say(f" {case}: answer checked; warming up")
            run_wrk(url, body, 8, 1.0 if a.quick or not shared else 3.0, srv.proc.pid)
            reps = a.reps_ if shared else min(a.reps_, SWEEP_REPS)
            res["cases"][case] = {"points": sweep(srv, url, body, wl, reps, a.seconds_, concs)}
        if proto == "oip" and w in ("W1", "W2") and shared and not a.no_perf_analyzer:
            for pa_proto in a.pa_protocols.split(","):
                # "perf_analyzer" (HTTP) keeps its name for older raw files
                key = "perf_analyzer" if pa_proto == "http" else f"perf_analyzer_{pa_proto}"
                pa = res[key] = {}
                for c in (1, 16):
                    pa[str(c)] = run_perf_analyzer(name, wl["model"], port, c, a.seconds_, pa_proto)
                    p = pa[str(c)]
                    say(f"   perf_analyzer {pa_proto} c={c}: " + (p["error"] if "error" in p
                        else f"{p['rps']:.1f} req/s  p50 {p['p50_us'] / 1e3:.2f} ms  "
                        f"p99 {p['p99_us'] / 1e3:.2f} ms"))
                    if "error" in p:
                        break
    except Exception as e:  # noqa: BLE001
        res["error"] = str(e)
        say(f"   FAILED: {str(e)[:2000]}")
    finally:
        srv.stop()
    return res


def inprocess_limit(cases: list[str], quick: bool) -> dict:
    """The in-process limit of each case's model on the server core with the
    same thread settings: {case: {b1, bN, N}} (empty if it failed)."""
    say(f"in-process limit for {', '.join(cases)} (core {SERVER_CORE})")
    wait_quiet(max_wait=10.0)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run(["taskset", "-c", SERVER_CORE, sys.executable,
                        str(HERE / "inprocess.py"), "--cases", ",".join(cases),
                        "--batch", str(SETTINGS["W2"]["max_batch"]),
                        "--text-batch", str(SETTINGS["W3"]["max_batch"]),
                        "--seconds", "1" if quick else "2",
                        "--reps", "1" if quick else "3"],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        say(f"in-process measurement failed: {r.stderr[-800:]}")
        return {}
    out = json.loads(r.stdout)
    for k, v in out.items():
        say(f"   {k}: {v['b1']:.1f} rows/s at batch 1, {v['bN']:.1f} at batch {v['N']}")
    return out


def median_inprocess(rounds: list[dict]) -> dict:
    """Per case, the median over rounds of each rate."""
    out: dict = {}
    for case in {k for r in rounds for k in r}:
        vals = [r[case] for r in rounds if case in r]
        out[case] = dict(vals[0], b1=statistics.median(v["b1"] for v in vals),
                         bN=statistics.median(v["bN"] for v in vals))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--workloads", default="default",
                    help="comma-separated, or default: W1,W2,W3,W1N,W2N with W1N on "
                    "Berth's rows only")
    ap.add_argument("--delays", default=None,
                    help="max batch delays (µs) of the sweep; the workloads marked sweep run "
                    "at each on every server with a delay knob (default 0,500,2000; with "
                    "--quick only the shared delay)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every server this many times, round after round (server "
                    "by server), each point the median of all its runs: servers measured "
                    "minutes apart are then compared over the same stretch of the host's "
                    "speed")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-perf-analyzer", action="store_true")
    ap.add_argument("--pa-protocols", default=",".join(PA_PROTOCOLS),
                    help="perf_analyzer protocols for the OIP servers: http, grpc or both")
    a = ap.parse_args()
    servers = [s for s in a.servers.split(",") if s]
    default = a.workloads == "default"
    wls = list(DEFAULT_WORKLOADS) if default else [w for w in a.workloads.split(",") if w]
    unknown = [w for w in wls if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}")
    reps, seconds = (1, 1.0) if a.quick else (a.reps, a.seconds)
    a.reps_, a.seconds_ = reps, seconds
    if a.delays is None:
        a.delays = str(SETTINGS["W1"]["delay_us"]) if a.quick else ",".join(map(str, DELAYS_US))
    a.delays = sorted({int(d) for d in a.delays.split(",") if d.strip()}, reverse=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    (WORK / "run").mkdir(parents=True, exist_ok=True)

    raw = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": SETTINGS,
           "quick": a.quick, "reps": reps, "seconds": seconds, "server_core": SERVER_CORE,
           "load_core": LOAD_CORE, "workloads": {w: WORKLOADS[w] for w in wls},
           "delays_us": a.delays, "sweep_reps": min(reps, SWEEP_REPS),
           "servers": {}, "inprocess": {}, "rounds": a.rounds}
    t_start = time.time()
    cases = sorted({c for w in wls for c in WORKLOADS[w]["cases"] if c != "identity"})
    inproc = list(dict.fromkeys(c for w in wls for c in WORKLOADS[w]["inproc"] if c))
    want = expected_outputs(cases + (["identity"] if {"W1", "W1N"} & set(wls) else []))

    port = 18100
    inproc_rounds: list[dict] = []
    for rnd in range(a.rounds):
        if a.rounds > 1:
            say(f"round {rnd + 1} of {a.rounds}")
        if inproc:
            inproc_rounds.append(inprocess_limit(inproc, a.quick))
            raw["inprocess"] = median_inprocess([r for r in inproc_rounds if r])
        # each round starts one server later: none is always measured first
        # (right after the in-process run) or always last
        k = rnd % len(servers)
        port = run_round(servers[k:] + servers[:k], wls, default, a, want, raw, port,
                         first=rnd == 0)
    raw["elapsed_s"] = time.time() - t_start
    Path(a.out).write_text(json.dumps(raw, indent=1))
    say(f"raw results in {a.out} ({raw['elapsed_s'] / 60:.1f} min)")
    return 0


def run_round(servers: list[str], wls: list[str], default: bool, a: argparse.Namespace,
              want: dict, raw: dict, port: int, first: bool) -> int:
    """Every server on every workload once; a later round's results are
    merged into the first's (merge_rounds). perf_analyzer runs in the first
    round only. Returns the last port used."""
    if not first:
        a.no_perf_analyzer = True
    for name in servers:
        entry = raw["servers"].setdefault(name, {"versions": versions(name), "workloads": {}})
        if not first and "error" in entry:
            continue  # not installed: said in the first round
        if venv_of(name) == "berth":
            entry["build"] = berth_build()
        if not (VENVS / venv_of(name) / ".bench-stamp").exists():
            entry["error"] = f"not installed (see bench/work/logs/install-{venv_of(name)}.log)"
            say(f"{name}: {entry['error']}")
            continue
        for w in wls:
            if w not in SERVERS[name].get("only", WORKLOADS):
                continue
            if default and name not in WORKLOADS[w].get("default_servers", [name]):
                continue
            shared = SETTINGS[w]["delay_us"]
            knob = SERVERS[name].get("delay_knob", True)
            delays = a.delays if WORKLOADS[w]["sweep"] and knob else [shared]
            # the shared delay first: it is the one the headline table uses;
            # a delay the server rounds to one it already ran is not run again
            ran: set[int] = set()
            for d in sorted(delays, key=lambda d: (d != shared, -d)):
                if effective_delay_us(name, d) in ran:
                    say(f"{name} {w}: delay {d} us is {effective_delay_us(name, d)} us for "
                        f"{name}, already measured")
                    continue
                ran.add(effective_delay_us(name, d))
                port = free_port(port + 10)
                res = measure(name, w, d, port, a, want)
                if not knob:
                    res["delay_knob"] = False
                slot = (entry["workloads"] if d == shared
                        else entry.setdefault("by_delay", {}).setdefault(w, {}))
                key = w if d == shared else str(d)
                slot[key] = res if first or key not in slot else merge_rounds(slot[key], res)
                Path(a.out).write_text(json.dumps(raw, indent=1))
    return port


if __name__ == "__main__":
    sys.exit(main())
