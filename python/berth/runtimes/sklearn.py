"""scikit-learn estimators and pipelines saved with ``joblib.dump`` (.joblib/.pkl).

Signature: input ``input`` FP64 ``[-1, n_features_in_]``; output ``predict``
(INT64 for integer labels, FP64 for numbers, BOOL for boolean labels, BYTES
for string labels) and, when the estimator has ``predict_proba``,
``predict_proba`` FP64 ``[-1, n_classes]``.

A declared ``BYTES`` input (``inputs: [{name: text, datatype: BYTES, shape:
[-1]}]``) is decoded to ``str`` for text pipelines (``TfidfVectorizer``...).

``parameters.reader``: ``auto`` (default) serves the estimators that Berth's
own reader knows (:mod:`.sklearn_lite`: linear models, trees, forests,
gradient boosting, MLPs, scalers and pipelines of them) without importing scikit-learn, which cuts
about 1.5 s from a worker's start; anything else, and any request rows that
reader does not compute exactly as scikit-learn (NaN, infinity, a wrong
width), go to scikit-learn itself. ``sklearn`` always loads with
scikit-learn.

Loading unpickles the file: serve only files you trust.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingExtraError, ModelLoadError
from ..model import TensorSpec
from . import Runtime, declared, pick_input, sklearn_lite, to_numeric, to_str
from .detect import resolve_model_path

log = logging.getLogger("berth.worker")

_FP64 = np.dtype(np.float64)


def _label_datatype(labels: Any) -> str:
    kind = np.asarray(labels).dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if kind == "b":
        return "BOOL"
    return "BYTES"


def _joblib_load(path: Path) -> Any:
    """The file as scikit-learn reads it (imports scikit-learn)."""
    import joblib

    try:
        import sklearn
    except ImportError as e:
        raise MissingExtraError(
            "scikit-learn", "sklearn", f"{path} needs it ({e}); Berth's own reader does not "
            "know every class in the file"
        ) from e
    try:
        return joblib.load(path)
    except Exception as e:
        raise ModelLoadError(
            f"{path}: joblib could not load it ({type(e).__name__}: {e}); save models "
            f"with joblib.dump using a compatible scikit-learn (this worker has "
            f"{sklearn.__version__})"
        ) from e


class _Read:
    """An estimator read by :mod:`.sklearn_lite`; rows it does not compute
    exactly as scikit-learn go to scikit-learn, loaded on first need."""

    def __init__(self, lite: Any, path: Path) -> None:
        self.lite, self.path, self.full = lite, path, None
        self.n_features_in_ = lite.n_features_in_
        self.classes_ = getattr(lite, "classes_", None)
        self.n_outputs_ = getattr(lite, "n_outputs_", 1)
        if not callable(getattr(lite, "predict_proba", None)):
            self.predict_proba = None  # type: ignore[assignment]

    def _sklearn(self) -> Any:
        if self.full is None:
            log.info("%s: rows that Berth's reader leaves to scikit-learn; loading it", self.path)
            self.full = _joblib_load(self.path)
        return self.full

    def predict(self, x: np.ndarray) -> Any:
        try:
            return self.lite.predict(x)
        except sklearn_lite.Unusual:
            return self._sklearn().predict(x)

    def predict_proba(self, x: np.ndarray) -> Any:
        try:
            return self.lite.predict_proba(x)
        except sklearn_lite.Unusual:
            return self._sklearn().predict_proba(x)


def _read(path: Path, entry: Mapping[str, Any]) -> Any:
    reader = (entry.get("parameters") or {}).get("reader", "auto")
    if reader not in ("auto", "sklearn"):
        raise ConfigError(f"parameters.reader: expected auto or sklearn, got {reader!r}")
    if reader == "auto":
        lite, why = sklearn_lite.read(str(path))
        if lite is not None:
            log.debug("%s: read by Berth's reader, without scikit-learn", path)
            return _Read(lite, path)
        log.debug("%s: scikit-learn reads it (%s)", path, why)
    return _joblib_load(path)


class SklearnRuntime(Runtime):
    name = "sklearn"
    platform = "sklearn_sklearn"

    def load(self, entry: Mapping[str, Any]) -> None:
        path = resolve_model_path(entry["path"], self.name)
        estimator = _read(path, entry)
        if not callable(getattr(estimator, "predict", None)):
            raise ModelLoadError(
                f"{path}: holds a {type(estimator).__name__}, which has no predict(); "
                "save a fitted estimator or Pipeline"
            )
        self.estimator = estimator

        specs = declared(entry, "inputs")
        if specs:
            self.input_name, self.input_datatype = specs[0].name, specs[0].datatype
        else:
            self.input_name, self.input_datatype = "input", "FP64"
        n_features = getattr(estimator, "n_features_in_", None)
        width = int(n_features) if isinstance(n_features, (int, np.integer)) else -1
        self.inputs = [TensorSpec(self.input_name, "FP64", [-1, width])]

        classes = getattr(estimator, "classes_", None)
        if isinstance(classes, list):  # multi-output classifier
            classes = classes[0] if classes else None
        self.predict_datatype = "FP64" if classes is None else _label_datatype(classes)
        n_outputs = getattr(estimator, "n_outputs_", 1)
        shape = (
            [-1, int(n_outputs)]
            if isinstance(n_outputs, (int, np.integer)) and n_outputs > 1
            else [-1]
        )
        self.outputs = [TensorSpec("predict", self.predict_datatype, shape)]
        self.has_proba = callable(getattr(estimator, "predict_proba", None)) and classes is not None
        if self.has_proba:
            assert classes is not None
            self.outputs.append(TensorSpec("predict_proba", "FP64", [-1, len(classes)]))

    def _features(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        x = pick_input(inputs, self.input_name)
        if self.input_datatype == "BYTES" or x.dtype.kind in "OSU":
            return to_str(x, self.input_name) if x.dtype.kind in "OS" else x
        return to_numeric(x, _FP64, self.input_name, self.input_datatype)

    def _cast_predict(self, predicted: Any) -> np.ndarray:
        y: np.ndarray = np.asarray(predicted)
        datatype = self.predict_datatype
        if datatype == "INT64" and y.dtype.kind in "iub":
            return y.astype(np.int64, copy=False)
        if datatype == "FP64" and y.dtype.kind in "iuf":
            return y.astype(np.float64, copy=False)
        if y.dtype.kind == "O":
            flat = [v if isinstance(v, (str, bytes)) else str(v) for v in y.reshape(-1)]
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            return out.reshape(y.shape)
        return y

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        x = self._features(inputs)
        outputs = {"predict": self._cast_predict(self.estimator.predict(x))}
        if self.has_proba:
            outputs["predict_proba"] = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
        return outputs
