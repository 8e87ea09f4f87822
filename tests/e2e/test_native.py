"""backend: native (docs/native.md): ONNX models run in berthd through ONNX
Runtime's C API give the same answers as the Python worker path, through a
real Triton client, one model of each kind served both ways by one server;
batches of several requests are split back exactly; a bad model file, a
missing library and a wrong input get clear errors; the usual guards hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from berth.cli.launch import find_berthd
from berth.cli.native import find_library
from berth_e2e import BerthServer, ModelZoo, assert_error, berth_executable, free_port, wait_until

Arrays = dict[str, np.ndarray]

pytestmark = pytest.mark.skipif(
    find_library("onnxruntime") is None, reason="the onnxruntime wheel is not installed"
)


@dataclass
class Case:
    name: str
    build: Callable[[ModelZoo, Path], Path]
    inputs: Callable[[int], Arrays]  # rows -> request inputs
    rtol: float = 1e-6
    runtime: str = "onnx"


def _mlp(zoo: ModelZoo, folder: Path) -> Path:
    """A scikit-learn MLP regressor exported with skl2onnx (FP32 in and out).
    One target: skl2onnx 1.20 exports a two-target MLPRegressor with output
    shape [None, 1] and 2n rows for n, a graph no batcher can split."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    y = x @ rng.normal(size=16)
    with warnings.catch_warnings():  # a few iterations suffice: outputs are compared, not fit
        warnings.simplefilter("ignore")
        model = MLPRegressor(hidden_layer_sizes=(32, 32), max_iter=50, random_state=0).fit(x, y)
    path = folder / "mlp.onnx"
    path.write_bytes(to_onnx(model, x[:1], target_opset=15).SerializeToString())
    return path


def _classifier(zoo: ModelZoo, folder: Path) -> Path:
    """Logistic regression on iris exported with skl2onnx: its probabilities
    are a sequence of maps (ZipMap), which both paths leave out."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = zoo.iris
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = folder / "iris.onnx"
    path.write_bytes(to_onnx(model, x[:1].astype(np.float32), target_opset=15).SerializeToString())
    return path


def _lgbm_multiclass(zoo: ModelZoo, folder: Path) -> Path:
    """A LightGBM booster for iris's three classes: predict is [N, 3]."""
    import lightgbm

    x, y = zoo.iris
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_leaves": 4}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=5)
    path = folder / "lgbm3.txt"
    booster.save_model(str(path))
    return path


def _xgb_multiclass(zoo: ModelZoo, folder: Path) -> Path:
    """A plain XGBoost booster for iris's classes (multi:softprob): its
    predict is [N, 3]."""
    import xgboost

    x, y = zoo.iris
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1}
    booster = xgboost.train(params, xgboost.DMatrix(x.astype(np.float32), y), num_boost_round=5)
    path = folder / "xgb3.json"
    booster.save_model(str(path))
    return path


def _rows(seed: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


CASES = [
    Case("linear", lambda z, f: z.onnx_linear(), lambda n: {"x": _rows(n, (n, 4), np.float32)}),
    Case(
        "ids",
        lambda z, f: z.onnx_int64(),
        lambda n: {"ids": np.arange(2 * n, dtype=np.int64).reshape(n, 2) * (3_000_000_000 - n)},
    ),
    Case(
        "words",
        lambda z, f: z.onnx_string(),
        lambda n: {
            "words": np.array([f"w{i}-caf\u00e9".encode() if i % 3 else b"" for i in range(n)], dtype=object),
            "score": _rows(n, (n,), np.float32),
        },
    ),
    Case("mlp", _mlp, lambda n: {"X": _rows(n + 1, (n, 16), np.float32)}),
    Case("iris", _classifier, lambda n: {"X": _rows(n + 2, (n, 4), np.float32)}),
    Case(
        "lgbm",
        lambda z, f: z.lightgbm_booster(),
        lambda n: {"input": _rows(n + 3, (n, 5), np.float64)},
        runtime="lightgbm",
    ),
    Case(
        "lgbm3",
        lambda z, f: _lgbm_multiclass(z, f),
        lambda n: {"input": _rows(n + 4, (n, 4), np.float64)},
        runtime="lightgbm",
    ),
    Case(
        "xgbjson",
        lambda z, f: z.xgboost_booster(".json"),
        lambda n: {"input": _rows(n + 5, (n, 5), np.float32)},
        runtime="xgboost",
    ),
    Case(
        "xgbubj",
        lambda z, f: z.xgboost_booster(".ubj"),
        lambda n: {"input": _rows(n + 6, (n, 5), np.float32)},
        runtime="xgboost",
    ),
    Case(
        "xgb3",
        lambda z, f: _xgb_multiclass(z, f),
        lambda n: {"input": _rows(n + 7, (n, 4), np.float32)},
        runtime="xgboost",
    ),
]


@pytest.fixture(scope="module")
def models(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("native-models")
    return {c.name: c.build(zoo, folder) for c in CASES}


def _family(case: Case) -> str:
    return "onnx" if case.runtime == "onnx" else "trees"


Farm = Callable[[str], tuple[BerthServer, httpclient.InferenceServerClient]]


@pytest.fixture(scope="module")
def farm(
    models: dict[str, Path], module_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    """farm(family): a server (started at first use) with every case of
    that family twice: <name>_py (a Python worker) and <name>_nat (backend:
    native); and a Triton client for it. Two families, two servers, so that
    each starts few Python workers at once."""
    started: dict[str, tuple[BerthServer, httpclient.InferenceServerClient]] = {}

    def get(family: str) -> tuple[BerthServer, httpclient.InferenceServerClient]:
        if family not in started:
            entries = []
            for c in CASES:
                if _family(c) != family:
                    continue
                base = {"path": str(models[c.name]), "runtime": c.runtime, "instances": 1}
                entries.append({**base, "name": f"{c.name}_py"})
                entries.append({**base, "name": f"{c.name}_nat", "backend": "native", "instances": 2})
            app = tmp_path_factory.mktemp(f"native-{family}") / "app.yaml"
            app.write_text(json.dumps({"models": entries}))
            server = module_server(["--config", str(app)], wait_for=[e["name"] for e in entries])
            client = httpclient.InferenceServerClient(url=server.triton_url, network_timeout=60.0, concurrency=8)
            started[family] = (server, client)
        return started[family]

    try:
        yield get
    finally:
        for _, client in started.values():
            client.close()


@pytest.fixture(scope="module")
def both(farm: Farm) -> BerthServer:
    return farm("onnx")[0]


def _infer(client: httpclient.InferenceServerClient, model: str, inputs: Arrays) -> Arrays:
    meta = client.get_model_metadata(model)
    wanted = {i["name"]: i["datatype"] for i in meta["inputs"]}
    req = []
    for name, arr in inputs.items():
        inp = httpclient.InferInput(name, list(arr.shape), wanted[name])
        inp.set_data_from_numpy(arr, binary_data=True)
        req.append(inp)
    result = client.infer(model, req)
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def _assert_same(got: Arrays, want: Arrays, rtol: float, what: str) -> None:
    assert set(got) == set(want), (what, set(got), set(want))
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape, (what, name, g.shape, w.shape)
        if w.dtype == object or w.dtype.kind in "iub":
            assert g.tolist() == w.tolist(), (what, name)
        else:
            assert g.dtype == w.dtype, (what, name, g.dtype, w.dtype)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-6, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_metadata_matches_the_python_path(farm: Farm, case: Case) -> None:
    client = farm(_family(case))[1]
    py = client.get_model_metadata(f"{case.name}_py")
    nat = client.get_model_metadata(f"{case.name}_nat")
    for key in ("platform", "inputs", "outputs"):
        assert nat[key] == py[key], (case.name, key, nat[key], py[key])
    platforms = {"onnx": "onnx_onnxv1", "lightgbm": "lightgbm_lightgbm", "xgboost": "xgboost_xgboost"}
    assert nat["platform"] == platforms[case.runtime]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outputs_equal_the_python_path_and_onnxruntime(
    farm: Farm, models: dict[str, Path], case: Case
) -> None:
    client = farm(_family(case))[1]
    import onnxruntime as ort

    inputs = case.inputs(5)
    nat = _infer(client, f"{case.name}_nat", inputs)
    py = _infer(client, f"{case.name}_py", inputs)
    _assert_same(nat, py, case.rtol, f"{case.name}: native vs python")
    if case.runtime == "lightgbm":
        import lightgbm

        want = lightgbm.Booster(model_file=str(models[case.name])).predict(inputs["input"])
        _assert_same(nat, {"predict": np.asarray(want, dtype=np.float64)}, 1e-12, f"{case.name}: in-process")
        return
    if case.runtime == "xgboost":
        import xgboost

        booster = xgboost.Booster(model_file=str(models[case.name]))
        want = booster.predict(xgboost.DMatrix(inputs["input"]))
        _assert_same(nat, {"predict": np.asarray(want, dtype=np.float32)}, 1e-6, f"{case.name}: in-process")
        return
    sess = ort.InferenceSession(str(models[case.name]), providers=["CPUExecutionProvider"])
    feed = {
        k: (np.array([b.decode() for b in v], dtype=object) if v.dtype == object else v)
        for k, v in inputs.items()
    }
    names = [o.name for o in sess.get_outputs() if o.type.startswith("tensor(")]
    ref = dict(zip(names, sess.run(names, feed), strict=True))
    ref = {k: (np.array([s.encode() for s in v], dtype=object) if v.dtype == object else v) for k, v in ref.items()}
    _assert_same(nat, ref, case.rtol, f"{case.name}: native vs in-process onnxruntime")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_concurrent_requests_are_split_back_exactly(farm: Farm, case: Case) -> None:
    """Requests of 1..12 rows sent at once (so that the batcher stacks some
    of them): each gets its own rows, as the Python path answers them."""
    client = farm(_family(case))[1]
    sizes = list(range(1, 13))
    wanted = {i["name"]: i["datatype"] for i in client.get_model_metadata(f"{case.name}_nat")["inputs"]}
    pending = []
    for n in sizes:
        inputs = case.inputs(n)
        req = []
        for name, arr in inputs.items():
            inp = httpclient.InferInput(name, list(arr.shape), wanted[name])
            inp.set_data_from_numpy(arr, binary_data=True)
            req.append(inp)
        pending.append((n, inputs, client.async_infer(f"{case.name}_nat", req)))
    for n, inputs, handle in pending:
        result = handle.get_result()
        got = {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
        want = _infer(client, f"{case.name}_py", inputs)
        _assert_same(got, want, case.rtol, f"{case.name}: {n} rows")


def test_requests_arriving_together_run_as_one_stacked_batch(
    models: dict[str, Path], module_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """One-row requests sent at once, in rounds, to one instance: once the
    batcher stacks some of them into one batch (the statistics count fewer
    executions than inferences), and in every round, each request gets the
    answer to its own row. (A batch of several requests once ran only its
    first request's rows and failed them all with 'returned output ... with
    1 rows for a batch of N'.)"""
    import threading

    import onnxruntime as ort

    app = tmp_path_factory.mktemp("native-stack") / "app.yaml"
    entry = {"name": "stack", "path": str(models["linear"]), "runtime": "onnx", "backend": "native",
             "instances": 1, "max_batch_size": 32, "max_queue_delay_us": 200_000}
    app.write_text(json.dumps({"models": [entry]}))
    server = module_server(["--config", str(app)], wait_for=["stack"])
    sess = ort.InferenceSession(str(models["linear"]), providers=["CPUExecutionProvider"])
    rows = [_rows(40 + i, (1, 4), np.float32) for i in range(8)]

    def round_trip() -> None:
        barrier = threading.Barrier(len(rows))
        answers: list[Any] = [None] * len(rows)

        def one(i: int) -> None:
            barrier.wait()
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                "data": rows[i].reshape(-1).tolist()}]}
            answers[i] = server.post("/v2/models/stack/infer", body)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(rows))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i, resp in enumerate(answers):
            assert resp is not None and resp.status == 200, (i, resp and resp.body[:300])
            (out,) = resp.json()["outputs"]
            want = sess.run(None, {"x": rows[i]})[0]
            assert out["shape"] == list(want.shape)
            got = np.asarray(out["data"], dtype=np.float32).reshape(want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    stats: dict[str, Any] = {}
    for n in range(1, 31):
        round_trip()
        stats = server.get("/v2/models/stack/stats").json()["model_stats"][0]
        assert stats["inference_count"] == n * len(rows)
        if stats["execution_count"] < stats["inference_count"]:
            break  # some requests shared a batch, and got their own rows back
    assert stats["execution_count"] < stats["inference_count"], stats


def test_statistics_count_native_batches(farm: Farm) -> None:
    both, client = farm("onnx")
    before = both.get("/v2/models/linear_nat/stats").json()["model_stats"][0]
    _infer(client, "linear_nat", CASES[0].inputs(3))
    after = both.get("/v2/models/linear_nat/stats").json()["model_stats"][0]
    assert after["inference_count"] == before["inference_count"] + 1
    assert after["execution_count"] == before["execution_count"] + 1


def test_wrong_datatype_and_shape_are_input_errors(both: BerthServer) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert_error(both.post("/v2/models/linear_nat/infer", body), 400, "FP64", "FP32")
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert_error(both.post("/v2/models/linear_nat/infer", body), 400, "shape")
    body = {"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert_error(both.post("/v2/models/linear_nat/infer", body), 400, "x")
    # the model still answers
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert both.post("/v2/models/linear_nat/infer", body).status == 200


def test_foreign_origin_and_host_are_refused(both: BerthServer) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    resp = both.post("/v2/models/linear_nat/infer", body, headers={"Origin": "http://evil.example"})
    assert_error(resp, 403)
    resp = both.post("/v2/models/linear_nat/infer", body, headers={"Host": "evil.example"})
    assert resp.status in (400, 403, 421), resp.status


# ------------------------------------------------------------- failures


def _unavailable_reason(server: BerthServer, name: str) -> str:
    found: dict[str, str] = {}

    def failed() -> bool:
        for m in server.post("/v2/repository/index", {}).json():
            if m["name"] == name and m["state"] == "UNAVAILABLE" and m.get("reason"):
                found["reason"] = m["reason"]
                return True
        return False

    wait_until(failed, 60, f"{name} to be UNAVAILABLE", on_timeout=server.log_tail)
    return found["reason"]


def _serve_one(berth_server: Any, tmp_path: Path, entry: dict[str, Any], native: Any = None) -> BerthServer:
    doc: dict[str, Any] = {"models": [entry]}
    if native is not None:
        doc["native"] = native
    app = tmp_path / "app.yaml"
    app.write_text(json.dumps(doc))
    return berth_server(["--config", str(app)], "--no-exit-on-error", wait_for="listening")


def test_bad_model_file_is_a_clear_load_error(berth_server: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx graph\n" * 8)
    server = _serve_one(
        berth_server, tmp_path, {"name": "bad", "path": str(bad), "runtime": "onnx", "backend": "native"}
    )
    reason = _unavailable_reason(server, "bad")
    assert "bad.onnx" in reason and "ONNX Runtime could not load it" in reason, reason
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert_error(server.post("/v2/models/bad/infer", body), 503, "not ready")
    assert server.get("/v2/health/live").status == 200


def test_wrong_library_path_is_a_clear_error(berth_server: Any, zoo: ModelZoo, tmp_path: Path) -> None:
    entry = {"name": "lin", "path": str(zoo.onnx_linear()), "runtime": "onnx", "backend": "native"}
    server = _serve_one(
        berth_server, tmp_path, entry, native={"onnxruntime": "/nonexistent/libonnxruntime.so"}
    )
    reason = _unavailable_reason(server, "lin")
    assert "cannot open" in reason and "/nonexistent/libonnxruntime.so" in reason, reason
    assert "backend: python" in reason, reason  # the other way out


def test_no_library_is_a_clear_error_at_start(zoo: ModelZoo, tmp_path: Path) -> None:
    """berthd alone, given a config without native.onnxruntime (what the CLI
    sends when the onnxruntime wheel is not installed): the model's load
    error says what to install, and the server stops (exit_on_error)."""
    doc = {
        "server": {"host": "127.0.0.1", "http_port": free_port(), "grpc_port": free_port()},
        "models": [{"name": "lin", "path": str(zoo.onnx_linear()), "runtime": "onnx", "backend": "native"}],
    }
    config = tmp_path / "engine.json"
    config.write_text(json.dumps(doc))
    done = subprocess.run(
        [find_berthd(os.environ), "--config", str(config)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    assert done.returncode != 0, done.stderr[-2000:]
    assert "pip install onnxruntime" in done.stderr and "native.onnxruntime" in done.stderr, done.stderr[-2000:]


def test_native_for_a_runtime_without_a_backend_is_refused(
    berth_server: Any, zoo: ModelZoo, tmp_path: Path
) -> None:
    entry = {"name": "iris", "path": str(zoo.sklearn_classifier("iris.joblib")), "runtime": "sklearn",
             "backend": "native"}  # fmt: skip
    server = _serve_one(berth_server, tmp_path, entry)
    reason = _unavailable_reason(server, "iris")
    assert "onnx, lightgbm and xgboost only" in reason and "backend: python" in reason, reason


def test_xgboost_scikit_learn_wrapper_stays_on_python(berth_server: Any, zoo: ModelZoo, tmp_path: Path) -> None:
    """An XGBClassifier's labels and probabilities come from its Python
    wrapper: the native backend refuses it, saying so."""
    entry = {"name": "xgbc", "path": str(zoo.xgboost_classifier()), "runtime": "xgboost", "backend": "native"}
    server = _serve_one(berth_server, tmp_path, entry)
    reason = _unavailable_reason(server, "xgbc")
    assert "scikit-learn wrapper" in reason and "backend: python" in reason, reason


def test_backend_flag_and_its_bad_value(berth_server: Any, zoo: ModelZoo) -> None:
    server = berth_server(str(zoo.onnx_linear()), "--backend", "native")
    assert '"backend":"onnxruntime"' in server.log_text()  # it ran natively
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert server.post("/v2/models/linear/infer", body).status == 200
    done = subprocess.run(
        [berth_executable(), "serve", str(zoo.onnx_linear()), "--backend", "fast"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0 and "python, native" in done.stderr, done.stderr[-2000:]


def test_token_is_required_on_a_native_model(berth_server: Any, zoo: ModelZoo) -> None:
    server = berth_server(
        str(zoo.onnx_linear()), "--backend", "native", "--auth-tokens-env", "BERTH_TEST_TOKENS",
        env={"BERTH_TEST_TOKENS": "s3cret-token"},
    )  # fmt: skip
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert_error(server.post("/v2/models/linear/infer", body), 401)
    server.token = "wrong-token"
    assert_error(server.post("/v2/models/linear/infer", body), 401)
    server.token = "s3cret-token"
    assert server.post("/v2/models/linear/infer", body).status == 200


# ------------------------------------------------------------- repository API


def test_repository_unloads_loads_and_refuses_a_replace(
    berth_server: Any, zoo: ModelZoo, tmp_path: Path
) -> None:
    """model_control_mode explicit: a native model unloads (its session is
    freed), loads again by name, and a second native model loads from a
    request; replacing a serving native version's config is refused with
    the way out, and the old version keeps serving."""
    repo = tmp_path / "repo"
    repo.mkdir()
    model = repo / "linear.onnx"
    model.write_bytes(zoo.onnx_linear().read_bytes())
    entry = {"name": "lin", "path": str(model), "runtime": "onnx", "backend": "native"}
    app = tmp_path / "app.yaml"
    app.write_text(json.dumps({"server": {"repositories": [str(repo)]}, "models": [entry]}))
    server = berth_server(["--config", str(app)], "--model-control-mode", "explicit", wait_for=["lin"])
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
    first = server.post("/v2/models/lin/infer", body)
    assert first.status == 200

    assert server.post("/v2/repository/models/lin/unload", None, timeout=60).status == 200
    assert_error(server.post("/v2/models/lin/infer", body), 404, "unloaded")
    assert server.post("/v2/repository/models/lin/load", None, timeout=60).status == 200
    again = server.post("/v2/models/lin/infer", body)
    assert again.status == 200 and again.json()["outputs"] == first.json()["outputs"]

    other = {**entry, "name": "lin2"}
    resp = server.post("/v2/repository/models/lin2/load", {"parameters": {"config": other}}, timeout=60)
    assert resp.status == 200, resp.body[:500]
    assert server.post("/v2/models/lin2/infer", body).json()["outputs"] == first.json()["outputs"]

    changed = {**entry, "max_batch_size": 8}
    resp = server.post("/v2/repository/models/lin/load", {"parameters": {"config": changed}}, timeout=60)
    msg = assert_error(resp, 400, "unload")
    assert "backend: native" in msg, msg
    assert server.post("/v2/models/lin/infer", body).status == 200


def test_backend_key_in_a_models_own_berth_yaml(berth_server: Any, zoo: ModelZoo, tmp_path: Path) -> None:
    """A model folder's berth.yaml may say backend: native."""
    folder = tmp_path / "linear"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(zoo.onnx_linear().read_bytes())
    (folder / "berth.yaml").write_text("backend: native\nmax_batch_size: 8\n")
    server = berth_server(str(folder), wait_for=["linear"])
    assert '"backend":"onnxruntime"' in server.log_text()  # it ran natively
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert server.post("/v2/models/linear/infer", body).status == 200


def test_allow_spinning_is_a_boolean_on_both_paths(berth_server: Any, zoo: ModelZoo, tmp_path: Path) -> None:
    """parameters.allow_spinning (docs/native.md, "Threads"): true and false
    load and answer alike on both paths, with two intra-op threads (a pool
    whose threads could spin); anything but a boolean is a load error that
    names the parameter, on both paths, and the server goes on."""
    import onnxruntime

    linear = str(zoo.onnx_linear())
    models = []
    for backend in ("native", "python"):
        for name, value in (("on", True), ("off", False), ("bad", "yes")):
            models.append({
                "name": f"{backend}_{name}", "path": linear, "runtime": "onnx", "backend": backend,
                "parameters": {"intra_op_threads": 2, "allow_spinning": value},
            })  # fmt: skip
    app = tmp_path / "app.yaml"
    app.write_text(json.dumps({"models": models}))
    good = [m["name"] for m in models if not m["name"].endswith("_bad")]
    server = berth_server(["--config", str(app)], "--no-exit-on-error", wait_for=good)

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    want = onnxruntime.InferenceSession(linear, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}]}
    for name in good:
        resp = server.post(f"/v2/models/{name}/infer", body)
        assert resp.status == 200, (name, resp.text)
        out = resp.json()["outputs"][0]
        assert out["shape"] == [3, 3], (name, out)
        np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(3, 3), want, rtol=1e-6)
    for backend in ("native", "python"):
        reason = _unavailable_reason(server, f"{backend}_bad")
        assert "parameters.allow_spinning" in reason and "true or false" in reason, (backend, reason)
        assert_error(server.post(f"/v2/models/{backend}_bad/infer", body), 503, "not ready")
    assert server.get("/v2/health/live").status == 200
