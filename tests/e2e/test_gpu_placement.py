"""GPU placement (docs/gpus.md) on this CPU machine, with a given GPU list
(BERTH_GPUS): each worker instance gets exactly one CUDA_VISIBLE_DEVICES,
spread over its model's GPUs and memory-aware; CPU instances get an empty
one; with no GPU known a model keeps the server's own; a config that cannot
fit fails with a clear error; bad values are refused with the key named.

The proof is what the worker processes themselves see: their environment
(/proc/<pid>/environ) and the value the model's predict reads."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from berth_e2e import (
    BerthServer,
    add_python_model,
    assert_error,
    berth_executable,
    free_port,
    infer_body,
    outputs_by_name,
    proc_env,
    server_env,
    tensor,
    wait_until,
)

GIB = 1 << 30
EXIT_TIMEOUT_S = 120

WHERE_SOURCE = '''
import os
import numpy as np
import berth


class Where(berth.Model):
    """device = the CUDA_VISIBLE_DEVICES this worker sees ("<unset>" if none)."""

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("device", "BYTES", [-1])]

    def predict(self, inputs):
        seen = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        return {"device": np.array([seen.encode()] * len(inputs["x"]), dtype=object)}
'''

BODY = infer_body([tensor("x", "FP32", [1], [1.0])])


def seen_by_predict(server: BerthServer, model: str) -> str:
    out = outputs_by_name(server.infer_ok(model, BODY))
    return str(out["device"]["data"][0])


def worker_devices(server: BerthServer, model: str) -> dict[int, str | None]:
    """instance -> the CUDA_VISIBLE_DEVICES in that worker process's
    environment (None when it has none)."""
    found = {}
    for wid, pid in server.worker_pids().items():
        name, _version, index = wid.split("/")
        if name == model:
            found[int(index)] = proc_env(pid).get("CUDA_VISIBLE_DEVICES")
    return found


def metric_devices(server: BerthServer, model: str) -> dict[int, str]:
    text = server.get("/metrics").body.decode()
    pattern = rf'^berth_worker_device\{{model="{model}",version="1",instance="(\d+)",device="([^"]+)"\}} 1$'
    return {int(i): d for i, d in re.findall(pattern, text, re.M)}


def gpu_gauge(server: BerthServer, name: str) -> dict[str, float]:
    text = server.get("/metrics").body.decode()
    return {g: float(v) for g, v in re.findall(rf'^{name}\{{gpu="(\d+)"\}} (\S+)$', text, re.M)}


def run_to_exit(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """berth serve ARGS on free 127.0.0.1 ports until it exits (killed, and
    the test failed, if it keeps running)."""
    cmd = [berth_executable(), "serve", *args, "--host", "127.0.0.1",
           "--port", str(free_port()), "--grpc-port", str(free_port())]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=server_env(env),
                            cwd=str(cwd), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"berth kept running\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ------------------------------------------------------------- with two GPUs


@pytest.fixture(scope="module")
def two_gpu_server(module_server: Callable[..., BerthServer],
                   tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    root = tmp_path_factory.mktemp("gpu-repo")
    add_python_model(root, "where", WHERE_SOURCE, "Where",
                     yaml_extra="instances: 4\ndevices: all\ngpu_memory: 3GiB\n")
    add_python_model(root, "pinned", WHERE_SOURCE, "Where",
                     yaml_extra="instances: 1\ndevices: [1]\ngpu_memory: 512MiB\n")
    add_python_model(root, "oncpu", WHERE_SOURCE, "Where",
                     yaml_extra="instances: 2\ndevices: cpu\ngpu_memory: 64GiB\n")
    return module_server(str(root), wait_for=["where", "pinned", "oncpu"],
                         env={"BERTH_GPUS": "0:16GiB,1:16GiB"})


def test_each_instance_sees_its_own_gpu(two_gpu_server: BerthServer) -> None:
    envs = worker_devices(two_gpu_server, "where")
    assert sorted(envs) == [0, 1, 2, 3]
    # exactly one GPU per worker, spread: two on each
    assert all(v in ("0", "1") for v in envs.values()), envs
    assert Counter(envs.values()) == {"0": 2, "1": 2}
    # the engine's view is the processes' view
    assert metric_devices(two_gpu_server, "where") == {i: f"cuda:{v}" for i, v in envs.items()}
    # and the model itself reads it
    assert seen_by_predict(two_gpu_server, "where") in ("0", "1")
    # the pinned model runs on its one GPU
    assert worker_devices(two_gpu_server, "pinned") == {0: "1"}
    assert seen_by_predict(two_gpu_server, "pinned") == "1"


def test_cpu_instances_see_no_gpu(two_gpu_server: BerthServer) -> None:
    assert worker_devices(two_gpu_server, "oncpu") == {0: "", 1: ""}
    assert seen_by_predict(two_gpu_server, "oncpu") == ""
    assert metric_devices(two_gpu_server, "oncpu") == {0: "cpu", 1: "cpu"}


def test_memory_is_counted_per_gpu(two_gpu_server: BerthServer) -> None:
    # where: 2 x 3 GiB on each GPU; pinned: 512 MiB on GPU 1; CPU: nothing
    assert gpu_gauge(two_gpu_server, "berth_gpu_memory_placed_bytes") == {
        "0": 6 * GIB, "1": 6 * GIB + 512 * 2**20}
    assert gpu_gauge(two_gpu_server, "berth_gpu_instances") == {"0": 2, "1": 3}
    assert gpu_gauge(two_gpu_server, "berth_gpu_memory_budget_bytes") == {"0": 16 * GIB, "1": 16 * GIB}


def test_model_config_shows_instance_groups(two_gpu_server: BerthServer) -> None:
    groups = two_gpu_server.get("/v2/models/where/config").json()["instance_group"]
    assert sorted((g["kind"], tuple(g["gpus"]), g["count"]) for g in groups) == [
        ("KIND_GPU", (0,), 2), ("KIND_GPU", (1,), 2)]
    groups = two_gpu_server.get("/v2/models/oncpu/config").json()["instance_group"]
    assert [(g["kind"], g["count"], "gpus" in g) for g in groups] == [("KIND_CPU", 2, False)]
    # the same over gRPC, with Triton's own client
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{two_gpu_server.grpc_port}")
    cfg = client.get_model_config("where", as_json=True)["config"]
    assert sorted((g["kind"], tuple(int(x) for x in g["gpus"]), int(g["count"]))
                  for g in cfg["instance_group"]) == [("KIND_GPU", (0,), 2), ("KIND_GPU", (1,), 2)]
    client.close()


# ------------------------------------------------------------ no GPU known


def test_without_gpus_a_model_keeps_the_servers_devices(
    berth_server: Callable[..., BerthServer], tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    add_python_model(root, "plain", WHERE_SOURCE, "Where", yaml_extra="instances: 1\n")
    add_python_model(root, "oncpu", WHERE_SOURCE, "Where", yaml_extra="instances: 1\ndevices: cpu\n")
    env = {"CUDA_VISIBLE_DEVICES": "5"}  # what the server was started with
    server = berth_server(str(root), wait_for=["plain", "oncpu"], env=env)
    assert worker_devices(server, "plain") == {0: "5"}
    assert seen_by_predict(server, "plain") == "5"
    assert metric_devices(server, "plain") == {0: "default"}
    # a CPU instance still sees no GPU
    assert worker_devices(server, "oncpu") == {0: ""}
    assert gpu_gauge(server, "berth_gpu_instances") == {}


# --------------------------------------------------------- does not fit


def test_a_model_that_cannot_fit_fails_with_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    # 10 GiB each: one fits on each 16 GiB GPU, the third nowhere
    add_python_model(root, "big", WHERE_SOURCE, "Where",
                     yaml_extra="instances: 3\ndevices: all\ngpu_memory: 10GiB\n")
    done = run_to_exit([str(root)], tmp_path, env={"BERTH_GPUS": "0:16GiB,1:16GiB"})
    assert done.returncode != 0
    assert "model 'big' version '1': instance 2 needs 10.0 GiB of GPU memory" in done.stderr, done.stderr[-3000:]
    assert "GPU 0: 6.0 GiB free of 16.0 GiB; GPU 1: 6.0 GiB free of 16.0 GiB" in done.stderr


def test_a_budget_below_the_need_fails(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    add_python_model(root, "big", WHERE_SOURCE, "Where",
                     yaml_extra="instances: 1\ndevices: [0]\ngpu_memory: 10GiB\n")
    done = run_to_exit([str(root), "--gpu-memory-budget", "50%"], tmp_path,
                       env={"BERTH_GPUS": "0:16GiB"})
    assert done.returncode != 0
    assert "instance 0 needs 10.0 GiB" in done.stderr and "GPU 0: 8.0 GiB free of 8.0 GiB" in done.stderr, \
        done.stderr[-3000:]


def test_a_load_that_cannot_fit_is_refused(berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    """Through the repository API, the load is answered with the reason and
    the serving version stays as it was."""
    root = tmp_path / "repo"
    add_python_model(root, "where", WHERE_SOURCE, "Where", yaml_extra="instances: 1\ndevices: [0]\n")
    server = berth_server(str(root), "--model-control-mode", "explicit", wait_for=["where"],
                          env={"BERTH_GPUS": "0:4GiB,1:4GiB"})
    body = {"parameters": {"config": {"gpu_memory": "6GiB"}}}
    resp = server.post("/v2/repository/models/where/load", body, timeout=120)
    assert_error(resp, 400, "instance 0 needs 6.0 GiB of GPU memory")
    assert seen_by_predict(server, "where") == "0"
    # Triton's instance groups: 2 per listed GPU
    body = {"parameters": {"config": {"instance_group": [{"count": 2, "kind": "KIND_GPU", "gpus": [1]}]}}}
    assert server.post("/v2/repository/models/where/load", body, timeout=120).status == 200
    # the old version's worker (same id, GPU 0) may still be stopping
    # str(): a worker caught before its environment is readable reads None
    # (not comparable with a device), and the wait goes on.
    wait_until(lambda: sorted(map(str, worker_devices(server, "where").values())) == ["1", "1"], 60,
               "the new version's two workers, both on GPU 1, and the old one gone",
               on_timeout=lambda: f"{worker_devices(server, 'where')}\n{server.log_tail()}")
    # bad values name the key
    for config, words in [
        ({"devices": "gpu"}, "parameters.config.devices: expected auto, cpu, all"),
        ({"devices": [0, 0]}, "parameters.config.devices[1]: GPU 0 is listed twice"),
        ({"gpu_memory": "lots"}, "parameters.config.gpu_memory: expected a size in bytes"),
        ({"devices": [7]}, "GPU 7 is not one of the server's GPUs (0, 1)"),
        ({"instance_group": [{"count": 1, "kind": "KIND_TPU"}]}, "instance_group[0].kind"),
    ]:
        resp = server.post("/v2/repository/models/where/load", {"parameters": {"config": config}}, timeout=120)
        assert_error(resp, 400, words)
    assert sorted(worker_devices(server, "where").values()) == ["1", "1"]


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("yaml_extra", "args", "env", "words"),
    [
        ("devices: [0, 0]\n", [], {"BERTH_GPUS": "0:1GiB"}, "models[0].devices[1]: GPU 0 is listed twice"),
        ("devices: [3]\n", [], {"BERTH_GPUS": "0:1GiB"}, "models[0].devices[0]: GPU 3 is not in gpus"),
        ("devices: all\n", [], {"BERTH_GPUS": "none"}, "models[0].devices: all asks for GPUs"),
        ("devices: gpu0\n", [], {}, "models[0].devices: expected auto, cpu, all"),
        ("gpu_memory: 3 gigs\n", [], {}, "models[0].gpu_memory: expected a size in bytes"),
        ("", ["--gpus", "0:lots"], {}, "--gpus"),
        ("", [], {"BERTH_GPUS": "zero"}, "BERTH_GPUS: 'zero' is not a GPU index"),
        ("", ["--gpu-memory-budget", "200%"], {"BERTH_GPUS": "0:1GiB"}, "a percentage is from 0"),
        ("", ["--gpu-memory-budget", "2:1GiB"], {"BERTH_GPUS": "0:1GiB"}, "GPU 2 is not one of the server's GPUs"),
        ("", ["--gpu-memory-budget", "2GiB"], {"BERTH_GPUS": "0:1GiB"},
         "gpus[0].budget: 2147483648 bytes is more than the GPU's memory"),
        ("", ["--devices", "0,0"], {"BERTH_GPUS": "0:1GiB"}, "lists a GPU twice"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, yaml_extra: str, args: list[str],
                                env: dict[str, str], words: str) -> None:
    root = tmp_path / "repo"
    add_python_model(root, "where", WHERE_SOURCE, "Where", yaml_extra="instances: 1\n" + yaml_extra)
    done = run_to_exit([str(root), *args], tmp_path, env=env)
    assert done.returncode != 0
    assert words in done.stderr, done.stderr[-3000:]
