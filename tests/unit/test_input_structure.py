"""Naming the leaves of a model's nested input structure
(``berth.runtimes.leaf_names``), the pure part of feeding dict-input Keras
models and ``torch.export`` programs (issue 18)."""

from __future__ import annotations

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
