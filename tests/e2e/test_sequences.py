"""Sequence batching (stateful models), end to end with tritonclient.

The models are accumulators written here: each request adds its input to
its own sequence's running sum (kept in ``berth.Sequence.state``) and
answers the sum, the worker instance that ran it, and how many sequence
states are alive in that worker (each state holds an object tracked in a
weak set, so a state the worker dropped stops being counted). Nothing is
timed: the idle timeout is observed by polling the worker's live count
with a bounded loop.
"""

from __future__ import annotations

import itertools
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import BerthServer, assert_error, tensor, wait_until

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

ACC = '''
import gc, weakref
import numpy as np
import berth

class _Token:
    pass

_alive = weakref.WeakSet()

class Acc(berth.Model):
    inputs = [berth.TensorSpec("x", "INT64", [-1, 1])]
    outputs = [berth.TensorSpec("sum", "INT64", [-1, 1]),
               berth.TensorSpec("instance", "INT64", [-1, 1]),
               berth.TensorSpec("live", "INT64", [-1, 1]),
               berth.TensorSpec("started", "INT64", [-1, 1])]

    def predict(self, inputs, sequences=None):
        x = inputs["x"]
        total = np.zeros_like(x)
        started = np.zeros_like(x)
        for s in sequences:
            if "token" not in s.state:
                s.state["token"] = _Token()
                _alive.add(s.state["token"])
            s.state["sum"] = s.state.get("sum", 0) + int(x[s.rows].sum())
            total[s.rows] = s.state["sum"]
            if "START" in inputs:
                started[s.rows] = inputs["START"][s.rows]
            else:
                started[s.rows] = int(s.start)
        gc.collect()
        n = x.shape[0]
        return {"sum": total,
                "instance": np.full((n, 1), self.context.instance, dtype=np.int64),
                "live": np.full((n, 1), len(_alive), dtype=np.int64),
                "started": started}
'''

PLAIN = '''
import berth

class Plain(berth.Model):
    def predict(self, inputs):
        return {"y": inputs["x"]}
'''


def add_model(repo: Path, name: str, source: str, yaml: str) -> None:
    d = repo / name / "1"
    d.mkdir(parents=True)
    (d / "model.py").write_text(source)
    (repo / name / "berth.yaml").write_text(yaml)


def seq_yaml(strategy: str, instances: int, extra: str = "") -> str:
    return (
        f"max_batch_size: 4\ninstances: {instances}\nmax_queue_delay_us: 2000\n"
        f"sequence_batching:\n  strategy: {strategy}\n"
        "  max_sequence_idle_microseconds: 60000000\n" + extra
    )


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    repo = tmp_path_factory.mktemp("sequence-repo")
    add_model(repo, "acc_direct", ACC, seq_yaml("direct", 2))
    add_model(repo, "acc_oldest", ACC, seq_yaml("oldest", 2))
    add_model(repo, "acc_control", ACC,
              seq_yaml("oldest", 1, "  control_inputs:\n    start: START\n    corrid: CORRID\n"))
    add_model(repo, "acc_bounded", ACC, seq_yaml("oldest", 1, "  max_sequences: 2\n"))
    add_model(repo, "acc_idle", ACC,
              "max_batch_size: 4\ninstances: 1\nsequence_batching:\n"
              "  strategy: oldest\n  max_sequence_idle_microseconds: 200000\n")
    add_model(repo, "acc_crash", ACC, seq_yaml("oldest", 1))
    # not batching, direct: one slot per instance, two instances
    add_model(repo, "acc_single", ACC,
              "max_batch_size: 0\ninstances: 2\nsequence_batching:\n"
              "  control_inputs: {start: START}\n")
    add_model(repo, "plain", PLAIN, "max_batch_size: 0\ninstances: 1\n")
    return module_server(str(repo))


_ids = itertools.count(1000)


def new_id() -> int:
    return next(_ids)


def x_input(module: Any, value: int) -> Any:
    inp = module.InferInput("x", [1, 1], "INT64")
    inp.set_data_from_numpy(np.array([[value]], dtype=np.int64))
    return inp


def step(client: Any, module: Any, model: str, sid: int | str, value: int,
         start: bool = False, end: bool = False, token: str | None = None) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    res = client.infer(model, [x_input(module, value)], sequence_id=sid,
                       sequence_start=start, sequence_end=end, headers=headers)
    return {k: int(res.as_numpy(k)[0, 0]) for k in ("sum", "instance", "live", "started")}


def clients(server: BerthServer, protocol: str) -> tuple[Any, Any]:
    if protocol == "http":
        return tritonclient_http.InferenceServerClient(server.triton_url, concurrency=4), tritonclient_http
    return tritonclient_grpc.InferenceServerClient(server.grpc_url), tritonclient_grpc


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["acc_direct", "acc_oldest"])
def test_interleaved_sequences_keep_their_own_sums(server: BerthServer, protocol: str, model: str) -> None:
    steps = 6
    sids: list[int | str] = [new_id(), f"seq-{new_id()}", new_id()]

    def run(k: int) -> list[dict[str, int]]:
        client, module = clients(server, protocol)
        sid = sids[k]
        out = []
        for i in range(steps):
            value = (k + 1) * 10 + i
            out.append(step(client, module, model, sid, value, start=i == 0, end=i == steps - 1))
        client.close()
        return out

    with ThreadPoolExecutor(len(sids)) as pool:
        results = list(pool.map(run, range(len(sids))))
    for k, answers in enumerate(results):
        expected = list(itertools.accumulate((k + 1) * 10 + i for i in range(steps)))
        assert [a["sum"] for a in answers] == expected, f"sequence {sids[k]!r}"
        # one worker instance holds the sequence's state
        assert len({a["instance"] for a in answers}) == 1, answers
        assert [a["started"] for a in answers] == [1] + [0] * (steps - 1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_start_restarts_and_end_forgets(server: BerthServer, protocol: str) -> None:
    client, module = clients(server, protocol)
    sid = new_id()
    assert step(client, module, "acc_oldest", sid, 5, start=True)["sum"] == 5
    assert step(client, module, "acc_oldest", sid, 2)["sum"] == 7
    # a new start begins a fresh sum
    assert step(client, module, "acc_oldest", sid, 1, start=True)["sum"] == 1
    assert step(client, module, "acc_oldest", sid, 3, end=True)["sum"] == 4
    # after the end, the id is unknown until a new start
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc_oldest", sid, 1)
    assert "not live" in str(e.value) and "sequence_start" in str(e.value)
    if protocol == "grpc":
        assert "INVALID_ARGUMENT" in str(e.value.status())
    else:
        assert e.value.status() == "400"
    assert step(client, module, "acc_oldest", sid, 9, start=True, end=True)["sum"] == 9
    client.close()


def test_unknown_sequence_without_start_is_400(server: BerthServer) -> None:
    body = {"inputs": [tensor("x", "INT64", [1, 1], [1])], "parameters": {"sequence_id": 999999}}
    assert_error(server.infer("acc_direct", body), 400, "999999", "acc_direct", "sequence_start")
    body["parameters"] = {"sequence_id": "nope", "sequence_start": False}
    assert_error(server.infer("acc_direct", body), 400, "nope", "not live")


def test_bad_sequence_parameters_are_400(server: BerthServer) -> None:
    x = [tensor("x", "INT64", [1, 1], [1])]
    cases = [
        ({"sequence_id": 1.5, "sequence_start": True}, "sequence_id"),
        ({"sequence_id": [1], "sequence_start": True}, "sequence_id"),
        ({"sequence_id": -3, "sequence_start": True}, "sequence_id"),
        ({"sequence_id": "x" * 300, "sequence_start": True}, "sequence_id"),
        ({"sequence_id": 5, "sequence_start": "yes"}, "sequence_start"),
        ({"sequence_start": True}, "sequence_id"),
        ({}, "sequence_id"),  # a sequence model needs an id
    ]
    for params, word in cases:
        assert_error(server.infer("acc_oldest", {"inputs": x, "parameters": params}), 400, word)
    # the server still answers
    client, module = clients(server, "http")
    assert step(client, module, "acc_oldest", new_id(), 4, start=True, end=True)["sum"] == 4


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sequence_id_to_a_plain_model_is_refused(server: BerthServer, protocol: str) -> None:
    client, module = clients(server, protocol)
    inp = module.InferInput("x", [2], "FP32")
    inp.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    # without a sequence the model answers
    assert client.infer("plain", [inp]).as_numpy("y").tolist() == [1, 2]
    with pytest.raises(InferenceServerException) as e:
        client.infer("plain", [inp], sequence_id=7, sequence_start=True)
    assert "plain" in str(e.value) and "sequence_batching" in str(e.value)
    if protocol == "grpc":
        assert "INVALID_ARGUMENT" in str(e.value.status())
    else:
        assert e.value.status() == "400"
    client.close()


def test_control_inputs_reach_the_model(server: BerthServer) -> None:
    client, module = clients(server, "grpc")
    sid = new_id()
    first = step(client, module, "acc_control", sid, 3, start=True)
    second = step(client, module, "acc_control", sid, 4, end=True)
    # "started" comes from the START control tensor here
    assert (first["started"], second["started"]) == (1, 0)
    assert second["sum"] == 7
    client.close()


def test_model_config_shows_sequence_batching(server: BerthServer) -> None:
    client = tritonclient_http.InferenceServerClient(server.triton_url)
    cfg = client.get_model_config("acc_control")
    sb = cfg["sequence_batching"]
    assert sb["max_sequence_idle_microseconds"] == 60000000
    assert "oldest" in sb and "dynamic_batching" not in cfg
    kinds = {c["name"]: c["control"][0]["kind"] for c in sb["control_input"]}
    assert kinds == {"START": "CONTROL_SEQUENCE_START", "CORRID": "CONTROL_SEQUENCE_CORRID"}
    assert "direct" in client.get_model_config("acc_direct")["sequence_batching"]
    assert "sequence_batching" not in client.get_model_config("plain")
    client.close()


def test_grpc_model_config_shows_sequence_batching(server: BerthServer) -> None:
    client = tritonclient_grpc.InferenceServerClient(server.grpc_url)
    try:
        cfg = client.get_model_config("acc_control").config
        assert cfg.HasField("sequence_batching") and not cfg.HasField("dynamic_batching")
        sb = cfg.sequence_batching
        assert sb.max_sequence_idle_microseconds == 60000000
        assert sb.WhichOneof("strategy_choice") == "oldest"
        kind = tritonclient_grpc.model_config_pb2.ModelSequenceBatching.Control.Kind
        got = {c.name: (c.control[0].kind, list(c.control[0].int32_false_true), c.control[0].data_type)
               for c in sb.control_input}
        assert got == {
            "START": (kind.Value("CONTROL_SEQUENCE_START"), [0, 1], 0),
            "CORRID": (kind.Value("CONTROL_SEQUENCE_CORRID"), [],
                       tritonclient_grpc.model_config_pb2.TYPE_UINT64),
        }
        direct = client.get_model_config("acc_direct").config
        assert direct.sequence_batching.WhichOneof("strategy_choice") == "direct"
        # the same document as REST's, through protobuf's JSON mapping
        as_json = client.get_model_config("acc_control", as_json=True)["config"]
        rest = tritonclient_http.InferenceServerClient(server.triton_url)
        try:
            rest_sb = rest.get_model_config("acc_control")["sequence_batching"]
        finally:
            rest.close()
        assert {c["name"] for c in as_json["sequence_batching"]["control_input"]} == \
            {c["name"] for c in rest_sb["control_input"]}
        assert not client.get_model_config("plain").config.HasField("sequence_batching")
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_live_sequences_are_bounded(server: BerthServer, protocol: str) -> None:
    client, module = clients(server, protocol)
    a, b, c = new_id(), new_id(), new_id()
    step(client, module, "acc_bounded", a, 1, start=True)
    step(client, module, "acc_bounded", b, 1, start=True)
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc_bounded", c, 1, start=True)
    assert "max_sequences" in str(e.value)
    if protocol == "grpc":
        assert "RESOURCE_EXHAUSTED" in str(e.value.status())
    else:
        assert e.value.status() == "429"
    # the live ones still work; ending one frees room for another
    assert step(client, module, "acc_bounded", a, 2, end=True)["sum"] == 3
    assert step(client, module, "acc_bounded", c, 5, start=True)["sum"] == 5
    step(client, module, "acc_bounded", b, 0, end=True)
    step(client, module, "acc_bounded", c, 0, end=True)
    client.close()


def test_idle_sequence_expires_in_engine_and_worker(server: BerthServer) -> None:
    client, module = clients(server, "http")
    sid = new_id()
    first = step(client, module, "acc_idle", sid, 5, start=True)
    assert first["sum"] == 5 and first["live"] >= 1

    def only_itself() -> bool:
        # a one-request sequence (start and end) reports the states alive
        # in the worker: itself alone once the idle one was dropped
        return step(client, module, "acc_idle", new_id(), 1, start=True, end=True)["live"] == 1

    wait_until(only_itself, 60, "the idle sequence's state to be dropped in the worker",
               interval=0.1, on_timeout=server.log_tail)
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc_idle", sid, 1)
    assert "not live" in str(e.value) and e.value.status() == "400"
    client.close()


def test_a_dead_worker_ends_its_sequences(server: BerthServer) -> None:
    client, module = clients(server, "http")
    sid = new_id()
    assert step(client, module, "acc_crash", sid, 2, start=True)["sum"] == 2
    pid = server.wait_worker("acc_crash/1/0")
    os.kill(pid, signal.SIGKILL)
    server.wait_worker("acc_crash/1/0", not_pid=pid)
    # the state died with the worker: the sequence is not silently restarted
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc_crash", sid, 3)
    assert "not live" in str(e.value) and e.value.status() == "400"
    assert step(client, module, "acc_crash", sid, 3, start=True)["sum"] == 3
    client.close()


ADMIN = "seq-admin"


def test_unload_and_replace_end_sequences(berth_server: Any, tmp_path: Path) -> None:
    repo = tmp_path / "reload-repo"
    add_model(repo, "acc", ACC, seq_yaml("oldest", 1, "  max_sequences: 1\n"))
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(ADMIN + "\n")
    server = berth_server(str(repo), "--model-control-mode", "explicit",
                          "--admin-tokens-file", str(tokens))
    server.token = ADMIN
    client, module = clients(server, "http")
    sid = new_id()
    assert step(client, module, "acc", sid, 2, start=True, token=ADMIN)["sum"] == 2
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc", new_id(), 1, start=True, token=ADMIN)
    assert e.value.status() == "429"

    # unload and load: the workers, and the state in them, are new
    assert server.post("/v2/repository/models/acc/unload", None).status == 200
    assert server.post("/v2/repository/models/acc/load", None).status == 200
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc", sid, 3, token=ADMIN)
    assert "not live" in str(e.value) and e.value.status() == "400"

    # a load with a new config replaces the serving workers: the same
    sid = new_id()
    assert step(client, module, "acc", sid, 2, start=True, token=ADMIN)["sum"] == 2
    entry = {"name": "acc", "version": "1", "runtime": "python",
             "path": str(repo / "acc" / "1" / "model.py"), "max_batch_size": 4, "instances": 1,
             "sequence_batching": {"strategy": "oldest", "max_sequences": 2}}
    resp = server.post("/v2/repository/models/acc/load", {"parameters": {"config": entry}}, timeout=120)
    assert resp.status == 200, resp.body[:500]
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc", sid, 3, token=ADMIN)
    assert "not live" in str(e.value) and e.value.status() == "400"
    # and the new config's bound applies: two live sequences now
    a, b = new_id(), new_id()
    assert step(client, module, "acc", a, 1, start=True, token=ADMIN)["sum"] == 1
    assert step(client, module, "acc", b, 4, start=True, token=ADMIN)["sum"] == 4
    assert step(client, module, "acc", a, 1, end=True, token=ADMIN)["sum"] == 2
    client.close()


def test_grpc_sequence_parameters_of_the_wrong_type(server: BerthServer) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    def request(**params: Any) -> Any:
        req = pb.ModelInferRequest(model_name="acc_oldest")
        inp = req.inputs.add()
        inp.name, inp.datatype = "x", "INT64"
        inp.shape.extend([1, 1])
        req.raw_input_contents.append(np.array([[1]], dtype=np.int64).tobytes())
        for key, (kind, value) in params.items():
            setattr(req.parameters[key], kind, value)
        return req

    bad = [
        {"sequence_id": ("double_param", 1.5), "sequence_start": ("bool_param", True)},
        {"sequence_id": ("bool_param", True), "sequence_start": ("bool_param", True)},
        {"sequence_id": ("int64_param", 5), "sequence_start": ("string_param", "true")},
        {"sequence_id": ("int64_param", -5), "sequence_start": ("bool_param", True)},
    ]
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for params in bad:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request(**params))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "sequence_" in info.value.details()
        # a uint64 id works like an int64 one
        sid = new_id()
        ok = stub.ModelInfer(request(sequence_id=("uint64_param", sid), sequence_start=("bool_param", True),
                                     sequence_end=("bool_param", True)))
        assert np.frombuffer(ok.raw_output_contents[0], dtype=np.int64).tolist() == [1]


def test_direct_without_batching_has_one_slot_per_instance(server: BerthServer) -> None:
    client, module = clients(server, "grpc")
    a, b, c = new_id(), new_id(), new_id()
    first = step(client, module, "acc_single", a, 1, start=True)
    second = step(client, module, "acc_single", b, 2, start=True)
    assert (first["started"], second["started"]) == (1, 1)  # START, shape [1]
    assert first["instance"] != second["instance"]  # one sequence per instance
    with pytest.raises(InferenceServerException) as e:
        step(client, module, "acc_single", c, 1, start=True)
    assert "slot" in str(e.value) and "RESOURCE_EXHAUSTED" in str(e.value.status())
    assert step(client, module, "acc_single", a, 5, end=True)["sum"] == 6
    third = step(client, module, "acc_single", c, 7, start=True)
    assert third["sum"] == 7 and third["instance"] == first["instance"]
    assert step(client, module, "acc_single", b, 1, end=True)["started"] == 0
    step(client, module, "acc_single", c, 0, end=True)
    client.close()
