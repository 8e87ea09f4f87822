"""What Berth knows about each framework, in one table (standard library only).

Every other place reads it: file detection (``runtimes/detect.py``: runtime
names, file suffixes, bundle marker files, folder models), the worker's
runtime registry (``runtimes/__init__.py``: module, class, imports, the
extra to install, environment defaults), ``berth build`` (the distributions
whose versions it locks), ``berth deploy kserve`` (the KServe model formats)
and the missing-extra messages. The extras themselves are declared in
pyproject.toml (a unit test checks that each one named here exists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FRAMEWORKS", "Framework", "by_runtime", "framework"]


@dataclass(frozen=True)
class Framework:
    #: Runtime name as written in the engine document (``"sklearn"``).
    runtime: str
    #: Name shown to people (``"scikit-learn"``).
    display: str
    #: The pip extra that installs it (``pip install 'berth[sklearn]'``), or
    #: ``None`` when Berth needs nothing more.
    extra: str | None
    #: The runtime's module under ``berth.runtimes`` and its class.
    module: str
    cls: str
    #: Modules a worker imports before loading a model (a missing one means
    #: the extra is not installed).
    imports: tuple[str, ...] = ()
    #: Distributions ``berth build`` locks at their installed versions
    #: (``"a|b"``: whichever of the two is installed).
    distributions: tuple[str, ...] = ()
    #: File suffixes (lowercase) of its model files. ``.json`` counts only
    #: for an XGBoost model and ``.txt`` for a LightGBM model
    #: (``runtimes/detect.py`` looks inside).
    suffixes: tuple[str, ...] = ()
    #: Files that mark a folder as one of its models (a bundle).
    bundle_files: tuple[str, ...] = ()
    #: Whether a model may be a folder.
    folder: bool = False
    #: KServe ``modelFormat`` major versions Berth serves under the runtime's
    #: name (``berth deploy kserve``).
    kserve_versions: tuple[str, ...] = ()
    #: Environment defaults set (unless already set) before the framework is
    #: imported: they only take effect then.
    env: tuple[tuple[str, str], ...] = ()


#: Never reach a model hub from a worker: models are served from local files.
_OFFLINE = (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"))
#: Keras 3 picks its backend at import; TensorFlow's C++ logging is noisy.
_TF_ENV = (("KERAS_BACKEND", "tensorflow"), ("TF_CPP_MIN_LOG_LEVEL", "2"))

#: The frameworks, in the order Berth lists its runtimes.
FRAMEWORKS: tuple[Framework, ...] = (
    Framework(
        runtime="sklearn",
        display="scikit-learn",
        extra="sklearn",
        module="sklearn",
        cls="SklearnRuntime",
        # scikit-learn itself is imported only when Berth's own reader
        # cannot serve the file (runtimes/sklearn.py); that import raises
        # the missing-extra error then.
        imports=("joblib",),
        distributions=("scikit-learn", "joblib"),
        suffixes=(".joblib", ".pkl"),
        kserve_versions=("1",),
    ),
    Framework(
        runtime="xgboost",
        display="XGBoost",
        extra="xgboost",
        module="xgboost",
        cls="XGBoostRuntime",
        imports=("xgboost",),
        distributions=("xgboost",),
        suffixes=(".json", ".ubj"),
        kserve_versions=("2", "3"),
    ),
    Framework(
        runtime="lightgbm",
        display="LightGBM",
        extra="lightgbm",
        module="lightgbm",
        cls="LightGBMRuntime",
        imports=("lightgbm",),
        distributions=("lightgbm",),
        suffixes=(".txt",),
        kserve_versions=("4",),
    ),
    Framework(
        runtime="onnx",
        display="ONNX",
        extra="onnx",
        module="onnx",
        cls="OnnxRuntime",
        imports=("onnxruntime",),
        distributions=("onnxruntime",),
        suffixes=(".onnx",),
        kserve_versions=("1",),
    ),
    Framework(
        runtime="pytorch",
        display="PyTorch",
        extra="torch",
        module="pytorch",
        cls="PyTorchRuntime",
        imports=("torch",),
        distributions=("torch",),
        suffixes=(".pt", ".pt2"),
        kserve_versions=("2",),
    ),
    Framework(
        runtime="tensorflow",
        display="TensorFlow",
        extra="tensorflow",
        module="tensorflow",
        cls="TensorFlowRuntime",
        imports=("tensorflow",),
        distributions=("tensorflow|tensorflow-cpu",),
        suffixes=(".keras",),
        bundle_files=("saved_model.pb", "saved_model.pbtxt"),
        folder=True,
        kserve_versions=("2",),
        env=_TF_ENV,
    ),
    Framework(
        runtime="transformers",
        display="Hugging Face transformers",
        extra="transformers",
        module="transformers",
        cls="TransformersRuntime",
        imports=("torch", "tokenizers", "transformers"),
        distributions=("torch", "transformers", "tokenizers", "safetensors"),
        folder=True,
        env=_OFFLINE,
    ),
    Framework(
        runtime="llm",
        display="generative LMs (Hugging Face transformers)",
        extra="transformers",
        module="llm",
        cls="LLMRuntime",
        imports=("torch", "tokenizers", "transformers"),
        distributions=("torch", "transformers", "tokenizers", "safetensors"),
        suffixes=(".gguf",),
        folder=True,
        env=_OFFLINE,
    ),
    Framework(
        runtime="mlflow",
        display="MLflow",
        extra="mlflow",
        module="mlflow",
        cls="MLflowRuntime",
        imports=("mlflow.pyfunc", "pandas"),
        distributions=("mlflow-skinny|mlflow", "pandas"),
        bundle_files=("MLmodel",),
        folder=True,
        kserve_versions=("2", "3"),
        env=_OFFLINE,
    ),
    Framework(
        runtime="python",
        display="custom Python",
        extra=None,
        module="python",
        cls="PythonRuntime",
        suffixes=(".py",),
    ),
)

by_runtime: Mapping[str, Framework] = {f.runtime: f for f in FRAMEWORKS}


def framework(runtime: str) -> Framework:
    """The framework of a runtime name (``KeyError`` for an unknown one)."""
    return by_runtime[runtime]
