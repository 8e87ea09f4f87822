"""The engine is the one source of the document's bounds: `berthd
--print-limits` prints them, and `berth serve` checks flags, variables and
berth.yaml keys against what it prints, asking only when it needs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import berth
from berth.cli import find_berthd
from berth.cli.limits import engine_schema, model_bounds, model_keys, server_bounds

PACKAGE_ROOT = str(Path(berth.__file__).resolve().parent.parent)


def run_berth(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "berth.cli", *argv],
        check=False,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def model_file(tmp_path: Path) -> str:
    path = tmp_path / "iris.joblib"
    path.write_text("x")
    return str(path)


def recording_berthd(tmp_path: Path, *, limits: bool) -> tuple[str, Path]:
    """A stand-in engine that appends its arguments to a file; it prints
    the real engine's limits when asked and ``limits`` is true."""
    calls = tmp_path / "calls.jsonl"
    real = find_berthd(os.environ)
    fake = tmp_path / "berthd"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1:] == ['--print-limits']:\n"
        + (f"    os.execv({real!r}, [{real!r}, '--print-limits'])\n" if limits else
           "    print('berthd: unknown argument', file=sys.stderr); sys.exit(2)\n")
    )
    fake.chmod(0o755)
    return str(fake), calls


def calls_of(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_berthd_prints_known_bounds() -> None:
    done = subprocess.run(
        [find_berthd(os.environ), "--print-limits"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    model = schema["models"]["keys"]
    assert (model["max_batch_size"]["min"], model["max_batch_size"]["max"]) == (0, 1048576)
    assert (model["instances"]["min"], model["instances"]["max"]) == (1, 256)
    assert model["timeout_us"]["max"] == 3_600_000_000
    assert model["max_queue_delay_us"]["max"] == 60_000_000
    assert schema["server"]["keys"]["http_port"] == {
        "type": "integer", "default": 8080, "min": 0, "max": 65535
    }
    assert schema["log"]["keys"]["level"]["choices"] == ["debug", "info", "warning", "error"]
    assert schema["models"]["required"] is True


def test_the_cli_reads_the_engines_bounds() -> None:
    assert model_bounds("max_batch_size") == (0, 1048576)
    assert model_bounds("preferred_batch_sizes") == (1, 1048576)
    assert model_bounds("max_queue_size") == (1, 1_000_000)
    assert server_bounds("header_timeout_ms") == (0, 3_600_000)
    assert server_bounds("max_connections") == (1, 1_000_000)
    assert model_keys() == {
        "runtime", "platform", "class", "instances", "max_batch_size", "max_queue_delay_us",
        "max_queue_size", "preferred_batch_sizes", "timeout_us", "inputs", "outputs",
        "parameters", "payload_log", "decoupled", "sequence_batching", "backend",
        "devices", "gpu_memory",
        "autoscaling",
    }
    assert engine_schema() is engine_schema()  # asked once per process


def test_a_flag_beyond_the_engines_bound_is_refused(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    over = run_berth("serve", path, "--max-batch-size", "1048577", "--print-config")
    assert over.returncode == 2
    assert "expected an integer 0..1048576, got 1048577" in over.stderr
    sizes = run_berth("serve", path, "--print-config", env={"BERTH_PREFERRED_BATCH_SIZES": "4,0"})
    assert sizes.returncode == 2
    assert "BERTH_PREFERRED_BATCH_SIZES: batch sizes must be 1..1048576, got 0" in sizes.stderr
    at = run_berth("serve", path, "--max-batch-size", "1048576", "--print-config")
    assert at.returncode == 0, at.stderr
    assert json.loads(at.stdout)["models"][0]["max_batch_size"] == 1048576


def test_berthd_is_asked_once_and_only_when_needed(tmp_path: Path) -> None:
    fake, calls = recording_berthd(tmp_path, limits=True)
    path = model_file(tmp_path)
    plain = run_berth("serve", path, "--port", "0", env={"BERTH_BERTHD": fake})
    assert plain.returncode == 0, plain.stderr
    assert [c[0] for c in calls_of(calls)] == ["--config-fd"]  # nothing to check
    calls.unlink()
    checked = run_berth(
        "serve", path, "--max-batch-size", "8", "--timeout-us", "5", "--port", "0",
        env={"BERTH_BERTHD": fake, "BERTH_MAX_QUEUE_SIZE": "9"},
    )
    assert checked.returncode == 0, checked.stderr
    assert [c[0] for c in calls_of(calls)] == ["--print-limits", "--config-fd"]


def test_a_berth_yaml_is_checked_against_the_engines_keys(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.onnx").write_text("x")
    (folder / "berth.yaml").write_text("max_batch_size: 8\nbatch: 4\n")
    bad = run_berth("serve", str(folder), "--print-config")
    assert bad.returncode == 2
    assert "unknown key 'batch'" in bad.stderr and "max_batch_size" in bad.stderr


def test_an_engine_without_limits_gives_a_clear_error(tmp_path: Path) -> None:
    fake, _ = recording_berthd(tmp_path, limits=False)
    path = model_file(tmp_path)
    old = run_berth("serve", path, "--max-batch-size", "8", env={"BERTH_BERTHD": fake})
    assert old.returncode == 2
    assert old.stderr.startswith("berth: error: ") and "Traceback" not in old.stderr
    assert "--print-limits did not print" in old.stderr and "BERTH_BERTHD" in old.stderr
    missing = run_berth(
        "serve", path, "--max-batch-size", "8", env={"BERTH_BERTHD": str(tmp_path / "none")}
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "BERTH_BERTHD" in missing.stderr
