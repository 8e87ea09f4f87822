#!/usr/bin/env python3
"""The load-curve benchmark: `berth serve` on a custom model whose predict
sleeps 50 ms, with autoscaling when the engine has it (fixed instances
otherwise), driven by closed-loop clients whose number follows a curve —
ramp up, plateau, burst, idle (long enough to scale to zero), wake.

Every 250 ms it samples /metrics (instances desired and running, panic mode,
queue, in flight); every request's latency is recorded. It writes, into
--out (default bench/results):

- load_curve.csv           the samples, one row per 250 ms
- load_curve_requests.csv  one row per request (start, latency, status)
- load_curve.png           clients, instances, queue and p50/p99 latency
                           per 1 s bucket over time (needs matplotlib:
                           pip install 'berth[bench]')
- load_curve.md            what ran, on which build and machine, and a
                           summary per phase

Run: `make bench-load-curve`, or `python bench/load_curve.py --help`.
--time-scale shrinks every phase (0.1 runs the curve in about 9 s).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sleepy"
SLEEP_S = 0.050
SAMPLE_S = 0.25
READY_TIMEOUT_S = 120.0

MODEL_SOURCE = '''
import time
import numpy as np
import berth


class Sleepy(berth.Model):
    """y = x after sleeping SLEEP_S: a model whose time is all waiting, so
    that only more instances serve more requests at once."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        time.sleep(@SLEEP@)
        return {"y": inputs["x"]}
'''

#: What the model's berth.yaml asks of autoscaling (docs of issue 12,
#: Ray Serve's and Knative's semantics), keys the engine does not list are
#: left out.
AUTOSCALING = {
    "min_instances": 0,
    "max_instances": 8,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 5,
    "scale_to_zero_after_s": 10,
    "stable_window_s": 6,
    "panic_window_s": 1,
    "panic_threshold": 2,
}
#: Instances when the engine has no autoscaling.
FIXED_INSTANCES = 2


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    clients_from: int
    clients_to: int

    def clients_at(self, t: float) -> int:
        """Clients t seconds into the phase (linear from from to to)."""
        if self.seconds <= 0:
            return self.clients_to
        share = min(1.0, max(0.0, t / self.seconds))
        return round(self.clients_from + (self.clients_to - self.clients_from) * share)


#: The curve at time scale 1 (about 90 s).
CURVE = (
    Phase("ramp", 20, 1, 8),
    Phase("plateau", 15, 8, 8),
    Phase("burst", 8, 24, 24),
    Phase("settle", 7, 8, 8),
    Phase("idle", 30, 0, 0),
    Phase("wake", 10, 4, 4),
)


# ------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def berth_command() -> list[str]:
    found = shutil.which("berth") or str(ROOT / ".venv" / "bin" / "berth")
    return [found]


def engine_autoscaling_keys() -> set[str]:
    """The autoscaling keys the installed engine takes (empty: none)."""
    try:
        from berth.cli.limits import engine_schema

        field = engine_schema()["models"]["keys"].get("autoscaling") or {}
    except Exception:  # an engine too old to print its limits: no autoscaling
        return set()
    keys = field.get("keys")
    return set(keys) if isinstance(keys, dict) else set()


def write_model(repo: Path, autoscale_keys: set[str]) -> dict[str, Any]:
    folder = repo / MODEL / "1"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL_SOURCE.replace("@SLEEP@", repr(SLEEP_S)))
    lines = ["runtime: python", "class: Sleepy", "max_batch_size: 0", "max_queue_size: 100000"]
    block = {k: v for k, v in AUTOSCALING.items() if k in autoscale_keys}
    if block:
        lines.append("autoscaling:")
        lines += [f"  {k}: {v}" for k, v in block.items()]
    else:
        lines.append(f"instances: {FIXED_INSTANCES}")
    (repo / MODEL / "berth.yaml").write_text("\n".join(lines) + "\n")
    return block


def start_server(repo: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [*berth_command(), "serve", str(repo), "--host", "127.0.0.1", "--port", str(port),
           "--grpc-port", str(free_port()), "--log-format", "json"]
    log = log_path.open("wb")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    # Up means: listening, and one request answered (with min_instances 0
    # that request is the one that wakes the model).
    deadline = time.monotonic() + READY_TIMEOUT_S
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]}]})
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"berth serve exited ({proc.returncode}); see {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=READY_TIMEOUT_S)
            conn.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return proc
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"berth serve was not ready in {READY_TIMEOUT_S:.0f} s; see {log_path}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ----------------------------------------------------------------- clients


class Load:
    """Closed-loop clients: client i sends a request, waits for the answer,
    and sends the next while i < the curve's client count."""

    def __init__(self, port: int, request_timeout_s: float) -> None:
        self.port = port
        self.timeout = request_timeout_s
        self.target = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.records: list[tuple[float, float, int, str]] = []  # start, latency, status, phase
        self.phase = ""
        self.threads: list[threading.Thread] = []
        self.t0 = 0.0
        self.body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
        ).encode()

    def ensure_threads(self, n: int) -> None:
        while len(self.threads) < n:
            t = threading.Thread(target=self._client, args=(len(self.threads),), daemon=True)
            self.threads.append(t)
            t.start()

    def _client(self, index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            if index >= self.target:
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(0.02)
                continue
            phase = self.phase
            start = time.monotonic()
            status = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("POST", f"/v2/models/{MODEL}/infer", self.body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.records.append((start - self.t0, time.monotonic() - start, status, phase))


def parse_metrics(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    labels = f'model="{MODEL}",version="1"'
    for name in ("berth_queue_depth", "berth_inflight_requests", "berth_workers",
                 "berth_model_instances_desired", "berth_model_instances", "berth_autoscale_panic"):
        m = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
        if m:
            found[name] = float(m.group(1))
    return found


def run_curve(port: int, curve: tuple[Phase, ...], scale: float,
              request_timeout_s: float) -> tuple[list[dict[str, Any]], Load]:
    load = Load(port, request_timeout_s)
    load.ensure_threads(max(max(p.clients_from, p.clients_to) for p in curve))
    samples: list[dict[str, Any]] = []
    load.t0 = time.monotonic()
    next_sample = 0.0
    phase_start = 0.0
    for phase in curve:
        length = phase.seconds * scale
        load.phase = phase.name
        while True:
            now = time.monotonic() - load.t0
            into = now - phase_start
            if into >= length:
                break
            load.target = phase.clients_at(into / scale if scale > 0 else into)
            if now >= next_sample:
                row: dict[str, Any] = {"t": round(now, 3), "phase": phase.name, "clients": load.target}
                try:
                    _, body = get(port, "/metrics", timeout=2)
                    row.update(parse_metrics(body.decode()))
                except OSError:
                    pass
                samples.append(row)
                next_sample += SAMPLE_S
            time.sleep(0.02)
        phase_start += length
    load.target = 0
    load.stop.set()
    for t in load.threads:
        t.join(timeout=request_timeout_s + 5)
    return samples, load


# ----------------------------------------------------------------- outputs


SAMPLE_COLUMNS = ["t", "phase", "clients", "berth_model_instances_desired", "berth_model_instances",
                  "berth_workers", "berth_queue_depth", "berth_inflight_requests", "berth_autoscale_panic"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def buckets(records: list[tuple[float, float, int, str]]) -> list[tuple[float, float, float, int]]:
    """(bucket start s, p50 ms, p99 ms, requests) per 1 s of request ends."""
    by: dict[int, list[float]] = {}
    for start, latency, status, _phase in records:
        if status == 200:
            by.setdefault(int(start + latency), []).append(latency * 1000)
    return [(float(b), percentile(v, 50), percentile(v, 99), len(v)) for b, v in sorted(by.items())]


def write_csvs(out: Path, samples: list[dict[str, Any]], load: Load) -> None:
    with (out / "load_curve.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SAMPLE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in samples:
            w.writerow({k: row.get(k, "") for k in SAMPLE_COLUMNS})
    with (out / "load_curve_requests.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start_s", "latency_ms", "status", "phase"])
        for start, latency, status, phase in load.records:
            w.writerow([f"{start:.4f}", f"{latency * 1000:.2f}", status, phase])


def plot(out: Path, samples: list[dict[str, Any]], load: Load, autoscaling: bool) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    axes[0].step(t, [s["clients"] for s in samples], where="post", color="black")
    axes[0].set_ylabel("active clients")
    for key, label, style in (("berth_model_instances_desired", "desired", "--"),
                              ("berth_model_instances", "instances", "-"),
                              ("berth_workers", "ready workers", ":")):
        if any(key in s for s in samples):
            axes[1].step(t, [s.get(key, float("nan")) for s in samples], where="post",
                         linestyle=style, label=label)
    panic = [s["t"] for s in samples if s.get("berth_autoscale_panic", 0) > 0]
    if panic:
        axes[1].scatter(panic, [0] * len(panic), marker="|", color="red", label="panic mode")
    axes[1].set_ylabel("instances")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="upper left", fontsize="small")
    axes[2].plot(t, [s.get("berth_queue_depth", float("nan")) for s in samples], label="queued")
    axes[2].plot(t, [s.get("berth_inflight_requests", float("nan")) for s in samples],
                 label="in flight", alpha=0.6)
    axes[2].set_ylabel("requests")
    axes[2].legend(loc="upper left", fontsize="small")
    # one point per second; no line across seconds without answers
    have = {int(x[0]): x for x in buckets(load.records)}
    secs = list(range(0, int(t[-1]) + 1)) if t else []
    nan = float("nan")
    axes[3].plot(secs, [have[x][1] if x in have else nan for x in secs], marker=".", label="p50")
    axes[3].plot(secs, [have[x][2] if x in have else nan for x in secs], marker=".", label="p99")
    axes[3].set_yscale("log")
    axes[3].set_ylabel("latency (ms), per 1 s")
    axes[3].set_xlabel("seconds")
    axes[3].legend(loc="upper left", fontsize="small")
    starts: dict[str, float] = {}
    for s in samples:
        starts.setdefault(s["phase"], s["t"])
    for name, at in starts.items():
        for ax in axes:
            ax.axvline(at, color="grey", linewidth=0.5)
        axes[0].annotate(name, (at, 0), xytext=(2, 2), textcoords="offset points",
                         fontsize="small", color="grey")
    mode = "autoscaling" if autoscaling else f"fixed instances ({FIXED_INSTANCES}): no autoscaling in this build"
    fig.suptitle(f"Berth load curve: predict sleeps {SLEEP_S * 1000:.0f} ms; {mode}")
    fig.tight_layout()
    fig.savefig(out / "load_curve.png", dpi=100)
    plt.close(fig)
    return True


def git_describe() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        # the results this script rewrites do not make the build dirty
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!bench/results"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except OSError:
        return "unknown"
    return (rev or "unknown") + (" (with uncommitted changes)" if dirty else "")


def summary(out: Path, samples: list[dict[str, Any]], load: Load, block: dict[str, Any],
            curve: tuple[Phase, ...], scale: float, plotted: bool) -> None:
    lines = ["# Load curve", ""]
    lines.append(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on build {git_describe()}, "
                 f"{platform.machine()}, {os.cpu_count()} cores ({platform.platform()}); "
                 f"`python bench/load_curve.py --time-scale {scale:g}`.")
    lines.append("")
    if block:
        lines.append("Autoscaling on: `" + json.dumps(block) + "`.")
    else:
        lines.append(f"This build has no autoscaling (berthd --print-limits lists no "
                     f"`autoscaling` key): the model ran {FIXED_INSTANCES} fixed instances, so the "
                     "instances line is flat and the queue carries the load.")
    lines.append("")
    lines.append(f"Model: predict sleeps {SLEEP_S * 1000:.0f} ms, `max_batch_size: 0` (one request per "
                 "call, so only more instances serve more at once). Clients: closed loop over "
                 "HTTP/1.1 keep-alive, JSON bodies. Samples of /metrics every 250 ms.")
    lines.append("")
    lines.append("| phase | seconds | clients | requests | failed | p50 ms | p99 ms | max instances | max queue |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for phase in curve:
        recs = [r for r in load.records if r[3] == phase.name]
        ok = [r[1] * 1000 for r in recs if r[2] == 200]
        rows = [s for s in samples if s["phase"] == phase.name]
        inst = max((s.get("berth_model_instances", s.get("berth_workers", 0)) for s in rows), default=0)
        queue = max((s.get("berth_queue_depth", 0) for s in rows), default=0)
        clients = (f"{phase.clients_from}" if phase.clients_from == phase.clients_to
                   else f"{phase.clients_from}→{phase.clients_to}")
        p50 = f"{percentile(ok, 50):.0f}" if ok else "-"
        p99 = f"{percentile(ok, 99):.0f}" if ok else "-"
        lines.append(f"| {phase.name} | {phase.seconds * scale:g} | {clients} | {len(recs)} | "
                     f"{len(recs) - len(ok)} | {p50} | {p99} | {inst:g} | {queue:g} |")
    lines.append("")
    total = len(load.records)
    failed = sum(1 for r in load.records if r[2] != 200)
    lines.append(f"{total} requests, {failed} failed.")
    lines.append("")
    if plotted:
        lines.append("![load curve](load_curve.png)")
    else:
        lines.append("(no chart: matplotlib is not installed; `pip install 'berth[bench]'`)")
    lines.append("")
    lines.append("Raw data: [load_curve.csv](load_curve.csv) (the samples), "
                 "[load_curve_requests.csv](load_curve_requests.csv) (every request).")
    (out / "load_curve.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="output folder")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="multiplies every phase's length (default 1: about 90 s)")
    ap.add_argument("--request-timeout", type=float, default=60.0, help="a request's client timeout, s")
    args = ap.parse_args(argv)
    if args.time_scale <= 0:
        ap.error("--time-scale must be > 0")
    args.out.mkdir(parents=True, exist_ok=True)
    keys = engine_autoscaling_keys()
    with tempfile.TemporaryDirectory(prefix="berth-load-curve-") as tmp:
        repo = Path(tmp) / "repo"
        block = write_model(repo, keys)
        port = free_port()
        proc = start_server(repo, port, Path(tmp) / "server.log")
        try:
            samples, load = run_curve(port, CURVE, args.time_scale, args.request_timeout)
        except BaseException:
            print((Path(tmp) / "server.log").read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            stop_server(proc)
    write_csvs(args.out, samples, load)
    plotted = plot(args.out, samples, load, bool(block))
    summary(args.out, samples, load, block, CURVE, args.time_scale, plotted)
    failed = sum(1 for r in load.records if r[2] != 200)
    print(f"load curve: {len(load.records)} requests, {failed} failed, {len(samples)} samples; "
          f"wrote {args.out / 'load_curve.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
