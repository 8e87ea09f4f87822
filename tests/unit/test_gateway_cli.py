"""``berth gateway``'s arguments and the document it builds (the gateway
itself runs against real replicas in tests/e2e/test_gateway.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from berth.cli import parse_args
from berth.errors import ConfigError
from berth.gateway_cli import gateway_document, parse_replica


def test_replica_forms() -> None:
    assert parse_replica("http://127.0.0.1:9001", 0) == {"name": "r0", "url": "http://127.0.0.1:9001"}
    assert parse_replica("a=http://127.0.0.1:9001", 3) == {"name": "a", "url": "http://127.0.0.1:9001"}


@pytest.mark.parametrize("value", ["https://127.0.0.1:1", "127.0.0.1:1", "a b=http://127.0.0.1:1",
                                   "=http://127.0.0.1:1", "../x=http://127.0.0.1:1"])
def test_bad_replicas(value: str) -> None:
    with pytest.raises(ConfigError, match="--replica"):
        parse_replica(value, 0)


def test_document() -> None:
    ns = parse_args(["gateway", "--replica", "http://127.0.0.1:9001", "--replica",
                     "b=http://127.0.0.1:9002", "--port", "0", "--retries", "2",
                     "--eject-for-ms", "250", "--admin-tokens-file", "/t"])
    doc = gateway_document(ns)
    assert doc["models"] == []
    assert doc["server"] == {"host": "127.0.0.1", "http_port": 0, "grpc_port": 8081,
                             "admin_tokens_file": "/t"}
    assert doc["gateway"] == {
        "replicas": [{"name": "r0", "url": "http://127.0.0.1:9001"},
                     {"name": "b", "url": "http://127.0.0.1:9002"}],
        "retries": 2, "eject_for_ms": 250,
    }


def test_duplicate_names_refused() -> None:
    ns = parse_args(["gateway", "--replica", "a=http://127.0.0.1:1", "--replica",
                     "a=http://127.0.0.1:2"])
    with pytest.raises(ConfigError, match="duplicate"):
        gateway_document(ns)


@pytest.mark.parametrize("flag", [["--retries", "9"], ["--connections-per-replica", "0"],
                                  ["--health-interval-ms", "x"]])
def test_bounds(flag: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["gateway", *flag])


def test_print_config() -> None:
    out = subprocess.run([sys.executable, "-m", "berth.cli", "gateway", "--replica",
                          "http://[::1]:9", "--allow-remote", "--print-config"],
                         capture_output=True, text=True, check=True, timeout=60)
    doc = json.loads(out.stdout)
    assert doc["gateway"]["allow_remote"] is True
    assert doc["gateway"]["replicas"] == [{"name": "r0", "url": "http://[::1]:9"}]
