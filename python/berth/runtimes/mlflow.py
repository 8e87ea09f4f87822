"""MLflow models: a folder with an ``MLmodel`` file, loaded with
``mlflow.pyfunc.load_model`` (platform ``mlflow_pyfunc``).

Signature, from the model's MLflow signature:

- tensor-based inputs: one input per tensor spec, with its name (``input``
  when the only spec has none), datatype and shape; the model gets a dict of
  arrays (or the array, for one unnamed spec).
- column-based inputs: one input per column, shape ``[-1]`` (boolean BOOL,
  integer INT32, long INT64, float FP32, double FP64, string and binary
  BYTES, datetime BYTES holding ISO 8601 text); the model gets a pandas
  DataFrame with those columns, in the signature's order. Unnamed columns
  are positional (the DataFrame's columns 0, 1...): one is ``input``,
  several ``input__0``, ``input__1``...
- outputs: the output schema's names (``predictions`` for an unnamed one);
  a model without an output schema reports none, and its results are named
  after a DataFrame's columns, a dict's keys, or ``predictions``.
- a model without an input signature cannot be served: its inputs are
  unknown. Log it with ``signature=infer_signature(...)``.

Request parameters named in the signature's ``params`` are passed to
``predict(..., params=...)``. Loading runs the model's own code (and
unpickles its artefacts): serve only models you trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from ..decode import texts
from ..errors import ConfigError, InvalidInput, InvalidOutput, ModelLoadError
from ..model import TensorSpec
from ..tensors import datatype_to_dtype, dtype_to_datatype
from . import Runtime, to_numeric
from .detect import resolve_model_path

__all__ = ["MLflowRuntime"]

_COLUMN_TYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
_PREDICTIONS = "predictions"


def _column_type(col: Any) -> str:
    name = getattr(col.type, "name", str(col.type))
    datatype = _COLUMN_TYPES.get(name)
    if datatype is None:
        raise ModelLoadError(
            f"column {col.name!r} has MLflow type {name}, which Berth cannot feed; use one "
            f"of {', '.join(_COLUMN_TYPES)}"
        )
    return datatype


def _tensor_type(spec: Any) -> str:
    dtype = np.dtype(spec.type)
    return "BYTES" if dtype.kind in "OSU" else dtype_to_datatype(dtype)


def _specs(schema: Any, default: str) -> tuple[list[TensorSpec], list[str], bool]:
    """Specs, MLflow-side names (``""`` for unnamed) and whether it is tensor-based."""
    if schema is None:
        return [], [], False
    items = list(schema.inputs)
    # Several unnamed specs (positional columns) are default__0, default__1...
    names = [
        s.name or (default if len(items) == 1 else f"{default}__{i}") for i, s in enumerate(items)
    ]
    if schema.is_tensor_spec():
        specs = [
            TensorSpec(n, _tensor_type(s), [int(d) for d in s.shape])
            for n, s in zip(names, items, strict=True)
        ]
        return specs, [s.name or "" for s in items], True
    specs = [TensorSpec(n, _column_type(c), [-1]) for n, c in zip(names, items, strict=True)]
    return specs, [c.name or "" for c in items], False


class MLflowRuntime(Runtime):
    name = "mlflow"
    platform = "mlflow_pyfunc"

    def load(self, entry: Mapping[str, Any]) -> None:
        folder = resolve_model_path(entry["path"], self.name)
        if not (folder / "MLmodel").is_file():
            raise ModelLoadError(f"{folder}: not an MLflow model folder (no MLmodel file)")
        try:
            self.model = mlflow.pyfunc.load_model(str(folder))
        except Exception as e:
            raise ModelLoadError(
                f"{folder}: mlflow.pyfunc.load_model could not load it ({type(e).__name__}: "
                f"{e}); the worker needs the packages the model was logged with (see its "
                "requirements.txt)"
            ) from e
        metadata = self.model.metadata
        self.inputs, self._names, self._tensor_based = _specs(metadata.get_input_schema(), "input")
        if not self.inputs:
            raise ConfigError(
                f"{Path(folder)}: the MLflow model has no input signature, so Berth cannot "
                "know its inputs; log it with signature=infer_signature(example_input)"
            )
        self.outputs = _specs(metadata.get_output_schema(), _PREDICTIONS)[0]
        self._output_names = [s.name for s in self.outputs]
        signature = metadata.signature
        params = getattr(signature, "params", None) if signature is not None else None
        self._params = {p.name for p in params.params} if params is not None else set()

    # ------------------------------------------------------------- serving

    def _column(self, array: np.ndarray, spec: TensorSpec, mlflow_type: str) -> Any:
        if spec.datatype != "BYTES":
            return to_numeric(array, datatype_to_dtype(spec.datatype), spec.name).reshape(-1)
        if mlflow_type == "binary":
            return [bytes(v) for v in array.reshape(-1)]
        values = texts(array, spec.name)
        return pd.to_datetime(values) if mlflow_type == "datetime" else values

    def _model_input(self, inputs: Mapping[str, np.ndarray]) -> Any:
        schema = self.model.metadata.get_input_schema()
        arrays = []
        for spec in self.inputs:
            array = inputs.get(spec.name)
            if array is None:
                if len(inputs) == 1 and len(self.inputs) == 1:
                    array = next(iter(inputs.values()))
                else:
                    raise InvalidInput(
                        f"missing input {spec.name!r}; the model takes "
                        f"{', '.join(s.name for s in self.inputs)}"
                    )
            arrays.append(array)
        if self._tensor_based:
            converted = [
                a if s.datatype == "BYTES" else to_numeric(a, datatype_to_dtype(s.datatype), s.name)
                for s, a in zip(self.inputs, arrays, strict=True)
            ]
            if len(converted) == 1 and not self._names[0]:
                return converted[0]
            return dict(zip(self._names, converted, strict=True))
        columns: dict[Any, Any] = {}
        for i, (spec, name, col, array) in enumerate(
            zip(self.inputs, self._names, schema.inputs, arrays, strict=True)
        ):
            # Unnamed columns are positional: the DataFrame's columns 0, 1...
            columns[name or i] = self._column(array, spec, getattr(col.type, "name", ""))
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise InvalidInput(f"every column must have the same number of rows, got {lengths}")
        return pd.DataFrame(columns)

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        data = self._model_input(inputs)
        params = {k: v for k, v in (parameters or {}).items() if k in self._params}
        try:
            result = self.model.predict(data, params=params) if params else self.model.predict(data)
        except MlflowException as e:
            raise InvalidInput(f"MLflow refused the inputs: {e.message}") from e
        return self._outputs(result)

    def _outputs(self, result: Any) -> dict[str, np.ndarray]:
        if isinstance(result, pd.DataFrame):
            if len(self._output_names) == 1 and result.shape[1] == 1:
                return {self._output_names[0]: _array(result.iloc[:, 0], self._output_names[0])}
            return {str(c): _array(result[c], str(c)) for c in result.columns}
        if isinstance(result, Mapping):
            return {str(k): _array(v, str(k)) for k, v in result.items()}
        name = self._output_names[0] if len(self._output_names) == 1 else _PREDICTIONS
        return {name: _array(result, name)}


def _array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, pd.Series):
        value = value.to_numpy()
    array = np.asarray(value)
    if array.dtype.kind == "U":
        out = np.empty(array.shape, dtype=object)
        out.reshape(-1)[:] = [s.encode() for s in array.reshape(-1)]
        return out
    if array.dtype.kind == "O":
        flat = array.reshape(-1)
        if not all(isinstance(v, (str, bytes)) for v in flat):
            raise InvalidOutput(
                f"output {name!r} holds {sorted({type(v).__name__ for v in flat})}; return "
                "numbers, strings or bytes"
            )
    return array
