"""Berth's own reader of scikit-learn files (python/berth/runtimes/sklearn_lite.py):
for every estimator it knows, its outputs equal scikit-learn's on the same
file; anything else, and every request row it would not compute exactly as
scikit-learn, is left to scikit-learn; nothing a file names outside its
allow-list runs."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from berth.errors import ConfigError
from berth.runtimes import get_runtime, sklearn_lite
from sklearn import base as sk_base
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)

# short trainings: their models are what is compared, not their fit
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
NAMES = np.array(["setosa", "versicolor", "virginica"])[IRIS_Y]
BIN_X, BIN_Y = make_classification(300, 6, n_informative=4, random_state=0)
REG_X, REG_Y = make_regression(120, 5, noise=3.0, random_state=0)
REG2_X, REG2_Y = make_regression(120, 5, n_targets=2, random_state=1)

# name -> (build the fitted estimator, its training rows)
CASES: dict[str, tuple[Callable[[], Any], np.ndarray]] = {
    "logistic-multiclass": (lambda: LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y), IRIS_X),
    "logistic-binary": (lambda: LogisticRegression().fit(BIN_X, BIN_Y), BIN_X),
    "logistic-string-labels": (lambda: LogisticRegression(max_iter=500).fit(IRIS_X, NAMES), IRIS_X),
    "linear": (lambda: LinearRegression().fit(REG_X, REG_Y), REG_X),
    "ridge-two-targets": (lambda: Ridge().fit(REG2_X, REG2_Y), REG2_X),
    "lasso": (lambda: Lasso().fit(REG_X, REG_Y), REG_X),
    "elasticnet": (lambda: ElasticNet().fit(REG_X, REG_Y), REG_X),
    "tree-classifier": (lambda: DecisionTreeClassifier(random_state=0).fit(IRIS_X, IRIS_Y), IRIS_X),
    "tree-regressor": (lambda: DecisionTreeRegressor(max_depth=6).fit(REG_X, REG_Y), REG_X),
    "extra-tree-classifier": (lambda: ExtraTreeClassifier(random_state=0).fit(IRIS_X, NAMES), IRIS_X),
    "extra-tree-regressor": (lambda: ExtraTreeRegressor(random_state=0).fit(REG_X, REG_Y), REG_X),
    "forest-classifier": (
        lambda: RandomForestClassifier(n_estimators=25, random_state=0).fit(BIN_X, BIN_Y), BIN_X),
    "forest-regressor": (
        lambda: RandomForestRegressor(n_estimators=15, random_state=0).fit(REG_X, REG_Y), REG_X),
    "extra-trees-classifier": (
        lambda: ExtraTreesClassifier(n_estimators=10, random_state=0).fit(IRIS_X, NAMES), IRIS_X),
    "extra-trees-regressor": (
        lambda: ExtraTreesRegressor(n_estimators=10, random_state=0).fit(REG_X, REG_Y), REG_X),
    "mlp-multiclass": (
        lambda: MLPClassifier(max_iter=400, random_state=0).fit(IRIS_X, IRIS_Y), IRIS_X),
    "mlp-binary-tanh": (
        lambda: MLPClassifier((8, 4), activation="tanh", max_iter=400, random_state=0).fit(
            BIN_X, BIN_Y), BIN_X),
    "mlp-regressor-logistic": (
        lambda: MLPRegressor(max_iter=300, activation="logistic", random_state=0).fit(
            REG2_X, REG2_Y), REG2_X),
    "gradient-boosting-multiclass": (
        lambda: GradientBoostingClassifier(n_estimators=20, random_state=0).fit(IRIS_X, NAMES),
        IRIS_X),
    "gradient-boosting-binary": (
        lambda: GradientBoostingClassifier(n_estimators=20, random_state=0).fit(BIN_X, BIN_Y),
        BIN_X),
    "gradient-boosting-zero-init": (
        lambda: GradientBoostingClassifier(n_estimators=5, init="zero").fit(BIN_X, BIN_Y), BIN_X),
    "gradient-boosting-regressor": (
        lambda: GradientBoostingRegressor(n_estimators=20, random_state=0).fit(REG_X, REG_Y), REG_X),
    "gradient-boosting-huber": (
        lambda: GradientBoostingRegressor(loss="huber", n_estimators=10).fit(REG_X, REG_Y), REG_X),
    "hist-boosting-multiclass": (
        lambda: HistGradientBoostingClassifier(max_iter=20).fit(IRIS_X, IRIS_Y), IRIS_X),
    "hist-boosting-binary": (
        lambda: HistGradientBoostingClassifier(max_iter=30).fit(BIN_X, np.array(["no", "yes"])[BIN_Y]), BIN_X),
    "hist-boosting-regressor": (
        lambda: HistGradientBoostingRegressor(max_iter=20).fit(REG_X, REG_Y), REG_X),
    "hist-boosting-poisson": (
        lambda: HistGradientBoostingRegressor(loss="poisson", max_iter=20).fit(
            REG_X, np.abs(REG_Y)), REG_X),
    "pipeline-scaler-logistic": (
        lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(IRIS_X, IRIS_Y), IRIS_X),
    "pipeline-minmax-clip-tree": (
        lambda: make_pipeline(MinMaxScaler(clip=True), DecisionTreeRegressor()).fit(REG_X, REG_Y),
        REG_X),
    "pipeline-passthrough-mlp": (
        lambda: make_pipeline(StandardScaler(with_mean=False), "passthrough",
                              MLPClassifier(max_iter=300, random_state=0)).fit(BIN_X, BIN_Y),
        BIN_X),
}


def _dump(estimator: Any, folder: Path, name: str = "model.joblib", **kw: Any) -> Path:
    path = folder / name
    joblib.dump(estimator, path, **kw)
    return path


def _rows(train: np.ndarray) -> np.ndarray:
    """Training rows moved off the training points (new splits and ties)."""
    noise = np.random.default_rng(7).normal(0.0, 0.4, train.shape)
    return np.vstack([train, train + noise])


def _same(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype.kind in "fc":
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    else:
        assert np.array_equal(a, b)


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_scikit_learn(case: str, tmp_path: Path) -> None:
    build, train = CASES[case]
    estimator = build()
    lite, why = sklearn_lite.read(str(_dump(estimator, tmp_path)))
    assert lite is not None, why
    x = _rows(train)
    _same(estimator.predict(x), lite.predict(x))
    has_proba = hasattr(estimator, "predict_proba")
    assert callable(getattr(lite, "predict_proba", None)) == has_proba
    if has_proba:
        _same(estimator.predict_proba(x), lite.predict_proba(x))
    assert lite.n_features_in_ == estimator.n_features_in_
    if hasattr(estimator, "classes_"):
        _same(estimator.classes_, lite.classes_)


def test_compressed_and_plain_pickle_files_are_read(tmp_path: Path) -> None:
    estimator = CASES["forest-classifier"][0]()
    x = _rows(BIN_X)
    compressed = _dump(estimator, tmp_path, "z.joblib", compress=3)
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL))
    for path in (compressed, plain):
        lite, why = sklearn_lite.read(str(path))
        assert lite is not None, why
        _same(estimator.predict_proba(x), lite.predict_proba(x))


CODED = np.c_[IRIS_Y % 2, IRIS_X]  # a small-integer column, for a categorical feature


@pytest.mark.parametrize(
    "fitted, named",
    [
        (lambda: SVC().fit(IRIS_X, IRIS_Y), "SVC"),
        (lambda: KNeighborsClassifier().fit(IRIS_X, IRIS_Y), "KNeighborsClassifier"),
        (lambda: GradientBoostingClassifier(n_estimators=3, loss="exponential").fit(BIN_X, BIN_Y),
         "ExponentialLoss"),
        (lambda: HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(
            CODED, IRIS_Y), "ColumnTransformer"),
        (lambda: make_pipeline(PolynomialFeatures(), LogisticRegression(max_iter=500)).fit(
            IRIS_X, IRIS_Y), "PolynomialFeatures"),
    ],
    ids=["svc", "k-neighbors", "exponential-loss", "categorical-hist-boosting",
         "unknown-pipeline-step"],
)
def test_what_it_does_not_know_is_left_to_scikit_learn(
    fitted: Callable[[], Any], named: str, tmp_path: Path
) -> None:
    lite, why = sklearn_lite.read(str(_dump(fitted(), tmp_path)))
    assert lite is None
    assert named in why


def test_a_file_naming_a_function_does_not_run_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": Payload()}))
    lite, why = sklearn_lite.read(str(path))
    assert lite is None and "system" in why
    assert not marker.exists()


def test_an_object_array_naming_a_function_does_not_run_it(tmp_path: Path) -> None:
    """joblib stores an object array as a nested pickle: it is read with the
    same allow-list (joblib >= 1.6 routes it through this reader's lookup)."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    estimator = CASES["logistic-binary"][0]()
    estimator.classes_ = np.array([Payload(), Payload()], dtype=object)
    lite, why = sklearn_lite.read(str(_dump(estimator, tmp_path)))
    assert lite is None and "system" in why
    assert not marker.exists()


@pytest.mark.parametrize("written", ["1.3.2", "0.24.2"])
def test_files_from_older_scikit_learn_are_left_to_it(
    written: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    estimator = CASES["tree-classifier"][0]()
    monkeypatch.setattr(sk_base, "__version__", written)
    path = _dump(estimator, tmp_path)
    lite, why = sklearn_lite.read(str(path))
    assert lite is None and "before 1.4" in why


def test_a_file_from_another_scikit_learn_version_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = sklearn_lite.installed_sklearn()
    assert installed is not None
    estimator = CASES["logistic-binary"][0]()
    monkeypatch.setattr(sk_base, "__version__", f"{installed[0]}.{installed[1] + 1}.0")
    lite, why = sklearn_lite.read(str(_dump(estimator, tmp_path)))
    assert lite is None and "installed" in why


@pytest.mark.parametrize(
    "row",
    [[np.nan, 1.0, 1.0, 1.0], [np.inf, 1.0, 1.0, 1.0], [1e39, 1.0, 1.0, 1.0]],
    ids=["nan", "inf", "float32-overflow"],
)
def test_rows_it_would_not_compute_exactly_are_refused(row: list[float], tmp_path: Path) -> None:
    lite, _ = sklearn_lite.read(str(_dump(CASES["tree-classifier"][0](), tmp_path)))
    assert lite is not None
    with pytest.raises(sklearn_lite.Unusual):
        lite.predict(np.array([row]))
    with pytest.raises(sklearn_lite.Unusual):
        lite.predict(np.ones((1, 3)))  # a width scikit-learn refuses


# ---- through the runtime (what the worker runs)


def _runtime(path: Path, **parameters: Any) -> Any:
    runtime = get_runtime("sklearn")
    runtime.load({"path": str(path), "parameters": parameters})
    return runtime


def test_runtime_serves_the_reader_and_hands_unusual_rows_to_scikit_learn(tmp_path: Path) -> None:
    estimator = CASES["tree-classifier"][0]()
    path = _dump(estimator, tmp_path)
    auto, full = _runtime(path), _runtime(path, reader="sklearn")
    assert auto.outputs == full.outputs and auto.inputs == full.inputs
    assert type(auto.estimator).__module__ == "berth.runtimes.sklearn"
    assert type(full.estimator) is DecisionTreeClassifier
    x = _rows(IRIS_X)
    for key, value in full.predict({"input": x}).items():
        _same(value, auto.predict({"input": x})[key])
    # DecisionTreeClassifier routes NaN by a learned side: scikit-learn's answer
    nan_rows = x[:5].copy()
    nan_rows[:, 2] = np.nan
    for key, value in full.predict({"input": nan_rows}).items():
        _same(value, auto.predict({"input": nan_rows})[key])
    # LogisticRegression refuses NaN: the same error as scikit-learn's
    logistic = _dump(CASES["logistic-multiclass"][0](), tmp_path, "lr.joblib")
    errors = []
    for runtime in (_runtime(logistic), _runtime(logistic, reader="sklearn")):
        with pytest.raises(ValueError) as info:
            runtime.predict({"input": nan_rows})
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "NaN" in errors[0]


def test_runtime_refuses_an_unknown_reader(tmp_path: Path) -> None:
    path = _dump(CASES["linear"][0](), tmp_path)
    with pytest.raises(ConfigError, match="parameters.reader"):
        _runtime(path, reader="fast")
