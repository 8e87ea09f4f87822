"""gRPC health checking (grpc.health.v1.Health) and server reflection
(grpc.reflection.v1 and v1alpha) on Berth's gRPC port, with the official
clients: grpcio-health-checking's HealthStub and grpcio-reflection's
ProtoReflectionDescriptorDatabase; an inference request built only from the
reflected descriptors; ServerMetadata's extensions over REST and gRPC;
tokens; malformed messages through raw grpcio calls."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is in the test extra (tritonclient[grpc])")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2",
                                 reason="grpcio-health-checking is in the test extra")
from grpc_health.v1 import health_pb2_grpc  # noqa: E402

reflection_db = pytest.importorskip(
    "grpc_reflection.v1alpha.proto_reflection_descriptor_database",
    reason="grpcio-reflection is in the test extra")
from google.protobuf import descriptor_pool, message_factory  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2  # noqa: E402

grpcclient = pytest.importorskip("tritonclient.grpc")

from berth_e2e import (  # noqa: E402
    BROKEN_LOAD_SOURCE,
    BerthServer,
    ModelZoo,
    add_python_model,
    copy_into,
    fill,
    http_call,
)

TIMEOUT = 60.0
TOKEN = "health-user-token"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
REFLECTION_V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVICES = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection", "inference.GRPCInferenceService"]
EXTENSIONS = {"binary_tensor_data", "model_configuration", "statistics", "model_repository",
              "parameters", "schedule_policy", "system_shared_memory"}
AUTH = (("authorization", f"Bearer {TOKEN}"),)

# load() waits until the file named GATE exists: the model is loading (not
# ready) for exactly as long as the test wants.
GATED_SOURCE = '''
import os
import time

import berth


class Gated(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def load(self):
        for _ in range(6000):
            if os.path.exists(@GATE@):
                return
            time.sleep(0.02)
        raise RuntimeError("the test never opened the gate")

    def predict(self, inputs):
        return {"y": inputs["x"]}
'''


class _Auth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
            grpc.StreamStreamClientInterceptor):
    """Adds the bearer token to every call (the reflection client takes no
    metadata of its own)."""

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=list(details.metadata or ()) + list(AUTH))

    def intercept_unary_unary(self, cont: Any, details: Any, request: Any) -> Any:
        return cont(self._with_token(details), request)

    def intercept_unary_stream(self, cont: Any, details: Any, request: Any) -> Any:
        return cont(self._with_token(details), request)

    def intercept_stream_stream(self, cont: Any, details: Any, requests: Any) -> Any:
        return cont(self._with_token(details), requests)


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def server(module_server: Any, zoo: ModelZoo,
           tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    """iris (ready) and broken (its load fails), with an inference token;
    health stays open (server.health_open, the default)."""
    root = tmp_path_factory.mktemp("health-repo")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    add_python_model(root, "broken", BROKEN_LOAD_SOURCE, "Broken")
    # --no-exit-on-error: broken fails to load at start, and the server stays up
    server = module_server(str(root), "--no-exit-on-error", "--auth-tokens-env", "BERTH_TEST_TOKENS",
                           env={"BERTH_TEST_TOKENS": TOKEN}, wait_for=[])
    wait_serving(server, "iris")
    return server


def wait_serving(server: BerthServer, service: str, metadata: Any = ()) -> None:
    """Until the health service says SERVING for service (REST's model
    probes need a token here: the fixture cannot wait with them)."""
    with grpc.insecure_channel(server.grpc_url) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        stub = health_pb2_grpc.HealthStub(ch)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT,
                           metadata=metadata)
        for answer in watch:
            if answer.status == SERVING:
                break
        watch.cancel()


@pytest.fixture
def channel(server: BerthServer) -> Iterator[Any]:
    ch = grpc.insecure_channel(server.grpc_url)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture
def authed(channel: Any) -> Any:
    return grpc.intercept_channel(channel, _Auth())


def check(stub: Any, service: str, **kw: Any) -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT,
                      **kw).status


def check_error(stub: Any, service: str, **kw: Any) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        check(stub, service, **kw)
    return info.value


def reflect(channel: Any, path: str, *requests: Any, **kw: Any) -> list[Any]:
    call = channel.stream_stream(
        path, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return list(call(iter(requests), timeout=TIMEOUT, **kw))


# ------------------------------------------------------------------- Check


def test_check_server_and_models(channel: Any) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    assert check(stub, "iris") == SERVING
    assert check(stub, "iris/1") == SERVING
    # broken's load fails: it is not serving, and so the server is not ready
    assert check(stub, "broken") == NOT_SERVING
    assert check(stub, "broken/1") == NOT_SERVING
    assert check(stub, "") == NOT_SERVING
    assert check(stub, "inference.GRPCInferenceService") == NOT_SERVING
    for unknown in ("nope", "iris/7", "iris/", "iris/1/x", "/iris", "grpc.health.v1.Health"):
        err = check_error(stub, unknown)
        assert err.code() == grpc.StatusCode.NOT_FOUND, unknown
        assert "unknown service" in err.details()
    err = check_error(stub, "m" * 700)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "longer than" in err.details()


def test_check_agrees_with_ready_endpoints(server: BerthServer, channel: Any) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    assert server.get("/v2/health/ready").status == 503
    assert http_call(server.port, "GET", "/v2/models/iris/ready",
                     headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        assert not client.is_server_ready()
        assert client.is_model_ready("iris")
    finally:
        client.close()
    assert check(stub, "") == NOT_SERVING
    assert check(stub, "iris") == SERVING


def test_watch_unknown_service_stays_open(channel: Any) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="not-yet"), timeout=TIMEOUT)
    assert next(watch).status == SERVICE_UNKNOWN
    watch.cancel()  # the call was still open: the client ends it
    with pytest.raises(grpc.RpcError) as info:
        next(watch)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    # the server goes on
    assert check(stub, "iris") == SERVING


def test_watch_sends_the_current_status(channel: Any) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    iris = stub.Watch(health_pb2.HealthCheckRequest(service="iris"), timeout=TIMEOUT)
    broken = stub.Watch(health_pb2.HealthCheckRequest(service="broken"), timeout=TIMEOUT)
    assert next(iris).status == SERVING
    assert next(broken).status == NOT_SERVING
    iris.cancel()
    broken.cancel()


def test_watch_follows_a_load_and_a_drain(berth_server: Any, tmp_path: Path) -> None:
    """NOT_SERVING while the model loads, SERVING once it is ready,
    NOT_SERVING again on SIGTERM, then the call ends UNAVAILABLE; open
    Watch calls do not hold the drain."""
    repo = tmp_path / "gated-repo"
    gate = tmp_path / "gate"
    add_python_model(repo, "gated", fill(GATED_SOURCE, GATE=str(gate)), "Gated")
    server = berth_server(str(repo), wait_for="listening")
    ch = grpc.insecure_channel(server.grpc_url)
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        model = stub.Watch(health_pb2.HealthCheckRequest(service="gated"), timeout=TIMEOUT)
        whole = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        version = stub.Watch(health_pb2.HealthCheckRequest(service="gated/1"),
                             timeout=TIMEOUT)
        for w in (model, whole, version):
            assert next(w).status == NOT_SERVING
        assert check(stub, "gated") == NOT_SERVING
        gate.write_text("open")
        for w in (model, whole, version):
            assert next(w).status == SERVING
        assert check(stub, "") == SERVING
        assert server.get("/v2/health/ready").status == 200
        server.signal(signal.SIGTERM)
        for w in (model, whole, version):
            assert next(w).status == NOT_SERVING
            with pytest.raises(grpc.RpcError) as info:
                next(w)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in info.value.details()
        assert server.wait(timeout=TIMEOUT) == 0
    finally:
        ch.close()


# ------------------------------------------------------------------- tokens


def test_health_is_open_and_reflection_needs_a_token(channel: Any) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    # no token, or a wrong one: health still answers (server.health_open)
    assert check(stub, "iris") == SERVING
    assert check(stub, "iris", metadata=(("authorization", "Bearer wrong"),)) == SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="iris"), timeout=TIMEOUT)
    assert next(watch).status == SERVING
    watch.cancel()
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    for path in (REFLECTION_V1, REFLECTION_V1ALPHA):
        for metadata in ((), (("authorization", "Bearer wrong"),),
                         (("authorization", TOKEN),)):
            with pytest.raises(grpc.RpcError) as info:
                reflect(channel, path, ask, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (path, metadata)
            assert "token" in info.value.details()
        [answer] = reflect(channel, path, ask, metadata=AUTH)
        assert [s.name for s in answer.list_services_response.service] == SERVICES


def test_protect_health_needs_a_token(berth_server: Any, zoo: ModelZoo) -> None:
    server = berth_server(str(zoo.sklearn_classifier()), "--name", "iris",
                          "--auth-tokens-env", "BERTH_TEST_TOKENS", "--protect-health",
                          env={"BERTH_TEST_TOKENS": TOKEN}, wait_for=[])
    # wait_for=[]: the REST probes the fixture waits with need a token now
    with grpc.insecure_channel(server.grpc_url) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        stub = health_pb2_grpc.HealthStub(ch)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            err = check_error(stub, "", metadata=metadata)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT,
                               metadata=metadata)
            with pytest.raises(grpc.RpcError) as info:
                next(watch)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # the same rule as REST's health endpoints
        assert http_call(server.port, "GET", "/v2/health/ready").status == 401
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="iris"), timeout=TIMEOUT,
                           metadata=AUTH)
        statuses = [next(watch).status]
        if statuses[0] == NOT_SERVING:  # still loading: the change follows
            statuses.append(next(watch).status)
        assert statuses[-1] == SERVING
        watch.cancel()
        assert check(stub, "", metadata=AUTH) == SERVING


# --------------------------------------------------------------- reflection


def test_reflection_lists_and_resolves(authed: Any) -> None:
    db = reflection_db.ProtoReflectionDescriptorDatabase(authed)
    assert sorted(db.get_services()) == SERVICES
    pool = descriptor_pool.DescriptorPool(db)
    svc = pool.FindServiceByName("inference.GRPCInferenceService")
    methods = {m.name: m for m in svc.methods}
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
            "ModelInfer", "ModelStreamInfer", "ModelConfig", "ModelStatistics",
            "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"} <= set(methods)
    infer = methods["ModelInfer"]
    assert infer.input_type.full_name == "inference.ModelInferRequest"
    assert infer.output_type.full_name == "inference.ModelInferResponse"
    stream = methods["ModelStreamInfer"]
    assert stream.output_type.full_name == "inference.ModelStreamInferResponse"
    fields = infer.input_type.fields_by_name
    assert fields["raw_input_contents"].number == 7
    assert fields["inputs"].message_type.full_name == "inference.ModelInferRequest.InferInputTensor"
    # the import of grpc_service.proto resolves too
    config = pool.FindMessageTypeByName("inference.ModelConfig")
    assert "max_batch_size" in config.fields_by_name
    health = pool.FindServiceByName("grpc.health.v1.Health")
    assert [m.name for m in health.methods] == ["Check", "Watch"]
    assert health.methods_by_name["Watch"].server_streaming
    status = pool.FindEnumTypeByName("grpc.health.v1.HealthCheckResponse.ServingStatus")
    assert status.values_by_name["SERVICE_UNKNOWN"].number == 3
    for name in ("grpc.reflection.v1.ServerReflection",
                 "grpc.reflection.v1alpha.ServerReflection"):
        info = pool.FindServiceByName(name).methods_by_name["ServerReflectionInfo"]
        assert info.client_streaming and info.server_streaming
    with pytest.raises(KeyError):
        pool.FindMessageTypeByName("inference.NoSuchMessage")


def test_infer_with_reflected_descriptors(authed: Any) -> None:
    """A client that knows nothing but the server's reflection builds
    ModelMetadata and ModelInfer calls and reads the answers."""
    pool = descriptor_pool.DescriptorPool(
        reflection_db.ProtoReflectionDescriptorDatabase(authed))
    svc = pool.FindServiceByName("inference.GRPCInferenceService")

    def method(name: str) -> Any:
        m = svc.methods_by_name[name]
        req = message_factory.GetMessageClass(m.input_type)
        resp = message_factory.GetMessageClass(m.output_type)
        call = authed.unary_unary(f"/{svc.full_name}/{name}",
                                  request_serializer=req.SerializeToString,
                                  response_deserializer=resp.FromString)
        return req, call

    req, call = method("ModelMetadata")
    meta = call(req(name="iris"), timeout=TIMEOUT)
    assert meta.name == "iris"
    inp = meta.inputs[0]
    assert inp.datatype == "FP64" and list(inp.shape)[-1] == 4
    req, call = method("ModelInfer")
    r = req(model_name="iris", id="reflected-1")
    t = r.inputs.add()
    t.name, t.datatype = inp.name, "FP64"
    t.shape.extend([2, 4])
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype="<f8")
    r.raw_input_contents.append(x.tobytes())
    out = call(r, timeout=TIMEOUT)
    assert out.model_name == "iris" and out.id == "reflected-1"
    names = [o.name for o in out.outputs]
    assert "predict_proba" in names
    k = names.index("predict_proba")
    assert list(out.outputs[k].shape) == [2, 3]
    proba = np.frombuffer(out.raw_output_contents[k], dtype="<f8").reshape(2, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert proba[0].argmax() == 0 and proba[1].argmax() == 2


def test_reflection_answers_in_order_on_one_stream(authed: Any) -> None:
    R = reflection_pb2.ServerReflectionRequest
    asks = [
        R(host="h1", list_services="*"),
        R(file_by_filename="grpc_service.proto"),
        R(file_containing_symbol="inference.GRPCInferenceService.ModelInfer"),
        R(file_by_filename="../../etc/passwd"),
        R(file_containing_symbol="inference.Nope"),
        R(file_containing_extension=reflection_pb2.ExtensionRequest(
            containing_type="inference.ModelInferRequest", extension_number=100)),
        R(all_extension_numbers_of_type="inference.ModelInferRequest"),
        R(all_extension_numbers_of_type="inference.Nope"),
    ]
    for path in (REFLECTION_V1, REFLECTION_V1ALPHA):
        answers = reflect(authed, path, *asks)
        assert len(answers) == len(asks)
        for ask, answer in zip(asks, answers):
            assert answer.original_request == ask
        assert answers[0].valid_host == "h1"
        kinds = [a.WhichOneof("message_response") for a in answers]
        assert kinds == ["list_services_response", "file_descriptor_response",
                         "file_descriptor_response", "error_response", "error_response",
                         "error_response", "all_extension_numbers_response",
                         "error_response"]
        from google.protobuf import descriptor_pb2
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in answers[1].file_descriptor_response.file_descriptor_proto]
        assert [f.name for f in files] == ["grpc_service.proto", "model_config.proto"]
        assert files[0].package == "inference"
        assert answers[2].file_descriptor_response.file_descriptor_proto[0] == \
            answers[1].file_descriptor_response.file_descriptor_proto[0]
        for a in (answers[3], answers[4], answers[5], answers[7]):
            assert a.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert "passwd" in answers[3].error_response.error_message
        ext = answers[6].all_extension_numbers_response
        assert ext.base_type_name == "inference.ModelInferRequest"
        assert list(ext.extension_number) == []


# ----------------------------------------------------------- bad messages


def test_malformed_messages_are_invalid_argument(authed: Any) -> None:
    junk = b"\xff\xff\xff\xff\x0f\x01"
    raw = dict(request_serializer=None, response_deserializer=None)
    calls = [
        lambda: authed.unary_unary("/grpc.health.v1.Health/Check", **raw)(
            junk, timeout=TIMEOUT),
        lambda: list(authed.unary_stream("/grpc.health.v1.Health/Watch", **raw)(
            junk, timeout=TIMEOUT)),
        lambda: list(authed.stream_stream(REFLECTION_V1, **raw)(iter([junk]),
                                                                 timeout=TIMEOUT)),
        lambda: list(authed.stream_stream(REFLECTION_V1ALPHA, **raw)(iter([junk]),
                                                                      timeout=TIMEOUT)),
        # a valid message that asks nothing
        lambda: list(authed.stream_stream(REFLECTION_V1, **raw)(iter([b""]),
                                                                 timeout=TIMEOUT)),
        # a symbol that is not UTF-8 (field 4, 2 bytes)
        lambda: list(authed.stream_stream(REFLECTION_V1, **raw)(iter([b"\x22\x02\xc3\x28"]),
                                                                 timeout=TIMEOUT)),
    ]
    for k, call in enumerate(calls):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (k, info.value)
    # the bad message ends only its own stream: answers before it stand
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    got = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in authed.stream_stream(REFLECTION_V1, **raw)(iter([good, junk, good]),
                                                                  timeout=TIMEOUT):
            got.append(answer)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(got) == 1
    # and the server keeps serving
    stub = health_pb2_grpc.HealthStub(authed)
    assert check(stub, "iris") == SERVING
    db = reflection_db.ProtoReflectionDescriptorDatabase(authed)
    assert sorted(db.get_services()) == SERVICES


def test_watch_takes_one_request(authed: Any) -> None:
    req = health_pb2.HealthCheckRequest(service="iris").SerializeToString()
    call = authed.stream_stream("/grpc.health.v1.Health/Watch", request_serializer=None,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([]), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "without a request message" in info.value.details()
    got = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in call(iter([req, req]), timeout=TIMEOUT):
            got.append(answer.status)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "second request message" in info.value.details()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_browsers_cannot_call_health_or_reflection(server: BerthServer) -> None:
    """A cross-origin browser call needs a CORS preflight (OPTIONS): the gRPC
    port refuses it without any CORS header, and browsers speak no
    cleartext HTTP/2 (HTTP/1.1 is refused too)."""
    for path in ("/grpc.health.v1.Health/Check", REFLECTION_V1):
        for proto in ("--http2-prior-knowledge", "--http1.1"):
            out = subprocess.run(
                ["curl", "-s", "-i", proto, "-X", "OPTIONS",
                 "-H", "Origin: http://evil.example", "-H", "Host: evil.example",
                 "-H", "Access-Control-Request-Method: POST",
                 f"http://127.0.0.1:{server.grpc_port}{path}"],
                capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
            status = int(out.split()[1])
            assert status in (405, 505), out
            assert "access-control-allow-origin" not in out.lower()


# ------------------------------------------------------------ server metadata


def test_server_metadata_lists_what_is_served(server: BerthServer, authed: Any) -> None:
    rest = http_call(server.port, "GET", "/v2",
                     headers={"Authorization": f"Bearer {TOKEN}"}).json()
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        meta = client.get_server_metadata(headers=dict(AUTH), as_json=True)
        assert set(meta["extensions"]) == set(rest["extensions"]) == EXTENSIONS
        assert len(meta["extensions"]) == len(EXTENSIONS)
        # each one answers: model_repository, statistics, model_configuration
        index = client.get_model_repository_index(headers=dict(AUTH), as_json=True)
        assert {m["name"] for m in index["models"]} == {"iris", "broken"}
        rest_index = http_call(server.port, "POST", "/v2/repository/index", body=b"{}",
                               headers={"Authorization": f"Bearer {TOKEN}",
                                        "Content-Type": "application/json"})
        assert rest_index.status == 200
        assert {m["name"] for m in rest_index.json()} == {"iris", "broken"}
        stats = client.get_inference_statistics("iris", headers=dict(AUTH), as_json=True)
        assert stats["model_stats"][0]["name"] == "iris"
        config = client.get_model_config("iris", headers=dict(AUTH), as_json=True)
        assert config["config"]["name"] == "iris"
    finally:
        client.close()
    doc = json.dumps(rest)
    assert "classification" not in doc and "cuda_shared_memory" not in doc
