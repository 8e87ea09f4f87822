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


def _warm_in_fresh_process(tmp_path: Path, estimator: str) -> list[str]:
    """Dumps ``estimator`` (sklearn.svm or sklearn.tree), then runs _warm on it
    in a fresh process, as the template is: prints whether it imported
    anything, only sklearn/scipy modules, and sklearn itself."""
    pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    model = tmp_path / "m.joblib"
    subprocess.run([sys.executable, "-c", f"""
import joblib
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
joblib.dump({estimator}.fit([[0], [1]], [0, 1]), {str(model)!r})
"""], timeout=300, check=True)
    done = subprocess.run([sys.executable, "-c", f"""
import sys
from berth import zygote
assert "sklearn" not in sys.modules
done = zygote._warm([{str(model)!r}, {str(tmp_path / 'missing.joblib')!r}])
print(bool(done), all(n.startswith(("sklearn.", "scipy.")) for n in done), "sklearn" in sys.modules)
"""], capture_output=True, text=True, timeout=300, check=True, env=_one_thread_env())
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_warm_imports_the_modules_a_pickle_names(tmp_path: Path) -> None:
    # an SVC: Berth's own reader does not know it, its worker imports scikit-learn
    assert _warm_in_fresh_process(tmp_path, "SVC()") == ["True", "True", "True"]


def test_warm_imports_nothing_for_a_file_berths_reader_serves(tmp_path: Path) -> None:
    # a tree: its worker never imports scikit-learn, so neither does the template
    assert _warm_in_fresh_process(tmp_path, "DecisionTreeClassifier()") == ["False", "True", "False"]
