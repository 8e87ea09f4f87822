"""`berth serve`'s GPU options (docs/gpus.md): --gpus / BERTH_GPUS, the
budget, --devices, and nvidia-smi's list, into the engine document."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from berth.cli import document_for, parse_args
from berth.cli.gpus import parse_budget, parse_bytes, parse_devices, parse_gpus, parse_nvidia_smi
from berth.errors import ConfigError

GIB = 2**30


def doc(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return document_for(parse_args(["serve", *argv]), env or {})


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "iris.joblib").write_text("x")
    monkeypatch.chdir(tmp_path)
    return "iris.joblib"


def test_sizes_read_as_the_engine_reads_them() -> None:
    assert parse_bytes("16GiB") == 16 * GIB
    assert parse_bytes("1.5 gib") == 3 * GIB // 2
    assert parse_bytes("80GB") == 80 * 10**9
    assert parse_bytes("512") == 512
    for bad in ("16G", "lots", "-1GiB", "1.GiB", ""):
        with pytest.raises(ValueError, match="is not a size"):
            parse_bytes(bad)


def test_gpu_lists() -> None:
    assert parse_gpus("0:80GiB,1:40GiB") == [{"index": 0, "memory": 80 * GIB}, {"index": 1, "memory": 40 * GIB}]
    assert parse_gpus("2, 3") == [{"index": 2}, {"index": 3}]
    assert parse_gpus("none") == []
    with pytest.raises(ValueError, match="listed twice"):
        parse_gpus("0,0")
    with pytest.raises(ValueError, match="is not a GPU index"):
        parse_gpus("gpu0")
    with pytest.raises(ValueError, match="is not a GPU index"):
        parse_gpus("1024")


def test_budgets_and_devices() -> None:
    assert parse_budget("70GiB") == {None: 70 * GIB}
    assert parse_budget("0:70GiB,1:90%") == {0: 70 * GIB, 1: "90%"}
    for bad, words in [("0%", "percentage"), ("101%", "percentage"), ("0", "at least 1 byte"),
                       ("1GiB,0:2GiB", "one budget for every GPU")]:
        with pytest.raises(ValueError, match=words):
            parse_budget(bad)
    assert parse_devices("cpu") == "cpu"
    assert parse_devices("ALL") == "all"
    assert parse_devices("1,0") == [1, 0]
    with pytest.raises(ValueError, match="twice"):
        parse_devices("1,1")


def test_nvidia_smi_output() -> None:
    # what `nvidia-smi --query-gpu=index,memory.total --format=csv,noheader,nounits` prints
    text = "0, 81559\n1, 81559\n"
    assert parse_nvidia_smi(text) == [{"index": 0, "memory": 81559 * 2**20}, {"index": 1, "memory": 81559 * 2**20}]
    assert parse_nvidia_smi("0, [N/A]\ngarbage\n") == [{"index": 0}]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi: its GPUs are listed")
def test_no_gpus_leaves_the_document_alone(model: str) -> None:
    assert "gpus" not in doc(model)


def test_options_fill_the_document(model: str) -> None:
    d = doc(model, "--gpus", "0:16GiB,1:8GiB", "--gpu-memory-budget", "0:50%,1:6GiB", "--devices", "1")
    assert d["gpus"] == [
        {"index": 0, "memory": 16 * GIB, "budget": 8 * GIB},
        {"index": 1, "memory": 8 * GIB, "budget": 6 * GIB},
    ]
    assert d["models"][0]["devices"] == [1]
    d = doc(model, env={"BERTH_GPUS": "0:10GiB", "BERTH_GPU_MEMORY_BUDGET": "4GiB", "BERTH_DEVICES": "cpu"})
    assert d["gpus"] == [{"index": 0, "memory": 10 * GIB, "budget": 4 * GIB}]
    assert d["models"][0]["devices"] == "cpu"
    # the flag wins over the variable
    assert doc(model, "--gpus", "3", env={"BERTH_GPUS": "0:10GiB"})["gpus"] == [{"index": 3}]


def test_app_config_gpus_and_the_flag_over_them(model: str, tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text("gpus:\n  - {index: 0, memory: 24GiB}\n")
    assert doc(model, "--config", str(app))["gpus"] == [{"index": 0, "memory": "24GiB"}]
    assert doc(model, "--config", str(app), "--gpus", "none")["gpus"] == []


def test_budget_errors(model: str) -> None:
    with pytest.raises(ConfigError, match="knows no GPU"):
        doc(model, "--gpus", "none", "--gpu-memory-budget", "1GiB")
    with pytest.raises(ConfigError, match="whose memory is unknown"):
        doc(model, "--gpus", "0", "--gpu-memory-budget", "50%")
    with pytest.raises(ConfigError, match="GPU 4 is not one of the server's GPUs"):
        doc(model, "--gpus", "0:1GiB", "--gpu-memory-budget", "4:1GiB")
    with pytest.raises(ConfigError, match="BERTH_GPUS"):
        doc(model, env={"BERTH_GPUS": "x:1GiB"})
