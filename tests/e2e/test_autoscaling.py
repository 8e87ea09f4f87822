"""Autoscaling on one machine (docs/autoscaling.md): worker instances follow
the load (a stable window, and a panic window for bursts), an idle model
scales to zero and a request wakes it without failing, and under a memory
budget the least recently used models are evicted and reload on demand.

Real servers, real HTTP clients, real worker processes; the tests count
(instances, workers, failures) and never assert on timing: every wait polls
/metrics with a generous timeout."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import (
    BerthServer,
    ModelZoo,
    add_python_model,
    assert_error,
    berth_executable,
    fill,
    free_port,
    http_call,
    infer_body,
    outputs_by_name,
    server_env,
    tensor,
    wait_until,
)

SLEEPY_SOURCE = '''
import time
import berth


class Sleepy(berth.Model):
    """y = x + ADD after DELAY seconds."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        time.sleep(DELAY)
        return {"y": inputs["x"] + ADD}


DELAY = @DELAY@
ADD = @ADD@
'''


def x_body(x: float) -> dict[str, Any]:
    return infer_body([tensor("x", "FP32", [1], [x])])


def metric(server: BerthServer, name: str, model: str, version: str = "1") -> float | None:
    text = server.get("/metrics").body.decode()
    m = re.search(rf'^{name}\{{model="{re.escape(model)}",version="{version}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def sleepy_repo(tmp_path: Path, autoscaling: dict[str, Any], *, delay: float = 0.05,
                name: str = "sleepy", extra: str = "") -> Path:
    repo = tmp_path / "repo"
    add_python_model(repo, name, fill(SLEEPY_SOURCE, DELAY=delay, ADD=1.0), "Sleepy",
                     yaml_extra=f"max_batch_size: 0\nautoscaling: {json.dumps(autoscaling)}\n{extra}")
    return repo


class Load:
    """`clients` threads, each sending requests one after another until
    stopped; answers are checked (y = x + 1) and failures counted."""

    def __init__(self, server: BerthServer, model: str) -> None:
        self.server = server
        self.model = model
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.ok = 0
        self.failed: list[str] = []
        self.lock = threading.Lock()

    def _client(self, seed: int) -> None:
        x = float(seed)
        while not self.stop.is_set():
            resp = self.server.infer(self.model, x_body(x), timeout=60)
            with self.lock:
                if resp.status == 200 and outputs_by_name(resp.json())["y"]["data"] == [x + 1]:
                    self.ok += 1
                else:
                    self.failed.append(f"{resp.status} {resp.body[:200]!r}")

    def add(self, n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=self._client, args=(len(self.threads),), daemon=True)
            self.threads.append(t)
            t.start()

    def end(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)


def test_a_ramp_scales_up_and_back_down(berth_server: Callable[..., BerthServer],
                                        tmp_path: Path) -> None:
    repo = sleepy_repo(tmp_path, {"min_instances": 1, "max_instances": 4,
                                  "target_ongoing_requests": 1, "upscale_delay_s": 0.5,
                                  "downscale_delay_s": 1, "stable_window_s": 2,
                                  "panic_window_s": 1, "panic_threshold": 3})
    server = berth_server(str(repo), wait_for=["sleepy"])
    assert metric(server, "berth_model_instances_desired", "sleepy") == 1
    assert metric(server, "berth_model_instances", "sleepy") == 1
    load = Load(server, "sleepy")
    try:
        for clients in (1, 2, 4, 8):  # the ramp: 1, 2, 4 then 8 clients
            load.add(clients - len(load.threads))
            wait_until(lambda c=clients: load.ok >= 10 * c, 120, f"answers with {clients} clients")
        wait_until(lambda: (metric(server, "berth_model_instances_desired", "sleepy") or 0) > 1,
                   120, "the autoscaler to want more than one instance",
                   on_timeout=server.log_tail)
        wait_until(lambda: (metric(server, "berth_model_instances", "sleepy") or 0) >= 3, 120,
                   "three or more ready instances under 8 clients", on_timeout=server.log_tail)
        assert (metric(server, "berth_model_instances_desired", "sleepy") or 0) <= 4
        assert len(server.worker_pids()) <= 4  # never past max_instances
    finally:
        load.end()
    assert load.failed == []
    # load over: back to min_instances, the extra workers gone
    wait_until(lambda: metric(server, "berth_model_instances_desired", "sleepy") == 1, 120,
               "the autoscaler to come back to one instance", on_timeout=server.log_tail)
    wait_until(lambda: len(server.worker_pids()) == 1, 120, "one worker process left",
               on_timeout=lambda: f"{server.worker_pids()}\n{server.log_tail()}")
    assert metric(server, "berth_model_instances", "sleepy") == 1
    # and it still answers
    doc = server.infer_ok("sleepy", x_body(41.0))
    assert outputs_by_name(doc)["y"]["data"] == [42.0]
    # the statistics extension carries the counts (Triton's fields unchanged)
    stats = server.get("/v2/models/sleepy/stats").json()["model_stats"][0]
    assert stats["instances"] == {"desired": 1, "ready": 1}
    assert "inference_stats" in stats


def test_a_burst_triggers_panic(berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    # a 60 s upscale delay: only the panic rule can add instances here
    repo = sleepy_repo(tmp_path, {"min_instances": 1, "max_instances": 3,
                                  "target_ongoing_requests": 1, "upscale_delay_s": 60,
                                  "downscale_delay_s": 60, "stable_window_s": 60,
                                  "panic_window_s": 1, "panic_threshold": 2})
    server = berth_server(str(repo), wait_for=["sleepy"])
    assert metric(server, "berth_autoscale_panic", "sleepy") == 0
    load = Load(server, "sleepy")
    try:
        load.add(12)  # 12 ongoing against a capacity of 1 x 1
        wait_until(lambda: metric(server, "berth_autoscale_panic", "sleepy") == 1, 120,
                   "panic mode", on_timeout=server.log_tail)
        wait_until(lambda: metric(server, "berth_model_instances_desired", "sleepy") == 3, 120,
                   "the panic to want max_instances", on_timeout=server.log_tail)
        wait_until(lambda: metric(server, "berth_model_instances", "sleepy") == 3, 120,
                   "three ready instances", on_timeout=server.log_tail)
    finally:
        load.end()
    assert load.failed == []
    # no scale-down while panicking (and the 60 s downscale delay after it)
    assert metric(server, "berth_model_instances_desired", "sleepy") == 3


def test_scale_to_zero_and_wake_twenty_times(berth_server: Callable[..., BerthServer],
                                             tmp_path: Path, zoo: ModelZoo) -> None:
    repo = tmp_path / "repo"
    (repo / "iris" / "1").mkdir(parents=True)
    (repo / "iris" / "1" / "model.joblib").write_bytes(zoo.sklearn_classifier().read_bytes())
    (repo / "iris" / "berth.yaml").write_text(
        "autoscaling: {min_instances: 0, max_instances: 1, scale_to_zero_after_s: 0.3,"
        " downscale_delay_s: 0.3, stable_window_s: 1, panic_window_s: 0.5}\n")
    server = berth_server(str(repo), wait_for=["iris"])
    body = infer_body([tensor("input", "FP64", [1, 4], [5.1, 3.5, 1.4, 0.2])])
    expected = outputs_by_name(server.infer_ok("iris", body))
    wakes: list[float] = []
    failed = 0
    for _cycle in range(20):
        wait_until(lambda: metric(server, "berth_model_instances", "iris") == 0
                   and not server.worker_pids(), 60, "the model to scale to zero",
                   on_timeout=server.log_tail)
        assert metric(server, "berth_model_instances_desired", "iris") == 0
        # asleep, it stays ready (docs/autoscaling.md) and in the index
        assert server.get("/v2/models/iris/ready").status == 200
        assert server.get("/v2/health/ready").status == 200
        began = time.monotonic()
        resp = server.infer("iris", body, timeout=120)
        wakes.append(time.monotonic() - began)
        if resp.status != 200 or outputs_by_name(resp.json()) != expected:
            failed += 1
    assert failed == 0
    wakes.sort()
    print(f"\nwake from zero (sklearn iris, first answer): median {wakes[10]:.3f} s, "
          f"min {wakes[0]:.3f} s, max {wakes[-1]:.3f} s over 20 cycles")
    index = server.post("/v2/repository/index", {}).json()
    iris = [e for e in index if e["name"] == "iris"][0]
    assert iris["state"] == "READY"
    assert "resident" in iris


def test_held_requests_fail_clearly_when_the_wake_cannot_load(
        berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    repo = sleepy_repo(tmp_path, {"min_instances": 0, "max_instances": 1,
                                  "scale_to_zero_after_s": 0.3, "downscale_delay_s": 0.3,
                                  "stable_window_s": 1, "panic_window_s": 0.5}, delay=0)
    server = berth_server(str(repo), wait_for=["sleepy"])
    wait_until(lambda: not server.worker_pids() and
               metric(server, "berth_model_instances", "sleepy") == 0, 60, "scale to zero",
               on_timeout=server.log_tail)
    # the model's file breaks while it sleeps: the wake cannot load it
    (repo / "sleepy" / "1" / "model.py").write_text("raise RuntimeError('broken on purpose')\n")
    resp = server.infer("sleepy", x_body(1.0), timeout=120)
    assert_error(resp, 503, "broken on purpose")


def test_memory_budget_evicts_least_recently_used(berth_server: Callable[..., BerthServer],
                                                   tmp_path: Path) -> None:
    # one model's worker, measured, sizes the budget: room for about five
    probe_repo = tmp_path / "probe"
    add_python_model(probe_repo, "m0", fill(SLEEPY_SOURCE, DELAY=0, ADD=0.0), "Sleepy",
                     yaml_extra="instances: 1\nmax_batch_size: 0\n")
    probe = berth_server(str(probe_repo), wait_for=["m0"])
    probe.infer_ok("m0", x_body(1.0))
    one = workers_rss(probe)  # from /proc, once it has loaded and served
    assert one > 0
    probe.close()
    budget = int(one * 5.5)
    repo = tmp_path / "repo"
    for i in range(20):
        add_python_model(repo, f"m{i}", fill(SLEEPY_SOURCE, DELAY=0, ADD=float(i)), "Sleepy",
                         yaml_extra="instances: 1\nmax_batch_size: 0\n")
    server = berth_server(str(repo), "--memory-budget", str(budget), wait_for="listening")
    wait_until(lambda: all(server.get(f"/v2/models/m{i}/ready").status == 200
                           for i in range(20)), 300, "20 models ready",
               on_timeout=server.log_tail)
    assert metric(server, "berth_memory_budget_bytes", "m0") is None  # no labels
    assert f"berth_memory_budget_bytes {budget}" in server.get("/metrics").body.decode()
    # every model loads once at start; the budget then evicts down to it
    wait_until(lambda: workers_rss(server) <= budget, 120, "worker RSS within the budget",
               on_timeout=server.log_tail)
    rng = random.Random(12)
    failed, peak = 0, 0.0
    for _ in range(60):
        i = rng.randrange(20)
        resp = server.infer(f"m{i}", x_body(1.0), timeout=120)
        if resp.status != 200 or outputs_by_name(resp.json())["y"]["data"] != [1.0 + i]:
            failed += 1
        peak = max(peak, workers_rss(server))
    assert failed == 0
    evictions = sum(metric(server, "berth_model_evictions_total", f"m{i}") or 0 for i in range(20))
    assert evictions > 0
    # settled: what the workers hold is within the budget, by the engine's
    # measure and by /proc
    wait_until(lambda: sum(metric(server, "berth_model_resident_bytes", f"m{i}") or 0
                           for i in range(20)) <= budget, 60, "resident memory within the budget")
    wait_until(lambda: workers_rss(server) <= budget, 60, "worker RSS within the budget")
    index = server.post("/v2/repository/index", {}).json()
    resident = [e["name"] for e in index if e.get("resident")]
    assert 1 <= len(resident) <= 6
    assert all(e["state"] == "READY" for e in index)
    print(f"\nmemory budget {budget} B (5.5 x one worker, {one:.0f} B): 20 models, 60 random "
          f"requests, {evictions:.0f} evictions, {len(resident)} resident at the end, peak "
          f"worker RSS during the requests {peak:.0f} B ({peak / budget:.2f} of the budget)")


def workers_rss(server: BerthServer) -> float:
    total = 0.0
    for pid in server.worker_pids().values():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += float(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# ---- attacks: bad values, tokens, foreign origins -----------------------------------


def run_to_exit(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs berth serve ARGS on free 127.0.0.1 ports until it exits (it
    must: the config is bad); kills its process group at the end."""
    cmd = [berth_executable(), "serve", *args, "--host", "127.0.0.1",
           "--port", str(free_port()), "--grpc-port", str(free_port())]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=server_env(),
                            cwd=str(tmp_path), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"berth kept running with a bad config\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("block,words", [
    ({"min_instances": 3, "max_instances": 2}, ("min_instances", "max_instances (2)")),
    ({"target_ongoing_requests": 0}, ("target_ongoing_requests",)),
    ({"panic_threshold": 0.5}, ("panic_threshold",)),
    ({"stable_window_s": 2, "panic_window_s": 5}, ("panic_window_s",)),
    ({"max_replicas": 2}, ("autoscaling.max_replicas", "unknown key")),
    ({"upscale_delay_s": "soon"}, ("upscale_delay_s",)),
])
def test_bad_autoscaling_blocks_are_refused_with_the_key(
        berth_server: Callable[..., BerthServer], tmp_path: Path, block: dict[str, Any],
        words: tuple[str, ...]) -> None:
    repo = sleepy_repo(tmp_path, block)
    done = run_to_exit([str(repo)], tmp_path)
    assert done.returncode != 0
    log = done.stderr
    for w in words:
        assert w in log, log[-2000:]


@pytest.mark.parametrize("flags,words", [
    (("--min-instances", "-1"), ("--min-instances",)),
    (("--max-instances", "0"), ("--max-instances",)),
    (("--target-ongoing-requests", "0"), ("--target-ongoing-requests",)),
    (("--memory-budget", "lots"), ("--memory-budget", "size in bytes")),
    (("--min-instances", "5", "--max-instances", "2"), ("min_instances", "max_instances (2)")),
])
def test_bad_flags_are_refused(berth_server: Callable[..., BerthServer], tmp_path: Path,
                               flags: tuple[str, ...], words: tuple[str, ...]) -> None:
    repo = sleepy_repo(tmp_path, {})
    done = run_to_exit([str(repo), *flags], tmp_path)
    assert done.returncode != 0
    log = done.stderr
    for w in words:
        assert w in log, log[-2000:]


def test_flags_set_the_block(berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_python_model(repo, "sleepy", fill(SLEEPY_SOURCE, DELAY=0, ADD=1.0), "Sleepy",
                     yaml_extra="max_batch_size: 0\n")
    server = berth_server(str(repo), "--min-instances", "0", "--max-instances", "2",
                          "--scale-to-zero-after-s", "0.3", "--downscale-delay-s", "0.3",
                          "--stable-window-s", "1", "--panic-window-s", "0.5",
                          "--memory-budget", "4GiB", wait_for=["sleepy"])
    assert f"berth_memory_budget_bytes {4 << 30}" in server.get("/metrics").body.decode()
    wait_until(lambda: metric(server, "berth_model_instances", "sleepy") == 0
               and not server.worker_pids(), 60, "scale to zero", on_timeout=server.log_tail)
    assert outputs_by_name(server.infer_ok("sleepy", x_body(2.0)))["y"]["data"] == [3.0]


ADMIN = "as-admin-token"
USER = "as-user-token"


def test_an_autoscaling_override_through_the_repository_api(
        berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_python_model(repo, "sleepy", fill(SLEEPY_SOURCE, DELAY=0, ADD=1.0), "Sleepy",
                     yaml_extra="instances: 1\nmax_batch_size: 0\n")
    (tmp_path / "admin").write_text(ADMIN + "\n")
    (tmp_path / "users").write_text(USER + "\n")
    server = berth_server(str(repo), "--model-control-mode", "explicit",
                          "--admin-tokens-file", str(tmp_path / "admin"),
                          "--auth-tokens-file", str(tmp_path / "users"), wait_for="listening")
    server.token = USER
    wait_until(lambda: server.get("/v2/models/sleepy/ready").status == 200, 120, "ready")
    url = "/v2/repository/models/sleepy/load"
    override = {"autoscaling": {"min_instances": 0, "max_instances": 2,
                                "scale_to_zero_after_s": 0.3, "downscale_delay_s": 0.3,
                                "stable_window_s": 1, "panic_window_s": 0.5}}
    body = json.dumps({"parameters": {"config": json.dumps(override)}}).encode()
    json_type = {"Content-Type": "application/json"}
    # no token, a wrong one, a user's: refused
    assert_error(http_call(server.port, "POST", url, body, json_type), 401)
    assert_error(http_call(server.port, "POST", url, body,
                           {**json_type, "Authorization": "Bearer wrong"}), 401)
    assert_error(http_call(server.port, "POST", url, body,
                           {**json_type, "Authorization": f"Bearer {USER}"}), 403, "admin")
    adm = {**json_type, "Authorization": f"Bearer {ADMIN}"}
    # a foreign Origin or Host: refused before anything is read
    assert_error(http_call(server.port, "POST", url, body,
                           {**adm, "Origin": "https://evil.example"}), 403)
    assert_error(http_call(server.port, "POST", url, body, {**adm, "Host": "evil.example"}), 403)
    # bad values: 400 naming the key, and the model keeps serving
    for bad, word in (({"min_instances": 3, "max_instances": 1}, "min_instances"),
                      ({"target_ongoing_requests": -1}, "target_ongoing_requests"),
                      ({"bogus": 1}, "autoscaling.bogus")):
        bad_body = json.dumps({"parameters": {"config": json.dumps({"autoscaling": bad})}})
        assert_error(http_call(server.port, "POST", url, bad_body.encode(), adm), 400, word)
    assert outputs_by_name(server.infer_ok("sleepy", x_body(1.0)))["y"]["data"] == [2.0]
    # the admin's override takes effect: the model now scales to zero
    resp = http_call(server.port, "POST", url, body, adm, timeout=120)
    assert resp.status == 200, resp.body[:500]
    wait_until(lambda: metric(server, "berth_model_instances", "sleepy") == 0
               and not server.worker_pids(), 60, "scale to zero after the override",
               on_timeout=server.log_tail)
    assert outputs_by_name(server.infer_ok("sleepy", x_body(5.0)))["y"]["data"] == [6.0]
