"""Traffic routes (docs/traffic.md): a served name split by weight across
versions or models (95/5 canary, 50/50 A/B) within binomial bounds over REST
and gRPC, sticky per caller by a header, shadow copies that are recorded but
never returned and never hold the primary, weights changed under load
through the admin API without losing a request, route metrics labelled by
the version that answered, and bad route configs refused with the key path."""

from __future__ import annotations

import http.client
import json
import math
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import (
    BerthServer,
    add_python_model,
    assert_error,
    berth_executable,
    fill,
    server_env,
    wait_until,
)

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client is in the test extra")
grpcclient = pytest.importorskip("tritonclient.grpc")

#: Every version answers its own number in "v" and echoes x in "y".
VERSION_SOURCE = '''
import numpy as np
import berth

VERSION = @VERSION@


class Versioned(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1]), berth.TensorSpec("v", "INT32", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        return {"y": x * 2, "v": np.full(x.shape, VERSION, dtype=np.int32)}
'''

#: A shadow that notes each request in MARKS, then waits until GATE exists.
GATED_SOURCE = '''
import os
import time
import numpy as np
import berth

MARKS = @MARKS@
GATE = @GATE@


class Versioned(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1]), berth.TensorSpec("v", "INT32", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        with open(MARKS, "a") as f:
            for value in x.tolist():
                f.write("%r\\n" % value)
        while not os.path.exists(GATE):
            time.sleep(0.01)
        return {"y": x * 0, "v": np.full(x.shape, 3, dtype=np.int32)}
'''

#: A shadow that always fails.
FAILING_SOURCE = '''
import berth


class Versioned(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1]), berth.TensorSpec("v", "INT32", [-1])]

    def predict(self, inputs):
        raise RuntimeError("the shadow is broken")
'''

ROUTES: list[dict[str, Any]] = [
    {"name": "split95", "split": [{"model": "fraud", "version": "1", "weight": 95},
                                  {"model": "fraud", "version": "2", "weight": 5}]},
    {"name": "ab", "split": [{"model": "fraud", "version": "1", "weight": 50},
                             {"model": "other", "weight": 50}],
     "sticky_header": "x-user-id"},
    # shares the name of a model: unversioned calls follow the route
    {"name": "fraud", "split": [{"model": "fraud", "version": "1", "weight": 1}],
     "shadow": {"model": "fraud", "version": "3", "rate": 1.0}},
    {"name": "failing", "split": [{"model": "fraud", "version": "2", "weight": 1}],
     "shadow": {"model": "broken"}},
    {"name": "live", "split": [{"model": "fraud", "version": "1", "weight": 100},
                               {"model": "fraud", "version": "2", "weight": 0}]},
]


def make_repo(root: Path, marks: Path, gate: Path) -> Path:
    for version in ("1", "2"):
        add_python_model(root, "fraud", fill(VERSION_SOURCE, VERSION=int(version)), "Versioned",
                         version=version, yaml_extra="instances: 1\n")
    add_python_model(root, "fraud", fill(GATED_SOURCE, MARKS=str(marks), GATE=str(gate)),
                     "Versioned", version="3", yaml_extra="instances: 1\n")
    add_python_model(root, "other", fill(VERSION_SOURCE, VERSION=7), "Versioned",
                     yaml_extra="instances: 1\n")
    add_python_model(root, "broken", FAILING_SOURCE, "Versioned", yaml_extra="instances: 1\n")
    return root


class Site:
    def __init__(self, server: BerthServer, marks: Path, gate: Path) -> None:
        self.server = server
        self.marks = marks
        self.gate = gate


@pytest.fixture(scope="module")
def site(module_server: Callable[..., BerthServer], tmp_path_factory: pytest.TempPathFactory) -> Site:
    d = tmp_path_factory.mktemp("traffic")
    marks, gate = d / "marks.txt", d / "gate"
    repo = make_repo(d / "repo", marks, gate)
    app = d / "app.yaml"
    app.write_text(json.dumps({"routes": ROUTES}))
    server = module_server(str(repo), "--config", str(app))
    return Site(server, marks, gate)


def body(x: float = 1.0) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [x]}]}


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = {"Content-Type": "application/json", **(headers or {})}
        self.conn.request("POST", path, body=json.dumps(doc), headers=h)
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw)

    def close(self) -> None:
        self.conn.close()


def answered_version(doc: dict[str, Any]) -> str:
    outs = {o["name"]: o for o in doc["outputs"]}
    v = str(outs["v"]["data"][0])
    model_version = doc["model_version"]
    # the response names the version that answered
    assert model_version == v or doc["model_name"] == "other", doc
    return f"{doc['model_name']}:{model_version}"


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= sigmas * sd


def scrape(server: BerthServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = server.get("/metrics").body.decode()
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# ------------------------------------------------------------------ splits


def test_rest_split_95_5_within_bounds(site: Site) -> None:
    n = 2000
    c = Client(site.server.port)
    seen: Counter[str] = Counter()
    try:
        for i in range(n):
            status, doc = c.post("/v2/models/split95/infer", body(float(i)))
            assert status == 200, doc
            assert doc["outputs"][0]["data"] == [2.0 * i]
            seen[answered_version(doc)] += 1
    finally:
        c.close()
    assert set(seen) <= {"fraud:1", "fraud:2"}, seen
    assert within(seen["fraud:2"], n, 0.05), seen
    samples = scrape(site.server)
    for version in ("1", "2"):
        assert metric(samples, "berth_route_requests_total", route="split95", model="fraud",
                      version=version, outcome="success") == seen[f"fraud:{version}"]


def test_grpc_split_50_50_across_models_within_bounds(site: Site) -> None:
    n = 2000
    client = grpcclient.InferenceServerClient(url=site.server.grpc_url)
    seen: Counter[str] = Counter()
    try:
        for i in range(n):
            inp = grpcclient.InferInput("x", [1], "FP32")
            inp.set_data_from_numpy(np.array([i], dtype=np.float32))
            result = client.infer("ab", [inp])
            resp = result.get_response()
            v = int(result.as_numpy("v")[0])
            assert float(result.as_numpy("y")[0]) == 2.0 * i
            assert (resp.model_name, resp.model_version) in (("fraud", "1"), ("other", "1"))
            assert v == (1 if resp.model_name == "fraud" else 7)
            seen[resp.model_name] += 1
    finally:
        client.close()
    assert within(seen["fraud"], n, 0.5), seen
    assert seen["fraud"] + seen["other"] == n


def test_sticky_header_keeps_each_caller_on_one_backend(site: Site) -> None:
    c = Client(site.server.port)
    by_user: dict[str, set[str]] = {}
    try:
        for user in range(60):
            for _ in range(5):
                status, doc = c.post("/v2/models/ab/infer", body(), {"X-User-Id": f"user-{user}"})
                assert status == 200, doc
                by_user.setdefault(f"user-{user}", set()).add(answered_version(doc))
    finally:
        c.close()
    assert all(len(v) == 1 for v in by_user.values()), by_user
    backends = Counter(next(iter(v)) for v in by_user.values())
    assert set(backends) == {"fraud:1", "other:1"}, backends


def test_grpc_sticky_by_metadata(site: Site) -> None:
    client = grpcclient.InferenceServerClient(url=site.server.grpc_url)
    try:
        for user in range(20):
            names = set()
            for _ in range(4):
                inp = grpcclient.InferInput("x", [1], "FP32")
                inp.set_data_from_numpy(np.array([1.0], dtype=np.float32))
                result = client.infer("ab", [inp], headers={"x-user-id": f"g{user}"})
                names.add(result.get_response().model_name)
            assert len(names) == 1, (user, names)
    finally:
        client.close()


def test_version_named_still_reaches_that_version(site: Site) -> None:
    # "fraud" is a route and a model: a version in the path bypasses the route
    resp = site.server.post("/v2/models/fraud/versions/2/infer", body())
    assert resp.status == 200, resp.body
    assert resp.json()["model_version"] == "2"
    # metadata of a route: its primary target's
    meta = site.server.get("/v2/models/split95")
    assert meta.status == 200 and meta.json()["name"] == "fraud"
    assert site.server.get("/v2/models/split95/ready").status == 200


def test_kserve_v1_predict_follows_the_route(site: Site) -> None:
    resp = site.server.post("/v1/models/split95:predict", {"instances": [1.0, 2.0]})
    assert resp.status == 200, resp.body
    assert "predictions" in resp.json()


# ------------------------------------------------------------------ shadow


def marks(site: Site) -> list[str]:
    try:
        return site.marks.read_text().split()
    except FileNotFoundError:
        return []


def test_shadow_gets_copies_and_never_holds_the_primary(site: Site) -> None:
    assert not site.gate.exists()
    before = scrape(site.server)
    n = 20
    c = Client(site.server.port)
    answers = []
    try:
        # the shadow (version 3) blocks on the gate: the primary answers anyway
        for i in range(n):
            status, doc = c.post("/v2/models/fraud/infer", body(float(i)))
            assert status == 200, doc
            answers.append(doc)
    finally:
        c.close()
    # every primary answer came while the shadow was blocked (no gate yet):
    # it has received a copy and answered none
    wait_until(lambda: marks(site), 30, "the shadow to receive a copy")
    blocked = scrape(site.server)
    shadow_ok = {"route": "fraud", "model": "fraud", "version": "3", "outcome": "success"}
    assert metric(blocked, "berth_shadow_requests_total", **shadow_ok) == metric(
        before, "berth_shadow_requests_total", **shadow_ok)
    for i, doc in enumerate(answers):
        assert doc["model_name"] == "fraud" and doc["model_version"] == "1"
        assert {o["name"]: o["data"] for o in doc["outputs"]} == {"y": [2.0 * i], "v": [1]}
    # the same answers as the version without any shadow
    direct = site.server.post("/v2/models/fraud/versions/1/infer", body(5.0)).json()
    assert direct["outputs"] == answers[5]["outputs"]
    site.gate.touch()
    wait_until(lambda: len(marks(site)) >= n, 30, "the shadow to see every copy")
    assert sorted(float(x) for x in marks(site)) == [float(i) for i in range(n)]

    def counted() -> bool:
        after = scrape(site.server)
        return metric(after, "berth_shadow_requests_total", route="fraud", model="fraud", version="3",
                      outcome="success") - metric(before, "berth_shadow_requests_total", route="fraud",
                                                  model="fraud", version="3", outcome="success") == n

    wait_until(counted, 30, "the shadow answers to be counted")
    after = scrape(site.server)
    assert metric(after, "berth_shadow_dropped_total", route="fraud", model="fraud", version="3") == 0
    # shadow answers are counted for their own version too
    assert metric(after, "berth_requests_total", model="fraud", version="3", protocol="rest",
                  outcome="success") >= n


def test_failing_shadow_never_fails_the_primary(site: Site) -> None:
    n = 30
    c = Client(site.server.port)
    try:
        for _ in range(n):
            status, doc = c.post("/v2/models/failing/infer", body(3.0))
            assert status == 200, doc
            assert doc["model_version"] == "2"
    finally:
        c.close()

    def failures() -> float:
        s = scrape(site.server)
        return metric(s, "berth_shadow_requests_total", route="failing", model="broken", version="1",
                      outcome="server_error")

    wait_until(lambda: failures() == n, 30, "the shadow failures to be counted")


# ---------------------------------------------------------- runtime changes


def test_weight_change_under_load_loses_nothing(site: Site) -> None:
    stop = threading.Event()
    changed_at = [math.inf]
    results: list[tuple[float, float, str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def sender() -> None:
        c = Client(site.server.port)
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    status, doc = c.post("/v2/models/live/infer", body())
                except Exception as e:  # noqa: BLE001 - any failure is a lost request
                    with lock:
                        errors.append(repr(e))
                    c.close()
                    c = Client(site.server.port)
                    continue
                with lock:
                    if status != 200:
                        errors.append(f"{status} {doc}")
                    else:
                        results.append((started, time.monotonic(), doc["model_version"]))
        finally:
            c.close()

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) >= 200, 60, "requests before the change")
        posted_at = time.monotonic()
        resp = site.server.post("/v2/routes/live", {"split": [
            {"model": "fraud", "version": "1", "weight": 0},
            {"model": "fraud", "version": "2", "weight": 100}]})
        assert resp.status == 200, resp.body
        changed_at[0] = time.monotonic()
        assert [t["weight"] for t in resp.json()["split"]] == [0, 100]
        wait_until(lambda: sum(1 for s, _, _ in results if s > changed_at[0]) >= 200, 60,
                   "requests after the change")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    before = [v for _, done, v in results if done < posted_at]
    after = [v for s, _, v in results if s > changed_at[0]]
    assert before and set(before) == {"1"}
    assert set(after) == {"2"}
    # back to the first version (a roll back)
    resp = site.server.post("/v2/routes/live", {"split": [{"model": "fraud", "version": "1", "weight": 1}]})
    assert resp.status == 200
    assert site.server.post("/v2/models/live/infer", body()).json()["model_version"] == "1"


def test_admin_api_documents_and_errors(site: Site) -> None:
    listing = site.server.get("/v2/routes")
    assert listing.status == 200
    names = [r["name"] for r in listing.json()["routes"]]
    assert names[:4] == ["split95", "ab", "fraud", "failing"]
    doc = site.server.get("/v2/routes/ab").json()
    assert doc == {"name": "ab", "sticky_header": "x-user-id", "shadow": None,
                   "split": [{"model": "fraud", "version": "1", "weight": 50},
                             {"model": "other", "weight": 50}]}
    assert_error(site.server.get("/v2/routes/nope"), 404, "nope")
    bad = site.server.post("/v2/routes/ab", {"split": [{"model": "fraud", "version": "1", "weight": -1}]})
    assert_error(bad, 400, "split[0].weight")
    bad = site.server.post("/v2/routes/ab", {"split": [{"model": "fraud", "version": "1", "weight": 0}]})
    assert_error(bad, 400, "split", "more than 0")
    bad = site.server.post("/v2/routes/ab", {"split": [{"model": "fraud", "version": "9", "weight": 1}]})
    assert_error(bad, 400, "split[0].version", "9")
    bad = site.server.post("/v2/routes/ab", {"shadow": {"model": "nope"}})
    assert_error(bad, 400, "shadow.model", "nope")
    assert_error(site.server.post("/v2/routes/ab", {"splitt": []}), 400, "splitt", "unknown key")
    assert_error(site.server.post("/v2/routes/ab", "[1"), 400, "json")
    assert_error(site.server.post("/v2/routes/new", {"sticky_header": "x"}), 400, "split", "required")
    # unchanged by the refused changes
    assert site.server.get("/v2/routes/ab").json() == doc
    # a new route, then its sticky header removed
    made = site.server.post("/v2/routes/fresh", {"split": [{"model": "other", "weight": 1}],
                                                 "sticky_header": "x-a"})
    assert made.status == 200, made.body
    assert site.server.post("/v2/models/fresh/infer", body()).json()["model_name"] == "other"
    changed = site.server.post("/v2/routes/fresh", {"sticky_header": None})
    assert changed.json()["sticky_header"] is None and changed.json()["split"][0]["model"] == "other"


# -------------------------------------------------------------- auth, config


def test_admin_api_needs_the_admin_token(berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_python_model(repo, "other", fill(VERSION_SOURCE, VERSION=7), "Versioned", yaml_extra="instances: 1\n")
    (tmp_path / "admin").write_text("admin-secret\n")
    (tmp_path / "users").write_text("user-secret\n")
    app = tmp_path / "app.yaml"
    app.write_text(json.dumps({"routes": [{"name": "r", "split": [{"model": "other", "weight": 1}]}],
                               "server": {"auth_tokens_file": str(tmp_path / "users"),
                                          "admin_tokens_file": str(tmp_path / "admin")}}))
    server = berth_server(str(repo), "--config", str(app))
    change = {"split": [{"model": "other", "weight": 2}]}
    assert_error(server.post("/v2/routes/r", change), 401, "token")
    assert_error(server.post("/v2/routes/r", change, {"Authorization": "Bearer user-secret"}), 403, "admin")
    assert server.get("/v2/routes").status == 401
    from berth_e2e import http_call

    assert http_call(server.port, "GET", "/v2/routes/r",
                     headers={"Authorization": "Bearer user-secret"}).status == 200
    ok = server.post("/v2/routes/r", change, {"Authorization": "Bearer admin-secret"})
    assert ok.status == 200 and ok.json()["split"][0]["weight"] == 2
    infer = server.post("/v2/models/r/infer", body(), {"Authorization": "Bearer user-secret"})
    assert infer.status == 200 and infer.json()["model_name"] == "other"


BAD_ROUTES = [
    ([{"name": "r", "split": [{"model": "m", "weight": -1}]}], "routes[0].split[0].weight"),
    ([{"name": "r", "split": [{"model": "m", "weight": 0}]}], "routes[0].split"),
    ([{"name": "r", "split": [{"model": "m", "weight": 1}, {"model": "zz", "weight": 1}]}],
     "routes[0].split[1].model"),
    ([{"name": "r", "split": [{"model": "m", "version": "4", "weight": 1}]}], "routes[0].split[0].version"),
    ([{"name": "r", "splitt": []}], "routes[0].splitt"),
    ([{"name": "r", "split": []}], "routes[0].split"),
    ([{"name": "r", "split": [{"model": "m", "weight": 1}]},
      {"name": "r", "split": [{"model": "m", "weight": 1}]}], "routes[1].name"),
    ([{"name": "r", "split": [{"model": "m", "weight": 1}], "shadow": {"model": "m", "rate": 2}}],
     "routes[0].shadow.rate"),
    ([{"name": "r", "split": [{"model": "m", "weight": 1}], "sticky_header": "bad header"}],
     "routes[0].sticky_header"),
]


@pytest.mark.parametrize(("routes", "path"), BAD_ROUTES)
def test_bad_route_config_is_refused_with_the_key_path(tmp_path: Path, routes: Any, path: str) -> None:
    repo = tmp_path / "repo"
    add_python_model(repo, "m", fill(VERSION_SOURCE, VERSION=1), "Versioned")
    app = tmp_path / "app.yaml"
    app.write_text(json.dumps({"routes": routes}))
    proc = subprocess.run([berth_executable(), "serve", str(repo), "--config", str(app), "--port", "0",
                           "--grpc-port", "0"], env=server_env(), capture_output=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode != 0
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert path in out, out[-2000:]


# -------------------------------------------------------------------- drain


def test_drain_with_a_blocked_shadow(berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    marks, gate = tmp_path / "marks.txt", tmp_path / "gate"
    repo = make_repo(tmp_path / "repo", marks, gate)
    app = tmp_path / "app.yaml"
    app.write_text(json.dumps({"routes": ROUTES}))
    server = berth_server(str(repo), "--config", str(app))
    for i in range(5):
        resp = server.post("/v2/models/fraud/infer", body(float(i)))
        assert resp.status == 200
    wait_until(lambda: marks.exists(), 30, "the shadow to block")
    server.signal(signal.SIGTERM)
    # the drain does not wait for shadow copies: the engine stops its workers
    assert server.wait(timeout=30) == 0


# ---------------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([berth_executable(), "route", *args], env=server_env(), capture_output=True,
                          text=True, timeout=60)


def test_berth_route_command(site: Site) -> None:
    url = site.server.url
    done = run_cli("set", "live", "1=30", "2=70", "--url", url)
    assert done.returncode == 0, done.stderr
    assert [(t["version"], t["weight"]) for t in json.loads(done.stdout)["split"]] == [("1", 30), ("2", 70)]
    shown = run_cli("show", "live", "--url", url)
    assert json.loads(shown.stdout)["split"][1]["weight"] == 70
    mirrored = run_cli("set", "live", "--shadow", "other@0.5", "--url", url)
    assert json.loads(mirrored.stdout)["shadow"] == {"model": "other", "rate": 0.5}
    cleared = run_cli("set", "live", "--no-shadow", "--url", url)
    assert json.loads(cleared.stdout)["shadow"] is None
    listed = run_cli("list", "--url", url)
    assert "live" in [r["name"] for r in json.loads(listed.stdout)["routes"]]
    bad = run_cli("set", "live", "1=-5", "--url", url)
    assert bad.returncode != 0 and "split[0].weight" in bad.stderr
    gone = run_cli("show", "nope", "--url", url)
    assert gone.returncode != 0 and "404" in gone.stderr
