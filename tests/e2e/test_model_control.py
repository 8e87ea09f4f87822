"""Model control modes and the path rule (docs/security.md), tried as an
attacker would: the repository API is off by default over REST and gRPC; in
explicit mode a load may name only files inside the served repositories (no
path outside, no symlink out, no ``..``), entries whose runtime runs code
need an admin token, and a failed load never quotes the file it read. No
payload's code ever runs: each would write a marker file. And a replace of a
serving version under 4-thread load drops nothing, with a broken entry (the
old version keeps serving) and a good one (answers switch after the load)."""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from berth_e2e import (
    BROKEN_LOAD_SOURCE,
    BerthServer,
    add_python_model,
    assert_error,
    fill,
    http_call,
    outputs_by_name,
    wait_until,
    write_python_model,
)
from tritonclient.utils import InferenceServerException

ADMIN = "mc-admin-token"
USER = "mc-user-token"

ADDER_SOURCE = '''
import berth


class Adder(berth.Model):
    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] + @ADD@}
'''

MARKER_PY = '''
open(@MARKER@, "w").write("imported")
import berth


class Evil(berth.Model):
    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("x", "FP64", [-1])]

    def predict(self, inputs):
        return inputs
'''


class _Payload:
    """Unpickling calls open(marker, "w"): the file appears if code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


@pytest.fixture
def attack(tmp_path: Path) -> dict[str, Path]:
    """A repository with one model, and payloads outside it."""
    repo = tmp_path / "repo"
    add_python_model(repo, "adder", fill(ADDER_SOURCE, ADD=1), "Adder", yaml_extra="instances: 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "MARKER"
    pkl = outside / "evil.joblib"
    pkl.write_bytes(pickle.dumps(_Payload(str(marker))))
    py = outside / "evil.py"
    py.write_text(MARKER_PY.replace("@MARKER@", repr(str(marker))))
    # the same payloads inside the repository: only an admin may load them
    inside_py = repo / "evil" / "1" / "model.py"
    inside_py.parent.mkdir(parents=True)
    inside_py.write_text(py.read_text())
    inside_pkl = repo / "pickled" / "1" / "model.joblib"
    inside_pkl.parent.mkdir(parents=True)
    inside_pkl.write_bytes(pkl.read_bytes())
    (repo / "link" / "1").mkdir(parents=True)
    (repo / "link" / "1" / "model.py").symlink_to(py)
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(ADMIN + "\n")
    users = tmp_path / "user-tokens"
    users.write_text(USER + "\n")
    return {"repo": repo, "marker": marker, "pkl": pkl, "py": py, "inside_py": inside_py,
            "inside_pkl": inside_pkl, "tokens": tokens, "users": users, "outside": outside}


def entry(name: str, path: Path | str, runtime: str = "python", **extra: Any) -> dict[str, Any]:
    e = {"name": name, "version": "1", "runtime": runtime, "path": str(path), **extra}
    if runtime == "python":
        e.setdefault("class", "Evil")
    return e


def load(server: BerthServer, name: str, config: Any = None, token: str | None = None) -> Any:
    body = {"parameters": {"config": config}} if config is not None else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return server.post(f"/v2/repository/models/{name}/load", body, headers=headers, timeout=120)


def start(berth_server: Callable[..., BerthServer], a: dict[str, Path], *flags: str) -> BerthServer:
    """Serves the whole repository folder as the root, but loads only adder
    at start (the folder holds payloads that must not load)."""
    app = a["repo"].parent / "app.yaml"
    app.write_text(json.dumps({
        "server": {"repositories": [str(a["repo"])]},
        "models": [{"name": "adder", "runtime": "python", "class": "Adder", "instances": 1,
                    "path": str(a["repo"] / "adder" / "1" / "model.py")}],
    }))
    return berth_server([], "--config", str(app), *flags)


def x_body(value: float = 1.0) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [value]}]}


# ---------------------------------------------------------------- mode none


def test_default_mode_refuses_load_and_unload(berth_server: Callable[..., BerthServer],
                                              attack: dict[str, Path]) -> None:
    server = berth_server(str(attack["repo"] / "adder"), "--name", "adder")
    workers = set(server.worker_pids().values())
    for cfg in (entry("evil", attack["py"]), entry("evil", attack["pkl"], "sklearn"),
                entry("evil", attack["inside_py"]), None):
        resp = server.post("/v2/repository/models/evil/load",
                           {"parameters": {"config": cfg}} if cfg else None)
        assert_error(resp, 403, "--model-control-mode explicit")
    assert_error(server.post("/v2/repository/models/adder/unload", None), 403,
                 "--model-control-mode explicit")
    assert_error(server.post("/v2/repository/models/adder/load", None), 403, "model control mode")
    # the index stays readable, and nothing changed
    idx = server.post("/v2/repository/index", None)
    assert idx.status == 200 and idx.json() == [
        {"name": "adder", "version": "1", "state": "READY", "reason": "", "resident": True}]
    # tritonclient over HTTP and gRPC
    h = httpclient.InferenceServerClient(server.triton_url)
    with pytest.raises(InferenceServerException, match="model-control-mode explicit"):
        h.load_model("evil", config=json.dumps(entry("evil", attack["py"])))
    with pytest.raises(InferenceServerException, match="model-control-mode explicit"):
        h.unload_model("adder")
    g = grpcclient.InferenceServerClient(server.grpc_url)
    for call in (lambda: g.load_model("evil", config=json.dumps(entry("evil", attack["pkl"], "sklearn"))),
                 lambda: g.load_model("adder"), lambda: g.unload_model("adder")):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert "PERMISSION_DENIED" in str(info.value.status())
        assert "--model-control-mode explicit" in str(info.value)
    assert g.is_model_ready("adder")
    g.close()
    assert outputs_by_name(server.infer_ok("adder", x_body(1.0)))["y"]["data"] == [2.0]
    assert set(server.worker_pids().values()) == workers  # no worker was started
    assert not attack["marker"].exists()


# ------------------------------------------------------------ explicit mode


def test_explicit_mode_path_rule(berth_server: Callable[..., BerthServer],
                                 attack: dict[str, Path]) -> None:
    server = start(berth_server, attack, "--model-control-mode", "explicit")
    repo = attack["repo"]
    # the operator's models load and unload by name without a token
    assert server.post("/v2/repository/models/adder/unload", None).status == 200
    assert load(server, "adder").status == 200
    assert server.infer_ok("adder", x_body())
    # outside the repository: refused before anything is opened, whether it
    # exists or not (the same answer: no existence oracle)
    for path in (attack["pkl"], attack["outside"] / "missing.onnx", "/etc/passwd"):
        msg = assert_error(load(server, "x", entry("x", path, "onnx")), 403, "not inside a served repository")
        assert "does not exist" not in msg
    assert_error(load(server, "x", entry("x", attack["py"])), 403, "not inside")
    # a symbolic link inside the repository leading out of it
    assert_error(load(server, "x", entry("x", repo / "link" / "1" / "model.py", "onnx")), 403,
                 "leads out")
    # '..' traversal and relative paths
    for path in (f"{repo}/adder/../../outside/evil.joblib", f"{repo}/../outside/evil.py",
                 "outside/evil.py", "../evil.py"):
        assert_error(load(server, "x", entry("x", path, "onnx")), 403, "'..'")
    # inside but missing: 400
    assert_error(load(server, "x", entry("x", repo / "nothing.onnx", "onnx")), 400, "does not exist")
    # code from a request needs an admin token, even inside the repository
    for cfg in (entry("evil", attack["inside_py"]), entry("pickled", attack["inside_pkl"], "sklearn"),
                entry("pickled", attack["inside_pkl"], "mlflow"),
                entry("pickled", attack["inside_pkl"], "pytorch")):
        assert_error(load(server, cfg["name"], cfg), 403, "runs code", "--admin-tokens-file")
    g = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        g.load_model("evil", config=json.dumps(entry("evil", attack["inside_py"])))
    assert "PERMISSION_DENIED" in str(info.value.status()) and "admin" in str(info.value)
    with pytest.raises(InferenceServerException) as info:
        g.load_model("x", config=json.dumps(entry("x", attack["pkl"], "xgboost")))
    assert "PERMISSION_DENIED" in str(info.value.status()) and "not inside" in str(info.value)
    g.close()
    assert not attack["marker"].exists()
    assert "evil" not in {m["name"] for m in server.post("/v2/repository/index", None).json()}


def test_a_failed_load_never_quotes_the_file(berth_server: Callable[..., BerthServer],
                                             attack: dict[str, Path]) -> None:
    server = start(berth_server, attack, "--model-control-mode", "explicit")
    secret = attack["repo"] / "notes" / "1" / "booster.json"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"learner": SECRET-7f3a-CONTENT}')
    resp = load(server, "notes", entry("notes", secret, "xgboost"))
    msg = assert_error(resp, 500, "failed to load", "server log")
    assert "SECRET" not in msg and "7f3a" not in msg
    def notes() -> dict[str, Any] | None:
        idx = server.post("/v2/repository/index", None).json()
        found = [m for m in idx if m["name"] == "notes" and m["state"] == "UNAVAILABLE"]
        return found[0] if found else None

    reason = wait_until(notes, 30, "notes to be unloaded")["reason"]
    assert "SECRET" not in reason and "server log" in reason
    assert "SECRET" not in server.get("/v2/models/notes/ready").body.decode()
    # the operator still has the worker's message (and the parser's bytes) in the log
    assert any(r.get("msg", "").startswith("model failed to load") and "XGBoost" in r.get("error", "")
               for r in server.log_records())
    assert "SECRET-7" in server.log_text()


def test_admin_token_for_code_from_a_request(berth_server: Callable[..., BerthServer],
                                             attack: dict[str, Path]) -> None:
    server = start(berth_server, attack, "--model-control-mode", "explicit",
                   "--admin-tokens-file", str(attack["tokens"]),
                   "--auth-tokens-file", str(attack["users"]))
    cfg = entry("evil", attack["inside_py"])
    assert_error(load(server, "evil", cfg), 401, "token")
    assert_error(load(server, "evil", cfg, token="wrong"), 401, "token")
    assert_error(load(server, "evil", cfg, token=USER), 403, "admin")
    assert not attack["marker"].exists()
    # an admin may not name files outside the repositories either
    assert_error(load(server, "evil", entry("evil", attack["py"]), token=ADMIN), 403, "not inside")
    assert_error(load(server, "evil", entry("evil", attack["pkl"], "sklearn"), token=ADMIN), 403,
                 "not inside")
    assert not attack["marker"].exists()
    g = grpcclient.InferenceServerClient(server.grpc_url)
    for token, status in (("wrong", "UNAUTHENTICATED"), (USER, "PERMISSION_DENIED")):
        with pytest.raises(InferenceServerException) as info:
            g.load_model("evil", config=json.dumps(cfg), headers={"authorization": f"Bearer {token}"})
        assert status in str(info.value.status())
    g.close()
    assert not attack["marker"].exists()
    # with the admin token the operator's own code loads (and runs: the marker)
    good = write_python_model(attack["repo"] / "adder" / "2", "model.py", fill(ADDER_SOURCE, ADD=5))
    resp = load(server, "adder", {"name": "adder", "version": "2", "runtime": "python",
                                  "path": str(good), "class": "Adder"}, token=ADMIN)
    assert resp.status == 200, resp.body[:500]
    assert load(server, "evil", cfg, token=ADMIN).status == 200
    assert attack["marker"].exists()


# ------------------------------------------------------- replace under load


def _hammer(server: BerthServer, stop: threading.Event, seen: list[tuple[float, float, int, Any]],
            lock: threading.Lock) -> None:
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        t0 = time.monotonic()
        resp = http_call(server.port, "POST", "/v2/models/adder/infer", x_body(1.0),
                         {"Authorization": f"Bearer {ADMIN}"})
        y = outputs_by_name(resp.json())["y"]["data"][0] if resp.status == 200 else resp.body[:200]
        with lock:
            seen.append((t0, time.monotonic(), resp.status, y))


def _count(seen: list[Any], lock: threading.Lock) -> int:
    with lock:
        return len(seen)


def _wait_more(seen: list[Any], lock: threading.Lock, n: int) -> None:
    goal = _count(seen, lock) + n
    deadline = time.monotonic() + 60
    while _count(seen, lock) < goal and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _count(seen, lock) >= goal, "the clients stopped answering"


def test_replace_under_load(berth_server: Callable[..., BerthServer], attack: dict[str, Path]) -> None:
    server = start(berth_server, attack, "--model-control-mode", "explicit",
                   "--admin-tokens-file", str(attack["tokens"]))
    repo = attack["repo"]
    broken = write_python_model(repo / "adder" / "1-broken", "model.py", BROKEN_LOAD_SOURCE)
    good = write_python_model(repo / "adder" / "1-new", "model.py", fill(ADDER_SOURCE, ADD=100))
    stop, lock = threading.Event(), threading.Lock()
    seen: list[tuple[float, float, int, Any]] = []
    threads = [threading.Thread(target=_hammer, args=(server, stop, seen, lock)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        _wait_more(seen, lock, 20)
        # 1. a broken entry: the load fails, the old version keeps serving
        resp = load(server, "adder", {"name": "adder", "version": "1", "runtime": "python",
                                      "path": str(broken), "class": "Broken"}, token=ADMIN)
        assert_error(resp, 500, "failed to load", "previous one keeps serving", "weights-missing.bin")
        _wait_more(seen, lock, 40)
        idx = {m["version"]: m for m in server.post(
            "/v2/repository/index", None, headers={"Authorization": f"Bearer {ADMIN}"}).json()
            if m["name"] == "adder"}
        assert idx["1"]["state"] == "READY"
        # 2. a good entry: answers switch once the load answered
        sent = time.monotonic()
        resp = load(server, "adder", {"name": "adder", "version": "1", "runtime": "python",
                                      "path": str(good), "class": "Adder"}, token=ADMIN)
        answered = time.monotonic()
        assert resp.status == 200, resp.body[:500]
        _wait_more(seen, lock, 40)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failures = [s for s in seen if s[2] != 200]
    assert not failures, f"{len(failures)} of {len(seen)} requests failed: {failures[:5]}"
    assert {y for *_, y in seen} <= {2.0, 101.0}
    assert all(y == 2.0 for _, end, _, y in seen if end < sent), "new answers before the replace"
    after = [y for start_, _, _, y in seen if start_ > answered]
    assert after and all(y == 101.0 for y in after), "old answers after the replace answered"
    assert sum(1 for *_, y in seen if y == 2.0) > 40
