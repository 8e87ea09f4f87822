"""XGBoost models saved with ``save_model`` (.json or .ubj).

Signature: input ``input`` FP32 ``[-1, num_features]``. A model saved from
the scikit-learn wrapper (its ``scikit_learn`` attribute says so) is served
through that wrapper: ``XGBClassifier`` gives ``predict`` (class labels,
INT64, ``[-1]``) and ``predict_proba`` (FP32, ``[-1, n_classes]``);
``XGBRegressor`` gives ``predict`` FP32. A plain ``Booster`` gives ``predict``
FP32 from ``Booster.inplace_predict`` (what ``Booster.predict(DMatrix(x))``
returns, without building a DMatrix), shaped ``[-1]`` or ``[-1, k]``.

``parameters.nthread`` sets XGBoost's threads (default: the worker's
``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xgboost

from ..errors import ModelLoadError
from ..model import TensorSpec
from . import Runtime, declared, default_threads, int_parameter, pick_input, to_numeric
from .detect import resolve_model_path

_FP32 = np.dtype(np.float32)


class XGBoostRuntime(Runtime):
    name = "xgboost"
    platform = "xgboost_xgboost"

    def load(self, entry: Mapping[str, Any]) -> None:
        path = resolve_model_path(entry["path"], self.name)
        booster = xgboost.Booster()
        try:
            booster.load_model(str(path))
        except xgboost.core.XGBoostError as e:
            raise ModelLoadError(
                f"{path}: XGBoost could not load it ({str(e).splitlines()[0] if str(e) else e}); "
                "save models with model.save_model('model.json' or 'model.ubj')"
            ) from e
        threads = int_parameter(entry, "nthread") or default_threads()
        if threads:
            booster.set_param({"nthread": threads})

        estimator_type = None
        sklearn_attr = booster.attr("scikit_learn")
        if sklearn_attr:
            try:
                estimator_type = json.loads(sklearn_attr).get("_estimator_type")
            except (ValueError, AttributeError):
                estimator_type = None

        specs = declared(entry, "inputs")
        self.input_name = specs[0].name if specs else "input"
        self.input_datatype = specs[0].datatype if specs else "FP32"
        n_features = booster.num_features()
        self.inputs = [TensorSpec(self.input_name, "FP32", [-1, n_features or -1])]

        self.classifier: Any = None
        self.regressor: Any = None
        self.booster = booster
        if estimator_type == "classifier":
            self.classifier = xgboost.XGBClassifier()
            self.classifier.load_model(str(path))
            if threads:
                self.classifier.set_params(n_jobs=threads)
            n_classes = int(getattr(self.classifier, "n_classes_", 2))
            self.outputs = [
                TensorSpec("predict", "INT64", [-1]),
                TensorSpec("predict_proba", "FP32", [-1, n_classes]),
            ]
            return
        if estimator_type == "regressor":
            self.regressor = xgboost.XGBRegressor()
            self.regressor.load_model(str(path))
            if threads:
                self.regressor.set_params(n_jobs=threads)
        probe = np.zeros((1, max(n_features, 1)), dtype=np.float32)
        tail = list(np.asarray(self._predict_plain(probe)).shape[1:])
        self.outputs = [TensorSpec("predict", "FP32", [-1, *tail])]

    def _predict_plain(self, x: np.ndarray) -> np.ndarray:
        if self.regressor is not None:
            return np.asarray(self.regressor.predict(x), dtype=np.float32)
        return np.asarray(self.booster.inplace_predict(x), dtype=np.float32)

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        x = pick_input(inputs, self.input_name)
        if x.dtype != np.float64:
            x = to_numeric(x, _FP32, self.input_name, self.input_datatype)
        if self.classifier is not None:
            return {
                "predict": np.asarray(self.classifier.predict(x)).astype(np.int64, copy=False),
                "predict_proba": np.asarray(self.classifier.predict_proba(x), dtype=np.float32),
            }
        return {"predict": self._predict_plain(x)}
