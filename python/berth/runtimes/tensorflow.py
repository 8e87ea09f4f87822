"""TensorFlow models: SavedModel folders and Keras ``.keras`` files.

- A SavedModel (a folder with ``saved_model.pb``, platform
  ``tensorflow_savedmodel``) is served through one of its signatures:
  ``parameters.signature_name``, default ``serving_default``. Inputs and
  outputs are the signature's, with their names, datatypes (``tf.string`` is
  BYTES) and shapes (unknown dimensions are -1).
- A Keras file (``.keras``, platform ``tensorflow_keras``) is loaded with
  ``keras.saving.load_model(compile=False)`` and called with
  ``training=False`` on its inputs in the structure it was built with
  (``model.input``: a tensor, a list, a dict, nested dicts). Inputs are its
  input tensors, named by their dict key, else the ``keras.Input`` name
  (:func:`~berth.runtimes.leaf_names`); outputs are the keys of a dict
  output (innermost keys when nested), else the names of the layers that
  produce them.

Threads: ``parameters.intra_op_threads`` (default: the worker's
``OMP_NUM_THREADS``) and ``parameters.inter_op_threads``. With a GPU build
and GPUs visible, instance *i* sees only GPU ``i % GPUs`` (memory growth on);
``parameters.device: cpu`` hides them all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ..errors import ConfigError, InvalidInput, InvalidOutput, ModelLoadError
from ..model import TensorSpec
from ..tensors import datatype_to_dtype
from . import Runtime, default_threads, int_parameter, leaf_names, to_numeric
from .detect import resolve_model_path

log = logging.getLogger(__name__)

__all__ = ["TensorFlowRuntime"]

_DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
    "string": "BYTES",
}


def _datatype(dtype: Any, what: str) -> str:
    name = dtype if isinstance(dtype, str) else tf.as_dtype(dtype).name
    datatype = _DATATYPES.get(name)
    if datatype is None:
        raise ModelLoadError(f"{what} has dtype {name}, which Berth cannot send or receive")
    return datatype


def _shape(shape: Any) -> list[int]:
    dims = list(shape) if shape is not None and getattr(shape, "rank", 0) is not None else None
    if dims is None:
        return [-1]
    return [int(d) if d is not None else -1 for d in dims]


def _configure(entry: Mapping[str, Any]) -> None:
    """Threads and devices; only possible before TensorFlow runs anything."""
    intra = int_parameter(entry, "intra_op_threads") or default_threads()
    inter = int_parameter(entry, "inter_op_threads")
    params = entry.get("parameters") or {}
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        gpus = tf.config.list_physical_devices("GPU")
        if params.get("device") == "cpu":
            tf.config.set_visible_devices([], "GPU")
        elif gpus:
            instance = entry.get("instance", 0)
            gpu = gpus[(instance if isinstance(instance, int) else 0) % len(gpus)]
            tf.config.set_visible_devices([gpu], "GPU")
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as e:  # already initialised: keep what is set
        log.warning("TensorFlow was initialised already; thread and device settings kept: %s", e)


def _to_tf(array: np.ndarray, spec: TensorSpec) -> Any:
    if spec.datatype == "BYTES":
        if array.dtype.kind not in "OS":
            raise InvalidInput(f"input {spec.name!r} must be BYTES")
        return tf.constant(array)
    if array.dtype.kind in "OSU":
        raise InvalidInput(f"input {spec.name!r} must hold {spec.datatype} numbers")
    if spec.datatype == "BF16":
        widened = to_numeric(array, np.dtype(np.float32), spec.name, "BF16")
        return tf.cast(tf.constant(widened), tf.bfloat16)
    return tf.constant(to_numeric(array, datatype_to_dtype(spec.datatype), spec.name))


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return np.asarray(value.numpy())
    if isinstance(value, np.ndarray):
        return value
    raise InvalidOutput(f"output {name!r} is a {type(value).__name__}, not a tensor")


class TensorFlowRuntime(Runtime):
    name = "tensorflow"
    platform = "tensorflow_savedmodel"

    def load(self, entry: Mapping[str, Any]) -> None:
        path = resolve_model_path(entry["path"], self.name)
        _configure(entry)
        if path.is_file() and path.suffix.lower() == ".keras":
            self.platform = "tensorflow_keras"
            self._load_keras(path)
        elif path.is_dir():
            self._load_savedmodel(path, entry)
        else:
            raise ModelLoadError(
                f"{path}: the tensorflow runtime serves SavedModel folders (saved_model.pb) "
                "and Keras .keras files"
            )

    # ------------------------------------------------------------ SavedModel

    def _load_savedmodel(self, path: Path, entry: Mapping[str, Any]) -> None:
        params = entry.get("parameters") or {}
        name = params.get("signature_name", "serving_default")
        try:
            self._loaded = tf.saved_model.load(str(path))
        except Exception as e:
            raise ModelLoadError(
                f"{path}: tf.saved_model.load could not load it ({type(e).__name__}: {e})"
            ) from e
        signatures = dict(self._loaded.signatures)
        if name not in signatures:
            have = ", ".join(sorted(signatures)) or "none"
            raise ConfigError(
                f"{path}: no signature {name!r} (signatures: {have}); save the model with "
                "signatures={'serving_default': fn} or set parameters.signature_name"
            )
        self._fn = signatures[name]
        _, kwargs = self._fn.structured_input_signature
        self.inputs = [
            TensorSpec(key, _datatype(spec.dtype, f"input {key!r}"), _shape(spec.shape))
            for key, spec in sorted(kwargs.items())
        ]
        outputs = self._fn.structured_outputs
        if not isinstance(outputs, Mapping):
            raise ModelLoadError(f"{path}: signature {name!r} does not return named outputs")
        self.outputs = [
            TensorSpec(key, _datatype(spec.dtype, f"output {key!r}"), _shape(spec.shape))
            for key, spec in sorted(outputs.items())
        ]
        self._keras = None

    # ------------------------------------------------------------- Keras

    def _load_keras(self, path: Path) -> None:
        import keras

        try:
            model = keras.saving.load_model(str(path), compile=False)
        except Exception as e:
            raise ModelLoadError(
                f"{path}: keras.saving.load_model could not load it ({type(e).__name__}: {e})"
            ) from e
        self._keras = model
        self._keras_struct, leaves, names = _keras_inputs(model)
        self.inputs = [
            TensorSpec(n, _datatype(t.dtype, f"input {n!r}"), _shape(t.shape))
            for n, t in zip(names, leaves, strict=True)
        ]
        out_leaves, self._keras_output_names = _keras_outputs(model)
        self.outputs = [
            TensorSpec(n, _datatype(t.dtype, f"output {n!r}"), _shape(t.shape))
            for n, t in zip(self._keras_output_names, out_leaves, strict=True)
        ]

    # ------------------------------------------------------------- serving

    def _array(self, inputs: Mapping[str, np.ndarray], spec: TensorSpec) -> np.ndarray:
        array = inputs.get(spec.name)
        if array is None:
            if len(inputs) == 1 and len(self.inputs) == 1:
                return next(iter(inputs.values()))
            raise InvalidInput(
                f"missing input {spec.name!r}; the model takes "
                f"{', '.join(s.name for s in self.inputs)}"
            )
        return array

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        feed = [_to_tf(self._array(inputs, s), s) for s in self.inputs]
        try:
            if self._keras is None:
                result = self._fn(**{s.name: t for s, t in zip(self.inputs, feed, strict=True)})
            else:
                result = self._keras(self._keras_arguments(feed), training=False)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            raise InvalidInput(f"the model refused the inputs: {e}") from e
        if self._keras is None:
            if not isinstance(result, Mapping):  # checked at load; a safety net
                raise InvalidOutput("the signature did not return named outputs")
            return {str(k): _to_numpy(v, str(k)) for k, v in result.items()}
        import keras

        values = keras.tree.flatten(result)
        names = self._keras_output_names
        if len(values) != len(names):
            raise InvalidOutput(
                f"the model returned {len(values)} tensors, not its {len(names)} outputs "
                f"({', '.join(names)})"
            )
        return {n: _to_numpy(v, n) for n, v in zip(names, values, strict=True)}

    def _keras_arguments(self, feed: list[Any]) -> Any:
        """The tensors in the structure the model was built with: a dict
        (nested ones too) for a dict-input model, else a list, or the tensor
        of a single-input model."""
        if self._keras_struct is None:
            return feed[0] if len(feed) == 1 else feed
        import keras

        return keras.tree.pack_sequence_as(self._keras_struct, feed)


def _keras_inputs(model: Any) -> tuple[Any, list[Any], list[str]]:
    """The input structure a Keras model is called with (``model.input``:
    a tensor, a list, a dict, nested dicts; ``None`` when the model does not
    say), its leaf tensors in Keras' flattening order, and their Berth names
    (see :func:`~berth.runtimes.leaf_names`)."""
    import keras

    try:
        struct = model.input
    except (AttributeError, ValueError):
        struct = None
    if struct is None:
        leaves = list(model.inputs)
        return None, leaves, [str(t.name) for t in leaves]
    flat = keras.tree.flatten_with_path(struct)
    leaves = [t for _, t in flat]
    if [id(t) for t in keras.tree.flatten(struct)] != [id(t) for t in leaves]:
        raise ModelLoadError("Keras flattens this model's inputs in two different orders")
    names = leaf_names([tuple(p) for p, _ in flat], [str(t.name) for t in leaves])
    return struct, leaves, names


def _keras_outputs(model: Any) -> tuple[list[Any], list[str]]:
    """A Keras model's output tensors in flattening order and their names:
    a dict output's keys (the innermost key for nested dicts), else the
    names of the layers that produce them."""
    import keras

    struct = getattr(model, "_outputs_struct", None)
    if struct is None:
        outputs = list(model.outputs)
        return outputs, _keras_output_names(model, outputs)
    flat = keras.tree.flatten_with_path(struct)
    leaves = [t for _, t in flat]
    fallbacks = _keras_output_names(model, leaves)
    return leaves, leaf_names([tuple(p) for p, _ in flat], fallbacks)


def _keras_output_names(model: Any, outputs: list[Any]) -> list[str]:
    names = getattr(model, "output_names", None)
    if isinstance(names, (list, tuple)) and len(names) == len(outputs):
        return [str(n) for n in names]
    found = []
    for tensor in outputs:
        history = getattr(tensor, "_keras_history", None)
        operation = getattr(history, "operation", None) or (history[0] if history else None)
        found.append(getattr(operation, "name", None))
    if all(found) and len(set(found)) == len(found):
        return [str(n) for n in found]
    return [f"output__{i}" for i in range(len(outputs))]
