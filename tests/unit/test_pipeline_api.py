"""The Python side of pipelines: berth.Pipeline/Step/Switch/Case make the
same `pipelines:` entries as berth.yaml, `python:` steps become models of
their own, and an app file (`--config app.py`) is read (docs/pipelines.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import berth
import pytest
from berth.cli import document_for, parse_args
from berth.errors import ConfigError
from berth.pipeline import expand_python_steps


def doc(*argv: str) -> dict[str, Any]:
    return document_for(parse_args(["serve", *argv]), {})


def module_level_function(inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs


def test_pipeline_to_dict_matches_the_yaml_form() -> None:
    p = berth.Pipeline(
        "p",
        inputs=[berth.TensorSpec("x", "fp32", [-1, 2]), {"name": "t", "datatype": "BYTES", "shape": [-1]}],
        steps=[
            berth.Step("a", model="m", version="2", inputs={"x": "$x"}),
            berth.Step(
                "b",
                switch=berth.Switch(
                    header="x-tier",
                    cases=[berth.Case("big", equals="gold"), berth.Case("mid", in_=["a", "b"]),
                           berth.Case("small", lt=3)],
                    default="m",
                ),
            ),
            {"name": "c", "model": "m"},
        ],
        outputs={"y": "a.y"},
    )
    assert p.to_dict() == {
        "name": "p",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]},
                   {"name": "t", "datatype": "BYTES", "shape": [-1]}],
        "steps": [
            {"name": "a", "model": "m", "version": "2", "inputs": {"x": "$x"}},
            {"name": "b", "switch": {"header": "x-tier", "default": "m", "cases": [
                {"equals": "gold", "model": "big"}, {"in": ["a", "b"], "model": "mid"},
                {"lt": 3, "model": "small"}]}},
            {"name": "c", "model": "m"},
        ],
        "outputs": {"y": "a.y"},
    }


def test_switch_and_case_need_exactly_one_choice() -> None:
    with pytest.raises(ConfigError, match="exactly one of input=, header=, parameter="):
        berth.Switch(cases=[], input="x", header="y").to_dict()
    with pytest.raises(ConfigError, match="exactly one of equals, in_, lt, gt"):
        berth.Case("m", lt=1, gt=2).to_dict()
    assert berth.Case("m", equals=False).to_dict() == {"equals": False, "model": "m"}


def test_a_function_object_becomes_file_and_name() -> None:
    step = berth.Step("f", python=module_level_function).to_dict()
    assert step["python"] == f"{Path(__file__).resolve()}:module_level_function"
    with pytest.raises(ConfigError, match="module-level function"):
        berth.Step("g", python=lambda inputs: inputs).to_dict()


def test_python_steps_become_models(tmp_path: Path) -> None:
    (tmp_path / "ops.py").write_text("def f(inputs):\n    return inputs\n")
    pipelines, models = expand_python_steps(
        [{"name": "p", "steps": [
            {"name": "pre", "python": "ops.py:f", "max_batch_size": 8, "instances": 2,
             "inputs": {"x": "$x"}},
            {"name": "run", "model": "m"},
        ]}],
        tmp_path, "app.yaml",
    )
    assert pipelines[0]["steps"][0] == {"name": "pre", "model": "p.pre", "inputs": {"x": "$x"}}
    assert pipelines[0]["steps"][1] == {"name": "run", "model": "m"}
    assert models == [{"name": "p.pre", "version": "1", "runtime": "python",
                       "path": str(tmp_path / "ops.py"), "class": "f",
                       "instances": 2, "max_batch_size": 8}]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"name": "s", "python": "nofile.py:f"}, r"pipelines\[0\]\.steps\[0\]\.python: .*does not exist"),
        ({"name": "s", "python": "ops.py"}, r"pipelines\[0\]\.steps\[0\]\.python: expected 'file.py:function'"),
        ({"name": "s", "python": "ops.py:f", "model": "m"}, r"pipelines\[0\]\.steps\[0\]: give a step one of"),
    ],
)
def test_python_step_errors_name_the_key(tmp_path: Path, step: dict[str, Any], message: str) -> None:
    (tmp_path / "ops.py").write_text("def f(inputs):\n    return inputs\n")
    with pytest.raises(ConfigError, match=message):
        expand_python_steps([{"name": "p", "steps": [step]}], tmp_path, "app.yaml")


def test_yaml_and_app_file_give_the_same_document(tmp_path: Path) -> None:
    (tmp_path / "ops.py").write_text("def f(inputs):\n    return inputs\n")
    (tmp_path / "m.py").write_text(
        "import berth\nclass M(berth.Model):\n    def predict(self, inputs):\n        return inputs\n"
    )
    (tmp_path / "berth.yaml").write_text(
        "models:\n  - {name: m, path: m.py}\n"
        "pipelines:\n  - name: p\n    steps:\n"
        "      - {name: pre, python: ops.py:f}\n      - {name: run, model: m}\n"
    )
    (tmp_path / "app.py").write_text(
        "import berth\nmodels = [{'name': 'm', 'path': 'm.py'}]\n"
        "p = berth.Pipeline('p', steps=[berth.Step('pre', python='ops.py:f'),"
        " berth.Step('run', model='m')])\n"
    )
    from_yaml = doc("--config", str(tmp_path / "berth.yaml"))
    from_py = doc("--config", str(tmp_path / "app.py"))
    assert from_yaml["pipelines"] == from_py["pipelines"]
    assert from_yaml["models"] == from_py["models"]
    assert [m["name"] for m in from_py["models"]] == ["m", "p.pre"]


def test_an_app_file_without_pipelines_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no berth.Pipeline"):
        doc("--config", str(tmp_path / "app.py"))
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="importing it failed: RuntimeError: boom"):
        doc("--config", str(tmp_path / "bad.py"))


def test_a_python_step_cannot_take_a_models_name(tmp_path: Path) -> None:
    (tmp_path / "ops.py").write_text("def f(inputs):\n    return inputs\n")
    (tmp_path / "berth.yaml").write_text(
        "models:\n  - {name: p.pre, path: ops.py, runtime: python, class: f}\n"
        "pipelines:\n  - name: p\n    steps: [{name: pre, python: ops.py:f}]\n"
    )
    with pytest.raises(ConfigError, match="becomes model 'p.pre', which is also"):
        doc("--config", str(tmp_path / "berth.yaml"))
