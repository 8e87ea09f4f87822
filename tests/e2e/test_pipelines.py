"""Pipelines end to end (docs/pipelines.md): a real server serving a
berth.yaml with a sequence (Python tokenizer -> scikit-learn model trained
here -> Python post-processor), an ensemble, switches on an input, a header
and a parameter, and a step that fails; called with tritonclient over REST
and gRPC and with plain HTTP. The text-pipeline example is served from its
Python declaration and its client is run, so the walk-through stays true.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from berth_e2e import (  # noqa: E402
    ROOT,
    BerthServer,
    assert_error,
    berth_executable,
    infer_body,
    outputs_by_name,
    server_env,
    tensor,
)
from tritonclient.utils import InferenceServerException  # noqa: E402

EXAMPLE = ROOT / "examples" / "text-pipeline"

OPS_SOURCE = '''
import numpy as np
import berth


def double(inputs):
    return {"y": inputs["x"] * 2.0}


def negate(inputs):
    return {"y": -inputs["x"]}


def add(inputs):
    return {"y": inputs["a"] + inputs["b"]}


def nap(inputs):
    import time

    time.sleep(1.5)
    return {"y": inputs["y"]}


def check(inputs):
    if (inputs["y"] > 100).any():
        raise ValueError("a value is above 100")
    return {"y": inputs["y"]}
'''

APP_CONFIG = '''
models:
  - {name: clf, path: text-pipeline/model/model.joblib, max_batch_size: 64,
     max_queue_delay_us: 20000}
  - {name: double, path: ops.py, runtime: python, class: double, max_batch_size: 16}
  - {name: negate, path: ops.py, runtime: python, class: negate, max_batch_size: 16}

pipelines:
  - name: sentiment
    inputs: [{name: text, datatype: BYTES, shape: [-1]}]
    steps:
      - {name: tokenize, python: text-pipeline/text.py:tokenize, max_batch_size: 64}
      - {name: classify, model: clf}
      - name: label
        python: text-pipeline/text.py:label
        max_batch_size: 64
        inputs: {predict_proba: classify.predict_proba}
    outputs: {label: label.label, score: label.score}

  - name: plain                 # default wiring only
    steps:
      - {name: tokenize, model: sentiment.tokenize}
      - {name: classify, model: clf}
      - {name: label, model: sentiment.label}   # takes predict_proba, not predict

  - name: ens
    steps:
      - {name: a, model: double, inputs: {x: $x}}
      - {name: b, model: negate, inputs: {x: $x}}
      - {name: sum, python: ops.py:add, inputs: {a: a.y, b: b.y}}
    outputs: {sum: sum.y, doubled: a.y}

  - name: route
    steps:
      - name: pick
        switch:
          input: x
          cases: [{gt: 10, model: negate}]
          default: double

  - name: tiered
    steps:
      - name: pick
        switch:
          header: x-tier
          cases: [{equals: gold, model: negate}, {in: [silver, bronze], model: double}]

  - name: by_param
    steps:
      - name: pick
        switch: {parameter: mode, cases: [{equals: neg, model: negate}],
                 default: double}

  - name: fragile
    steps:
      - {name: grow, model: double}
      - {name: check, python: ops.py:check}

  - name: sleepy
    steps:
      - {name: grow, model: double}
      - {name: nap, python: ops.py:nap}
'''


def _prepare_example(dest: Path) -> Path:
    """A copy of examples/text-pipeline with its model trained."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("model", "__pycache__"))
    subprocess.run(
        [sys.executable, "train.py"], cwd=dest, check=True, timeout=120, capture_output=True
    )
    return dest


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipelines")
    _prepare_example(root / "text-pipeline")
    (root / "ops.py").write_text(textwrap.dedent(OPS_SOURCE))
    (root / "berth.yaml").write_text(APP_CONFIG)
    return root


@pytest.fixture(scope="module")
def server(module_server: Callable[..., BerthServer], app_dir: Path) -> BerthServer:
    return module_server([], "--config", str(app_dir / "berth.yaml"), "--instances", "1")


def _x(values: list[float]) -> dict[str, Any]:
    return tensor("x", "FP64", [len(values), 1], values)


def _ys(doc: dict[str, Any], name: str = "y") -> list[float]:
    return [float(v) for v in outputs_by_name(doc)[name]["data"]]


# ---------------------------------------------------------------- sequence


def _http_texts(url: str, texts: list[str], binary: bool) -> tuple[list[str], np.ndarray]:
    # closed here, in the thread that made it: left to the garbage collector,
    # its gevent pool may be closed from another thread (no hub there), an
    # unraisable exception that pytest turns into a failure
    client = httpclient.InferenceServerClient(url)
    try:
        inp = httpclient.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object),
                                binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "score")]
        result = client.infer("sentiment", [inp], outputs=outs)
    finally:
        client.close()
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy("label")]
    return labels, result.as_numpy("score")


def test_sequence_over_rest_json_binary_and_grpc(server: BerthServer) -> None:
    texts = ["what a wonderful great day", "awful, terrible and bad"]
    for binary in (False, True):
        labels, scores = _http_texts(server.triton_url, texts, binary)
        assert labels == ["positive", "negative"]
        assert scores.dtype == np.float64 and ((scores > 0.5) & (scores <= 1)).all()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    result = client.infer("sentiment", [inp])
    assert [v.decode() for v in result.as_numpy("label")] == ["positive", "negative"]
    # plain JSON, and one requested output only
    doc = server.infer_ok(
        "sentiment",
        infer_body([tensor("text", "BYTES", [1], ["good quality"])], outputs=["label"]),
    )
    assert doc["model_name"] == "sentiment"
    assert [o["name"] for o in doc["outputs"]] == ["label"]
    assert doc["outputs"][0]["data"] == ["positive"]


def test_kserve_v1_predict_on_a_pipeline(server: BerthServer) -> None:
    resp = server.post("/v1/models/sentiment:predict", {"instances": ["a great, happy day"]})
    assert resp.status == 200, resp.body
    assert resp.json() == {"predictions": ["positive"]}
    doc = server.get("/v1/models/sentiment").json()
    assert (doc["name"], doc["ready"], doc["id"]) == ("sentiment", True, "sentiment")


def test_default_wiring_passes_what_the_next_model_takes(server: BerthServer) -> None:
    doc = server.infer_ok("plain", infer_body([tensor("text", "BYTES", [1], ["a great day"])]))
    assert outputs_by_name(doc)["label"]["data"] == ["positive"]
    meta = server.get("/v2/models/plain").json()
    assert [i["name"] for i in meta["inputs"]] == ["text"]
    assert sorted(o["name"] for o in meta["outputs"]) == ["label", "score"]


def test_metadata_ready_and_config(server: BerthServer) -> None:
    doc = server.get("/v2/models/sentiment").json()
    assert doc["name"] == "sentiment"
    assert doc["platform"] == "pipeline"
    assert doc["versions"] == ["1"]
    assert doc["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in doc["outputs"]} == {"label": "BYTES", "score": "FP64"}
    assert server.get("/v2/models/sentiment/ready").status == 200
    assert server.get("/v2/models/sentiment/config").json()["platform"] == "pipeline"
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("sentiment")
    meta = client.get_model_metadata("sentiment", as_json=True)
    assert meta["platform"] == "pipeline"
    assert [i["name"] for i in meta["inputs"]] == ["text"]
    stats = server.get("/v2/models/sentiment/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("sentiment", "1")]
    grpc_stats = client.get_inference_statistics("sentiment", as_json=True)
    assert grpc_stats["model_stats"][0]["name"] == "sentiment"
    # an undeclared pipeline derives its signature from its steps' models
    ens = server.get("/v2/models/ens").json()
    assert ens["platform"] == "pipeline"


def test_signature_is_checked_against_the_pipeline(server: BerthServer) -> None:
    resp = server.infer("sentiment", infer_body([tensor("words", "BYTES", [1], ["hi"])]))
    assert_error(resp, 400, "words", "sentiment")


def test_concurrent_requests_get_their_own_answers_and_steps_batch(server: BerthServer) -> None:
    before = server.get("/v2/models/clf/stats").json()["model_stats"][0]
    good = ["great", "wonderful", "excellent", "fantastic", "good", "amazing", "nice", "happy"]
    bad = ["awful", "terrible", "horrible", "bad", "poor", "boring", "ugly", "sad"]
    texts = [(w, "positive") for w in good] * 3 + [(w, "negative") for w in bad] * 3

    def one(item: tuple[str, str]) -> tuple[str, str]:
        labels, _ = _http_texts(server.triton_url, [f"it was {item[0]}"], binary=True)
        return labels[0], item[1]

    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(one, texts))
    assert all(got == want for got, want in answers), answers
    after = server.get("/v2/models/clf/stats").json()["model_stats"][0]
    requests = after["inference_count"] - before["inference_count"]
    batches = after["execution_count"] - before["execution_count"]
    assert requests == len(texts)
    # the classifier's step jobs were batched with each other
    assert batches < requests, (batches, requests)


# ------------------------------------------------------ ensemble and switch


def test_ensemble_fans_out_and_combines(server: BerthServer) -> None:
    doc = server.infer_ok("ens", infer_body([_x([1.5, -4.0])]))
    assert _ys(doc, "sum") == [1.5, -4.0]  # 2x + (-x)
    assert _ys(doc, "doubled") == [3.0, -8.0]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput("x", [1, 1], "FP64")
    inp.set_data_from_numpy(np.array([[7.0]]))
    result = client.infer("ens", [inp])
    assert result.as_numpy("sum").tolist() == [[7.0]]


def test_grpc_stream_into_pipelines(server: BerthServer) -> None:
    import queue

    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for value in (1.0, 2.0, 60.0):
            inp = grpcclient.InferInput("x", [1, 1], "FP64")
            inp.set_data_from_numpy(np.array([[value]]))
            client.async_stream_infer("fragile", [inp], request_id=str(value))
        got = [results.get(timeout=60) for _ in range(3)]
    finally:
        client.stop_stream()
    answers = {r.get_response().id: r.as_numpy("y").tolist() for r, e in got if e is None}
    errors = [str(e) for r, e in got if e is not None]
    assert answers == {"1.0": [[2.0]], "2.0": [[4.0]]}
    assert len(errors) == 1 and 'step "check"' in errors[0], errors


def test_switch_on_an_input_takes_both_branches(server: BerthServer) -> None:
    assert _ys(server.infer_ok("route", infer_body([_x([20.0])]))) == [-20.0]
    assert _ys(server.infer_ok("route", infer_body([_x([3.0])]))) == [6.0]


def test_switch_on_a_header_over_rest_and_grpc(server: BerthServer) -> None:
    body = infer_body([_x([5.0])])
    gold = server.post("/v2/models/tiered/infer", body, headers={"X-Tier": "gold"})
    assert gold.status == 200, gold.body
    assert _ys(gold.json()) == [-5.0]
    silver = server.post("/v2/models/tiered/infer", body, headers={"X-Tier": "silver"})
    assert _ys(silver.json()) == [10.0]
    # no case matches and there is no default: 400 naming the step
    assert_error(server.infer("tiered", body), 400, 'step "pick"', "x-tier")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput("x", [1, 1], "FP64")
    inp.set_data_from_numpy(np.array([[5.0]]))
    assert client.infer("tiered", [inp], headers={"x-tier": "gold"}).as_numpy("y").tolist() == [[-5.0]]
    assert client.infer("tiered", [inp], headers={"x-tier": "bronze"}).as_numpy("y").tolist() == [[10.0]]


def test_priority_and_timeout_parameters_are_checked(server: BerthServer) -> None:
    high = server.infer_ok("ens", infer_body([_x([1.0])], parameters={"priority": 1}))
    assert _ys(high, "sum") == [1.0]
    assert_error(server.infer("ens", infer_body([_x([1.0])], parameters={"priority": 7})),
                 400, "priority")
    assert_error(server.infer("ens", infer_body([_x([1.0])], parameters={"timeout": -1})),
                 400, "timeout")


def test_switch_on_a_parameter(server: BerthServer) -> None:
    neg = server.infer_ok("by_param", infer_body([_x([2.0])], parameters={"mode": "neg"}))
    assert _ys(neg) == [-2.0]
    assert _ys(server.infer_ok("by_param", infer_body([_x([2.0])]))) == [4.0]


# ------------------------------------------------------------------ errors


def test_a_failing_step_names_itself(server: BerthServer) -> None:
    assert _ys(server.infer_ok("fragile", infer_body([_x([10.0])]))) == [20.0]
    resp = server.infer("fragile", infer_body([_x([60.0])]))
    assert_error(resp, 500, 'step "check"', "fragile.check", "above 100")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput("x", [1, 1], "FP64")
    inp.set_data_from_numpy(np.array([[60.0]]))
    with pytest.raises(InferenceServerException) as info:
        client.infer("fragile", [inp])
    assert 'step "check"' in str(info.value)
    # the server goes on serving
    assert _ys(server.infer_ok("fragile", infer_body([_x([1.0])]))) == [2.0]


def test_the_request_timeout_covers_the_whole_pipeline(server: BerthServer) -> None:
    body = infer_body([_x([1.0])], parameters={"timeout": 300_000})
    assert_error(server.infer("sleepy", body), 504, 'step "nap"', "timed out")
    # the late answer of the step is dropped; the pipeline still works
    assert _ys(server.infer_ok("sleepy", infer_body([_x([1.0])]))) == [2.0]


def test_a_client_that_leaves_mid_pipeline_harms_nothing(server: BerthServer) -> None:
    import http.client
    import socket

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.3)
    body = json.dumps(infer_body([_x([1.0])])).encode()
    conn.request("POST", "/v2/models/sleepy/infer", body, {"Content-Type": "application/json"})
    with pytest.raises((socket.timeout, TimeoutError)):
        conn.getresponse()
    conn.close()  # gone while the nap step runs
    assert _ys(server.infer_ok("sleepy", infer_body([_x([4.0])]))) == [8.0]
    assert _ys(server.infer_ok("ens", infer_body([_x([1.0])])), "sum") == [1.0]


def test_pipeline_metrics(server: BerthServer) -> None:
    server.infer_ok("route", infer_body([_x([1.0])]))
    assert server.infer("fragile", infer_body([_x([99.0])])).status == 500
    text = server.get("/metrics").body.decode()
    m = re.search(r'^berth_pipeline_requests_total\{pipeline="route",outcome="success"\} (\d+)$',
                  text, re.M)
    assert m is not None and int(m.group(1)) >= 1, text[-3000:]
    assert re.search(r'^berth_pipeline_requests_total\{pipeline="fragile",outcome="server_error"\} '
                     r'[1-9]', text, re.M)
    assert 'berth_pipeline_request_duration_seconds_count{pipeline="sentiment"}' in text
    # each step's model is counted as usual
    assert re.search(r'^berth_requests_total\{model="clf",version="1",protocol="rest",'
                     r'outcome="success"\} [1-9]', text, re.M), text[:3000]


@pytest.mark.parametrize(
    ("protocol", "version"), [("http", None), ("grpc", None), ("http", "1")]
)
def test_perf_analyzer_loads_a_pipeline(server: BerthServer, protocol: str,
                                        version: str | None) -> None:
    """perf_analyzer reads the pipeline's metadata, config and statistics and
    drives it with binary tensors, over HTTP and gRPC, with and without the
    version named: without -x it takes the version whose statistics' queue
    count grew during its measurement, so the pipeline must count there."""
    import perf_analyzer_bin

    binary = perf_analyzer_bin.find()
    if binary is None or perf_analyzer_bin.missing_libraries(binary):
        pytest.skip("perf_analyzer is not usable here (tests/e2e/perf_analyzer_bin.py)")
    url = server.triton_url if protocol == "http" else server.grpc_url
    # A fixed request count: exactly `requests` requests, one measurement, no
    # stability check (time windows failed "to obtain stable measurement" on
    # a busy machine). Completeness is asserted, never speed.
    requests = 30
    args = [binary, "-m", "sentiment", "-u", url, "-i", protocol, "--shape", "text:1",
            "--concurrency-range", "2", "--request-count", str(requests)]
    if version is not None:
        args += ["-x", version]

    def counts() -> tuple[int, int]:
        (st,) = server.get("/v2/models/sentiment/stats").json()["model_stats"]
        text = server.get("/metrics").body.decode()
        m = re.search(r'^berth_pipeline_requests_total\{pipeline="sentiment",outcome="success"\} '
                      r'(\d+)$', text, re.M)
        return st["inference_stats"]["success"]["count"], int(m.group(1)) if m else 0

    before = counts()
    res = subprocess.run(
        args, capture_output=True, text=True, env=perf_analyzer_bin.runtime_env(), timeout=240,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    m = re.search(r"Client:\s*\n\s+Request count: (\d+)", out)
    assert m is not None and int(m.group(1)) == requests, out[-3000:]
    # perf_analyzer's own server-side delta may miss the first requests (it
    # reads the statistics first after its load started); the exact count is
    # checked below on the statistics and metrics read around the run
    m = re.search(r"Successful request count: (\d+)", out)
    assert m is not None and 1 <= int(m.group(1)) <= requests, out[-3000:]
    # the server side's breakdown: queued until the steps start, then the steps
    assert re.search(r"Avg request latency: \d+ usec .*queue \d+ usec .*compute infer "
                     r"[1-9]\d* usec", out), out[-3000:]
    # Berth counted every one of them, in the statistics and the metrics
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (requests, requests), (before, after)


def test_pipeline_statistics_count_queue_and_compute(server: BerthServer) -> None:
    """A pipeline's /stats counts every answered request in success, queue
    and the three compute entries (Triton's clients expect equal counts)."""
    assert server.infer("ens", infer_body([_x([1.0])])).status == 200
    doc = server.get("/v2/models/ens/stats").json()
    (st,) = doc["model_stats"]
    inf = st["inference_stats"]
    n = inf["success"]["count"]
    assert n >= 1 and st["version"] == "1"
    assert inf["queue"]["count"] == n
    assert inf["compute_input"]["count"] == inf["compute_infer"]["count"] == \
        inf["compute_output"]["count"] == n
    assert inf["compute_infer"]["ns"] > 0
    client = grpcclient.InferenceServerClient(server.grpc_url)
    g = client.get_inference_statistics("ens", as_json=True)["model_stats"][0]
    assert g["name"] == "ens" and g["version"] == "1"
    assert int(g["inference_stats"]["queue"]["count"]) >= n


def _serve_fails(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        [berth_executable(), "serve", *args, "--port", "0", "--grpc-port", "0"],
        cwd=cwd, capture_output=True, text=True, timeout=60, env=server_env(),
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc.stderr


@pytest.mark.parametrize(
    ("pipelines", "message"),
    [
        ("[{name: p, steps: [{name: a, model: double}, {name: b, model: nope}]}]",
         'pipelines[0].steps[1].model: unknown model "nope"'),
        ("[{name: p, steps: [{name: a, model: double, inputs: {x: b.y}},"
         " {name: b, model: double, inputs: {x: a.y}}]}]",
         "pipelines[0].steps: the steps form a cycle (a -> b -> a)"),
        ("[{name: p, steps: [{name: a, model: double}], outputs: {y: zz.y}}]",
         'pipelines[0].outputs.y: unknown step "zz"'),
    ],
)
def test_a_bad_pipeline_is_refused_at_start(app_dir: Path, tmp_path: Path, pipelines: str,
                                            message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        f"models:\n  - {{name: double, path: {app_dir / 'ops.py'}, runtime: python, "
        f"class: double}}\npipelines: {pipelines}\n"
    )
    assert message in _serve_fails(["--config", str(cfg)], tmp_path)


# ------------------------------------------------- the Python declaration


def _print_config(args: list[str], cwd: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [berth_executable(), "serve", *args, "--print-config"],
        cwd=cwd, capture_output=True, text=True, timeout=60, env=server_env(), check=True,
    )
    return json.loads(proc.stdout)


def test_the_python_declaration_makes_the_same_document(tmp_path: Path) -> None:
    example = _prepare_example(tmp_path / "text-pipeline")
    from_yaml = _print_config(["--config", "berth.yaml"], example)
    from_py = _print_config(["--config", "app.py"], example)
    assert from_py["pipelines"] == from_yaml["pipelines"]
    assert sorted(from_py["models"], key=lambda m: m["name"]) == sorted(
        from_yaml["models"], key=lambda m: m["name"]
    )


def test_the_text_pipeline_example_runs(berth_server: Callable[..., BerthServer],
                                        tmp_path: Path) -> None:
    """docs/pipelines.md's walk-through: train, serve app.py, run client.py."""
    example = _prepare_example(tmp_path / "text-pipeline")
    server = berth_server([], "--config", str(example / "app.py"), "--instances", "1")
    out = subprocess.run(
        [sys.executable, "client.py", server.triton_url],
        cwd=example, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "'what a great day': positive" in out, out
    assert "'this is awful': negative" in out, out


def test_a_function_serves_as_a_model(berth_server: Callable[..., BerthServer],
                                      app_dir: Path) -> None:
    """The python runtime serves a plain function (what python: steps use)."""
    server = berth_server(f"{app_dir / 'ops.py'}:negate", "--instances", "1")
    doc = server.infer_ok("ops", infer_body([_x([3.0])]))
    assert _ys(doc) == [-3.0]
    assert server.get("/v2/models/ops").json()["platform"] == "python_function"


def test_sigterm_lets_an_accepted_pipeline_finish(berth_server: Callable[..., BerthServer],
                                                  app_dir: Path, tmp_path: Path) -> None:
    """A step that starts after SIGTERM still runs: the drain finishes the
    pipelines it accepted."""
    import signal
    import threading

    cfg = tmp_path / "drain.yaml"
    cfg.write_text(
        f"models:\n  - {{name: double, path: {app_dir / 'ops.py'}, runtime: python, "
        "class: double}\n"
        "pipelines:\n  - name: drowsy\n    steps:\n"
        f"      - {{name: nap, python: {app_dir / 'ops.py'}:nap, inputs: {{y: $x}}}}\n"
        "      - {name: grow, model: double, inputs: {x: nap.y}}\n"
    )
    server = berth_server([], "--config", str(cfg), "--instances", "1", "--drain-timeout", "30")
    got: list[Any] = []
    caller = threading.Thread(
        target=lambda: got.append(server.infer("drowsy", infer_body([_x([5.0])]), timeout=60))
    )
    caller.start()
    # the nap step is running (1.5 s); grow starts after the signal
    server.wait_queue("drowsy.nap", inflight=1, queued=0)
    server.signal(signal.SIGTERM)
    caller.join(60)
    assert got and got[0].status == 200, got[0].body if got else "no answer"
    assert _ys(got[0].json()) == [10.0]
    assert server.wait(30) == 0
