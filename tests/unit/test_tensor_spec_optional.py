"""TensorSpec's ``optional`` flag (docs/configuration.md, docs/openai.md):
it reaches the worker's READY signature only when set, and round-trips."""

from __future__ import annotations

import berth


def test_optional_is_written_only_when_set() -> None:
    plain = berth.TensorSpec("x", "fp32", [-1])
    assert plain.optional is False
    assert plain.to_dict() == {"name": "x", "datatype": "FP32", "shape": [-1]}
    opt = berth.TensorSpec("seed", "INT64", [1], optional=True)
    assert opt.to_dict() == {"name": "seed", "datatype": "INT64", "shape": [1], "optional": True}


def test_optional_round_trips() -> None:
    spec = berth.TensorSpec("stop", "BYTES", [-1], optional=True)
    assert berth.TensorSpec.from_dict(spec.to_dict()) == spec
    assert berth.TensorSpec.from_dict({"name": "x", "datatype": "FP32", "shape": [1]}).optional is False
    # only a real true marks it optional
    assert berth.TensorSpec.from_dict(
        {"name": "x", "datatype": "FP32", "shape": [1], "optional": "yes"}
    ).optional is False
