"""The worker template's fork-safety list (berth.zygote.FORK_SAFE): each
runtime it preloads, imported as the template imports it (thread variables
at 1, after NumPy), leaves the process with one thread, so that fork copies
everything that runs. And the modules it warms from a scikit-learn pickle
are the ones the pickle names."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from berth import zygote

CHECK = """
import importlib, os, sys
import numpy
for name in sys.argv[1:]:
    importlib.import_module(name)
print(len(os.listdir("/proc/self/task")))
"""


def _one_thread_env() -> dict[str, str]:
    """The template's environment: every thread variable at 1."""
    env = dict(os.environ)
    for var in zygote._THREAD_VARS:
        env[var] = "1"
    return env


@pytest.mark.parametrize("runtime", sorted(zygote.FORK_SAFE))
def test_fork_safe_runtimes_start_no_thread(runtime: str) -> None:
    modules = list(zygote.FORK_SAFE[runtime])
    top = modules[-1].split(".")[0]
    if importlib.util.find_spec(top) is None:
        pytest.skip(f"{top} is not installed")
    done = subprocess.run([sys.executable, "-c", CHECK, "threadpoolctl", *modules],
                          capture_output=True, text=True, env=_one_thread_env(), timeout=300,
                          check=True)
    assert done.stdout.strip() == "1", f"{runtime}: {done.stdout} {done.stderr[-2000:]}"


@pytest.mark.parametrize("runtime", ["onnx", "pytorch", "transformers", "tensorflow", "mlflow"])
def test_thread_starting_runtimes_are_not_preloaded(runtime: str) -> None:
    assert runtime not in zygote.FORK_SAFE


def test_warm_imports_the_modules_a_pickle_names(tmp_path: Path) -> None:
    pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    model = tmp_path / "m.joblib"
    subprocess.run([sys.executable, "-c", f"""
import joblib
from sklearn.tree import DecisionTreeClassifier
joblib.dump(DecisionTreeClassifier().fit([[0], [1]], [0, 1]), {str(model)!r})
"""], timeout=300, check=True)
    # a fresh process, as the template is: nothing of sklearn.tree imported yet
    done = subprocess.run([sys.executable, "-c", f"""
import sys
from berth import zygote
assert "sklearn.tree._classes" not in sys.modules
done = zygote._warm([{str(model)!r}, {str(tmp_path / 'missing.joblib')!r}])
print(bool(done), all(n.startswith(("sklearn.", "scipy.")) for n in done),
      "sklearn.tree._classes" in sys.modules)
"""], capture_output=True, text=True, timeout=300, check=True, env=_one_thread_env())
    assert done.stdout.split() == ["True", "True", "True"], done.stderr[-2000:]
