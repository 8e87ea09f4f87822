"""`berth serve`: the tracing flags and OpenTelemetry's standard variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from berth.cli import document_for, parse_args
from berth.errors import ConfigError


def doc(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return document_for(parse_args(["serve", *argv]), env or {})


@pytest.fixture
def model(tmp_path: Path) -> str:
    path = tmp_path / "m.onnx"
    path.write_text("x")
    return str(path)


def test_tracing_is_off_by_default(model: str) -> None:
    assert "tracing" not in doc(model)


def test_flag_and_berth_env(model: str) -> None:
    d = doc(model, "--otlp-endpoint", "http://c:4318/v1/traces", "--trace-sample-rate", "0.5")
    assert d["tracing"] == {"endpoint": "http://c:4318/v1/traces", "sample_rate": 0.5}
    d = doc(model, env={"BERTH_OTLP_ENDPOINT": "http://e:1", "BERTH_TRACE_SAMPLE_RATE": "0"})
    assert d["tracing"] == {"endpoint": "http://e:1", "sample_rate": 0.0}


def test_otel_variables_and_precedence(model: str) -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318/"}
    assert doc(model, env=base)["tracing"]["endpoint"] == "http://base:4318/v1/traces"
    traces = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/custom"}
    assert doc(model, env=traces)["tracing"]["endpoint"] == "http://t:4318/custom"
    berth_env = {**traces, "BERTH_OTLP_ENDPOINT": "http://b:1"}
    assert doc(model, env=berth_env)["tracing"]["endpoint"] == "http://b:1"
    flag = doc(model, "--otlp-endpoint", "http://f:2", env=berth_env)
    assert flag["tracing"]["endpoint"] == "http://f:2"
    named = doc(model, env={**base, "OTEL_SERVICE_NAME": "scoring"})
    assert named["tracing"]["service_name"] == "scoring"


def test_otel_sdk_disabled_ignores_otel_variables(model: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318", "OTEL_SDK_DISABLED": "true"}
    assert "tracing" not in doc(model, env=env)
    # Berth's own flag still counts
    assert doc(model, "--otlp-endpoint", "http://f:2", env=env)["tracing"]["endpoint"] == "http://f:2"


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"BERTH_OTLP_ENDPOINT": "https://c:4318"}, "BERTH_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "c:4318"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://c:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"BERTH_TRACE_SAMPLE_RATE": "1.5"}, "BERTH_TRACE_SAMPLE_RATE"),
    ],
)
def test_bad_values_name_the_variable(model: str, env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError, match=f"^{var}: "):
        doc(model, env=env)
