"""server.exit_on_error (--exit-on-error, on by default as in Triton): a model
that fails to load at start stops the server with a non-zero exit and the
model's error on stderr; turned off, the server keeps serving with the model
UNAVAILABLE. A load through the repository API never stops the server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
from berth_e2e import (
    BerthServer,
    assert_error,
    berth_executable,
    free_port,
    server_env,
    wait_until,
)

EXIT_TIMEOUT_S = 120


def broken_joblib(tmp_path: Path) -> Path:
    path = tmp_path / "broken.joblib"
    path.write_bytes(b"this is not a joblib pickle\n" * 4)
    return path


def run_to_exit(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs berth serve ARGS on free 127.0.0.1 ports until it exits; kills
    its process group if it does not within EXIT_TIMEOUT_S."""
    cmd = [
        berth_executable(),
        "serve",
        *args,
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(env),
        cwd=str(tmp_path),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"berth kept running with a broken model\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_broken_model_at_start_exits_non_zero_with_the_error(tmp_path: Path) -> None:
    done = run_to_exit([str(broken_joblib(tmp_path))], tmp_path)
    assert done.returncode != 0, done.stderr[-3000:]
    assert "failed to load at start" in done.stderr, done.stderr[-3000:]
    assert "broken" in done.stderr  # the model's name
    # the model's own error, on the exit line itself
    exit_line = next(line for line in done.stderr.splitlines() if "failed to load at start" in line)
    assert "broken.joblib" in exit_line and "joblib could not load it" in exit_line, exit_line
    assert "exit_on_error" in done.stderr  # what to change to keep it up


def test_the_config_key_keeps_exit_on(tmp_path: Path) -> None:
    """server.exit_on_error: true in a --config file, and the env set to
    true, behave as the default."""
    app = tmp_path / "app.yaml"
    app.write_text("server:\n  exit_on_error: true\n")
    done = run_to_exit(
        [str(broken_joblib(tmp_path)), "--config", str(app)],
        tmp_path,
        env={"BERTH_EXIT_ON_ERROR": "true"},
    )
    assert done.returncode != 0 and "failed to load at start" in done.stderr


@pytest.mark.parametrize(
    ("flags", "env", "yaml"),
    [(["--no-exit-on-error"], None, None),
     (["--exit-on-error", "false"], None, None),
     ([], {"BERTH_EXIT_ON_ERROR": "0"}, None),
     ([], None, "server:\n  exit_on_error: false\n")],
    ids=["no-flag", "flag-false", "env", "config-key"],
)  # fmt: skip
def test_off_keeps_serving_with_the_model_unavailable(
    berth_server,
    tmp_path: Path,
    flags: list[str],
    env: dict[str, str] | None,
    yaml: str | None,
) -> None:
    model = broken_joblib(tmp_path)
    if yaml is not None:
        (tmp_path / "app.yaml").write_text(yaml)
        flags = [*flags, "--config", str(tmp_path / "app.yaml")]
    server: BerthServer = berth_server(
        str(model), *flags, env=env, wait_for="listening"
    )

    def unavailable() -> bool:
        index = server.post("/v2/repository/index", {}).json()
        return any(
            m["name"] == "broken" and m["state"] == "UNAVAILABLE" and m.get("reason")
            for m in index
        )

    wait_until(
        unavailable,
        60,
        "broken to be UNAVAILABLE with its reason",
        on_timeout=server.log_tail,
    )
    assert server.running()
    assert_error(server.get("/v2/models/broken/ready"), 503)
    assert server.get("/v2/health/live").status == 200
