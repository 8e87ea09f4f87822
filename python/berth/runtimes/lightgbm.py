"""LightGBM boosters saved with ``Booster.save_model`` (.txt).

Signature: input ``input`` FP64 ``[-1, num_feature()]``; output ``predict``
FP64, ``[-1]`` or ``[-1, num_class]`` (what ``Booster.predict`` returns).

``parameters.num_threads`` sets LightGBM's threads (default: the worker's
``OMP_NUM_THREADS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm
import numpy as np

from ..errors import ModelLoadError
from ..model import TensorSpec
from . import Runtime, declared, default_threads, int_parameter, pick_input, to_numeric
from .detect import resolve_model_path

_FP64 = np.dtype(np.float64)


class LightGBMRuntime(Runtime):
    name = "lightgbm"
    platform = "lightgbm_lightgbm"

    def load(self, entry: Mapping[str, Any]) -> None:
        path = resolve_model_path(entry["path"], self.name)
        try:
            self.booster = lightgbm.Booster(model_file=str(path))
        except lightgbm.basic.LightGBMError as e:
            raise ModelLoadError(
                f"{path}: LightGBM could not load it ({e}); save models with "
                "booster.save_model('model.txt')"
            ) from e
        threads = int_parameter(entry, "num_threads") or default_threads()
        self.predict_kwargs: dict[str, Any] = {"num_threads": threads} if threads else {}

        specs = declared(entry, "inputs")
        self.input_name = specs[0].name if specs else "input"
        self.input_datatype = specs[0].datatype if specs else "FP64"
        n_features = self.booster.num_feature()
        self.inputs = [TensorSpec(self.input_name, "FP64", [-1, n_features or -1])]
        probe = np.zeros((1, max(n_features, 1)), dtype=np.float64)
        tail = list(self._run(probe).shape[1:])
        self.outputs = [TensorSpec("predict", "FP64", [-1, *tail])]

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, **self.predict_kwargs), dtype=np.float64)

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        x = pick_input(inputs, self.input_name)
        if x.dtype != np.float32:
            x = to_numeric(x, _FP64, self.input_name, self.input_datatype)
        return {"predict": self._run(x)}
