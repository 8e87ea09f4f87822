"""GGUF files on the ``llm`` runtime's ``llama_cpp`` backend
(docs/generative.md), for real: the tiny random-weight Llama of
tests/e2e/llm_models.py, converted here to a GGUF file by our own converter
(never a download), is served by ``berth serve tiny.gguf`` through
llama-cpp-python.

In process, llama.cpp reads the file as transformers reads the folder: the
same token ids for the same text, and the same greedy tokens. On the
server: generate and generate_stream give that greedy text; chat messages go
through the chat template stored in the file; stop strings, seeded sampling
and the token counts hold; the OpenAI routes (the official ``openai``
client, chat and completions, streamed and not) give the same text; bad
inputs (``n`` > 1, a prompt beyond the context, ...) are input errors; a
client that leaves frees the worker; a worker crash fails only its request.
In process: a file without a chat template refuses messages, and
``parameters.context`` is checked and bounds a request.

Skipped when ``llama_cpp`` cannot be imported: ``pip install 'berth[gguf]'``
compiles llama.cpp for many minutes, so CI does not build it."""

from __future__ import annotations

import http.client
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf", reason="the GGUF converter needs the gguf package")
llama_cpp = pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed (pip install 'berth[gguf]' compiles llama.cpp "
    "for many minutes; CI does not build it)",
)
openai = pytest.importorskip("openai")

import llm_models  # noqa: E402
from berth_e2e import BerthServer, wait_until  # noqa: E402

TIMEOUT = 120.0
PROMPTS = [
    "the quick brown fox",
    "berth serves models to many clients",
    "every sequence keeps its own cache 42.",
    "  two  spaces, punctuation!? and digits 1234 ",
    "<|user|>hello fox<|end|><|assistant|>",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return llm_models.build_llama(tmp_path_factory.mktemp("gguf-llama") / "model")


@pytest.fixture(scope="module")
def gguf_file(folder: Path) -> Path:
    return llm_models.build_gguf(folder, folder.parent / "tiny.gguf")


@pytest.fixture(scope="module")
def long_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that never ends a generation by itself, with a 2048-token
    context: a 2000-token generation is still streaming when the test acts
    on it (at 1 ms a token it streams for seconds)."""
    root = tmp_path_factory.mktemp("gguf-long")
    folder = llm_models.build_llama(root / "model", context=2048, endless=True)
    return llm_models.build_gguf(folder, root / "long.gguf")


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def llama(gguf_file: Path) -> Any:
    return llama_cpp.Llama(model_path=str(gguf_file), n_ctx=256, n_threads=1, verbose=False)


@pytest.fixture(scope="module")
def end_ids(llama: Any) -> set[int]:
    """The tokens that end a generation for llama.cpp: the file's EOS and
    the tokens llama.cpp recognises by their text (here ``<|end|>``)."""
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    return {t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}


@pytest.fixture(scope="module")
def server(module_server: Any, gguf_file: Path) -> BerthServer:
    srv = module_server(str(gguf_file), wait_for="listening")
    wait_until(lambda: srv.get("/v2/models/tiny/ready").status == 200, 300.0, "tiny ready",
               interval=0.5, on_timeout=srv.log_tail)
    return srv


@pytest.fixture(scope="module")
def client(server: BerthServer) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="none",
                       max_retries=0, timeout=TIMEOUT) as oai:
        yield oai


# ------------------------------------------------------------------ helpers


def stream(server: BerthServer, body: Any, model: str = "tiny") -> tuple[int, list[dict[str, Any]]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request("POST", f"/v2/models/{model}/generate_stream",
                     body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, [json.loads(resp.read())]
        with resp:
            events = [json.loads(line[6:]) for line in resp if line.startswith(b"data: ")]
        return resp.status, events
    finally:
        conn.close()


def text(events: list[dict[str, Any]]) -> str:
    assert all("error" not in e for e in events), events
    return "".join(e["text_output"] for e in events)


def greedy_ids(folder: Path, prompt_ids: list[int], k: int, ends: set[int]) -> list[int]:
    """transformers' greedy tokens, cut before the first token that ends a
    generation for llama.cpp (transformers itself stops only at EOS)."""
    out = llm_models.reference(folder, prompt_ids, k)
    cut = next((i for i, t in enumerate(out) if t in ends), len(out))
    return out[:cut]


def greedy_text(folder: Path, tokenizer: Any, prompt: str, k: int, ends: set[int]) -> str:
    ids = greedy_ids(folder, tokenizer(prompt)["input_ids"], k, ends)
    return str(tokenizer.decode(ids, skip_special_tokens=True))


# ------------------------------------------------- in process: the converter


def test_llama_cpp_tokenizes_like_the_hf_tokenizer(llama: Any, tokenizer: Any) -> None:
    for prompt in PROMPTS:
        hf = tokenizer(prompt)["input_ids"]
        assert llama.tokenize(prompt.encode(), add_bos=True, special=True) == hf, prompt
        assert llama.detokenize(hf).decode() == tokenizer.decode(hf, skip_special_tokens=True)


def test_llama_cpp_greedy_tokens_equal_transformers(llama: Any, folder: Path, tokenizer: Any,
                                                    end_ids: set[int]) -> None:
    assert tokenizer.eos_token_id in end_ids
    for prompt in PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        want = greedy_ids(folder, ids, 24, end_ids)
        got: list[int] = []
        for token in llama.generate(ids, temp=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0):
            if token in end_ids or len(got) == 24:
                break
            got.append(token)
        assert got == want, prompt


def _runtime(path: Path, **params: Any) -> Any:
    from berth.runtimes import get_runtime

    rt = get_runtime("llm")
    rt.load({"path": str(path), "parameters": {"threads": 1, **params}})
    return rt


def _bytes(value: str) -> Any:
    import numpy as np

    out = np.empty(1, dtype=object)
    out[0] = value.encode()
    return out


def test_a_file_without_a_chat_template_refuses_messages(folder: Path, tmp_path: Path) -> None:
    from berth.errors import InvalidInput

    rt = _runtime(llm_models.build_gguf(folder, tmp_path / "plain.gguf", chat_template=False))
    assert rt.platform == "llm_llama_cpp"
    msgs = _bytes(json.dumps([{"role": "user", "content": "hi"}]))
    with pytest.raises(InvalidInput, match="no chat template"):
        list(rt.predict_stream({"messages": msgs}))
    outs = list(rt.predict_stream({"text_input": _bytes("the fox")}))  # text still works
    assert outs[-1]["finish_reason"][0] in (b"stop", b"length")


def test_a_template_that_raises_is_an_input_error(folder: Path, tmp_path: Path) -> None:
    """Hugging Face templates call raise_exception (and strftime_now): the
    template's own message comes back as the input error."""
    from berth.errors import InvalidInput

    template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('users speak "
                "first') }}{% endif %}{{ strftime_now('%Y') }}{% for m in messages %}"
                "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>")
    rt = _runtime(llm_models.build_gguf(folder, tmp_path / "strict.gguf", chat_template=template))
    bad = _bytes(json.dumps([{"role": "assistant", "content": "hi"}]))
    with pytest.raises(InvalidInput, match="users speak first"):
        list(rt.predict_stream({"messages": bad}))
    good = _bytes(json.dumps([{"role": "user", "content": "hi"}]))
    outs = list(rt.predict_stream({"messages": good}))
    assert outs[-1]["finish_reason"][0] in (b"stop", b"length")


@pytest.mark.parametrize("context", [8, -1, "big", True])
def test_a_bad_context_parameter_is_a_config_error(gguf_file: Path, context: Any) -> None:
    from berth.errors import ConfigError

    with pytest.raises(ConfigError, match="parameters.context"):
        _runtime(gguf_file, context=context)


def test_the_context_parameter_bounds_a_request(long_gguf: Path) -> None:
    """parameters.context sizes llama.cpp's context (which rounds it up to
    a multiple of 256): a request beyond it is an input error, one that the
    default context (2048) holds is served."""
    import numpy as np
    from berth.errors import InvalidInput

    body = {"text_input": _bytes("the quick brown fox"), "max_tokens": np.array([600], np.int32),
            "temperature": np.array([0.0], np.float32)}
    small = _runtime(long_gguf, context=300)
    with pytest.raises(InvalidInput, match="context of 512"):
        list(small.predict_stream(body))
    outs = list(_runtime(long_gguf).predict_stream(body))
    assert outs[-1]["finish_reason"][0] == b"length"  # the endless model: max_tokens ends it
    assert int(outs[-1]["completion_tokens"][0]) == 600


# ------------------------------------------------------- the server, OIP


def test_stream_equals_transformers_greedy(server: BerthServer, folder: Path, tokenizer: Any,
                                           end_ids: set[int]) -> None:
    for prompt in PROMPTS[:3]:
        status, events = stream(server, {"text_input": prompt, "max_tokens": 12,
                                         "temperature": 0})
        assert status == 200, events
        assert text(events) == greedy_text(folder, tokenizer, prompt, 12, end_ids)
        last = events[-1]
        assert last["finish_reason"] in ("length", "stop")
        assert all(e["finish_reason"] == "" for e in events[:-1])
        assert all(e["index"] == 0 and e["model_name"] == "tiny" for e in events)
        assert last["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
        counts = [e["completion_tokens"] for e in events]
        assert counts == sorted(counts) and 1 <= counts[-1] <= 12
        if last["finish_reason"] == "length":
            assert counts[-1] == 12


def test_generate_with_one_token(server: BerthServer) -> None:
    resp = server.post("/v2/models/tiny/generate", {"text_input": "berth", "max_tokens": 1,
                                                    "temperature": 0})
    assert resp.status == 200, resp.body
    doc = resp.json()
    assert doc["completion_tokens"] <= 1 and doc["index"] == 0
    assert doc["finish_reason"] in ("length", "stop")


def test_chat_messages_use_the_files_template(server: BerthServer, folder: Path, tokenizer: Any,
                                              end_ids: set[int]) -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello fox"}]
    status, events = stream(server, {"messages": json.dumps(messages), "max_tokens": 6,
                                     "temperature": 0})
    assert status == 200, events
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert events[-1]["prompt_tokens"] == len(ids)
    want = tokenizer.decode(greedy_ids(folder, ids, 6, end_ids), skip_special_tokens=True)
    assert text(events) == want


def test_stop_strings_end_the_text_before_them(server: BerthServer, folder: Path,
                                               tokenizer: Any, end_ids: set[int]) -> None:
    prompt = "every sequence keeps"
    full = greedy_text(folder, tokenizer, prompt, 16, end_ids)
    stop = next((full[i:i + 2] for i in range(3, len(full) - 2)
                 if "\ufffd" not in full[i:i + 2] and full[i:i + 2] not in full[:i]), None)
    if stop is None:
        pytest.skip(f"no usable stop string in {full!r}")
    status, events = stream(server, {"text_input": prompt, "max_tokens": 16, "temperature": 0,
                                     "stop": [stop, "never-seen"]})
    assert status == 200
    assert text(events) == full[: full.index(stop)]
    assert events[-1]["finish_reason"] == "stop"


def test_a_seed_repeats_a_sampled_text(server: BerthServer) -> None:
    body = {"text_input": "a lazy dog", "max_tokens": 10, "temperature": 1.0, "top_p": 0.9,
            "seed": 7}
    first, again = stream(server, body), stream(server, body)
    assert first[0] == again[0] == 200
    assert text(first[1]) == text(again[1])
    assert first[1][-1]["completion_tokens"] == again[1][-1]["completion_tokens"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"text_input": "x", "n": 2}, "n=1"),
        ({"text_input": "x", "max_tokens": 0}, "max_tokens"),
        ({"text_input": "x", "max_tokens": 100000}, "context"),
        ({"messages": "[{\"role\": \"user\"", "max_tokens": 2}, "not JSON"),
        ({"max_tokens": 2}, "exactly one"),
        ({"text_input": "x", "temperature": 5}, "temperature"),
        ({"text_input": "x", "stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"text_input": "x", "bogus": 1}, "bogus"),
    ],
)
def test_bad_inputs_are_input_errors(server: BerthServer, body: dict[str, Any], words: str) -> None:
    status, events = stream(server, body)
    assert status == 400, events
    assert words in events[0]["error"], events
    assert stream(server, {"text_input": "ok", "max_tokens": 1})[0] == 200


# ---------------------------------------------------- the server, OpenAI


def test_openai_completion_streamed_and_not(client: Any, folder: Path, tokenizer: Any,
                                            end_ids: set[int]) -> None:
    prompt = "the quick brown fox"
    whole = client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0)
    assert whole.choices[0].text == greedy_text(folder, tokenizer, prompt, 10, end_ids)
    assert whole.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=10,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason


def test_openai_chat_streamed_and_not(client: Any) -> None:
    msgs = [{"role": "user", "content": "the quick brown fox"}]
    whole = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8,
                                           temperature=0)
    chunks = list(client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 0
    if whole.choices[0].finish_reason == "length":
        assert whole.usage.completion_tokens == 8


def test_openai_n_above_one_is_refused(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny", prompt="x", max_tokens=2, n=2)
    assert "n=1" in str(info.value)
    out = client.completions.create(model="tiny", prompt="x", max_tokens=2)
    assert out.choices[0].finish_reason in ("stop", "length")


# ------------------------------------------------- a client leaves, a crash


def test_a_client_that_leaves_frees_the_worker(berth_server: Any, tmp_path: Path,
                                               long_gguf: Path) -> None:
    import socket

    srv = berth_server(str(long_gguf), wait_for="listening")
    wait_until(lambda: srv.get("/v2/models/long/ready").status == 200, 300.0, "long ready",
               interval=0.5, on_timeout=srv.log_tail)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    conn.request("POST", "/v2/models/long/generate_stream",
                 body=json.dumps({"text_input": "leaving", "max_tokens": 2000,
                                  "temperature": 1.0, "seed": 2}).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    conn.sock.shutdown(socket.SHUT_RDWR)
    resp.close()
    conn.close()
    # the worker runs one request at a time: this one runs once the other ended
    status, events = stream(srv, {"text_input": "next", "max_tokens": 2}, model="long")
    assert status == 200 and events[-1]["finish_reason"] in ("length", "stop")
    wait_until(lambda: "cancelled after" in srv.log_text(), 30.0, "the worker's cancel log line",
               on_timeout=srv.log_tail)


# -------------------------------------------------------------- a crash


def test_a_worker_crash_fails_only_its_request(berth_server: Any, tmp_path: Path,
                                               long_gguf: Path) -> None:
    root = tmp_path / "repo"
    for name in ("doomed", "spare"):
        (root / name / "1").mkdir(parents=True)
        os.link(long_gguf, root / name / "1" / "model.gguf")
    srv = berth_server(str(root), wait_for="listening")
    for name in ("doomed", "spare"):
        wait_until(lambda n=name: srv.get(f"/v2/models/{n}/ready").status == 200, 300.0,
                   f"{name} ready", interval=0.5, on_timeout=srv.log_tail)
    pid = srv.worker_pids()["doomed/1/0"]
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/v2/models/doomed/generate_stream",
                     body=json.dumps({"text_input": "doomed", "max_tokens": 2000,
                                      "temperature": 1.0, "seed": 3}).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        first = resp.readline()
        assert first.startswith(b"data: ")
        os.kill(pid, signal.SIGKILL)
        events = [json.loads(first[6:])]
        events += [json.loads(line[6:]) for line in resp if line.startswith(b"data: ")]
        resp.close()
    finally:
        conn.close()
    assert "error" in events[-1] and "worker exited" in events[-1]["error"], events[-3:]
    assert all(e.get("finish_reason") == "" for e in events[:-1])
    status, got = stream(srv, {"text_input": "still here", "max_tokens": 2}, model="spare")
    assert status == 200 and got[-1]["finish_reason"]
    srv.wait_worker("doomed/1/0", timeout=TIMEOUT, not_pid=pid)
    wait_until(lambda: srv.get("/v2/models/doomed/ready").status == 200, TIMEOUT, "doomed ready")
    status, got = stream(srv, {"text_input": "back", "max_tokens": 2}, model="doomed")
    assert status == 200 and got[-1]["finish_reason"]
