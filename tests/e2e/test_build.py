"""``berth build``'s bundle serves what its source serves (a real server
and real clients), and ``berth build --image`` builds an image where a
container builder and the base image are available (docs/deploy.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from berth.build import build_bundle, read_manifest
from berth_e2e import BerthServer

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def _infer(server: BerthServer, model: str, version: str = "") -> dict[str, Any]:
    """The answer through tritonclient (HTTP, binary tensors)."""
    client = httpclient.InferenceServerClient(server.triton_url)
    try:
        inp = httpclient.InferInput("input", [3, 4], "FP64")
        inp.set_data_from_numpy(np.array(ROWS, dtype=np.float64))
        result = client.infer(model, [inp], model_version=version)
        outputs = result.get_response()["outputs"]
        return {o["name"]: result.as_numpy(o["name"]).tolist() for o in outputs}
    finally:
        client.close()


def test_a_bundle_answers_like_its_source(berth_server: Any, zoo: Any, tmp_path: Path) -> None:
    source = zoo.sklearn_classifier()
    bundle = build_bundle(str(source), str(tmp_path / "bundle"), tag="iris:1.0.0")
    original = berth_server(str(source))
    built = berth_server(str(bundle))
    answer = _infer(original, "iris")
    assert answer and all(len(v) == 3 for v in answer.values())
    assert _infer(built, "iris") == answer
    meta = built.get("/v2/models/iris").json()
    assert meta["versions"] == ["1"] and meta["platform"] == original.get(
        "/v2/models/iris").json()["platform"]


def test_a_bundle_of_a_repository_keeps_versions_and_settings(
    berth_server: Any, zoo: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    for version in ("1", "3"):
        (repo / "iris" / version).mkdir(parents=True)
        shutil.copyfile(zoo.sklearn_classifier(), repo / "iris" / version / "model.joblib")
    (repo / "iris" / "berth.yaml").write_text("max_batch_size: 8\n")
    bundle = build_bundle(str(repo), str(tmp_path / "bundle"))
    assert read_manifest(bundle)["version"].startswith("sha-")
    original = berth_server(str(repo))
    built = berth_server(str(bundle))
    for version in ("1", "3"):
        answer = _infer(original, "iris", version)
        assert answer and _infer(built, "iris", version) == answer
    config = built.get("/v2/models/iris/versions/3/config")
    if config.status == 200:  # where the server exposes the model's settings
        assert config.json().get("max_batch_size") == 8


def _base_image_present(image: str) -> bool:
    done = subprocess.run(["buildah", "inspect", "--type", "image", image],
                          capture_output=True, text=True)
    return done.returncode == 0


def test_berth_build_image(zoo: Any, tmp_path: Path) -> None:
    """Builds the image where buildah and the base image are here; without
    the base image (no registry can be reached from this machine), checks
    that --image says what is missing and leaves the bundle usable."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (Debian: apt-get install buildah)")
    bundle_dir = tmp_path / "bundle"
    base = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim-bookworm"
    argv = [sys.executable, "-m", "berth.cli", "build", str(zoo.sklearn_classifier()),
            "-o", str(bundle_dir), "--tag", "berth-test-iris:1", "--image"]
    if not _base_image_present(base):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert f"the base image {base} is not available locally" in done.stderr
        assert "--base-image" in done.stderr
        assert read_manifest(bundle_dir) is not None  # the bundle was written first
        pytest.skip(f"base image {base} is not available here and cannot be pulled, so the "
                    "image itself cannot be built; the failure message was checked")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    inspect = subprocess.run(["buildah", "inspect", "--type", "image", "berth-test-iris:1"],
                             capture_output=True, text=True)
    assert inspect.returncode == 0
    assert '"User": "10001:10001"' in inspect.stdout
    subprocess.run(["buildah", "rmi", "berth-test-iris:1"], capture_output=True)
