"""The OpenAI routes on the ``llm`` runtime (docs/generative.md) with a tiny
random-weight Llama built here (tests/e2e/llm_models.py, never a hub
download): chat and completions through the official ``openai`` client,
streamed equal to not streamed, seeded choices, and a client that leaves a
stream frees the model's only slot (observed through the engine's in-flight
gauge, never timed).

llm_models.py and the runtime come with the generative-runtime branch: on a
tree without them this module is skipped."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("transformers")
llm_models = pytest.importorskip("llm_models")
from berth_e2e import BerthServer, http_call, wait_until  # noqa: E402

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    import shutil

    folder = llm_models.build_llama(tmp_path_factory.mktemp("oai-llama") / "model")
    root = tmp_path_factory.mktemp("oai-llm-repo")
    for name, slots in (("tiny", 4), ("tiny1", 1)):
        shutil.copytree(folder, root / name / "1")
        (root / name / "berth.yaml").write_text(
            f"runtime: llm\ninstances: 1\nparameters:\n  max_sequences: {slots}\n"
        )
    srv = module_server(str(root), wait_for="listening")
    for name in ("tiny", "tiny1"):  # a torch worker loads slowly on a busy machine
        wait_until(lambda n=name: srv.get(f"/v2/models/{n}/ready").status == 200, 300.0,
                   f"{name} ready", interval=0.5, on_timeout=srv.log_tail)
    return srv


@pytest.fixture(scope="module")
def client(server: BerthServer) -> Any:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="none",
                         max_retries=0, timeout=TIMEOUT)


def test_chat_streamed_equals_not_streamed(client: Any) -> None:
    msgs = [{"role": "user", "content": "the quick brown fox"}]
    whole = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8,
                                           temperature=0)
    chunks = list(client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 0
    if whole.choices[0].finish_reason == "length":
        assert whole.usage.completion_tokens == 8


def test_completion_choices_are_seeded(client: Any) -> None:
    kw = {"model": "tiny", "prompt": "berth serves models", "max_tokens": 6, "n": 2,
          "seed": 11, "temperature": 1.0, "top_p": 0.9}
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    streamed = ["", ""]
    for chunk in client.completions.create(**kw, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert streamed == [c.text for c in a.choices]


def inflight(server: BerthServer, model: str) -> float:
    text = http_call(server.port, "GET", "/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith("berth_inflight_requests{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no berth_inflight_requests for {model}")


def test_disconnect_frees_the_only_slot(server: BerthServer, client: Any) -> None:
    body = json.dumps({"model": "tiny1", "prompt": "the quick brown fox", "max_tokens": 200,
                       "temperature": 0, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 2:
        got += s.recv(4096)
    assert inflight(server, "tiny1") == 1
    s.close()
    wait_until(lambda: inflight(server, "tiny1") == 0, TIMEOUT, "the cancelled stream ends")
    out = client.completions.create(model="tiny1", prompt="a lazy dog", max_tokens=3,
                                    temperature=0)
    assert out.choices[0].finish_reason in ("stop", "length")
