"""Generative models (runtime ``llm``, docs/generative.md) on a real server:
a tiny random-weight Llama built here (tests/e2e/llm_models.py) streams its
completion over the OIP generate extension; the text equals the model's own
``generate`` in this process; 16 concurrent streams each equal the same
request run alone; several requests run at once on one worker (protocol 2's
max_concurrency) and the ones beyond its slots wait in the engine's queue;
a client that leaves frees its slot; a crashed worker fails only its
requests and comes back; bad inputs are input errors. Counted, never timed."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import llm_models  # noqa: E402
from berth_e2e import BerthServer, add_python_model, wait_until  # noqa: E402

TIMEOUT = 120.0

NUL_SOURCE = '''
import numpy as np
import berth


class Nul(berth.Model):
    """Streams texts holding U+0000, as a generative model may produce."""

    inputs = [berth.TensorSpec("text_input", "BYTES", [1])]
    outputs = [berth.TensorSpec("text_output", "BYTES", [1])]
    decoupled = True

    def predict(self, inputs):
        for piece in (b"a\\x00b", b"\\x00", b"c"):
            out = np.empty(1, dtype=object)
            out[0] = piece
            yield {"text_output": out}
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return llm_models.build_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="module")
def endless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of model, that never ends a generation before its
    max_tokens: the tests that hold a stream open rely on that, not on how
    fast they act (a random model may end any stream after a few tokens)."""
    return llm_models.build_llama(tmp_path_factory.mktemp("endless-llama") / "model",
                                  endless=True)


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory, folder: Path,
           endless: Path) -> BerthServer:
    import shutil

    root = tmp_path_factory.mktemp("llm-repo")
    # tiny: the reference model; long and tiny1: endless, 16 and 1 slots
    for name, source, slots in (("tiny", folder, 16), ("long", endless, 16),
                                ("tiny1", endless, 1)):
        shutil.copytree(source, root / name / "1")
        (root / name / "berth.yaml").write_text(
            f"runtime: llm\ninstances: 1\nparameters:\n  max_sequences: {slots}\n  threads: 1\n"
        )
    add_python_model(root, "nul", NUL_SOURCE, "Nul")
    srv = module_server(str(root), wait_for="listening")
    for name in ("tiny", "long", "tiny1"):  # a torch worker loads slowly on a busy machine
        wait_until(lambda n=name: srv.get(f"/v2/models/{n}/ready").status == 200, 300.0,
                   f"{name} ready", interval=0.5, on_timeout=srv.log_tail)
    return srv


# ------------------------------------------------------------------ helpers


def open_stream(server: BerthServer, model: str, body: Any) -> tuple[http.client.HTTPResponse,
                                                                       http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    conn.request("POST", f"/v2/models/{model}/generate_stream", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    return conn.getresponse(), conn


def next_event(resp: http.client.HTTPResponse) -> dict[str, Any] | None:
    while True:
        line = resp.readline()
        if not line:
            return None
        if line.startswith(b"data: "):
            doc = json.loads(line[6:])
            assert isinstance(doc, dict)
            return doc


def stream(server: BerthServer, model: str, body: Any) -> tuple[int, list[dict[str, Any]]]:
    resp, conn = open_stream(server, model, body)
    try:
        if resp.status != 200:
            return resp.status, [json.loads(resp.read())]
        events = []
        while (ev := next_event(resp)) is not None:
            events.append(ev)
        return resp.status, events
    finally:
        conn.close()


def text(events: list[dict[str, Any]], index: int = 0) -> str:
    assert all("error" not in e for e in events), events
    return "".join(e["text_output"] for e in events if e["index"] == index)


def greedy(folder: Path, tokenizer: Any, prompt: str, k: int) -> str:
    ids = tokenizer(prompt)["input_ids"]
    out = llm_models.reference(folder, ids, k)
    eos = tokenizer.eos_token_id
    if eos in out:
        out = out[: out.index(eos)]
    return str(tokenizer.decode(out, skip_special_tokens=True))


# -------------------------------------------------------------------- tests


def test_stream_equals_the_models_own_generate(server: BerthServer, folder: Path,
                                               tokenizer: Any) -> None:
    prompt = "the quick brown fox"
    status, events = stream(server, "tiny", {"text_input": prompt, "max_tokens": 12,
                                             "temperature": 0})
    assert status == 200
    assert text(events) == greedy(folder, tokenizer, prompt, 12)
    last = events[-1]
    assert last["finish_reason"] in ("length", "stop")
    assert all(e["finish_reason"] == "" for e in events[:-1])
    assert last["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
    counts = [e["completion_tokens"] for e in events]
    assert counts == sorted(counts) and counts[-1] <= 12
    assert all(e["model_name"] == "tiny" for e in events)


def test_generate_with_only_text_input_and_max_tokens(server: BerthServer) -> None:
    # the optional inputs are left out: the signature marks them optional
    status, events = stream(server, "tiny", {"text_input": "berth serves", "max_tokens": 8})
    assert status == 200 and events[-1]["finish_reason"] in ("length", "stop")
    assert events[-1]["completion_tokens"] <= 8
    resp = server.post("/v2/models/tiny/generate", {"text_input": "berth", "max_tokens": 1})
    assert resp.status == 200, resp.body
    doc = resp.json()
    assert doc["completion_tokens"] == 1 and doc["index"] == 0
    assert doc["finish_reason"] in ("length", "stop")


def test_chat_messages_use_the_chat_template(server: BerthServer, folder: Path,
                                             tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello fox"}]
    status, events = stream(server, "tiny", {"messages": json.dumps(messages), "max_tokens": 6,
                                             "temperature": 0})
    assert status == 200
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert events[-1]["prompt_tokens"] == len(ids)
    out = llm_models.reference(folder, ids, 6)
    if tokenizer.eos_token_id in out:
        out = out[: out.index(tokenizer.eos_token_id)]
    assert text(events) == tokenizer.decode(out, skip_special_tokens=True)


def test_stop_strings_end_the_text_before_them(server: BerthServer, folder: Path,
                                               tokenizer: Any) -> None:
    prompt = "every sequence keeps"
    full = greedy(folder, tokenizer, prompt, 16)
    stop = next((full[i:i + 2] for i in range(3, len(full) - 2)
                 if "\ufffd" not in full[i:i + 2] and full[i:i + 2] not in full[:i]), None)
    if stop is None:
        pytest.skip(f"no usable stop string in {full!r}")
    status, events = stream(server, "tiny", {"text_input": prompt, "max_tokens": 16,
                                             "temperature": 0, "stop": [stop, "never-seen"]})
    assert status == 200
    assert text(events) == full[: full.index(stop)]
    assert events[-1]["finish_reason"] == "stop"


def test_n_choices_each_finish(server: BerthServer) -> None:
    body = {"text_input": "a lazy dog", "max_tokens": 5, "n": 3, "seed": 11, "temperature": 1.0}
    status, events = stream(server, "tiny", body)
    assert status == 200
    finals = [e for e in events if e["finish_reason"]]
    assert sorted(e["index"] for e in finals) == [0, 1, 2]
    again = stream(server, "tiny", body)[1]
    assert [text(events, i) for i in range(3)] == [text(again, i) for i in range(3)]


def test_sixteen_concurrent_streams_each_equal_the_request_alone(server: BerthServer) -> None:
    bodies = [{"text_input": f"request {k} of the model server", "max_tokens": 10,
               "temperature": 1.0, "top_p": 0.9, "seed": 100 + k} for k in range(16)]
    alone = [text(stream(server, "tiny", b)[1]) for b in bodies]
    results: list[list[dict[str, Any]] | None] = [None] * 16
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            status, events = stream(server, "tiny", bodies[k])
            assert status == 200
            results[k] = events
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    for k in range(16):
        events = results[k]
        assert events is not None
        counts = [e["completion_tokens"] for e in events]
        assert counts == sorted(counts), counts  # each stream in order
        assert text(events) == alone[k], k


def test_requests_run_at_once_on_one_worker(server: BerthServer) -> None:
    """Three long streams each send a first response while none has ended:
    the one worker runs them together (it is not one after the other)."""
    opened = [open_stream(server, "long", {"text_input": f"long {k}", "max_tokens": 200,
                                          "temperature": 1.0, "seed": k}) for k in range(3)]
    try:
        firsts = [next_event(resp) for resp, _ in opened]
        assert all(ev is not None and ev["finish_reason"] == "" for ev in firsts), firsts
        server.wait_queue("long", inflight=3, queued=0)
    finally:
        for _, conn in opened:
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
    server.wait_queue("long", inflight=0, queued=0)


def test_a_request_beyond_the_slots_waits_then_is_served(server: BerthServer) -> None:
    resp, conn = open_stream(server, "tiny1", {"text_input": "first", "max_tokens": 150,
                                               "temperature": 1.0, "seed": 1})
    second: dict[str, Any] = {}
    t = threading.Thread(target=lambda: second.update(
        r=stream(server, "tiny1", {"text_input": "second", "max_tokens": 3})))
    try:
        assert next_event(resp) is not None
        t.start()
        server.wait_queue("tiny1", inflight=2, queued=1)  # one slot: the second waits
        events = [e for e in iter(lambda: next_event(resp), None)]
        assert events[-1]["finish_reason"] in ("length", "stop")
    finally:
        conn.close()
    t.join(TIMEOUT)
    status, got = second["r"]
    assert status == 200 and got[-1]["finish_reason"] in ("length", "stop")


def test_a_client_that_leaves_frees_its_slot(server: BerthServer) -> None:
    resp, conn = open_stream(server, "tiny1", {"text_input": "leaving", "max_tokens": 240,
                                               "temperature": 1.0, "seed": 2})
    assert next_event(resp) is not None
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    # slots=1: this one can only run once the abandoned sequence left
    status, events = stream(server, "tiny1", {"text_input": "next", "max_tokens": 2})
    assert status == 200 and events[-1]["finish_reason"] in ("length", "stop")
    wait_until(lambda: "cancelled" in server.log_text(), 30.0, "the worker's cancel log line")


def test_a_worker_crash_fails_only_its_requests(server: BerthServer) -> None:
    pid = server.worker_pids()["tiny1/1/0"]
    resp, conn = open_stream(server, "tiny1", {"text_input": "doomed", "max_tokens": 240,
                                               "temperature": 1.0, "seed": 3})
    try:
        assert next_event(resp) is not None
        os.kill(pid, signal.SIGKILL)
        events = [e for e in iter(lambda: next_event(resp), None)]
    finally:
        conn.close()
    assert events and "error" in events[-1] and "worker exited" in events[-1]["error"]
    # the other model did not notice
    status, got = stream(server, "tiny", {"text_input": "still here", "max_tokens": 2})
    assert status == 200 and got[-1]["finish_reason"]
    server.wait_worker("tiny1/1/0", timeout=TIMEOUT, not_pid=pid)
    wait_until(lambda: server.get("/v2/models/tiny1/ready").status == 200, TIMEOUT, "tiny1 ready")
    status, got = stream(server, "tiny1", {"text_input": "back", "max_tokens": 2})
    assert status == 200 and got[-1]["finish_reason"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"text_input": "x", "max_tokens": 0}, "max_tokens"),
        ({"messages": "[{\"role\": \"user\"", "max_tokens": 2}, "not JSON"),
        ({"messages": "{\"role\": \"user\"}"}, "JSON array"),
        ({"max_tokens": 2}, "exactly one"),
        ({"text_input": "x", "n": 99}, "'n'"),
        ({"text_input": "x", "max_tokens": 100000}, "context"),
        ({"text_input": "x", "stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"text_input": "x", "max_tokens": "many"}, ""),
        ({"text_input": "x", "bogus": 1}, "bogus"),
    ],
)
def test_bad_inputs_are_input_errors(server: BerthServer, body: dict[str, Any], words: str) -> None:
    status, events = stream(server, "tiny", body)
    assert status == 400, events
    assert words in events[0]["error"], events
    # the model still serves
    assert stream(server, "tiny", {"text_input": "ok", "max_tokens": 1})[0] == 200


def test_batched_decoding_gives_each_sequence_its_lone_tokens(folder: Path) -> None:
    """In process: one forward pass for many sequences (padded, masked KV
    caches; the default) gives the tokens of each sequence decoded alone
    (batch_decode: false), greedy and seeded, with sequences joining at
    different steps."""
    import numpy as np
    from berth.runtimes import get_runtime

    def run(batched: bool, temperature: float) -> dict[int, bytes]:
        rt = get_runtime("llm")
        rt.load({"path": str(folder),
                 "parameters": {"max_sequences": 12, "batch_decode": batched, "threads": 1}})
        got: dict[int, list[bytes]] = {}
        for k in range(12):
            prompt = np.array([f"join {k} " * (1 + k % 4)], dtype=object)
            rt.start(k, {"text_input": np.char.encode(prompt.astype(str)).astype(object),
                         "max_tokens": np.array([12], np.int32),
                         "temperature": np.array([temperature], np.float32),
                         "seed": np.array([k], np.int64)})
            if k % 2:
                for rid, out, _ in rt.step():
                    if out is not None:
                        got.setdefault(rid, []).append(out["text_output"][0])
        while rt.active():
            for rid, out, _ in rt.step():
                if out is not None:
                    got.setdefault(rid, []).append(out["text_output"][0])
        return {k: b"".join(v) for k, v in got.items()}

    for temperature in (0.0, 1.0):
        assert run(True, temperature) == run(False, temperature)


def test_a_text_with_a_nul_character_streams(server: BerthServer) -> None:
    """A generated byte 0 is text too (U+0000, escaped in JSON): the stream
    carries it instead of failing."""
    status, events = stream(server, "nul", {"text_input": "x"})
    assert status == 200
    assert [e.get("text_output") for e in events] == ["a\x00b", "\x00", "c"], events
