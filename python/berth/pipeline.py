"""Pipelines declared in Python, and the ``python:`` steps of any pipeline.

A pipeline is a named DAG of steps that clients call like a model
(docs/pipelines.md). In ``berth.yaml`` it is an entry of ``pipelines:``; in
Python it is a :class:`Pipeline` at module level of an app file served with
``berth serve --config app.py``. Both become the same engine document::

    import berth

    sentiment = berth.Pipeline(
        "sentiment",
        steps=[
            berth.Step("tokenize", python="text.py:tokenize"),
            berth.Step("classify", model="clf"),
            berth.Step("label", python="text.py:label"),
        ],
    )

A ``python:`` step names ``file.py:function`` (or ``file.py:Class`` for a
:class:`berth.Model` subclass), relative to the config file, or is the
function itself. The ``berth`` command turns it into a model of its own,
``<pipeline>.<step>``, served by the python runtime in its own worker
processes, so it is batched and scaled like any model (``max_batch_size``,
``instances`` and ``parameters`` on the step go to that model).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["Case", "Pipeline", "Step", "Switch", "expand_python_steps", "load_app_file"]

_UNSET: Any = object()

#: Keys of a ``python:`` step that go to the model it becomes.
PYTHON_STEP_MODEL_KEYS = frozenset(
    {"max_batch_size", "max_queue_delay_us", "instances", "parameters", "timeout_us"}
)


@dataclass
class Case:
    """One case of a :class:`Switch`: a test on the value and the model it
    picks. Give exactly one of ``equals``, ``in_``, ``lt`` or ``gt``."""

    model: str
    equals: Any = _UNSET
    in_: Sequence[Any] | None = None
    lt: float | None = None
    gt: float | None = None

    def to_dict(self) -> dict[str, Any]:
        given: dict[str, Any] = {}
        if self.equals is not _UNSET:
            given["equals"] = self.equals
        if self.in_ is not None:
            given["in"] = list(self.in_)
        if self.lt is not None:
            given["lt"] = self.lt
        if self.gt is not None:
            given["gt"] = self.gt
        if len(given) != 1:
            raise ConfigError(
                f"berth.Case(model={self.model!r}): give exactly one of equals, in_, lt, gt"
            )
        return {**given, "model": self.model}


@dataclass
class Switch:
    """Routes a step to one model per request, on a request ``input`` (its
    first element), a ``header`` or a request ``parameter``: give exactly
    one of them, naming what to read."""

    cases: Sequence[Case | Mapping[str, Any]]
    input: str | None = None
    header: str | None = None
    parameter: str | None = None
    default: str | None = None

    def to_dict(self) -> dict[str, Any]:
        reads = {
            k: v
            for k, v in (("input", self.input), ("header", self.header), ("parameter", self.parameter))
            if v is not None
        }
        if len(reads) != 1:
            raise ConfigError("berth.Switch: give exactly one of input=, header=, parameter=")
        doc: dict[str, Any] = {
            **reads,
            "cases": [c.to_dict() if isinstance(c, Case) else dict(c) for c in self.cases],
        }
        if self.default is not None:
            doc["default"] = self.default
        return doc


@dataclass
class Step:
    """One step: a ``model``, a ``python`` function (``"file.py:function"``
    or the function itself) or a ``switch``. ``inputs`` maps the step's
    input names to ``"$request_input"`` or ``"step.output"``; without it a
    step reads every output of the step before it (the first step: every
    request input)."""

    name: str
    model: str | None = None
    python: str | Callable[..., Any] | type | None = None
    switch: Switch | Mapping[str, Any] | None = None
    version: str | None = None
    inputs: Mapping[str, str] | None = None
    max_batch_size: int | None = None
    instances: int | None = None
    parameters: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        if self.model is not None:
            doc["model"] = self.model
        if self.python is not None:
            doc["python"] = _python_ref(self.python, self.name)
        if self.switch is not None:
            doc["switch"] = (
                self.switch.to_dict() if isinstance(self.switch, Switch) else dict(self.switch)
            )
        for key in ("version", "max_batch_size", "instances"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.inputs is not None:
            doc["inputs"] = dict(self.inputs)
        if self.parameters is not None:
            doc["parameters"] = dict(self.parameters)
        return doc


@dataclass
class Pipeline:
    """A named pipeline: steps, optional declared ``inputs`` (tensor specs)
    and ``outputs`` (name -> ``"step.output"``; default: every output of the
    last step)."""

    name: str
    steps: Sequence[Step | Mapping[str, Any]]
    inputs: Sequence[Any] | None = None
    outputs: Mapping[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``pipelines:`` entry, as in berth.yaml."""
        doc: dict[str, Any] = {
            "name": self.name,
            "steps": [s.to_dict() if isinstance(s, Step) else dict(s) for s in self.steps],
        }
        if self.inputs is not None:
            doc["inputs"] = [
                i.to_dict() if hasattr(i, "to_dict") else dict(i) for i in self.inputs
            ]
        if self.outputs is not None:
            doc["outputs"] = dict(self.outputs)
        return doc


def _python_ref(value: Any, step: str) -> str:
    if isinstance(value, str):
        return value
    import inspect  # here, not at the top: `berth serve` starts without it

    try:
        source = inspect.getsourcefile(value)
    except TypeError:
        source = None
    qualname = getattr(value, "__qualname__", "")
    if source is None or not qualname or "." in qualname:
        raise ConfigError(
            f"berth.Step({step!r}): python= takes 'file.py:function' or a module-level "
            "function or class defined in a .py file"
        )
    return f"{os.path.abspath(source)}:{qualname}"


# ------------------------------------------------------------- app files


def load_app_file(path: Path) -> dict[str, Any]:
    """The app config of a Python file: its module-level :class:`Pipeline`
    objects become ``pipelines`` and a module-level ``models`` list (entries
    as in berth.yaml) becomes ``models``."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = "berth_app_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{path}: importing it failed: {type(e).__name__}: {e}") from None
    doc: dict[str, Any] = {}
    pipelines = [v for v in vars(module).values() if isinstance(v, Pipeline)]
    if pipelines:
        doc["pipelines"] = [p.to_dict() for p in pipelines]
    models = getattr(module, "models", None)
    if models is not None:
        if not isinstance(models, list):
            raise ConfigError(f"{path}: models: expected a list of model entries")
        doc["models"] = models
    if not doc:
        raise ConfigError(
            f"{path}: defines no berth.Pipeline and no `models` list; an app file "
            "declares pipelines as module-level berth.Pipeline(...) objects"
        )
    return doc


# ---------------------------------------------------------- python steps


def expand_python_steps(
    pipelines: Any, base: Path, where: str
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Turns every ``python:`` step into a ``model:`` step and returns the
    pipelines and the model entries those steps need. Other mistakes are
    left to the engine, whose errors name the key path."""
    if not isinstance(pipelines, list):
        return pipelines, []
    out: list[Any] = []
    models: list[dict[str, Any]] = []
    for i, p in enumerate(pipelines):
        if not isinstance(p, Mapping) or not isinstance(p.get("steps"), list):
            out.append(p)
            continue
        p = dict(p)
        steps = []
        for k, step in enumerate(p["steps"]):
            if not isinstance(step, Mapping) or "python" not in step:
                steps.append(step)
                continue
            at = f"{where}: pipelines[{i}].steps[{k}]"
            steps.append(_python_step(dict(step), str(p.get("name")), base, at, models))
        p["steps"] = steps
        out.append(p)
    return out, models


def _python_step(
    step: dict[str, Any], pipeline: str, base: Path, at: str, models: list[dict[str, Any]]
) -> dict[str, Any]:
    ref = step.pop("python")
    if "model" in step or "switch" in step:
        raise ConfigError(f"{at}: give a step one of model, python or switch")
    if not isinstance(ref, str) or ":" not in ref:
        raise ConfigError(
            f"{at}.python: expected 'file.py:function' (or file.py:Class), got {ref!r}"
        )
    file, _, attr = ref.rpartition(":")
    path = Path(file).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.suffix != ".py" or not attr.isidentifier():
        raise ConfigError(f"{at}.python: expected 'file.py:function', got {ref!r}")
    if not path.is_file():
        raise ConfigError(f"{at}.python: {path} does not exist")
    name = step.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{at}.name: required")
    entry: dict[str, Any] = {
        "name": f"{pipeline}.{name}",
        "version": "1",
        "runtime": "python",
        "path": os.path.abspath(path),
        "class": attr,
    }
    for key in sorted(PYTHON_STEP_MODEL_KEYS):
        if key in step:
            entry[key] = step.pop(key)
    models.append(entry)
    step["model"] = entry["name"]
    return step
