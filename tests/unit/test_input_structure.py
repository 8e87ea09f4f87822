"""Naming the leaves of a model's nested input structure
(``berth.runtimes.leaf_names``), the pure part of feeding dict-input Keras
models and ``torch.export`` programs (issue 18); and MLflow models with
several unnamed columns, fed by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from berth.errors import ModelLoadError
from berth.runtimes import leaf_names


def test_dict_leaves_take_their_keys_in_the_given_order() -> None:
    assert leaf_names([("x",), ("w",)], ["input_1", "input_2"]) == ["x", "w"]


def test_nested_leaves_take_their_innermost_key_even_with_dots_and_slashes() -> None:
    paths = [("user", "user.score"), ("user", "age"), ("item/price",)]
    assert leaf_names(paths, ["user.score", "age", "item_price"]) == [
        "user.score",
        "age",
        "item/price",
    ]


def test_list_positions_and_a_single_tensor_take_the_framework_name() -> None:
    assert leaf_names([(0,), (1,)], ["pixels", "mask"]) == ["pixels", "mask"]
    assert leaf_names([()], ["pixels"]) == ["pixels"]
    # A list inside a dict: the position is last, so the framework's name.
    assert leaf_names([("feats", 0), ("feats", 1), ("scale",)], ["f0", "f1", "s"]) == [
        "f0",
        "f1",
        "scale",
    ]


def test_a_clash_gives_every_leaf_its_framework_name() -> None:
    """Two dicts holding an 'x': no leaf keeps its key, so a name does not
    depend on where the other leaves sit."""
    paths = [("a", "x"), ("b", "x"), ("y",)]
    assert leaf_names(paths, ["a_x", "b_x", "y_input"]) == ["a_x", "b_x", "y_input"]


def test_repeated_framework_names_are_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="share the names x"):
        leaf_names([("a", "x"), ("b", "x")], ["x", "x"])


def test_paths_and_names_must_pair_up() -> None:
    with pytest.raises(ValueError):
        leaf_names([("x",)], [])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_mlflow_unnamed_columns_get_distinct_names_and_keep_their_positions(
    tmp_path: Path,
) -> None:
    """Two unnamed columns were both reported as 'input'; they are now
    input__0 and input__1, fed as the DataFrame's columns 0 and 1."""
    pytest.importorskip("mlflow")
    import mlflow.pyfunc
    import pandas as pd
    from berth.runtimes import get_runtime
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    folder = tmp_path / "difference"
    (tmp_path / "difference_model.py").write_text(MLFLOW_DIFFERENCE)
    signature = ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("double")]))
    mlflow.pyfunc.save_model(
        str(folder),
        python_model=str(tmp_path / "difference_model.py"),
        signature=signature,
        pip_requirements=[],
    )
    rt = get_runtime("mlflow")
    rt.load({"name": "m", "version": "1", "runtime": "mlflow", "path": str(folder)})
    assert [s.name for s in rt.inputs] == ["input__0", "input__1"]
    first, second = np.array([1.0, 5.0, -2.0]), np.array([0.0, 1.0, 4.0])
    got = rt.predict({"input__1": second, "input__0": first})["predictions"]
    want = mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame({0: first, 1: second}))
    np.testing.assert_allclose(got, np.asarray(want), rtol=0, atol=0)
    np.testing.assert_allclose(got, first - 2 * second, rtol=0, atol=0)


MLFLOW_DIFFERENCE = """
import numpy as np
import mlflow
from mlflow.pyfunc import PythonModel


class Difference(PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input.iloc[:, 0] - 2 * model_input.iloc[:, 1])


mlflow.models.set_model(Difference())
"""
