"""ONNX models run by ONNX Runtime on the CPU provider (.onnx).

Signature: the graph's inputs and outputs, with their names, datatypes and
shapes (symbolic or unknown dimensions become -1; ``tensor(string)`` is
BYTES). Outputs that are not tensors (the sequence of maps a ZipMap gives,
for example) are left out, with a warning.

``parameters.intra_op_threads`` / ``parameters.inter_op_threads`` size ONNX
Runtime's thread pools (default intra-op: the worker's ``OMP_NUM_THREADS``).
``parameters.allow_spinning`` (default false, as on the native path): whether
the pools' threads spin for more work after a batch instead of sleeping; a
spinning thread takes a core from berthd and the other instances
(docs/native.md, "Threads").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from ..errors import ConfigError, InvalidInput, ModelLoadError
from ..model import TensorSpec
from ..tensors import datatype_to_dtype
from . import Runtime, default_threads, int_parameter, to_numeric, to_str
from .detect import resolve_model_path

log = logging.getLogger(__name__)

_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}


def _shape(dims: Any) -> list[int]:
    if dims is None:  # unknown rank
        return [-1]
    return [d if isinstance(d, int) and d >= 0 else -1 for d in dims]


def _allow_spinning(entry: Mapping[str, Any]) -> bool:
    value = (entry.get("parameters") or {}).get("allow_spinning", False)
    if not isinstance(value, bool):
        raise ConfigError(f"parameters.allow_spinning: expected true or false, got {value!r}")
    return value


class OnnxRuntime(Runtime):
    name = "onnx"
    platform = "onnx_onnxv1"

    def load(self, entry: Mapping[str, Any]) -> None:
        path = resolve_model_path(entry["path"], self.name)
        options = onnxruntime.SessionOptions()
        intra = int_parameter(entry, "intra_op_threads") or default_threads()
        inter = int_parameter(entry, "inter_op_threads")
        if intra:
            options.intra_op_num_threads = intra
        if inter:
            options.inter_op_num_threads = inter
        spin = "1" if _allow_spinning(entry) else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise ModelLoadError(f"{path}: ONNX Runtime could not load it: {e}") from e

        self.inputs, self._feed = [], []
        for arg in self.session.get_inputs():
            datatype = _TYPES.get(arg.type)
            if datatype is None:
                raise ModelLoadError(
                    f"{path}: input {arg.name!r} has type {arg.type}; Berth feeds only tensors"
                )
            self.inputs.append(TensorSpec(arg.name, datatype, _shape(arg.shape)))
            self._feed.append((arg.name, datatype, datatype_to_dtype(datatype)))

        self.outputs, self._fetch = [], []
        for arg in self.session.get_outputs():
            datatype = _TYPES.get(arg.type)
            if datatype is None:
                log.warning(
                    "%s: output %r has type %s, which is not a tensor; it is left out",
                    path,
                    arg.name,
                    arg.type,
                )
                continue
            self.outputs.append(TensorSpec(arg.name, datatype, _shape(arg.shape)))
            self._fetch.append(arg.name)
        if not self._fetch:
            raise ModelLoadError(f"{path}: the graph has no tensor outputs")

    def _input(self, inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        array = inputs.get(name)
        if array is None:
            if len(inputs) == 1 and len(self._feed) == 1:
                return next(iter(inputs.values()))
            raise InvalidInput(
                f"missing input {name!r}; the model takes {[n for n, _, _ in self._feed]}"
            )
        return array

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for name, datatype, dtype in self._feed:
            array = self._input(inputs, name)
            if datatype == "BYTES":
                feed[name] = to_str(array, name) if array.dtype.kind in "OS" else array
            elif datatype == "BF16" or array.dtype == dtype:
                feed[name] = array
            else:
                feed[name] = to_numeric(array, dtype, name)
        try:
            results = self.session.run(self._fetch, feed)
        except InvalidArgument as e:  # wrong rank, shape or type: the request's fault
            raise InvalidInput(str(e)) from e
        return dict(zip(self._fetch, results, strict=True))
