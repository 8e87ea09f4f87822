"""``berth route``'s argument forms (the command itself runs against a real
server in tests/e2e/test_traffic.py)."""

from __future__ import annotations

import pytest
from berth.errors import ConfigError
from berth.route_cli import parse_shadow, parse_target


def test_targets() -> None:
    assert parse_target("fraud", "2=5") == {"model": "fraud", "version": "2", "weight": 5.0}
    assert parse_target("ab", "other=50") == {"model": "other", "weight": 50.0}
    assert parse_target("ab", "other:v2=0.5") == {"model": "other", "version": "v2", "weight": 0.5}


@pytest.mark.parametrize("spec", ["5", "=5", "1=x"])
def test_bad_targets(spec: str) -> None:
    with pytest.raises(ConfigError, match="target"):
        parse_target("fraud", spec)


def test_shadow() -> None:
    assert parse_shadow("m") == {"model": "m"}
    assert parse_shadow("m:3@0.25") == {"model": "m", "version": "3", "rate": 0.25}
    with pytest.raises(ConfigError, match="rate"):
        parse_shadow("m@lots")
