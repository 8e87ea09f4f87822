"""The worker template (``workers.template``, docs/worker-protocol.md,
"Worker template"): workers forked from a process that has imported NumPy,
berth.worker and the runtimes behave as workers started directly — they
answer, a killed one is restarted, their output is logged with their
identity and pid, their thread settings are the same, SIGTERM drains what is
in flight — and the template's own death is survived. Every behaviour test
runs with the template on and off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import (
    SLOW_SOURCE,
    BerthServer,
    ModelZoo,
    add_python_model,
    berth_executable,
    copy_into,
    fill,
    infer_body,
    outputs_by_name,
    proc_alive,
    proc_stat,
    server_env,
    tensor,
    wait_until,
)

IRIS_BODY = infer_body([tensor("input", "FP64", [1, 4], [5.1, 3.5, 1.4, 0.2])])

TALKER_SOURCE = '''
import json
import os
import sys
import numpy as np
import berth


class Talker(berth.Model):
    """y = x + 1; prints when loaded and per batch; reports its thread
    settings (env and BLAS pool size) in "threads"."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1]), berth.TensorSpec("threads", "BYTES", [1])]

    def load(self):
        print("talker loaded", flush=True)

    def predict(self, inputs):
        from threadpoolctl import threadpool_info

        x = inputs["x"]
        print("talker saw %g" % (float(x[0]) if x.size else 0.0), file=sys.stderr, flush=True)
        blas = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        report = {"env": os.environ.get("OPENBLAS_NUM_THREADS"), "blas": blas,
                  "tasks": len(os.listdir("/proc/self/task"))}
        return {"y": x + 1, "threads": np.array([json.dumps(report)], dtype=object)}
'''


def x_body(x: float) -> dict[str, Any]:
    return infer_body([tensor("x", "FP32", [1], [x])])


def workers_yaml(folder: Path, template: bool, extra: str = "") -> Path:
    path = folder / f"workers-{'on' if template else 'off'}.yaml"
    path.write_text(f"workers:\n  template: {'true' if template else 'false'}\n{extra}")
    return path


def cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [a.decode() for a in raw.split(b"\0") if a]


def parent(pid: int) -> int:
    st = proc_stat(pid)
    assert st is not None, f"process {pid} is gone"
    return st[1]


def assert_started_by(server: BerthServer, pid: int, template: bool) -> None:
    """A forked worker's parent is the template, a child of berthd; a
    direct one's parent is berthd. Either way it looks like a worker."""
    assert cmdline(pid)[-2:] == ["-m", "berth.worker"], cmdline(pid)
    up = parent(pid)
    if template:
        assert "berth.zygote" in cmdline(up), f"parent {up} of worker {pid}: {cmdline(up)}"
        assert parent(up) == server.pid
    else:
        assert up == server.pid


def records(server: BerthServer, **match: Any) -> list[dict[str, Any]]:
    return [r for r in server.log_records() if all(r.get(k) == v for k, v in match.items())]


def wait_record(server: BerthServer, **match: Any) -> dict[str, Any]:
    found = wait_until(lambda: records(server, **match), 30, f"a log record with {match}",
                       on_timeout=server.log_tail)
    return found[-1]


@pytest.fixture(scope="module")
def repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template-repo")
    add_python_model(root, "talker", TALKER_SOURCE, "Talker")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    return root


@pytest.fixture(scope="module", params=[True, False], ids=["template", "direct"])
def server(request: pytest.FixtureRequest, module_server: Callable[..., BerthServer],
           repo: Path, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    cfg = workers_yaml(tmp_path_factory.mktemp("cfg"), request.param)
    srv = module_server(str(repo), "--config", str(cfg), "--log-format", "json", "--instances", "1")
    srv.template = request.param  # type: ignore[attr-defined]
    return srv


def test_workers_answer_and_come_from_where_the_config_says(server: BerthServer) -> None:
    out = outputs_by_name(server.infer_ok("iris", IRIS_BODY))
    assert out["predict"]["data"] == [0]
    assert outputs_by_name(server.infer_ok("talker", x_body(1.5)))["y"]["data"] == [2.5]
    pids = server.worker_pids()
    assert set(pids) == {"iris/1/0", "talker/1/0"}, pids
    for pid in pids.values():
        assert_started_by(server, pid, server.template)  # type: ignore[attr-defined]


def test_killed_worker_is_restarted_and_answers(server: BerthServer) -> None:
    pid = server.wait_worker("iris/1/0")
    os.kill(pid, signal.SIGKILL)
    new = server.wait_worker("iris/1/0", not_pid=pid)
    wait_until(lambda: server.get("/v2/models/iris/ready").status == 200, 60, "iris ready again",
               on_timeout=server.log_tail)
    assert outputs_by_name(server.infer_ok("iris", IRIS_BODY))["predict"]["data"] == [0]
    rec = wait_record(server, msg="worker exited; restarting it", worker="iris/1/0")
    assert rec["how"] == "signal 9"
    assert_started_by(server, new, server.template)  # type: ignore[attr-defined]


def test_worker_output_is_logged_with_its_identity(server: BerthServer) -> None:
    pid = server.wait_worker("talker/1/0")
    assert server.infer("talker", x_body(4.25)).status == 200
    rec = wait_record(server, msg="talker saw 4.25")
    assert rec["source"] == "worker" and rec["model"] == "talker" and rec["version"] == "1"
    assert rec["instance"] == 0 and rec["pid"] == pid and rec["stream"] == "stderr"
    loaded = [r for r in records(server, msg="talker loaded") if r.get("pid") == pid]
    assert loaded and loaded[-1]["stream"] == "stdout"


def test_thread_settings_match_a_direct_worker(server: BerthServer) -> None:
    out = outputs_by_name(server.infer_ok("talker", x_body(1.0)))
    report = json.loads(out["threads"]["data"][0])
    cpus = len(os.sched_getaffinity(0))
    assert report["env"] == str(max(1, cpus))  # one instance: every usable CPU
    assert report["blas"] and all(n == max(1, cpus) for n in report["blas"]), report


# ------------------------------------------------------------ SIGTERM drains


@pytest.mark.parametrize("template", [True, False], ids=["template", "direct"])
def test_sigterm_drains_in_flight_requests(template: bool, berth_server: Callable[..., BerthServer],
                                           tmp_path: Path) -> None:
    root = tmp_path / "repo"
    marks = tmp_path / "slow.marks"
    add_python_model(root, "slow", fill(SLOW_SOURCE, MARKS=str(marks), DELAY=1.5), "Slow")
    server = berth_server(str(root), "--config", str(workers_yaml(tmp_path, template)))
    answers: list[Any] = []
    t = threading.Thread(target=lambda: answers.append(server.infer("slow", x_body(1.0), timeout=60)))
    t.start()
    wait_until(lambda: marks.exists() and marks.read_text().strip(), 30, "the request to start",
               on_timeout=server.log_tail)
    server.signal(signal.SIGTERM)
    t.join(60)
    assert answers and answers[0].status == 200, answers
    assert outputs_by_name(answers[0].json())["y"]["data"] == [2.0]
    assert server.wait(30) == 0


# ------------------------------------------------------- the template's death


def template_pid(server: BerthServer) -> int:
    def find() -> int | None:
        for pid in _children(server.pid):
            if "berth.zygote" in " ".join(cmdline(pid)):
                return pid
        return None

    return int(wait_until(find, 60, "the worker template process", on_timeout=server.log_tail))


def _children(pid: int) -> list[int]:
    from berth_e2e import children_of

    return [c for c in children_of(pid) if proc_alive(c)]


def test_template_death_is_survived_then_given_up(berth_server: Callable[..., BerthServer],
                                                  tmp_path: Path) -> None:
    root = tmp_path / "repo"
    add_python_model(root, "talker", TALKER_SOURCE, "Talker")
    server = berth_server(str(root), "--log-format", "json")  # template on by default
    for death in (1, 2, 3):
        worker = server.wait_worker("talker/1/0")
        assert_started_by(server, worker, True)
        os.kill(template_pid(server), signal.SIGKILL)
        wait_until(lambda d=death: len(records(server, level="warning", msg=(
            "the worker template exited; workers it has not started yet start directly, "
            "the next ones from a new template") if d < 3 else (
            "the worker template exited again; workers start directly from now on "
            "(without the template)"))) >= (d if d < 3 else 1), 30, f"template death {death} logged",
            on_timeout=server.log_tail)
        # the worker it forked keeps serving
        assert outputs_by_name(server.infer_ok("talker", x_body(float(death))))["y"]["data"] == [death + 1.0]
        os.kill(worker, signal.SIGKILL)
        new = server.wait_worker("talker/1/0", not_pid=worker)
        wait_until(lambda: server.get("/v2/models/talker/ready").status == 200, 60, "ready again",
                   on_timeout=server.log_tail)
        assert outputs_by_name(server.infer_ok("talker", x_body(10.0)))["y"]["data"] == [11.0]
        # a new template after deaths 1 and 2; workers start directly after the third
        assert_started_by(server, new, death < 3)


# ----------------------------------------------------------- config and command


def test_template_key_must_be_a_boolean(tmp_path: Path, zoo: ModelZoo) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text('workers:\n  template: "yes"\n')
    done = subprocess.run(
        [berth_executable(), "serve", str(zoo.sklearn_classifier()), "--config", str(cfg),
         "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0"],
        capture_output=True, text=True, timeout=60, env=server_env(), check=False,
    )
    assert done.returncode != 0
    assert 'workers.template: expected true or false, got "yes"' in done.stderr


def test_custom_worker_command_starts_workers_directly(berth_server: Callable[..., BerthServer],
                                                       tmp_path: Path, zoo: ModelZoo) -> None:
    cfg = tmp_path / "cmd.yaml"
    command = [sys.executable, "-c", "import sys, berth.worker; sys.exit(berth.worker.main())"]
    cfg.write_text("workers:\n  command: " + json.dumps(command) + "\n")
    server = berth_server(str(zoo.sklearn_classifier()), "--config", str(cfg), "--log-format", "json")
    assert outputs_by_name(server.infer_ok("iris", IRIS_BODY))["predict"]["data"] == [0]
    pid = server.wait_worker("iris/1/0")
    assert parent(pid) == server.pid
    assert records(server, msg="workers.command is not '<python> -m berth.worker': workers start "
                   "directly, without the worker template")


def test_missing_worker_command_is_logged_retried_and_stops_cleanly(
        berth_server: Callable[..., BerthServer], tmp_path: Path, zoo: ModelZoo) -> None:
    # A workers.command that cannot be started: each try is logged with the
    # command and the reason, the slot is retried with backoff, the model
    # answers 503 with why, and the server still stops cleanly.
    cfg = tmp_path / "missing.yaml"
    missing = str(tmp_path / "no-such-worker")
    cfg.write_text("workers:\n  command: " + json.dumps([missing]) + "\n  restart_backoff_s: 0.05\n")
    server = berth_server(str(zoo.sklearn_classifier()), "--config", str(cfg), "--log-format", "json",
                          wait_for="listening")
    failed = wait_until(
        lambda: [r for r in records(server, msg="cannot start a worker process; check workers.command")
                 if r.get("worker") == "iris/1/0"][1:],
        30, "a second failed start of the worker", on_timeout=server.log_tail)
    assert failed[0]["command"] == missing
    assert failed[0]["error"] == "no such file or directory"
    ready = server.get("/v2/models/iris/ready")
    assert ready.status == 503
    assert "not ready: its worker is still loading it" in ready.json()["error"]
    answer = server.post("/v2/models/iris/infer", IRIS_BODY)
    assert answer.status == 503
    assert "not ready" in answer.json()["error"]
    server.signal(signal.SIGTERM)
    assert server.wait(60) == 0
