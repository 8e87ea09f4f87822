"""``berth build`` and ``berth deploy``: bundles are reproducible and
verifiable, the Containerfile is what an orchestrator needs, and every
rendered manifest validates against the Kubernetes OpenAPI schemas (the
``kubernetes-validate`` package, offline) or, for KServe's kinds, against
the kserve package's schema models. No cluster runs here: these are the
checks that can be made without one (docs/deploy.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from berth.build import build_bundle, containerfile, parse_tag, read_manifest, verify_bundle
from berth.deploy import dump, kserve, kubernetes
from berth.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BERTH = [sys.executable, "-m", "berth.cli"]


@pytest.fixture(scope="module")
def iris_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("src") / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), path)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, iris_file: Path) -> Path:
    """A repository: iris versions 1 and 2 (model-level berth.yaml), and a
    custom Python model with an artefact beside it."""
    root = tmp_path_factory.mktemp("repo")
    for version in ("1", "2"):
        (root / "iris" / version).mkdir(parents=True)
        (root / "iris" / version / "model.joblib").write_bytes(iris_file.read_bytes())
    (root / "iris" / "berth.yaml").write_text("max_batch_size: 16\nmax_queue_delay_us: 500\n")
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "1" / "model.py").write_text(
        "import berth\n\nclass Echo(berth.Model):\n    def predict(self, batch):\n"
        "        return batch\n"
    )
    (root / "echo" / "1" / "vocab.txt").write_text("a\nb\n")
    (root / "echo" / "1" / "__pycache__").mkdir()
    (root / "echo" / "1" / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    return root


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under root: (mode, mtime, content) — what byte-identical means."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (
            st.st_mode, int(st.st_mtime), p.read_bytes() if p.is_file() else b""
        )
    return out


def run_berth(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BERTH, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=120)


# ---------------------------------------------------------------- bundles


def test_a_bundle_built_twice_is_byte_identical(repo: Path, tmp_path: Path) -> None:
    a = build_bundle(str(repo), str(tmp_path / "a"), tag="shop/iris:1.2.0")
    b = build_bundle(str(repo), str(tmp_path / "b"), tag="shop/iris:1.2.0")
    assert tree(a) == tree(b)
    # No tag: the version comes from the content, so it is the same too.
    c = build_bundle(str(repo), str(tmp_path / "c"))
    d = build_bundle(str(repo), str(tmp_path / "d"))
    assert tree(c) == tree(d)
    assert read_manifest(c)["version"].startswith("sha-")
    # Fixed metadata, for archives and image layers made from it.
    assert {mode & 0o777 for mode, _, _ in tree(a).values()} <= {0o644, 0o755}
    assert {mtime for _, mtime, _ in tree(a).values()} == {315532800}


def test_source_date_epoch_sets_the_times_and_a_changed_model_changes_the_version(
    repo: Path, iris_file: Path, tmp_path: Path
) -> None:
    a = build_bundle(str(repo), str(tmp_path / "a"), env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert {int(p.stat().st_mtime) for p in a.rglob("*")} == {1700000000}
    single = build_bundle(str(iris_file), str(tmp_path / "one"))
    changed = tmp_path / "changed" / "iris.joblib"
    changed.parent.mkdir()
    changed.write_bytes(iris_file.read_bytes() + b"\0")
    other = build_bundle(str(changed), str(tmp_path / "two"))
    assert read_manifest(single)["version"] != read_manifest(other)["version"]
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        build_bundle(str(repo), str(tmp_path / "x"), env={"SOURCE_DATE_EPOCH": "yesterday"})


def test_the_manifest_lists_models_requirements_and_hashes(repo: Path, tmp_path: Path) -> None:
    import importlib.metadata as md

    bundle = build_bundle(str(repo), str(tmp_path / "b"), tag="iris:1.0.0")
    doc = read_manifest(bundle)
    assert doc["name"] == "iris" and doc["version"] == "1.0.0" and doc["image"] == "iris:1.0.0"
    assert [(m["name"], m["version"], m["runtime"]) for m in doc["models"]] == [
        ("echo", "1", "python"), ("iris", "1", "sklearn"), ("iris", "2", "sklearn"),
    ]
    # Locked: the versions installed here, for Berth and each runtime.
    assert doc["requirements"]["sklearn"]["scikit-learn"] == md.version("scikit-learn")
    assert doc["requirements"]["berth"]["numpy"] == md.version("numpy")
    reqs = (bundle / "requirements.txt").read_text()
    assert f"scikit-learn=={md.version('scikit-learn')}" in reqs.splitlines()
    # Every file but the manifest is hashed; junk is left out.
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert set(doc["files"]) == files - {"berth-bundle.json"}
    assert "echo/1/vocab.txt" in files and not any("__pycache__" in f for f in files)
    # The model-level berth.yaml's settings are in each version's berth.yaml.
    settings = yaml.safe_load((bundle / "iris" / "2" / "berth.yaml").read_text())
    assert settings == {"runtime": "sklearn", "max_batch_size": 16, "max_queue_delay_us": 500}
    assert verify_bundle(bundle) == []
    (bundle / "iris" / "1" / "model.joblib").write_bytes(b"tampered")
    (bundle / "extra.txt").write_text("x")
    assert verify_bundle(bundle) == [
        "extra.txt: not in the manifest", "iris/1/model.joblib: SHA-256 differs from the manifest",
    ]


def test_berth_serve_of_a_bundle_sees_the_same_models(repo: Path, tmp_path: Path) -> None:
    from berth.cli import discover_models

    bundle = build_bundle(str(repo), str(tmp_path / "b"))
    def strip(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "path"} for e in entries]
    assert strip(discover_models(str(bundle))) == strip(discover_models(str(repo)))


def test_a_single_python_file_with_a_class_keeps_its_class(tmp_path: Path) -> None:
    from berth.cli import discover_models

    source = tmp_path / "doubler.py"
    source.write_text("import berth\n\nclass Doubler(berth.Model):\n"
                      "    def predict(self, batch):\n        return batch\n")
    bundle = build_bundle(f"{source}:Doubler", str(tmp_path / "b"))
    (entry,) = discover_models(str(bundle))
    assert (entry["name"], entry["runtime"], entry["class"]) == ("doubler", "python", "Doubler")
    assert entry["path"] == str(bundle / "doubler" / "1" / "doubler.py")


def test_rebuilding_replaces_a_bundle_but_never_another_folder(
    iris_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    build_bundle(str(iris_file), str(out))
    build_bundle(str(iris_file), str(out))  # a bundle: replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep me")
    with pytest.raises(ConfigError, match="not a bundle made by berth build"):
        build_bundle(str(iris_file), str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.md").read_text() == "keep me"


# ------------------------------------------------------------ Containerfile


def test_the_containerfile_runs_berth_as_a_non_root_user_with_a_health_check() -> None:
    text = containerfile("iris", "1.0.0", python="3.11")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0].startswith("#")
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)  # Debian
    user = [line for line in lines if line.startswith("USER ")]
    assert user == ["USER 10001:10001"]
    assert "EXPOSE 8080 8081" in lines
    health = text[text.index("HEALTHCHECK"):]
    assert "/v2/health/ready" in health.split("STOPSIGNAL")[0]
    entry = [line for line in lines if line.startswith("ENTRYPOINT ")]
    assert len(entry) == 1
    argv = json.loads(entry[0][len("ENTRYPOINT "):])  # exec form: a JSON array
    assert argv[:3] == ["berth", "serve", "/opt/berth/bundle"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert "BERTH_ALLOWED_HOSTS=*" in text
    # USER comes after every RUN that needs root.
    last_run = max(i for i, line in enumerate(lines) if line.startswith("RUN "))
    assert lines.index("USER 10001:10001") > last_run
    with_dist = containerfile("iris", "1.0.0", python="3.11", dist="berth-0.1.0-cp311.whl")
    assert '"/tmp/berth-dist/berth-0.1.0-cp311.whl"' in with_dist


def test_tags_are_checked() -> None:
    assert parse_tag("iris:1.0.0") == ("iris", "1.0.0")
    assert parse_tag("team/iris:v2_rc-1") == ("team/iris", "v2_rc-1")
    for bad in ("iris", "Iris:1", "iris:", "iris:-1", "iris:1/2", ":1", "ir is:1"):
        with pytest.raises(ConfigError, match="--tag"):
            parse_tag(bad)


# -------------------------------------------------------------- Kubernetes


def kube_version() -> str:
    kv = pytest.importorskip("kubernetes_validate")
    return kv.utils.latest_version()


def validate_all(docs: list[dict[str, Any]]) -> list[str]:
    """Validates each document (strict: unknown fields fail); returns the
    kinds validated."""
    import kubernetes_validate

    version = kube_version()
    kinds = []
    for doc in docs:
        if doc["apiVersion"] == "keda.sh/v1alpha1":
            continue  # a CRD: checked separately
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    return kinds


def render_cli(*args: str, cwd: Path | None = None) -> list[dict[str, Any]]:
    done = run_berth("deploy", "kubernetes", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


@pytest.mark.parametrize("autoscaler", ["hpa", "keda", "none"])
def test_rendered_manifests_validate_against_the_kubernetes_schemas(
    iris_file: Path, tmp_path: Path, autoscaler: str
) -> None:
    bundle = build_bundle(str(iris_file), str(tmp_path / "b"), tag="iris:1.0.0")
    config = tmp_path / "app.yaml"
    config.write_text(
        "server:\n  drain_timeout_s: 90\n  max_body_bytes: 1048576\n  host: 127.0.0.1\n"
        "log:\n  level: warning\n"
        "deploy:\n  resources:\n    requests: {cpu: 500m, memory: 1Gi}\n"
        "    limits: {cpu: '2', memory: 2Gi}\n  gpus: 1\n"
    )
    docs = render_cli(str(bundle), "--namespace", "ml", "--replicas", "2",
                      "--autoscaler", autoscaler, "--config", str(config))
    kinds = validate_all(docs)
    expected = ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    if autoscaler == "hpa":
        expected.append("HorizontalPodAutoscaler")
    assert kinds == expected
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)
    by_kind = {d["kind"]: d for d in docs}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert by_kind["Deployment"]["spec"]["replicas"] == 2
    assert c["image"] == "iris:1.0.0"  # the bundle's
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["startupProbe"]["grpc"] == {"port": 8081, "service": ""}
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "BERTH_ALLOWED_HOSTS", "value": "*"} in c["env"]
    # The preStop pause and the drain fit in the grace period.
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + 90
    assert c["securityContext"]["runAsNonRoot"] is True
    # The ConfigMap carries the server-level settings, not the listen address.
    served = yaml.safe_load(by_kind["ConfigMap"]["data"]["berth.yaml"])
    assert served == {"server": {"drain_timeout_s": 90, "max_body_bytes": 1048576},
                      "log": {"level": "warning"}}
    ports = {p["name"]: p for p in by_kind["Service"]["spec"]["ports"]}
    assert ports["http"]["port"] == 8080 and ports["grpc"]["port"] == 8081
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    if autoscaler == "hpa":
        (metric,) = by_kind["HorizontalPodAutoscaler"]["spec"]["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == kubernetes.INFLIGHT_METRIC
        assert by_kind["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 2
    if autoscaler == "keda":
        scaled = by_kind["ScaledObject"]
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        assert kubernetes.INFLIGHT_METRIC in trigger["metadata"]["query"]
        assert scaled["spec"]["scaleTargetRef"]["name"] == by_kind["Deployment"]["metadata"]["name"]


def test_the_autoscaled_metric_is_one_berth_serves() -> None:
    metrics = (ROOT / "docs" / "metrics.md").read_text()
    assert f"| `{kubernetes.INFLIGHT_METRIC}` | gauge |" in metrics


def test_a_served_path_renders_with_an_image_and_writes_files(
    repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    done = run_berth("deploy", "kubernetes", str(repo), "--image", "registry.test/iris:7",
                     "--gpus", "2", "-o", str(out))
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["configmap.yaml", "deployment.yaml", "horizontalpodautoscaler.yaml",
                     "poddisruptionbudget.yaml", "service.yaml"]
    docs = [yaml.safe_load((out / f).read_text()) for f in files]
    validate_all(docs)
    dep = yaml.safe_load((out / "deployment.yaml").read_text())
    assert dep["metadata"]["name"] == repo.name.lower().replace("_", "-")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.test/iris:7"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    # 30 s default drain
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 5 + 30


def test_the_grace_period_follows_the_drain_timeout() -> None:
    assert kubernetes.grace_period(0) > kubernetes.PRESTOP_PAUSE_S
    assert kubernetes.grace_period(30) > kubernetes.PRESTOP_PAUSE_S + 30
    assert kubernetes.grace_period(29.5) > kubernetes.PRESTOP_PAUSE_S + 29.5


# ------------------------------------------------------------------ KServe


def kserve_docs() -> list[dict[str, Any]]:
    return [kserve.cluster_serving_runtime(), kserve.inference_service()]


def test_the_kserve_files_are_what_berth_deploy_kserve_renders() -> None:
    folder = ROOT / "deploy" / "kserve"
    for doc in kserve_docs():
        path = folder / f"{doc['kind'].lower()}.yaml"
        assert path.read_text() == dump([doc]), f"{path} is stale: berth deploy kserve -o {folder}"
    done = run_berth("deploy", "kserve")
    assert done.returncode == 0, done.stderr
    assert list(yaml.safe_load_all(done.stdout)) == kserve_docs()


def test_the_serving_runtime_follows_kserve_conventions() -> None:
    runtime, isvc = kserve_docs()
    spec = runtime["spec"]
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    assert formats == {"sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "tensorflow", "mlflow"}
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    (c,) = spec["containers"]
    assert c["name"] == "kserve-container"
    argv = c["command"] + c["args"]
    assert argv[:3] == ["berth", "serve", "/mnt/models"]
    assert argv[argv.index("--name") + 1] == "{{.Name}}"
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]
    # The runtime's own pod-level fields validate as Kubernetes objects.
    kv = pytest.importorskip("kubernetes_validate")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{**c, "args": c["args"]}]}}
    kv.validate(pod, kube_version(), strict=True)


def test_the_kserve_objects_validate_against_kserve_schema() -> None:
    python = os.environ.get("BERTH_KSERVE_PYTHON")
    if not python:
        pytest.skip("KServe's Python is not available (BERTH_KSERVE_PYTHON is not set; "
                    "make test-py sets it to .venv-kserve)")
    check = Path(__file__).with_name("kserve_schema_check.py")
    good = subprocess.run([python, str(check)], input=json.dumps(kserve_docs()),
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    # The check does catch mistakes: an unknown field, a wrong type, a
    # container without its required name.
    runtime, isvc = kserve_docs()
    runtime["spec"]["protocolVersion"] = ["v2"]
    runtime["spec"]["containers"][0].pop("name")
    isvc["spec"]["predictor"]["model"]["storageUri"] = 7
    bad = subprocess.run([python, str(check)], input=json.dumps([runtime, isvc]),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "spec.protocolVersion: unknown field" in bad.stdout
    missing = [line for line in bad.stdout.splitlines() if "containers[0]: V1Container" in line]
    assert missing and ("Field required" in missing[0] or "must not be `None`" in missing[0])
    assert "storageUri: expected str, got 7" in bad.stdout


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, words",
    [
        (["build", "no/such/model.joblib"], ["no such file or folder"]),
        (["build", "{iris}", "--tag", "Iris:1"], ["--tag", "lowercase"]),
        (["build", "{iris}", "--tag", "iris"], ["--tag", "NAME:VERSION"]),
        (["build", "{iris}", "--berth-dist", "{iris}"], ["--berth-dist", ".whl"]),
        (["deploy", "kubernetes", "no/such/dir"], ["no such file or folder"]),
        (["deploy", "kubernetes", "{iris}"], ["--image"]),
        (["deploy", "kubernetes", "{iris}", "--image", "x:1", "--autoscaler", "vpa"],
         ["--autoscaler", "invalid choice", "hpa"]),
        (["deploy", "kubernetes", "{iris}", "--image", "x:1", "--namespace", "Bad_NS"],
         ["--namespace", "lowercase"]),
        (["deploy", "kubernetes", "{iris}", "--image", "x:1", "--replicas", "0"],
         ["--replicas", ">= 1"]),
        (["deploy", "kubernetes", "{iris}", "--image", "x:1", "--config", "{bad_res}"],
         ["deploy.resources.requests.cpu", "quantity"]),
        (["deploy", "kubernetes", "{iris}", "--image", "x:1", "--config", "{bad_key}"],
         ["deploy", "unknown key", "replica"]),
        (["deploy", "kubernetes", "{iris}", "--image", "x:1", "--config", "{bad_drain}"],
         ["drain_timeout_s"]),
        (["deploy", "azure"], ["invalid choice", "kubernetes"]),
    ],
)
def test_bad_input_gets_a_clear_error(
    iris_file: Path, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    files = {
        "iris": str(iris_file),
        "bad_res": "deploy:\n  resources:\n    requests: {cpu: lots}\n",
        "bad_key": "deploy:\n  replica: 3\n",
        "bad_drain": "server:\n  drain_timeout_s: soon\n",
    }
    for key, text in files.items():
        if key != "iris":
            (tmp_path / f"{key}.yaml").write_text(text)
            files[key] = str(tmp_path / f"{key}.yaml")
    argv = [a.format(**files) for a in args]
    done = run_berth(*argv, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_serve_ignores_the_deploy_section_of_an_app_config(iris_file: Path, tmp_path: Path
                                                           ) -> None:
    config = tmp_path / "app.yaml"
    config.write_text("server:\n  drain_timeout_s: 12\ndeploy:\n  gpus: 1\n")
    done = run_berth("serve", str(iris_file), "--config", str(config), "--print-config")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert "deploy" not in doc and doc["server"]["drain_timeout_s"] == 12
