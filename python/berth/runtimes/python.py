"""Custom models: a :class:`berth.Model` subclass in a ``.py`` file.

``path`` is the ``.py`` file, or a folder holding ``model.py``; ``class``
names the subclass (when it is null, the file must define exactly one
``berth.Model`` subclass that no other subclass there derives from). The
file's folder goes on ``sys.path`` so it can import its neighbours, and
``model.context.path`` is that folder, where a model's artefacts usually live.

``class`` may also name a plain function ``fn(inputs) -> outputs`` (dicts of
NumPy arrays, optionally taking ``parameters=``): it is served as a model
whose ``predict`` is that function. That is how a pipeline's ``python:``
step (docs/pipelines.md) runs a pre- or post-processing function in its own
worker, batched and scaled like any model.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelLoadError
from ..model import Model, ModelContext, TensorSpec
from . import Runtime
from .detect import PYTHON_MODEL_FILE


def _model_file(path: Path) -> Path:
    if path.is_dir():
        path = path / PYTHON_MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"custom model file {path} does not exist")
    if path.suffix != ".py":
        raise ConfigError(
            f"{path}: the python runtime needs a .py file (or a folder with model.py)"
        )
    return path


def _module_name(path: Path) -> str:
    stem = path.stem
    taken = stem in sys.modules or stem in sys.stdlib_module_names
    if stem.isidentifier() and not taken:
        return stem
    return "berth_user_" + "".join(c if c.isalnum() else "_" for c in stem)


def import_file(path: Path) -> ModuleType:
    """Imports a .py file as a module, with its folder on ``sys.path``."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def function_model(fn: Any) -> type[Model]:
    """A :class:`Model` subclass whose ``predict`` calls ``fn``. The
    function may carry ``inputs``, ``outputs`` and ``max_batch_size``
    attributes, read as a class's are."""
    takes = _takes_parameters(fn)

    def predict(self: Model, inputs: dict[str, Any], parameters: Any = None) -> Any:
        out = fn(inputs, parameters=parameters or {}) if takes else fn(inputs)
        if not isinstance(out, Mapping):
            raise TypeError(
                f"{fn.__name__}() returned {type(out).__name__}; a pipeline function "
                "returns a dict of output name -> array"
            )
        return dict(out)

    attrs: dict[str, Any] = {
        "predict": predict,
        "platform": "python_function",
        "inputs": getattr(fn, "inputs", None),
        "outputs": getattr(fn, "outputs", None),
        "max_batch_size": int(getattr(fn, "max_batch_size", 0) or 0),
        "__module__": getattr(fn, "__module__", __name__),
    }
    return type(fn.__name__, (Model,), attrs)


def find_model_class(module: ModuleType, class_name: str | None, path: Path) -> type[Model]:
    """The :class:`Model` subclass to serve from a module (a plain function
    named by ``class_name`` is wrapped by :func:`function_model`)."""
    defined = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Model) and obj is not Model
    ]
    if class_name:
        obj = getattr(module, class_name, None)
        if obj is None:
            names = ", ".join(sorted(c.__name__ for c in defined)) or "none"
            raise ConfigError(
                f"{path}: has no class {class_name!r} (berth.Model subclasses there: {names})"
            )
        if not isinstance(obj, type) and callable(obj):
            return function_model(obj)
        if not (isinstance(obj, type) and issubclass(obj, Model)):
            raise ConfigError(
                f"{path}: {class_name} is neither a berth.Model subclass nor a function"
            )
        return obj
    own = [c for c in defined if c.__module__ == module.__name__]
    leaves = [c for c in own if not any(o is not c and issubclass(o, c) for o in own)]
    if len(leaves) == 1:
        return leaves[0]
    if not leaves:
        raise ConfigError(
            f"{path}: defines no berth.Model subclass; write `class MyModel(berth.Model)` "
            "with load() and predict()"
        )
    names = ", ".join(sorted(c.__name__ for c in leaves))
    raise ConfigError(
        f"{path}: defines several berth.Model subclasses ({names}); name one with "
        f"`berth serve {path.name}:{leaves[0].__name__}` or `class:` in berth.yaml"
    )


def _specs(obj: type[Model] | Model, attr: str) -> list[TensorSpec]:
    value = getattr(obj, attr, None)
    if value is None:
        return []
    name = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    try:
        return [TensorSpec.coerce(s) for s in value]
    except TypeError:
        raise ConfigError(f"{name}.{attr}: expected a list of berth.TensorSpec") from None


def _takes_parameters(method: Any) -> bool:
    try:
        return "parameters" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class PythonRuntime(Runtime):
    name = "python"
    platform = Model.platform

    def load(self, entry: Mapping[str, Any]) -> None:
        path = _model_file(Path(entry["path"]))
        module = import_file(path)
        cls = find_model_class(module, entry.get("class"), path)
        self.inputs, self.outputs = _specs(cls, "inputs"), _specs(cls, "outputs")
        if not isinstance(cls.platform, str) or not cls.platform:
            raise ConfigError(f"{cls.__name__}.platform: expected a non-empty string")
        self.platform = cls.platform
        self.batch_hint = int(getattr(cls, "max_batch_size", 0) or 0)
        self.decoupled = (
            bool(getattr(cls, "decoupled", False))
            or inspect.isgeneratorfunction(cls.predict)
            or bool(entry.get("decoupled"))
        )
        if self.decoupled:
            self.batch_hint = 0  # one request per call

        model = cls()
        model.context = ModelContext(
            name=str(entry.get("name", path.stem)),
            version=str(entry.get("version", "1")),
            path=path.parent,
            parameters=dict(entry.get("parameters") or {}),
            instance=int(entry.get("instance", 0)),
            max_batch_size=int(entry.get("max_batch_size", 0)),
        )
        model.load()
        # load() may set the signature on the instance (found from the
        # artefacts it loaded); class attributes are the default.
        self.inputs, self.outputs = _specs(model, "inputs"), _specs(model, "outputs")
        self.model = model
        self.pass_parameters = (
            _takes_parameters(model.preprocess),
            _takes_parameters(model.predict),
            _takes_parameters(model.postprocess),
        )
        try:
            self.pass_sequences = "sequences" in inspect.signature(model.predict).parameters
        except (TypeError, ValueError):
            self.pass_sequences = False

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        model = self.model
        pre, run, post = self.pass_parameters
        params = dict(parameters or {})
        call: Any = model.preprocess
        inputs = call(inputs, parameters=params) if pre else call(inputs)
        call = model.predict
        kw: dict[str, Any] = {"parameters": params} if run else {}
        if self.pass_sequences:
            kw["sequences"] = self.sequences
        outputs = call(inputs, **kw)
        call = model.postprocess
        return call(outputs, parameters=params) if post else call(outputs)  # type: ignore[no-any-return]

    def predict_stream(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """A decoupled model's responses: ``predict`` returns an iterator
        (a generator) of output dicts, each postprocessed; a plain dict is
        one response."""
        model = self.model
        pre, run, post = self.pass_parameters
        params = dict(parameters or {})
        call: Any = model.preprocess
        inputs = call(inputs, parameters=params) if pre else call(inputs)
        call = model.predict
        results = call(inputs, parameters=params) if run else call(inputs)
        if isinstance(results, Mapping):
            results = iter([results])
        finish = model.postprocess
        for outputs in results:
            yield finish(outputs, parameters=params) if post else finish(outputs)

    def suggested_max_batch_size(self) -> int:
        """Custom models batch only when their class says so
        (``max_batch_size = N``): Berth cannot know that predict handles
        stacked rows."""
        return self.batch_hint
