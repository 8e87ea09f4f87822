"""`berth serve`: the browser-facing flags (--allowed-hosts, --cors-origins)
and the warning for a server that listens beyond this machine without tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import berth
import pytest
from berth.cli import document_for, exposure_warning, parse_args
from berth.errors import ConfigError

PACKAGE_ROOT = str(Path(berth.__file__).resolve().parent.parent)


def doc(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return document_for(parse_args(["serve", *argv]), env or {})


def model_file(tmp_path: Path) -> str:
    path = tmp_path / "iris.joblib"
    path.write_text("x")
    return str(path)


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


def fake_berthd(tmp_path: Path) -> str:
    """A stand-in engine that exits at once, so that `berth serve` runs to its exec."""
    fake = tmp_path / "berthd"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(0)\n")
    fake.chmod(0o755)
    return str(fake)


def test_defaults_leave_the_lists_to_the_engine(tmp_path: Path) -> None:
    server = doc(model_file(tmp_path))["server"]
    assert "allowed_hosts" not in server and "cors_origins" not in server


def test_flags_and_env_reach_the_document(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    server = doc(
        path,
        "--allowed-hosts",
        "berth.internal, *.svc.cluster.local",
        "--cors-origins",
        "https://app.example,http://localhost:3000",
    )["server"]
    assert server["allowed_hosts"] == ["berth.internal", "*.svc.cluster.local"]
    assert server["cors_origins"] == ["https://app.example", "http://localhost:3000"]
    env = {"BERTH_ALLOWED_HOSTS": "*", "BERTH_CORS_ORIGINS": "https://a.example"}
    server = doc(path, env=env)["server"]
    assert server["allowed_hosts"] == ["*"] and server["cors_origins"] == ["https://a.example"]
    # the flag beats the variable; an empty flag empties the list
    server = doc(path, "--cors-origins", "", env=env)["server"]
    assert server["cors_origins"] == [] and server["allowed_hosts"] == ["*"]


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("BERTH_CORS_ORIGINS", "https://app.example/", "without a path or a trailing slash"),
        ("BERTH_CORS_ORIGINS", "app.example", "scheme://host[:port]"),
        ("BERTH_ALLOWED_HOSTS", "http://berth.example", "without a scheme"),
        ("BERTH_ALLOWED_HOSTS", "berth.example/x", "without a scheme or path"),
    ],
)
def test_bad_values_are_refused_with_the_fix(
    tmp_path: Path, var: str, value: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{var}: ") as info:
        doc(model_file(tmp_path), env={var: value})
    assert words in str(info.value)


def test_help_names_the_flags_and_their_variables() -> None:
    out = " ".join(run_berth("serve", "--help").stdout.split())
    for flag in ("--allowed-hosts", "--cors-origins"):
        entry = out[out.rindex(flag) :]
        entry = entry[: entry.index("]") + 1]
        assert entry.endswith("[env BERTH_" + flag.lstrip("-").replace("-", "_").upper() + "]")
    assert "DNS rebinding" in out


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "berth.example"])
def test_listening_beyond_this_machine_without_tokens_warns(tmp_path: Path, host: str) -> None:
    warning = exposure_warning(doc(model_file(tmp_path), "--host", host))
    assert warning is not None
    # names the risk...
    assert "anyone who can reach these ports can run inference" in warning
    assert "load models" in warning
    # ...and what to do about it
    for fix in ("--auth-tokens-file", "--admin-tokens-file", "--tls-cert", "firewall",
                "127.0.0.1", "docs/security.md"):  # fmt: skip
        assert fix in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_does_not_warn(tmp_path: Path, host: str) -> None:
    assert exposure_warning(doc(model_file(tmp_path), "--host", host)) is None


def test_tokens_silence_the_warning(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("secret\n")
    path = model_file(tmp_path)
    with_file = doc(path, "--host", "0.0.0.0", "--auth-tokens-file", str(tokens))
    assert exposure_warning(with_file) is None
    assert exposure_warning(doc(path, "--host", "0.0.0.0", "--auth-tokens-env", "TOK")) is None


def test_repository_api_mode_is_named_when_enabled(tmp_path: Path) -> None:
    d = doc(model_file(tmp_path), "--host", "0.0.0.0")
    d["server"]["model_control_mode"] = "explicit"
    warning = exposure_warning(d)
    assert warning is not None and "model control mode explicit" in warning


def test_berth_serve_prints_the_warning_on_stderr(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    env = {"BERTH_BERTHD": fake_berthd(tmp_path)}
    exposed = run_berth("serve", path, "--host", "0.0.0.0", "--port", "0", env=env)
    assert exposed.returncode == 0, exposed.stderr
    assert "berth: warning: listening on every address of this machine" in exposed.stderr
    assert "without auth tokens" in exposed.stderr
    assert "warning" not in exposed.stdout
    local = run_berth("serve", path, "--port", "0", env=env)
    assert local.returncode == 0, local.stderr
    assert "warning" not in local.stderr
    # --print-config prints the document only
    printed = run_berth("serve", path, "--host", "0.0.0.0", "--print-config", env=env)
    assert printed.returncode == 0 and "warning" not in printed.stderr
    assert json.loads(printed.stdout)["server"]["host"] == "0.0.0.0"
