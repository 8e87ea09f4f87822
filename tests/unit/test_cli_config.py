"""`berth serve`: the engine document for each PATH form, precedence and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import berth
import pytest
from berth.cli import document_for, parse_args
from berth.errors import ConfigError

PACKAGE_ROOT = str(Path(berth.__file__).resolve().parent.parent)
XGB_JSON = '{"learner": {"attributes": {}}, "version": [3, 2, 0]}'
LGB_TXT = "tree\nversion=v4\nnum_class=1\n"


def doc(*argv: str, env: dict[str, str] | None = None, terminal: bool = False) -> dict[str, Any]:
    return document_for(parse_args(["serve", *argv]), env or {}, terminal=terminal)


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def models(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (m["name"], m["version"], m["runtime"], Path(m["path"]).name) for m in document["models"]
    ]


# ---------------------------------------------------------------- PATH forms


def test_single_file_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "iris.joblib")
    monkeypatch.chdir(tmp_path)
    d = doc("iris.joblib")
    assert d == {
        "server": {
            "host": "127.0.0.1",
            "http_port": 8080,
            "max_body_bytes": 67108864,
            "drain_timeout_s": 30,
            # a single served file is its own repository root: a load may name it alone
            "repositories": [str(tmp_path / "iris.joblib")],
        },
        "log": {"level": "info", "format": "json", "access_log": False},
        "workers": {"command": [sys.executable, "-m", "berth.worker"]},
        "models": [
            {
                "name": "iris",
                "version": "1",
                "runtime": "sklearn",
                "path": str(tmp_path / "iris.joblib"),
            }
        ],
    }
    assert doc("iris.joblib", terminal=True)["log"]["format"] == "text"


@pytest.mark.parametrize(
    ("filename", "text", "runtime"),
    [
        ("m.pkl", "x", "sklearn"),
        ("m.onnx", "x", "onnx"),
        ("m.json", XGB_JSON, "xgboost"),
        ("m.ubj", "binary", "xgboost"),
        ("m.txt", LGB_TXT, "lightgbm"),
        ("m.txt", "header\nversion=v4\n", "lightgbm"),
        ("m.py", "x", "python"),
    ],
)
def test_runtime_detection(tmp_path: Path, filename: str, text: str, runtime: str) -> None:
    d = doc(str(touch(tmp_path / filename, text)))
    assert models(d) == [("m", "1", runtime, filename)]
    assert "class" not in d["models"][0]


def test_python_file_with_class(tmp_path: Path) -> None:
    touch(tmp_path / "custom.py")
    (entry,) = doc(f"{tmp_path}/custom.py:Scorer", "--name", "scorer")["models"]
    assert entry == {
        "name": "scorer",
        "version": "1",
        "runtime": "python",
        "path": str(tmp_path / "custom.py"),
        "class": "Scorer",
    }


@pytest.mark.parametrize(
    ("filename", "text", "message"),
    [
        ("m.h5", "x", "unknown model file extension '.h5'"),
        ("m.json", '{"a": 1}', "not an XGBoost model"),
        ("m.txt", "hello", "not a LightGBM model"),
    ],
)
def test_unrecognised_files_explain_the_fix(
    tmp_path: Path, filename: str, text: str, message: str
) -> None:
    path = touch(tmp_path / filename, text)
    with pytest.raises(ConfigError, match=message) as info:
        doc(str(path))
    assert ".joblib" in str(info.value) and "--runtime" in str(info.value)
    assert models(doc(str(path), "--runtime", "onnx")) == [("m", "1", "onnx", filename)]


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or folder"):
        doc(str(tmp_path / "nope.onnx"))


def test_model_folder_with_berth_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "fraud"
    touch(folder / "model.onnx")
    touch(folder / "README.txt", "not a model")
    touch(folder / "config.json", '{"a": 1}')
    touch(folder / "berth.yaml", "max_batch_size: 16\nparameters: {intra_op_threads: 2}\n")
    (entry,) = doc(str(folder))["models"]
    assert entry == {
        "name": "fraud",
        "version": "1",
        "runtime": "onnx",
        "path": str(folder / "model.onnx"),
        "max_batch_size": 16,
        "parameters": {"intra_op_threads": 2},
    }


def test_model_py_wins_in_a_folder(tmp_path: Path) -> None:
    touch(tmp_path / "ranker" / "model.py")
    touch(tmp_path / "ranker" / "weights.joblib")
    touch(tmp_path / "ranker" / "util.py")
    assert models(doc(str(tmp_path / "ranker"))) == [("ranker", "1", "python", "model.py")]
    assert models(doc(str(tmp_path / "ranker"), "--runtime", "sklearn")) == [
        ("ranker", "1", "sklearn", "weights.joblib")
    ]


def test_folder_with_two_model_files_asks_which(tmp_path: Path) -> None:
    touch(tmp_path / "m" / "a.onnx")
    touch(tmp_path / "m" / "b.joblib")
    with pytest.raises(ConfigError, match=r"several model files \(a.onnx, b.joblib\)"):
        doc(str(tmp_path / "m"))


def test_folder_of_versions(tmp_path: Path) -> None:
    for version in ("1", "2", "10"):
        touch(tmp_path / "iris" / version / "model.joblib")
    touch(tmp_path / "iris" / "berth.yaml", "instances: 2\n")
    d = doc(str(tmp_path / "iris"))
    assert models(d) == [("iris", v, "sklearn", "model.joblib") for v in ("1", "2", "10")]
    assert all(m["instances"] == 2 for m in d["models"])


def make_repository(root: Path) -> Path:
    repo = root / "repo"
    touch(repo / "iris" / "berth.yaml", "max_batch_size: 8\nparameters: {a: 1, b: 2}\n")
    touch(repo / "iris" / "1" / "model.joblib")
    touch(repo / "iris" / "2" / "model.joblib")
    touch(repo / "iris" / "2" / "berth.yaml", "instances: 2\nparameters: {b: 3}\n")
    touch(repo / "booster" / "v1" / "model.json", XGB_JSON)
    touch(repo / "custom" / "1" / "model.py")
    touch(
        repo / "custom" / "berth.yaml",
        "class: Scorer\ninputs:\n  - {name: x, datatype: FP32, shape: [-1, 3]}\n",
    )
    touch(repo / ".git" / "HEAD")  # hidden folders are ignored
    return repo


def test_repository_with_berth_yaml_merging(tmp_path: Path) -> None:
    repo = make_repository(tmp_path)
    d = doc(str(repo))
    assert models(d) == [
        ("booster", "v1", "xgboost", "model.json"),
        ("custom", "1", "python", "model.py"),
        ("iris", "1", "sklearn", "model.joblib"),
        ("iris", "2", "sklearn", "model.joblib"),
    ]
    booster, custom, iris1, iris2 = d["models"]
    assert booster == {
        "name": "booster",
        "version": "v1",
        "runtime": "xgboost",
        "path": str(repo / "booster/v1/model.json"),
    }
    assert custom["class"] == "Scorer"
    assert custom["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert (
        iris1["max_batch_size"] == 8
        and iris1["parameters"] == {"a": 1, "b": 2}
        and "instances" not in iris1
    )
    assert (
        iris2["max_batch_size"] == 8
        and iris2["parameters"] == {"a": 1, "b": 3}
        and iris2["instances"] == 2
    )
    assert all(Path(m["path"]).is_absolute() for m in d["models"])


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("max_batch_sise: 8\n", "unknown key 'max_batch_sise'"),
        ("name: other\n", "'name' comes from the folder names"),
        ("- 1\n", "expected a mapping"),
        ("models: []\n", "--config"),
        ("a: [\n", "not valid YAML"),
        ("runtime: torch\n", "runtime 'torch'"),
    ],
)
def test_bad_berth_yaml_names_the_file(tmp_path: Path, yaml_text: str, message: str) -> None:
    repo = make_repository(tmp_path)
    touch(repo / "iris" / "berth.yaml", yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        doc(str(repo))
    assert "berth.yaml" in str(info.value)


def test_repository_model_without_versions(tmp_path: Path) -> None:
    repo = make_repository(tmp_path)
    (repo / "empty").mkdir()
    with pytest.raises(ConfigError, match="no version folders"):
        doc(str(repo))


def test_name_flag_refused_for_a_repository(tmp_path: Path) -> None:
    repo = make_repository(tmp_path)
    with pytest.raises(ConfigError, match="--name applies to one model"):
        doc(str(repo), "--name", "x")
    assert len(doc(str(repo), env={"BERTH_NAME": "x"})["models"]) == 4  # env: ignored


def test_invalid_model_name_suggests_name_flag(tmp_path: Path) -> None:
    path = touch(tmp_path / "my model.onnx")
    with pytest.raises(ConfigError, match="--name"):
        doc(str(path))
    assert models(doc(str(path), "--name", "mine")) == [("mine", "1", "onnx", "my model.onnx")]


# ---------------------------------------------------------------- precedence


def test_flag_beats_env_beats_berth_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    touch(folder / "model.onnx")
    touch(folder / "berth.yaml", "instances: 2\n")
    env = {
        "BERTH_INSTANCES": "3",
        "BERTH_PORT": "9000",
        "BERTH_HOST": "0.0.0.0",
        "BERTH_ACCESS_LOG": "true",
    }

    assert doc(str(folder))["models"][0]["instances"] == 2
    d = doc(str(folder), env=env)
    assert d["models"][0]["instances"] == 3
    assert d["server"]["http_port"] == 9000 and d["server"]["host"] == "0.0.0.0"
    assert d["log"]["access_log"] is True
    d = doc(str(folder), "--instances", "4", "--port", "9100", "--no-access-log", env=env)
    assert d["models"][0]["instances"] == 4
    assert d["server"]["http_port"] == 9100 and d["server"]["host"] == "0.0.0.0"
    assert d["log"]["access_log"] is False


def test_every_option_has_an_env_var(tmp_path: Path) -> None:
    path = touch(tmp_path / "m.onnx")
    env = {
        "BERTH_NAME": "n",
        "BERTH_RUNTIME": "python",
        "BERTH_HOST": "::1",
        "BERTH_PORT": "0",
        "BERTH_INSTANCES": "2",
        "BERTH_MAX_BODY_BYTES": "1024",
        "BERTH_DRAIN_TIMEOUT": "2.5",
        "BERTH_LOG_LEVEL": "DEBUG",
        "BERTH_LOG_FORMAT": "text",
        "BERTH_ACCESS_LOG": "1",
        "BERTH_MODEL_CONTROL_MODE": "explicit",
    }
    d = doc(str(path), env=env)
    assert d["server"] == {
        "host": "::1",
        "http_port": 0,
        "max_body_bytes": 1024,
        "drain_timeout_s": 2.5,
        "model_control_mode": "explicit",
        "repositories": [str(path)],
    }
    assert d["log"] == {"level": "debug", "format": "text", "access_log": True}
    assert d["models"] == [
        {"name": "n", "version": "1", "runtime": "python", "path": str(path), "instances": 2}
    ]


@pytest.mark.parametrize(
    ("var", "value"),
    [("BERTH_PORT", "http"), ("BERTH_PORT", "70000"), ("BERTH_INSTANCES", "0"),
     ("BERTH_RUNTIME", "torch"), ("BERTH_LOG_LEVEL", "loud"), ("BERTH_ACCESS_LOG", "maybe"),
     ("BERTH_DRAIN_TIMEOUT", "-1")],
)  # fmt: skip
def test_bad_env_values_name_the_variable(tmp_path: Path, var: str, value: str) -> None:
    path = touch(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=f"^{var}: "):
        doc(str(path), env={var: value})


def test_metrics_port_flag_and_env(tmp_path: Path) -> None:
    path = touch(tmp_path / "m.onnx")
    assert "metrics_port" not in doc(str(path))["server"]
    assert doc(str(path), env={"BERTH_METRICS_PORT": "9090"})["server"]["metrics_port"] == 9090
    d = doc(str(path), "--metrics-port", "9091", env={"BERTH_METRICS_PORT": "9090"})
    assert d["server"]["metrics_port"] == 9091
    with pytest.raises(ConfigError, match="^BERTH_METRICS_PORT: "):
        doc(str(path), env={"BERTH_METRICS_PORT": "70000"})


def test_connection_limit_flags_and_env(tmp_path: Path) -> None:
    path = touch(tmp_path / "m.onnx")
    server = doc(str(path))["server"]
    assert not {"header_timeout_ms", "max_connections", "socket"} & set(server)  # engine defaults
    env = {"BERTH_HEADER_TIMEOUT_MS": "2500", "BERTH_MAX_CONNECTIONS": "64",
           "BERTH_SOCKET": "rel/berth.sock"}
    d = doc(str(path), env=env)["server"]
    assert d["header_timeout_ms"] == 2500 and d["max_connections"] == 64
    assert d["socket"] == os.path.abspath("rel/berth.sock")
    d = doc(str(path), "--header-timeout-ms", "0", "--max-connections", "5", "--socket",
            "/run/b.sock", env=env)["server"]
    assert d["header_timeout_ms"] == 0 and d["max_connections"] == 5
    assert d["socket"] == "/run/b.sock"


@pytest.mark.parametrize(
    ("var", "value"),
    [("BERTH_HEADER_TIMEOUT_MS", "-1"), ("BERTH_HEADER_TIMEOUT_MS", "3600001"),
     ("BERTH_HEADER_TIMEOUT_MS", "soon"), ("BERTH_MAX_CONNECTIONS", "0"),
     ("BERTH_MAX_CONNECTIONS", "1000001")],
)  # fmt: skip
def test_bad_connection_limit_values_name_the_variable(tmp_path: Path, var: str,
                                                       value: str) -> None:
    path = touch(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=f"^{var}: "):
        doc(str(path), env={var: value})


# ---------------------------------------------------------------- batching flags

BATCHING_ENV = {
    "BERTH_MAX_BATCH_SIZE": "16",
    "BERTH_MAX_QUEUE_DELAY_US": "250",
    "BERTH_PREFERRED_BATCH_SIZES": "4, 8",
    "BERTH_MAX_QUEUE_SIZE": "64",
    "BERTH_TIMEOUT_US": "5000000",
}
BATCHING_KEYS = (
    "max_batch_size",
    "max_queue_delay_us",
    "preferred_batch_sizes",
    "max_queue_size",
    "timeout_us",
)


def batching(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in BATCHING_KEYS if k in entry}


def test_batching_flags_set_every_served_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    touch(repo / "a" / "1" / "model.onnx")
    touch(repo / "a" / "2" / "model.onnx")
    touch(repo / "b" / "1" / "model.joblib")
    assert all(batching(m) == {} for m in doc(str(repo))["models"])
    d = doc(
        str(repo),
        "--max-batch-size", "4",
        "--max-queue-delay-us", "200000",
        "--preferred-batch-sizes", "2,4",
        "--max-queue-size", "3",
        "--timeout-us", "0",
    )  # fmt: skip
    assert len(d["models"]) == 3
    for entry in d["models"]:
        assert batching(entry) == {
            "max_batch_size": 4,
            "max_queue_delay_us": 200000,
            "preferred_batch_sizes": [2, 4],
            "max_queue_size": 3,
            "timeout_us": 0,
        }
    # 0 = never batch is a value, not "unset"
    assert doc(str(repo), "--max-batch-size", "0")["models"][0]["max_batch_size"] == 0


def test_batching_flag_beats_env_beats_config_beats_berth_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    touch(folder / "model.onnx")
    touch(
        folder / "berth.yaml",
        "max_batch_size: 8\nmax_queue_delay_us: 100\npreferred_batch_sizes: [8]\n"
        "max_queue_size: 10\ntimeout_us: 1000\n",
    )
    yaml_values = {
        "max_batch_size": 8,
        "max_queue_delay_us": 100,
        "preferred_batch_sizes": [8],
        "max_queue_size": 10,
        "timeout_us": 1000,
    }
    assert batching(doc(str(folder))["models"][0]) == yaml_values
    config = touch(
        tmp_path / "app.yaml", "models:\n  - {name: m, max_batch_size: 12, max_queue_size: 20}\n"
    )
    assert batching(doc(str(folder), "--config", str(config))["models"][0]) == {
        **yaml_values,
        "max_batch_size": 12,
        "max_queue_size": 20,
    }
    env_values = {
        "max_batch_size": 16,
        "max_queue_delay_us": 250,
        "preferred_batch_sizes": [4, 8],
        "max_queue_size": 64,
        "timeout_us": 5000000,
    }
    assert batching(doc(str(folder), "--config", str(config), env=BATCHING_ENV)["models"][0]) == (
        env_values
    )
    d = doc(
        str(folder),
        "--config", str(config),
        "--max-batch-size", "0",
        "--max-queue-delay-us", "0",
        "--preferred-batch-sizes", "2",
        "--max-queue-size", "1",
        "--timeout-us", "7",
        env=BATCHING_ENV,
    )  # fmt: skip
    assert batching(d["models"][0]) == {
        "max_batch_size": 0,
        "max_queue_delay_us": 0,
        "preferred_batch_sizes": [2],
        "max_queue_size": 1,
        "timeout_us": 7,
    }


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--max-batch-size", "-1", "expected an integer 0..1048576, got -1"),
     ("--max-batch-size", "1048577", "expected an integer 0..1048576"),
     ("--max-batch-size", "four", "expected an integer, got 'four'"),
     ("--max-queue-delay-us", "60000001", "expected an integer 0..60000000"),
     ("--max-queue-delay-us", "1.5", "expected an integer, got '1.5'"),
     ("--preferred-batch-sizes", "4,x", "expected comma-separated batch sizes like 4,8,16"),
     ("--preferred-batch-sizes", "4;8", "expected comma-separated batch sizes like 4,8,16"),
     ("--preferred-batch-sizes", "0,4", "batch sizes must be 1..1048576, got 0"),
     ("--preferred-batch-sizes", "4,8,4", "batch size 4 is listed twice"),
     ("--max-queue-size", "0", "expected an integer 1..1000000, got 0"),
     ("--timeout-us", "-5", "expected an integer 0..3600000000")],
)  # fmt: skip
def test_bad_batching_values_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    path = touch(tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as exit_info:
        doc(str(path), flag, value)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {message}" in err
    var = "BERTH_" + flag.lstrip("-").replace("-", "_").upper()
    with pytest.raises(ConfigError, match=f"^{var}: ") as info:
        doc(str(path), env={var: value})
    assert message in str(info.value)


def test_help_and_print_config_show_batching_flags(tmp_path: Path) -> None:
    out = " ".join(run_berth("serve", "--help").stdout.split())
    for flag in ("--max-batch-size", "--max-queue-delay-us", "--preferred-batch-sizes",
                 "--max-queue-size", "--timeout-us"):  # fmt: skip
        entry = out[out.rindex(flag) :]
        entry = entry[: entry.index("]") + 1]
        assert "for every served model" in entry
        assert entry.endswith("[env BERTH_" + flag.lstrip("-").replace("-", "_").upper() + "]")
    path = touch(tmp_path / "iris.joblib")
    printed = run_berth(
        "serve", str(path), "--print-config", "--preferred-batch-sizes", "4,8,16",
        env={"BERTH_MAX_BATCH_SIZE": "16"},
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    model = json.loads(printed.stdout)["models"][0]
    assert model["max_batch_size"] == 16 and model["preferred_batch_sizes"] == [4, 8, 16]
    bad = run_berth("serve", str(path), "--print-config", "--max-queue-size", "0")
    assert bad.returncode == 2
    assert "argument --max-queue-size: expected an integer 1..1000000, got 0" in bad.stderr


def test_app_config_overrides_and_adds_models(tmp_path: Path) -> None:
    touch(tmp_path / "iris.joblib")
    touch(tmp_path / "extra" / "ranker.onnx")
    config = touch(
        tmp_path / "app.yaml",
        "server: {http_port: 7000, max_head_bytes: 8192}\n"
        "workers: {load_timeout_s: 60}\n"
        "models:\n"
        "  - {name: iris, max_batch_size: 32, parameters: {k: v}}\n"
        "  - {name: ranker, version: 3, path: extra/ranker.onnx}\n",
    )
    d = doc(str(tmp_path / "iris.joblib"), "--config", str(config))
    assert d["server"]["http_port"] == 7000 and d["server"]["max_head_bytes"] == 8192
    assert d["server"]["host"] == "127.0.0.1"
    assert d["workers"] == {"command": [sys.executable, "-m", "berth.worker"], "load_timeout_s": 60}
    iris, ranker = d["models"]
    assert iris["max_batch_size"] == 32 and iris["parameters"] == {"k": "v"}
    assert ranker == {
        "name": "ranker",
        "version": "3",
        "runtime": "onnx",
        "path": str(tmp_path / "extra" / "ranker.onnx"),
    }
    # environment and flags still win over the app config
    assert (
        doc(str(tmp_path / "iris.joblib"), env={"BERTH_CONFIG": str(config), "BERTH_PORT": "7100"})[
            "server"
        ]["http_port"]
        == 7100
    )
    # an override for a model that is not served is an error
    with pytest.raises(ConfigError, match=r"models\[0\]: model 'iris' is not being served"):
        doc("--config", str(config))
    # the app config alone can say what to serve
    alone = touch(tmp_path / "alone.yaml", "models:\n  - {name: ranker, path: extra}\n")
    assert models(doc("--config", str(alone))) == [("ranker", "1", "onnx", "ranker.onnx")]


def test_nothing_to_serve() -> None:
    with pytest.raises(ConfigError, match="nothing to serve"):
        doc()


# ---------------------------------------------------------------- the command


def run_berth(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "berth.cli", *argv],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version_print_config_and_errors(tmp_path: Path) -> None:
    version = run_berth("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"berth {berth.__version__}"

    path = touch(tmp_path / "iris.joblib")
    printed = run_berth("serve", str(path), "--print-config")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["models"][0]["name"] == "iris"

    bad = run_berth("serve", str(tmp_path / "model.h5x"))
    assert bad.returncode == 2 and bad.stderr.startswith("berth: error: ")

    no_engine = run_berth("serve", str(path), env={"BERTH_BERTHD": str(tmp_path / "missing")})
    assert no_engine.returncode == 1 and "BERTH_BERTHD" in no_engine.stderr


def test_execs_berthd_with_the_document_on_an_inherited_fd(tmp_path: Path) -> None:
    # A stand-in engine: reads the document from the descriptor it is given.
    seen = tmp_path / "seen.json"
    fake = tmp_path / "berthd"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "assert sys.argv[1] == '--config-fd'\n"
        "with os.fdopen(int(sys.argv[2]), 'rb') as f:\n"
        "    document = json.load(f)\n"
        "seen = {'document': document, 'log_level': os.environ.get('BERTH_LOG_LEVEL')}\n"
        f"json.dump(seen, open({str(seen)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    path = touch(tmp_path / "iris.joblib")
    result = run_berth(
        "serve",
        str(path),
        "--port",
        "8123",
        "--log-level",
        "warning",
        env={"BERTH_BERTHD": str(fake)},
    )
    assert result.returncode == 0, result.stderr
    assert "berth: serving iris (sklearn) on http://127.0.0.1:8123" in result.stderr
    got = json.loads(seen.read_text())
    assert got["log_level"] == "warning"
    assert got["document"]["server"]["http_port"] == 8123
    assert got["document"]["models"][0]["path"] == str(path)


def test_log_format_auto_and_payload_log(tmp_path: Path) -> None:
    path = touch(tmp_path / "m.onnx")
    assert doc(str(path), "--log-format", "auto")["log"]["format"] == "auto"
    assert doc(str(path), env={"BERTH_LOG_FORMAT": "auto"})["log"]["format"] == "auto"
    assert "payload_log_path" not in doc(str(path))["log"]
    d = doc(str(path), env={"BERTH_PAYLOAD_LOG": "p.jsonl"})
    assert d["log"]["payload_log_path"] == os.path.abspath("p.jsonl")
    d = doc(str(path), "--payload-log", str(tmp_path / "f.jsonl"), env={"BERTH_PAYLOAD_LOG": "x"})
    assert d["log"]["payload_log_path"] == str(tmp_path / "f.jsonl")
    # the per-model rate is a berth.yaml key
    folder = tmp_path / "folder"
    touch(folder / "model.onnx")
    (folder / "berth.yaml").write_text("payload_log:\n  rate: 0.25\n")
    assert doc(str(folder))["models"][0]["payload_log"] == {"rate": 0.25}


# ---------------------------------------------------------------- model control


def test_model_control_mode_flag_and_served_roots(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    touch(repo / "a" / "1" / "model.onnx")
    touch(repo / "b" / "1" / "model.onnx")
    d = doc(str(repo))
    assert "model_control_mode" not in d["server"]  # the engine's default: none
    assert d["server"]["repositories"] == [str(repo)]
    d = doc(str(repo), "--model-control-mode", "explicit", env={"BERTH_MODEL_CONTROL_MODE": "none"})
    assert d["server"]["model_control_mode"] == "explicit"
    assert doc(str(repo), env={"BERTH_MODEL_CONTROL_MODE": "explicit"})["server"][
        "model_control_mode"] == "explicit"
    with pytest.raises(SystemExit):
        doc(str(repo), "--model-control-mode", "poll")  # not built yet
    with pytest.raises(ConfigError, match="BERTH_MODEL_CONTROL_MODE"):
        doc(str(repo), env={"BERTH_MODEL_CONTROL_MODE": "all"})


def test_served_roots_of_a_config_file(tmp_path: Path) -> None:
    served = touch(tmp_path / "served" / "m.onnx")
    extra = touch(tmp_path / "elsewhere" / "x" / "model.onnx")
    inside = touch(tmp_path / "served" / "sub" / "y.onnx")
    config = touch(
        tmp_path / "app.yaml",
        f"models:\n  - name: x\n    path: {extra.parent}\n  - name: y\n    path: {inside}\n",
    )
    d = doc(str(served.parent), "--config", str(config))
    # the PATH folder whole; a model from the config file by its own path
    # (resolved to its model file); one inside a root adds nothing
    assert d["server"]["repositories"] == [str(served.parent), str(extra)]


def test_exit_on_error_flag_forms_and_env(tmp_path: Path) -> None:
    """--exit-on-error is on by default (the engine's default: the document
    leaves it out); Triton's --exit-on-error=false, --exit-on-error false,
    --no-exit-on-error and BERTH_EXIT_ON_ERROR turn it off."""
    path = str(touch(tmp_path / "m.onnx"))
    assert "exit_on_error" not in doc(path)["server"]
    for flags in (["--no-exit-on-error"], ["--exit-on-error=false"], ["--exit-on-error", "false"],
                  ["--exit-on-error", "0"]):
        assert doc(path, *flags)["server"]["exit_on_error"] is False, flags
    assert doc(path, "--exit-on-error")["server"]["exit_on_error"] is True
    assert doc(path, env={"BERTH_EXIT_ON_ERROR": "false"})["server"]["exit_on_error"] is False
    d = doc(path, "--exit-on-error=true", env={"BERTH_EXIT_ON_ERROR": "false"})
    assert d["server"]["exit_on_error"] is True  # the flag beats the environment
    with pytest.raises(ConfigError, match="^BERTH_EXIT_ON_ERROR: "):
        doc(path, env={"BERTH_EXIT_ON_ERROR": "maybe"})


# ------------------------------------------------ autoscaling and the budget


def test_autoscaling_flags_merge_into_the_block(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    touch(folder / "model.onnx")
    touch(folder / "berth.yaml", "autoscaling: {max_instances: 3, upscale_delay_s: 5}\n")
    assert doc(str(folder))["models"][0]["autoscaling"] == {
        "max_instances": 3, "upscale_delay_s": 5}
    d = doc(str(folder), "--min-instances", "0", "--scale-to-zero-after-s", "1.5",
            "--panic-threshold", "3", "--memory-budget", "2GiB",
            env={"BERTH_MAX_INSTANCES": "4", "BERTH_TARGET_ONGOING_REQUESTS": "0.5"})
    assert d["models"][0]["autoscaling"] == {
        "max_instances": 4, "upscale_delay_s": 5, "min_instances": 0,
        "scale_to_zero_after_s": 1.5, "panic_threshold": 3, "target_ongoing_requests": 0.5}
    assert d["memory_budget"] == "2GiB"
    assert doc(str(folder), "--memory-budget", "1048576")["memory_budget"] == 1048576
    assert "memory_budget" not in doc(str(folder))


@pytest.mark.parametrize(
    ("var", "value"),
    [("BERTH_MIN_INSTANCES", "-1"), ("BERTH_MAX_INSTANCES", "0"),
     ("BERTH_TARGET_ONGOING_REQUESTS", "0"), ("BERTH_UPSCALE_DELAY_S", "soon"),
     ("BERTH_PANIC_WINDOW_S", "-2"), ("BERTH_MEMORY_BUDGET", "lots"),
     ("BERTH_MEMORY_BUDGET", "2 GiBs")],
)  # fmt: skip
def test_bad_autoscaling_values_name_the_variable(tmp_path: Path, var: str, value: str) -> None:
    path = touch(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=f"^{var}: "):
        doc(str(path), env={var: value})
