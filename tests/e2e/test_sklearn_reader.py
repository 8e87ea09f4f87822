"""Berth's own scikit-learn reader through the real server (docs/frameworks.md,
"scikit-learn without importing scikit-learn"): a served forest answers what
scikit-learn computes while its worker never loads scikit-learn (nor SciPy,
nor pandas: /proc/<pid>/maps shows no library of theirs); a file the reader
does not know, and `parameters.reader: sklearn`, load scikit-learn as before;
rows the reader leaves to scikit-learn (NaN) get scikit-learn's answer. With
the worker template on and off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from berth_e2e import (
    BerthServer,
    ModelZoo,
    copy_into,
    infer_body,
    outputs_by_name,
    tensor,
)

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]]


def loaded_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def imported_sklearn(pid: int) -> bool:
    maps = loaded_libraries(pid)
    return any(f"/site-packages/{pkg}/" in maps for pkg in ("sklearn", "scipy", "pandas"))


@pytest.fixture(scope="module")
def repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.svm import SVC

    root = tmp_path_factory.mktemp("reader-repo")
    copy_into(zoo.sklearn_classifier(), root / "forest" / "1", "model.joblib")
    copy_into(zoo.sklearn_classifier(), root / "forest-sk" / "1", "model.joblib")
    (root / "forest-sk" / "berth.yaml").write_text("parameters:\n  reader: sklearn\n")
    x, y = zoo.iris
    (root / "svc" / "1").mkdir(parents=True)
    joblib.dump(SVC().fit(x, y), root / "svc" / "1" / "model.joblib")
    return root


def start(module_server: Callable[..., BerthServer], target: Path, template: bool,
          folder: Path) -> BerthServer:
    cfg = folder / "workers.yaml"
    cfg.write_text(f"workers:\n  template: {'true' if template else 'false'}\n")
    return module_server(str(target), "--config", str(cfg), "--instances", "1")


@pytest.fixture(scope="module", params=[True, False], ids=["template", "direct"])
def server(request: pytest.FixtureRequest, module_server: Callable[..., BerthServer],
           repo: Path, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    """All three models: the template (when on) imports scikit-learn for the
    SVC, so every worker it forks has it mapped."""
    return start(module_server, repo, request.param, tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module", params=[True, False], ids=["template", "direct"])
def forest_only(request: pytest.FixtureRequest, module_server: Callable[..., BerthServer],
                repo: Path, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    return start(module_server, repo / "forest", request.param, tmp_path_factory.mktemp("cfg"))


def answer(server: BerthServer, model: str, rows: list[list[float]]) -> dict[str, Any]:
    body = infer_body([tensor("input", "FP64", [len(rows), 4], [v for r in rows for v in r])])
    return outputs_by_name(server.infer_ok(model, body))


def test_known_estimator_answers_as_scikit_learn_without_importing_it(
    forest_only: BerthServer, zoo: ModelZoo
) -> None:
    forest = zoo.trained(zoo.sklearn_classifier())
    out = answer(forest_only, "forest", ROWS)
    assert out["predict"]["data"] == forest.predict(np.array(ROWS)).tolist()
    np.testing.assert_allclose(
        np.array(out["predict_proba"]["data"]).reshape(len(ROWS), 3),
        forest.predict_proba(np.array(ROWS)), rtol=1e-12, atol=1e-12)
    assert not imported_sklearn(forest_only.worker_pids()["forest/1/0"])


def test_reader_sklearn_answers_the_same_with_scikit_learn(server: BerthServer) -> None:
    assert answer(server, "forest-sk", ROWS) == answer(server, "forest", ROWS)
    assert imported_sklearn(server.worker_pids()["forest-sk/1/0"])


def test_unknown_estimator_is_served_by_scikit_learn(server: BerthServer, zoo: ModelZoo) -> None:
    from sklearn.svm import SVC

    x, y = zoo.iris
    expected = SVC().fit(x, y).predict(np.array(ROWS)).tolist()
    out = answer(server, "svc", ROWS)
    assert out["predict"]["data"] == expected and "predict_proba" not in out
    assert imported_sklearn(server.worker_pids()["svc/1/0"])


def triton_answer(server: BerthServer, model: str, x: np.ndarray) -> tuple[Any, ...]:
    """What tritonclient gets for ``x`` sent as binary FP64 (JSON has no NaN)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=server.triton_url, network_timeout=60.0)
    try:
        tensor_in = httpclient.InferInput("input", list(x.shape), "FP64")
        tensor_in.set_data_from_numpy(x, binary_data=True)
        try:
            res = client.infer(model, [tensor_in])
        except InferenceServerException as e:
            return ("error", e.status(), e.message())
        return ("ok", res.as_numpy("predict").tolist(), res.as_numpy("predict_proba").tolist())
    finally:
        client.close()


def test_rows_left_to_scikit_learn_get_its_answer(server: BerthServer) -> None:
    x = np.array(ROWS)
    x[1:3, 2] = np.nan  # a forest routes NaN by the side each split learned
    mine = triton_answer(server, "forest", x)
    assert mine == triton_answer(server, "forest-sk", x)
    assert mine[0] == "ok"
    # and the worker goes on answering the usual rows
    assert answer(server, "forest", ROWS) == answer(server, "forest-sk", ROWS)
