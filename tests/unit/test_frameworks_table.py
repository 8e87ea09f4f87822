"""berth/frameworks.py is the one table of framework facts: the views other
modules read are derived from it, and what it names exists (pyproject's
extras, the runtime modules and classes)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import berth
from berth.build import RUNTIME_PACKAGES
from berth.deploy.kserve import MODEL_FORMATS
from berth.frameworks import FRAMEWORKS, by_runtime, framework
from berth.runtimes.detect import BUNDLE_FILES, EXTENSIONS, FOLDER_RUNTIMES, RUNTIMES

PACKAGE = Path(berth.__file__).resolve().parent


def extras() -> dict[str, list[str]]:
    """The installed package's extras (pyproject's optional-dependencies):
    extra -> its requirements."""
    meta = metadata.metadata("berth")
    table: dict[str, list[str]] = {e: [] for e in meta.get_all("Provides-Extra") or []}
    for line in meta.get_all("Requires-Dist") or []:
        requirement, _, marker = line.partition(";")
        extra = re.search(r'extra == "([^"]+)"', marker)
        if extra:
            table[extra.group(1)].append(requirement.strip())
    return table


def requirement_names(extra: str, table: dict[str, list[str]]) -> set[str]:
    """Distribution names an extra installs, following berth[...] includes."""
    names: set[str] = set()
    for line in table[extra]:
        included = re.match(r"^berth\[([^\]]+)\]", line)
        if included:
            for inner in included.group(1).split(","):
                names |= requirement_names(inner.strip(), table)
            continue
        name = re.match(r"^[A-Za-z0-9_.-]+", line)
        assert name is not None, line
        names.add(name.group(0).lower())
    return names


def test_the_views_hold_what_they_held() -> None:
    assert RUNTIMES == (
        "sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "tensorflow", "transformers",
        "llm", "mlflow", "python",
    )
    assert EXTENSIONS == {
        ".joblib": "sklearn", ".pkl": "sklearn", ".onnx": "onnx", ".json": "xgboost",
        ".ubj": "xgboost", ".txt": "lightgbm", ".pt": "pytorch", ".pt2": "pytorch",
        ".keras": "tensorflow", ".gguf": "llm", ".py": "python",
    }
    assert BUNDLE_FILES == {
        "saved_model.pb": "tensorflow", "saved_model.pbtxt": "tensorflow", "MLmodel": "mlflow",
    }
    assert FOLDER_RUNTIMES == {"tensorflow", "transformers", "llm", "mlflow"}
    assert RUNTIME_PACKAGES["tensorflow"] == ("tensorflow|tensorflow-cpu",)
    assert RUNTIME_PACKAGES["python"] == ()
    assert set(RUNTIME_PACKAGES) == set(RUNTIMES)
    assert MODEL_FORMATS == (
        ("sklearn", "1"), ("xgboost", "2"), ("xgboost", "3"), ("lightgbm", "4"), ("onnx", "1"),
        ("pytorch", "2"), ("tensorflow", "2"), ("mlflow", "2"), ("mlflow", "3"),
    )
    assert framework("pytorch").extra == "torch" and by_runtime["python"].extra is None


def test_each_extra_exists_and_installs_what_is_locked() -> None:
    table = extras()
    for fw in FRAMEWORKS:
        if fw.extra is None:
            assert not fw.distributions and not fw.imports, fw.runtime
            continue
        assert fw.extra in table, f"{fw.runtime}: berth has no extra {fw.extra!r}"
        installed = requirement_names(fw.extra, table)
        for options in fw.distributions:
            names = {n.lower() for n in options.split("|")}
            assert names & installed, f"{fw.runtime}: {options} is not in berth[{fw.extra}]"


def test_each_runtime_module_defines_its_class() -> None:
    for fw in FRAMEWORKS:
        source = (PACKAGE / "runtimes" / f"{fw.module}.py").read_text()
        assert re.search(rf"^class {fw.cls}\(", source, re.MULTILINE), f"{fw.module}.{fw.cls}"


def test_suffixes_and_bundle_files_name_one_framework_each() -> None:
    suffixes = [s for fw in FRAMEWORKS for s in fw.suffixes]
    bundles = [b for fw in FRAMEWORKS for b in fw.bundle_files]
    assert len(suffixes) == len(set(suffixes)) and all(s == s.lower() for s in suffixes)
    assert len(bundles) == len(set(bundles))
