"""PyTorch helpers shared by the ``pytorch`` and ``transformers`` runtimes
and :class:`berth.pytorch.TorchModel`: device and thread choice, datatype
mapping, NumPy <-> tensor conversion, naming a model's outputs.

Device (``parameters.device``): ``auto`` (default) puts instance *i* on GPU
``i % visible GPUs`` when CUDA is available, else the CPU; ``cpu``;
``cuda`` (spread like ``auto``, an error without CUDA); or ``cuda:N``.
Threads: ``parameters.threads`` (intra-op), default the worker's
``OMP_NUM_THREADS`` (usable CPUs / instances); ``parameters.interop_threads``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, InvalidInput, InvalidOutput
from ..model import TensorSpec
from . import default_threads, int_parameter, to_numeric

__all__ = [
    "choose_device",
    "datatype_of",
    "from_torch",
    "name_outputs",
    "set_threads",
    "spec_of",
    "to_torch",
]

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "BF16": torch.bfloat16,
}
_DATATYPES: dict[torch.dtype, str] = {v: k for k, v in _TORCH_DTYPES.items()}
_NUMPY: dict[str, np.dtype[Any]] = {
    k: np.dtype(v) for k, v in {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
        "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
        "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
        "BF16": np.uint16,
    }.items()
}  # fmt: skip


def _parameters(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    params = entry.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise ConfigError("parameters: expected a mapping")
    return params


def choose_device(entry: Mapping[str, Any]) -> torch.device:
    """The device of this instance (see the module's docstring). ``entry``
    is a model entry (``parameters``, ``instance``)."""
    requested = _parameters(entry).get("device", "auto")
    instance = entry.get("instance", 0)
    instance = instance if isinstance(instance, int) and instance >= 0 else 0
    if not isinstance(requested, str):
        raise ConfigError(f"parameters.device: expected a string, got {requested!r}")
    if requested in ("auto", "cuda"):
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return torch.device("cuda", instance % torch.cuda.device_count())
        if requested == "cuda":
            raise ConfigError(
                "parameters.device is 'cuda' but this worker sees no CUDA device "
                "(a CPU build of PyTorch, or CUDA_VISIBLE_DEVICES hides them); "
                "use device: auto or cpu"
            )
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"parameters.device: {requested!r} is not a device (auto, cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is not None and device.index >= count:
            raise ConfigError(f"parameters.device: {requested!r} but this worker sees {count} GPUs")
    return device


def set_threads(entry: Mapping[str, Any]) -> None:
    """Sizes PyTorch's thread pools from the entry's parameters."""
    threads = int_parameter(entry, "threads") or default_threads()
    if threads:
        torch.set_num_threads(threads)
    interop = int_parameter(entry, "interop_threads")
    if interop:
        try:
            torch.set_num_interop_threads(interop)
        except RuntimeError:  # only possible before the first parallel work
            pass


def datatype_of(dtype: torch.dtype) -> str:
    """The protocol datatype of a torch dtype."""
    datatype = _DATATYPES.get(dtype)
    if datatype is None:
        raise InvalidOutput(f"tensors of {dtype} cannot be sent; cast them (e.g. to float32)")
    return datatype


def torch_dtype(datatype: str) -> torch.dtype:
    """The torch dtype of a protocol datatype (``BYTES`` has none)."""
    dtype = _TORCH_DTYPES.get(datatype)
    if dtype is None:
        raise ConfigError(
            f"datatype {datatype} has no PyTorch tensor type; decode BYTES inputs in a "
            "berth.Model's preprocess() (docs/frameworks.md)"
        )
    return dtype


def spec_of(name: str, tensor: torch.Tensor, *, batch: bool = True) -> TensorSpec:
    """A spec for a tensor seen on an example run: its dtype and shape, the
    first dimension variable when ``batch``."""
    shape = [int(d) for d in tensor.shape]
    if batch and shape:
        shape[0] = -1
    return TensorSpec(name, datatype_of(tensor.dtype), shape)


def to_torch(array: np.ndarray, spec: TensorSpec, device: torch.device) -> torch.Tensor:
    """An input array as a tensor of the spec's datatype on ``device``."""
    if spec.datatype == "BYTES" or array.dtype.kind in "OSU":
        raise InvalidInput(
            f"input {spec.name!r} holds bytes or text; this model takes {spec.datatype} numbers"
        )
    array = to_numeric(array, _NUMPY[spec.datatype], spec.name, spec.datatype)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).copy()
    tensor = torch.from_numpy(array)
    if spec.datatype == "BF16":
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(device, non_blocking=False)


def from_torch(value: Any, name: str) -> np.ndarray:
    """A model's output tensor (or number) as a NumPy array on the host."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype == torch.bfloat16:
            try:
                import ml_dtypes

                return tensor.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
            except ImportError:
                tensor = tensor.float()
        datatype_of(tensor.dtype)
        return tensor.numpy()
    if isinstance(value, (bool, int, float, np.ndarray, np.generic)):
        return np.asarray(value)
    raise InvalidOutput(
        f"output {name!r} is a {type(value).__name__}; return tensors "
        "(a tensor, a tuple or list of tensors, or a dict of them)"
    )


def name_outputs(result: Any, declared: Sequence[TensorSpec] = ()) -> dict[str, Any]:
    """Names a forward() result: a dict keeps its keys; a tensor or a
    tuple/list takes the declared output names in order, else ``output__0``,
    ``output__1``... (Triton's convention)."""
    if isinstance(result, Mapping):
        return {str(k): v for k, v in result.items()}
    values = list(result) if isinstance(result, (tuple, list)) else [result]
    if declared:
        if len(declared) != len(values):
            raise InvalidOutput(
                f"the model returned {len(values)} outputs but {len(declared)} are declared "
                f"({', '.join(s.name for s in declared)})"
            )
        return {s.name: v for s, v in zip(declared, values, strict=True)}
    return {f"output__{i}": v for i, v in enumerate(values)}
