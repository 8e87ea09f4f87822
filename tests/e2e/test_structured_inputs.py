"""Models whose inputs are a structure, not a list, served end to end (issue
18): Keras functional models on a dict of inputs (keys in and out of
alphabetical order, nested dicts, keys holding '.' and '/') as ``.keras``
files and as SavedModels (``model.export()`` and ``tf.saved_model.save``),
a ``torch.export`` program taking a dict and a keyword-only tensor, and a
TorchScript file whose berth.yaml declares its inputs in another order than
forward()'s. One ``berth serve`` of a repository of them (built by
``framework_models.STRUCTURED_BUILDERS``), queried with Triton's HTTP
client; every answer equals the model called in this process with its own
structure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import framework_models as fm
import numpy as np
import pytest
import tritonclient.http as httpclient
from berth_e2e import BerthServer, assert_error, tensor
from test_frameworks import _check, _infer

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
    ),
    # Reloading the nested model: its 'item/price' key cannot be an Input name.
    pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:google.protobuf.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:tensorflow.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
]

#: Seconds the server may take to load its 7 models (5 TensorFlow and 2
#: PyTorch workers importing their framework on 2 busy cores).
READY_TIMEOUT_S = 240.0

CASE_NAMES = [
    "keras_dict_unsorted",
    "keras_dict_sorted",
    "keras_nested",
    "keras_export_nested",
    "keras_tf_saved_dict",
    "torch_export_dict",
    "torchscript_by_name",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("structured") / "repo"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def cases(repo: Path) -> dict[str, fm.Case]:
    built = {c.name: c for c in (build(repo) for build in fm.STRUCTURED_BUILDERS)}
    assert sorted(built) == sorted(CASE_NAMES)
    return built


@pytest.fixture(scope="module")
def server(
    repo: Path, cases: dict[str, fm.Case], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BerthServer]:
    srv = BerthServer(
        target=[str(repo)],
        workdir=tmp_path_factory.mktemp("structured-server"),
        extra_args=("--instances", "1"),
        wait_for=CASE_NAMES,
        ready_timeout=READY_TIMEOUT_S,
        label="structured",
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


@pytest.mark.parametrize("name", CASE_NAMES)
def test_served_output_equals_the_model_in_process(
    name: str, cases: dict[str, fm.Case], client: httpclient.InferenceServerClient
) -> None:
    _check(cases[name], _infer(client, cases[name]))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_metadata_names_every_leaf(
    name: str, cases: dict[str, fm.Case], server: BerthServer
) -> None:
    case = cases[name]
    resp = server.get(f"/v2/models/{name}")
    assert resp.status == 200, resp.body[:500]
    meta = resp.json()
    assert meta["platform"] == case.platform
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]} == case.input_specs
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]} == case.output_specs


def test_inputs_sent_in_any_order_give_the_same_answer(
    cases: dict[str, fm.Case], client: httpclient.InferenceServerClient
) -> None:
    """The request's tensor order does not matter: reversed, the nested
    model answers the same."""
    case = cases["keras_nested"]
    reordered = fm.Case(
        case.name,
        case.platform,
        dict(reversed(list(case.inputs.items()))),
        case.expected,
        case.input_specs,
        case.output_specs,
    )
    _check(case, _infer(client, reordered))


def test_the_issue_request_is_answered(cases: dict[str, fm.Case], server: BerthServer) -> None:
    """The issue's reproduction, as plain JSON: x first, then w."""
    case = cases["keras_dict_unsorted"]
    x, w = case.inputs["x"][:1], case.inputs["w"][:1]
    doc = server.infer_ok(
        case.name,
        {
            "inputs": [
                tensor("x", "FP32", list(x.shape), x.reshape(-1).tolist()),
                tensor("w", "FP32", list(w.shape), w.reshape(-1).tolist()),
            ]
        },
    )
    (out,) = doc["outputs"]
    np.testing.assert_allclose(
        np.array(out["data"], dtype=np.float32).reshape(out["shape"]),
        case.expected["score"][:1],
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_missing_leaf_is_a_400_naming_it(
    cases: dict[str, fm.Case], server: BerthServer
) -> None:
    age = cases["keras_nested"].inputs["age"]
    only_age = [tensor("age", "FP32", list(age.shape), age.reshape(-1).tolist())]
    resp = server.infer("keras_nested", {"inputs": only_age})
    assert_error(resp, 400, "missing", "user.score|item/price")


def test_a_wrong_shape_is_a_400(cases: dict[str, fm.Case], server: BerthServer) -> None:
    """w with 2 columns instead of 3: the model refuses it, the client gets a
    400, and the model still answers the right request afterwards."""
    x = cases["keras_dict_unsorted"].inputs["x"]
    bad = {"x": x, "w": x}
    body = {
        "inputs": [
            tensor(k, "FP32", list(v.shape), v.reshape(-1).tolist()) for k, v in bad.items()
        ]
    }
    resp = server.infer("keras_dict_unsorted", body)
    assert resp.status == 400, resp.body[:500]
    assert server.get("/v2/models/keras_dict_unsorted/ready").status == 200
