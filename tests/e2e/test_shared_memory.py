"""Triton's system shared-memory extension with Triton's own client:
tritonclient.utils.shared_memory makes the regions, the client registers
them over HTTP and gRPC, inputs are read from and outputs written into them
by the server; status and unregister; bad input (unknown region, ranges,
keys that do not exist or look like paths, double register, limits, CUDA
shared memory, tokens, a foreign Origin) gets a clear error and the server
keeps serving."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from berth_e2e import BerthServer, add_python_model  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

ADD_SOURCE = '''
import numpy as np
import berth


class Add(berth.Model):
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32 [1, 16])."""

    inputs = [berth.TensorSpec("INPUT0", "INT32", [-1, 16]),
              berth.TensorSpec("INPUT1", "INT32", [-1, 16])]
    outputs = [berth.TensorSpec("OUTPUT0", "INT32", [-1, 16]),
               berth.TensorSpec("OUTPUT1", "INT32", [-1, 16])]

    def predict(self, inputs, parameters=None):
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
'''

STRING_SOURCE = '''
import numpy as np
import berth


class StrAdd(berth.Model):
    """Triton's simple_string: BYTES numbers in, their sum and difference
    out as BYTES."""

    inputs = [berth.TensorSpec("INPUT0", "BYTES", [-1, 16]),
              berth.TensorSpec("INPUT1", "BYTES", [-1, 16])]
    outputs = [berth.TensorSpec("OUTPUT0", "BYTES", [-1, 16]),
               berth.TensorSpec("OUTPUT1", "BYTES", [-1, 16])]

    def predict(self, inputs, parameters=None):
        a = inputs["INPUT0"].astype(np.int64)
        b = inputs["INPUT1"].astype(np.int64)
        return {"OUTPUT0": (a + b).astype(str).astype(object),
                "OUTPUT1": (a - b).astype(str).astype(object)}
'''

NBYTES = 64  # 16 INT32
ADMIN = "shm-admin-token"
USER = "shm-user-token"


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    root = tmp_path_factory.mktemp("shm-repo")
    add_python_model(root, "add", ADD_SOURCE, "Add")
    add_python_model(root, "strings", STRING_SOURCE, "StrAdd")
    config = root.parent / "shm.yaml"
    config.write_text("server:\n  shm_max_regions: 6\n  shm_max_bytes: 4096\n")
    return module_server(str(root), "--config", str(config), wait_for=["add", "strings"])


@pytest.fixture
def regions() -> Iterator[dict[str, Any]]:
    """Input and output regions with unique keys, destroyed afterwards."""
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    made: dict[str, Any] = {}
    try:
        made["in"] = shm.create_shared_memory_region("in", f"/berth-in-{tag}", 2 * NBYTES)
        made["out"] = shm.create_shared_memory_region("out", f"/berth-out-{tag}", 2 * NBYTES)
        made["tag"] = tag
        yield made
    finally:
        for k in ("in", "out"):
            if k in made:
                shm.destroy_shared_memory_region(made[k])


def key(regions: dict[str, Any], which: str) -> str:
    return f"/berth-{which}-{regions['tag']}"


def data() -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    return a, b


def run_shm_inference(client: Any, mod: Any, regions: dict[str, Any]) -> None:
    """Triton's simple shm example, unchanged in substance: it starts by
    clearing both kinds of regions."""
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    a, b = data()
    shm.set_shared_memory_region(regions["in"], [a])
    shm.set_shared_memory_region(regions["in"], [b], offset=NBYTES)
    client.register_system_shared_memory("in", key(regions, "in"), 2 * NBYTES)
    client.register_system_shared_memory("out", key(regions, "out"), 2 * NBYTES)
    try:
        inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"),
                  mod.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory("in", NBYTES)
        inputs[1].set_shared_memory("in", NBYTES, offset=NBYTES)
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory("out", NBYTES)
        outputs[1].set_shared_memory("out", NBYTES, offset=NBYTES)
        result = client.infer("add", inputs, outputs=outputs)
        out0 = result.get_output("OUTPUT0")
        out1 = result.get_output("OUTPUT1")
        assert out0 is not None and out1 is not None
        shape0 = list(out0["shape"] if isinstance(out0, dict) else out0.shape)
        assert shape0 == [1, 16]
        got0 = shm.get_contents_as_numpy(regions["out"], np.int32, [1, 16])
        got1 = shm.get_contents_as_numpy(regions["out"], np.int32, [1, 16], offset=NBYTES)
        np.testing.assert_array_equal(got0, a + b)
        np.testing.assert_array_equal(got1, a - b)
        status = client.get_system_shared_memory_status()
        names = status_names(status)
        assert {"in", "out"} <= names
    finally:
        client.unregister_system_shared_memory("in")
        client.unregister_system_shared_memory("out")
    assert not {"in", "out"} & status_names(client.get_system_shared_memory_status())


def status_names(status: Any) -> set[str]:
    if isinstance(status, list):  # HTTP: a JSON list
        return {r["name"] for r in status}
    return set(status.regions.keys())  # gRPC: the response message


def test_http_inference_in_shared_memory(server: BerthServer, regions: dict[str, Any]) -> None:
    client = httpclient.InferenceServerClient(server.triton_url)
    try:
        assert "system_shared_memory" in client.get_server_metadata()["extensions"]
        run_shm_inference(client, httpclient, regions)
    finally:
        client.close()


def test_grpc_inference_in_shared_memory(server: BerthServer, regions: dict[str, Any]) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        run_shm_inference(client, grpcclient, regions)
        # one input from a region, one in the message, output in the message
        a, b = data()
        shm.set_shared_memory_region(regions["in"], [a])
        client.register_system_shared_memory("in", key(regions, "in"), NBYTES)
        try:
            i0 = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
            i0.set_shared_memory("in", NBYTES)
            i1 = grpcclient.InferInput("INPUT1", [1, 16], "INT32")
            i1.set_data_from_numpy(b)
            r = client.infer("add", [i0, i1])
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
        finally:
            client.unregister_system_shared_memory()
    finally:
        client.close()


def test_mixed_http_input_in_shm_output_in_json(server: BerthServer, regions: dict[str, Any]) -> None:
    a, b = data()
    shm.set_shared_memory_region(regions["in"], [a, b])
    client = httpclient.InferenceServerClient(server.triton_url)
    try:
        client.register_system_shared_memory("in", key(regions, "in"), 2 * NBYTES)
        i0 = httpclient.InferInput("INPUT0", [1, 16], "INT32")
        i0.set_shared_memory("in", NBYTES)
        i1 = httpclient.InferInput("INPUT1", [1, 16], "INT32")
        i1.set_shared_memory("in", NBYTES, offset=NBYTES)
        r = client.infer("add", [i0, i1])
        np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    finally:
        client.unregister_system_shared_memory()
        client.close()


@pytest.mark.parametrize("mod", [httpclient, grpcclient], ids=["http", "grpc"])
def test_bytes_in_shared_memory(server: BerthServer, mod: Any) -> None:
    """Triton's simple_*_shm_string_client: serialized BYTES tensors in and
    out of regions."""
    from tritonclient import utils

    a = np.array([str(i) for i in range(16)], dtype=object).reshape(1, 16)
    b = np.array(["1"] * 16, dtype=object).reshape(1, 16)
    sa, sb = utils.serialize_byte_tensor(a), utils.serialize_byte_tensor(b)
    want0 = utils.serialize_byte_tensor((a.astype(np.int64) + 1).astype(str).astype(object))
    want1 = utils.serialize_byte_tensor((a.astype(np.int64) - 1).astype(str).astype(object))
    na, nb = utils.serialized_byte_size(sa), utils.serialized_byte_size(sb)
    n0, n1 = utils.serialized_byte_size(want0), utils.serialized_byte_size(want1)
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    url = server.triton_url if mod is httpclient else server.grpc_url
    client = mod.InferenceServerClient(url)
    handles = []
    try:
        hin = shm.create_shared_memory_region("sin", f"/berth-sin-{tag}", na + nb)
        handles.append(hin)
        hout = shm.create_shared_memory_region("sout", f"/berth-sout-{tag}", n0 + n1)
        handles.append(hout)
        shm.set_shared_memory_region(hin, [sa])
        shm.set_shared_memory_region(hin, [sb], offset=na)
        client.register_system_shared_memory("sin", f"/berth-sin-{tag}", na + nb)
        client.register_system_shared_memory("sout", f"/berth-sout-{tag}", n0 + n1)
        i0 = mod.InferInput("INPUT0", [1, 16], "BYTES")
        i0.set_shared_memory("sin", na)
        i1 = mod.InferInput("INPUT1", [1, 16], "BYTES")
        i1.set_shared_memory("sin", nb, offset=na)
        o0 = mod.InferRequestedOutput("OUTPUT0")
        o0.set_shared_memory("sout", n0)
        o1 = mod.InferRequestedOutput("OUTPUT1")
        o1.set_shared_memory("sout", n1, offset=n0)
        client.infer("strings", [i0, i1], outputs=[o0, o1])
        got0 = shm.get_contents_as_numpy(hout, np.object_, [1, 16])
        assert [x.decode() if isinstance(x, bytes) else x for x in got0.ravel()] == \
            [str(i + 1) for i in range(16)]
        got1 = shm.get_contents_as_numpy(hout, np.object_, [1, 16], offset=n0)
        assert [x.decode() if isinstance(x, bytes) else x for x in got1.ravel()] == \
            [str(i - 1) for i in range(16)]
    finally:
        client.unregister_system_shared_memory()
        client.close()
        for h in handles:
            shm.destroy_shared_memory_region(h)


# ---------------------------------------------------------------- bad input


def post(server: BerthServer, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", **(headers or {})},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get(server: BerthServer, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def register(server: BerthServer, name: str, body: Any, **kw: Any) -> tuple[int, Any]:
    return post(server, f"/v2/systemsharedmemory/region/{name}/register", body, **kw)


def test_bad_registrations_get_clear_errors(server: BerthServer, regions: dict[str, Any]) -> None:
    k = key(regions, "in")
    # a key that does not exist
    status, doc = register(server, "r", {"key": "/berth-no-such-key-x", "offset": 0, "byte_size": 8})
    assert status == 400 and "no shared memory object" in doc["error"]
    # path-like keys are refused before any open
    for bad in ("../etc/passwd", "/../etc/passwd", "/dev/shm/x", "etc", "/", ""):
        status, doc = register(server, "r", {"key": bad, "offset": 0, "byte_size": 8})
        assert status == 400 and "POSIX shared memory name" in doc["error"], bad
    # offset/size beyond the object, including overflow
    for off, size in ((0, 2 * NBYTES + 1), (2 * NBYTES, 1), (2**63 - 1, 2)):
        status, doc = register(server, "r", {"key": k, "offset": off, "byte_size": size})
        assert status == 400 and "beyond the object" in doc["error"], (off, size)
    # malformed bodies
    assert register(server, "r", {"key": k, "byte_size": -1})[0] == 400
    assert register(server, "r", {"key": 5, "byte_size": 8})[0] == 400
    assert register(server, "r", [1])[0] == 400
    # double register
    assert register(server, "r", {"key": k, "offset": 0, "byte_size": 8}) == (200, {})
    try:
        status, doc = register(server, "r", {"key": k, "offset": 0, "byte_size": 8})
        assert status == 400 and "already in manager" in doc["error"]
        # status of one and of an unknown region
        assert get(server, "/v2/systemsharedmemory/region/r/status") == (
            200, [{"name": "r", "key": k, "offset": 0, "byte_size": 8}])
        assert get(server, "/v2/systemsharedmemory/region/nope/status")[0] == 404
    finally:
        assert post(server, "/v2/systemsharedmemory/region/r/unregister", {})[0] == 200
    # unregistering an unknown region succeeds, as in Triton
    assert post(server, "/v2/systemsharedmemory/region/nope/unregister", {})[0] == 200


def test_limits(server: BerthServer, regions: dict[str, Any]) -> None:
    k = key(regions, "in")
    # bytes: the server allows 4096 in all
    status, doc = register(server, "big", {"key": k, "byte_size": 2 * NBYTES})
    assert status == 200
    try:
        for i in range(5):
            assert register(server, f"n{i}", {"key": k, "byte_size": 1})[0] == 200
        status, doc = register(server, "n5", {"key": k, "byte_size": 1})
        assert status == 413 and "shm_max_regions" in doc["error"]
    finally:
        assert post(server, "/v2/systemsharedmemory/unregister", {})[0] == 200
    assert get(server, "/v2/systemsharedmemory/status") == (200, [])


def test_inference_with_bad_regions(server: BerthServer, regions: dict[str, Any]) -> None:
    client = httpclient.InferenceServerClient(server.triton_url)
    gclient = grpcclient.InferenceServerClient(server.grpc_url)
    a, b = data()
    shm.set_shared_memory_region(regions["in"], [a, b])
    client.register_system_shared_memory("in", key(regions, "in"), 2 * NBYTES)
    try:
        for mod, c in ((httpclient, client), (grpcclient, gclient)):
            def infer(name0: str, size0: int, off0: int = 0, out: tuple[str, int] | None = None,
                      mod: Any = mod, c: Any = c) -> str:
                i0 = mod.InferInput("INPUT0", [1, 16], "INT32")
                i0.set_shared_memory(name0, size0, offset=off0)
                i1 = mod.InferInput("INPUT1", [1, 16], "INT32")
                i1.set_data_from_numpy(b)
                outs = None
                if out is not None:
                    o = mod.InferRequestedOutput("OUTPUT0")
                    o.set_shared_memory(out[0], out[1])
                    outs = [o]
                with pytest.raises(InferenceServerException) as info:
                    c.infer("add", [i0, i1], outputs=outs)
                return str(info.value)
            assert "Unable to find shared memory region: 'nope'" in infer("nope", NBYTES)
            assert "beyond its 128 bytes" in infer("in", NBYTES, off0=NBYTES + 1)
            assert "do not match its shape" in infer("in", NBYTES - 4)
            assert "Unable to find shared memory region: 'gone'" in infer("in", NBYTES, out=("gone", 64))
            # an output region too small for the answer
            client.register_system_shared_memory("tiny", key(regions, "out"), 8)
            try:
                assert "at least 64 bytes" in infer("in", NBYTES, out=("tiny", 8))
            finally:
                client.unregister_system_shared_memory("tiny")
        # the server keeps serving
        i0 = httpclient.InferInput("INPUT0", [1, 16], "INT32")
        i0.set_data_from_numpy(a)
        i1 = httpclient.InferInput("INPUT1", [1, 16], "INT32")
        i1.set_data_from_numpy(b)
        np.testing.assert_array_equal(client.infer("add", [i0, i1]).as_numpy("OUTPUT0"), a + b)
    finally:
        client.unregister_system_shared_memory()
        client.close()
        gclient.close()


def test_unlinked_region_stays_mapped_until_unregister(server: BerthServer) -> None:
    k = f"/berth-unlinked-{os.getpid()}"
    h = shm.create_shared_memory_region("u", k, NBYTES)
    a, b = data()
    shm.set_shared_memory_region(h, [a])
    client = httpclient.InferenceServerClient(server.triton_url)
    try:
        client.register_system_shared_memory("u", k, NBYTES)
    finally:
        shm.destroy_shared_memory_region(h)  # unlinks the name
    try:
        i0 = httpclient.InferInput("INPUT0", [1, 16], "INT32")
        i0.set_shared_memory("u", NBYTES)
        i1 = httpclient.InferInput("INPUT1", [1, 16], "INT32")
        i1.set_data_from_numpy(b)
        np.testing.assert_array_equal(client.infer("add", [i0, i1]).as_numpy("OUTPUT0"), a + b)
    finally:
        client.unregister_system_shared_memory("u")
        client.close()


def test_cuda_shared_memory_says_no_gpu(server: BerthServer) -> None:
    """As Triton built without GPUs: no CUDA region exists, unregistering
    succeeds, registering is refused saying why."""
    assert get(server, "/v2/cudasharedmemory/status") == (200, [])
    assert post(server, "/v2/cudasharedmemory/unregister", {})[0] == 200
    status, doc = post(server, "/v2/cudasharedmemory/region/c/register",
                       {"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 8})
    assert status == 400 and "GPUs not supported" in doc["error"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert len(client.get_cuda_shared_memory_status().regions) == 0
        client.unregister_cuda_shared_memory()
        with pytest.raises(InferenceServerException) as info:
            client.register_cuda_shared_memory("c", b"\0" * 64, 0, 8)
        assert "INVALID_ARGUMENT" in str(info.value.status())
        assert "GPUs not supported" in str(info.value)
    finally:
        client.close()


def test_foreign_origin_and_host_are_refused(server: BerthServer, regions: dict[str, Any]) -> None:
    body = {"key": key(regions, "in"), "byte_size": 8}
    status, _ = register(server, "o", body, headers={"origin": "http://evil.example"})
    assert status == 403
    status, _ = register(server, "o", body, headers={"host": "evil.example"})
    assert status == 403
    assert get(server, "/v2/systemsharedmemory/status") == (200, [])


def test_registering_needs_an_admin_token(berth_server: Any, tmp_path: Path,
                                          regions: dict[str, Any]) -> None:
    add_python_model(tmp_path / "m", "add", ADD_SOURCE, "Add")
    env = {"SHM_USERS": USER, "SHM_ADMINS": ADMIN}
    server = berth_server(str(tmp_path / "m"), "--auth-tokens-env", "SHM_USERS",
                          "--admin-tokens-env", "SHM_ADMINS", env=env)
    body = {"key": key(regions, "in"), "byte_size": 8}
    assert register(server, "t", body)[0] == 401
    assert register(server, "t", body, headers={"authorization": f"Bearer {USER}"})[0] == 403
    assert register(server, "t", body, headers={"authorization": f"Bearer {ADMIN}"}) == (200, {})
    c = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as info:
            c.unregister_system_shared_memory("t", headers={"authorization": f"Bearer {USER}"})
        assert "PERMISSION_DENIED" in str(info.value.status())
        st = c.get_system_shared_memory_status(headers={"authorization": f"Bearer {USER}"})
        assert set(st.regions.keys()) == {"t"}
        c.unregister_system_shared_memory("t", headers={"authorization": f"Bearer {ADMIN}"})
    finally:
        c.close()
