"""PyTorch programs: TorchScript (``.pt``, ``torch.jit.save``) and
``torch.export`` programs (``.pt2``, ``torch.export.save``).

Platform ``pytorch_torchscript`` or ``pytorch_export``. Eager models (an
``nn.Module`` built by Python code) are served through
:class:`berth.pytorch.TorchModel` and the python runtime instead.

Signature, first that applies:

- inputs: the entry's declared ``inputs`` (matched to forward()'s arguments
  by name when they carry exactly those names, else in order); else a
  ``.pt2`` program's own input specs (one per tensor of its inputs, named
  by forward()'s argument or the tensor's dict key, see
  :func:`~berth.runtimes.leaf_names`; the program gets them back in its
  exported structure; dynamic dimensions are -1); else ``parameters.example_input`` (one
  ``{shape, datatype[, name]}`` or a list of them) named after forward()'s
  arguments, the first dimension variable. A TorchScript file records no
  input types, so it needs one of these.
- outputs: the declared ``outputs``; else a ``.pt2`` program's output specs;
  else found by running the model once on the example input (or on ones
  built from the declared input shapes, -1 taken as 1). A dict result keeps
  its keys; a tensor or a tuple of tensors gives ``output__0``,
  ``output__1``...

Device and threads: see :mod:`berth.runtimes._torch` (``parameters.device``,
``threads``, ``interop_threads``). Batches run under ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import (
    GetAttrKey,
    MappingKey,
    SequenceKey,
    tree_flatten_with_path,
    tree_unflatten,
)

from ..errors import ConfigError, InvalidInput, ModelLoadError
from ..model import TensorSpec
from . import Runtime, declared, leaf_names
from ._torch import (
    choose_device,
    datatype_of,
    from_torch,
    name_outputs,
    set_threads,
    spec_of,
    to_torch,
    torch_dtype,
)
from .detect import resolve_model_path

log = logging.getLogger(__name__)

__all__ = ["PyTorchRuntime", "example_specs", "example_tensors", "load_torchscript"]


def example_specs(value: Any, where: str = "parameters.example_input") -> list[dict[str, Any]]:
    """``parameters.example_input`` as a list of ``{shape, datatype, name?}``."""
    several = isinstance(value, list) and value and isinstance(value[0], Mapping)
    items = value if several else [value]
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("shape"), list):
            raise ConfigError(
                f"{where}: expected {{shape: [1, 4], datatype: FP32}} or a list of them, "
                f"got {value!r}"
            )
        shape = item["shape"]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ConfigError(f"{where}[{i}].shape: expected sizes >= 0, got {shape!r}")
        datatype = str(item.get("datatype", "FP32")).upper()
        torch_dtype(datatype)  # BYTES and unknown names are refused here
        specs.append({"shape": list(shape), "datatype": datatype, "name": item.get("name")})
    return specs


def example_tensors(specs: Sequence[Mapping[str, Any]], device: torch.device) -> list[torch.Tensor]:
    """Tensors of ones (zeros for integers) for example specs; -1 sizes are 1."""
    tensors = []
    for spec in specs:
        dtype = torch_dtype(spec["datatype"])
        shape = [1 if d < 0 else d for d in spec["shape"]]
        make = torch.ones if dtype.is_floating_point else torch.zeros
        tensors.append(make(shape, dtype=dtype, device=device))
    return tensors


def load_torchscript(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """A TorchScript module from a file, on ``device``, in eval mode.

    PyTorch 2.10+ marks ``torch.jit.load`` deprecated; Berth still serves
    TorchScript, so that warning is silenced here. Raises
    :class:`~berth.ModelLoadError` with what to do when the file is not
    TorchScript."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:
        raise ModelLoadError(
            f"{path}: torch.jit.load could not load it ({type(e).__name__}: {e}). A .pt file "
            "must be TorchScript (torch.jit.script/trace then .save); serve a state_dict or a "
            "pickled nn.Module with a berth.pytorch.TorchModel instead"
        ) from e
    return module.eval()


def _torchscript_arg_names(module: Any) -> list[str]:
    try:
        args = module.forward.schema.arguments
    except (AttributeError, RuntimeError):
        return []
    return [a.name for a in args if a.name != "self"]


class PyTorchRuntime(Runtime):
    name = "pytorch"
    platform = "pytorch_torchscript"

    def load(self, entry: Mapping[str, Any]) -> None:
        path = resolve_model_path(entry["path"], self.name)
        set_threads(entry)
        self.device = choose_device(entry)
        if path.suffix.lower() == ".pt2":
            self.platform = "pytorch_export"
            self._load_export(path, entry)
        else:
            self._load_torchscript(path, entry)
        log.info("%s on %s: inputs %s", path.name, self.device, [s.to_dict() for s in self.inputs])

    # ------------------------------------------------------------ loading

    def _load_torchscript(self, path: Path, entry: Mapping[str, Any]) -> None:
        module = load_torchscript(path, self.device)
        self.fn: Any = module
        arg_names = _torchscript_arg_names(module)
        self._in_spec: Any = None
        self.inputs = self._input_specs(entry, arg_names, path, None)
        self._order = _feed_order(self.inputs, arg_names)
        self.outputs = self._output_specs(entry, path, None)

    def _load_export(self, path: Path, entry: Mapping[str, Any]) -> None:
        try:
            program = torch.export.load(str(path))
        except Exception as e:
            raise ModelLoadError(
                f"{path}: torch.export.load could not load it ({type(e).__name__}: {e}); "
                "save programs with torch.export.save"
            ) from e
        module = program.module()
        if self.device.type != "cpu":
            module = module.to(self.device)
        self.fn = module
        program_inputs, program_outputs, self._in_spec = _program_specs(program)
        arg_names = [s.name for s in program_inputs]
        self.inputs = self._input_specs(entry, arg_names, path, program_inputs)
        self._order = _feed_order(self.inputs, arg_names)
        self.outputs = self._output_specs(entry, path, program_outputs)

    def _input_specs(
        self,
        entry: Mapping[str, Any],
        arg_names: list[str],
        path: Path,
        from_program: list[TensorSpec] | None,
    ) -> list[TensorSpec]:
        specs = declared(entry, "inputs")
        params = entry.get("parameters") or {}
        self._example = (
            example_specs(params["example_input"]) if params.get("example_input") else None
        )
        if not specs and from_program is not None:
            specs = from_program
        if not specs and self._example is not None:
            names = [
                e["name"] or (arg_names[i] if len(arg_names) == len(self._example) else None)
                for i, e in enumerate(self._example)
            ]
            specs = [
                TensorSpec(n or f"input__{i}", e["datatype"], [-1, *e["shape"][1:]])
                if e["shape"]
                else TensorSpec(n or f"input__{i}", e["datatype"], [])
                for i, (n, e) in enumerate(zip(names, self._example, strict=True))
            ]
        if not specs:
            args = f" ({', '.join(arg_names)})" if arg_names else ""
            raise ConfigError(
                f"{path}: a TorchScript file does not record its input types; declare the "
                f"inputs of forward(){args} in berth.yaml, e.g. inputs: [{{name: x, datatype: "
                "FP32, shape: [-1, 4]}], or give parameters.example_input: {shape: [1, 4], "
                "datatype: FP32}"
            )
        if arg_names and len(specs) != len(arg_names):
            raise ConfigError(
                f"{path}: forward() takes {len(arg_names)} tensors ({', '.join(arg_names)}) "
                f"but {len(specs)} inputs are declared"
            )
        for spec in specs:
            torch_dtype(spec.datatype)
        return specs

    def _output_specs(
        self, entry: Mapping[str, Any], path: Path, from_program: list[TensorSpec] | None
    ) -> list[TensorSpec]:
        self._declared_outputs = declared(entry, "outputs")
        if self._declared_outputs:
            return self._declared_outputs
        if from_program is not None:
            return from_program
        if self._example is not None:  # given in forward()'s order
            example = self._example
        else:
            example = [self.inputs[i].to_dict() for i in self._order]
        try:
            with torch.inference_mode():
                result = self._call(example_tensors(example, self.device))
            named = name_outputs(result)
            return [
                spec_of(name, value, batch=_has_batch(example))
                for name, value in named.items()
                if isinstance(value, torch.Tensor)
            ]
        except Exception as e:
            raise ConfigError(
                f"{path}: running the model once on an example input to find its outputs "
                f"failed ({type(e).__name__}: {e}); declare outputs in berth.yaml or give a "
                "working parameters.example_input"
            ) from e

    # ------------------------------------------------------------ serving

    def _args(self, inputs: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
        """The input tensors in the order of the model's arguments (the
        flattened leaves of a ``.pt2`` program's inputs)."""
        if len(self.inputs) == 1 and len(inputs) == 1:
            return [to_torch(next(iter(inputs.values())), self.inputs[0], self.device)]
        args = []
        for spec in self.inputs:
            array = inputs.get(spec.name)
            if array is None:
                raise InvalidInput(
                    f"missing input {spec.name!r}; the model takes "
                    f"{', '.join(s.name for s in self.inputs)}"
                )
            args.append(to_torch(array, spec, self.device))
        return [args[i] for i in self._order]

    def _call(self, tensors: list[torch.Tensor]) -> Any:
        """Runs the model on tensors in argument order; a ``.pt2`` program
        gets them in the structure it was exported with (dicts, lists and
        keyword arguments rebuilt from its input tree spec)."""
        if self._in_spec is None:
            return self.fn(*tensors)
        args, kwargs = tree_unflatten(tensors, self._in_spec)
        return self.fn(*args, **kwargs)

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        args = self._args(inputs)
        with torch.inference_mode():
            result = self._call(args)
        named = name_outputs(result, self._declared_outputs)
        return {name: from_torch(value, name) for name, value in named.items()}


def _feed_order(specs: Sequence[TensorSpec], arg_names: Sequence[str]) -> list[int]:
    """For each argument of the model, the index of the input spec that
    feeds it: by name when the specs are named exactly after the arguments
    (in any order), else in order."""
    names = [s.name for s in specs]
    if len(names) == len(arg_names) and sorted(names) == sorted(arg_names):
        return [names.index(a) for a in arg_names]
    return list(range(len(specs)))


def _has_batch(example: Sequence[Mapping[str, Any]]) -> bool:
    return all(len(e["shape"]) > 0 for e in example)


def _fake_spec(name: str, value: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) else -1 for d in value.shape]
    return TensorSpec(name, datatype_of(value.dtype), shape)


def _program_specs(program: Any) -> tuple[list[TensorSpec], list[TensorSpec], Any]:
    """Input and output specs recorded in an exported program, and the tree
    spec of its ``(args, kwargs)`` (``None`` when the program has none that
    matches its inputs)."""
    signature = program.graph_signature
    user_inputs = [str(n) for n in signature.user_inputs]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    try:
        arg_names = list(program.module_call_graph[0].signature.forward_arg_names or [])
    except (AttributeError, IndexError):
        arg_names = []
    in_spec = getattr(program.call_spec, "in_spec", None)
    if in_spec is not None and in_spec.num_leaves == len(user_inputs):
        names = leaf_names(_input_paths(in_spec, arg_names), user_inputs)
    else:
        in_spec = None
        names = arg_names if len(arg_names) == len(user_inputs) else user_inputs
    inputs = []
    for name, node_name in zip(names, user_inputs, strict=True):
        value = nodes[node_name].meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"program input {name!r} is not a tensor; Berth feeds tensors")
        inputs.append(_fake_spec(name, value))

    output_node = next(n for n in program.graph.nodes if n.op == "output")
    values = [a.meta.get("val") for a in output_node.args[0]]
    user = len(signature.user_outputs)
    values = values[len(values) - user :]  # mutated buffers come first
    out_spec = program.call_spec.out_spec
    keys = list(out_spec.context) if out_spec is not None and out_spec.type is dict else []
    names = [str(k) for k in keys] if len(keys) == len(values) else []
    names = names or [f"output__{i}" for i in range(len(values))]
    outputs = [
        _fake_spec(n, v) for n, v in zip(names, values, strict=True) if isinstance(v, torch.Tensor)
    ]
    return inputs, outputs, in_spec


def _input_paths(in_spec: Any, arg_names: Sequence[str]) -> list[tuple[object, ...]]:
    """The path of every leaf of a program's ``(args, kwargs)`` tree, with
    positional arguments named after forward()'s arguments and dict keys,
    keyword names and attribute names as ``str``."""
    tree = tree_unflatten(list(range(in_spec.num_leaves)), in_spec)
    paths: list[tuple[object, ...]] = []
    for keys, _ in tree_flatten_with_path(tree)[0]:
        path: list[object] = []
        for depth, key in enumerate(keys):
            if depth == 0:  # 0: the positional arguments, 1: the keyword ones
                continue
            if isinstance(key, SequenceKey):
                named = depth == 1 and key.idx < len(arg_names)
                path.append(arg_names[key.idx] if named else key.idx)
            elif isinstance(key, MappingKey):
                path.append(key.key if isinstance(key.key, str) else str(key.key))
            elif isinstance(key, GetAttrKey):
                path.append(key.name)
            else:
                path.append(str(key))
        paths.append(tuple(path))
    return paths
