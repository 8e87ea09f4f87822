"""The generation core of the llm runtime (berth/runtimes/_generate.py):
sampling is deterministic per seed, stop strings are held back and never
emitted, n choices, request checks, and the continuous batcher driven
directly (sequences join and leave between steps, slots are bounded, a
cancel frees its slot, batching never changes a sequence's tokens)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from berth.errors import InvalidInput  # noqa: E402
from berth.runtimes._generate import (  # noqa: E402
    ContinuousBatcher,
    GenRequest,
    StopScanner,
    parse_request,
    sample_token,
)

VOCAB = 50
EOS = 0


def obj(*values: str) -> np.ndarray:
    a = np.empty(len(values), dtype=object)
    a[:] = [v.encode() for v in values]
    return a


# ---------------------------------------------------------------- sampling


def test_greedy_at_temperature_zero_picks_the_largest_logit() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    g = torch.Generator().manual_seed(1)
    assert all(sample_token(logits, 0.0, 1.0, g) == 1 for _ in range(5))


def test_same_seed_same_tokens_other_seed_other_tokens() -> None:
    logits = torch.zeros(VOCAB)  # uniform: every token is possible

    def draw(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return [sample_token(logits, 1.0, 1.0, g) for _ in range(30)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_top_p_keeps_only_the_nucleus() -> None:
    # probabilities 0.5, 0.3, 0.2 (and ~0): top_p 0.6 keeps the first two
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2, 1e-9]))
    g = torch.Generator().manual_seed(3)
    seen = {sample_token(logits, 1.0, 0.6, g) for _ in range(300)}
    assert seen == {0, 1}
    g = torch.Generator().manual_seed(3)
    assert {sample_token(logits, 1.0, 0.1, g) for _ in range(50)} == {0}


# ------------------------------------------------------------------- stops


def test_stop_string_is_held_back_then_cut_out() -> None:
    s = StopScanner(["END"])
    assert s.feed("hello E", final=False) == ("hello ", False)  # "E" may start END
    assert s.feed("hello EN", final=False) == ("", False)
    assert s.feed("hello ENd", final=False) == ("ENd", False)  # not a stop after all
    assert s.feed("hello ENd END more", final=False) == (" ", True)


def test_stop_across_several_strings_takes_the_earliest() -> None:
    s = StopScanner(["yz", "b"])
    assert s.feed("a", final=False) == ("a", False)
    assert s.feed("axyzb", final=False) == ("x", True)


def test_final_flushes_a_held_prefix_and_an_unfinished_character() -> None:
    s = StopScanner(["stop"])
    assert s.feed("ab st", final=False) == ("ab ", False)
    assert s.feed("ab st\ufffd", final=True) == ("st\ufffd", False)
    s = StopScanner([])
    assert s.feed("x\ufffd", final=False) == ("x", False)
    assert s.feed("x\u00e9", final=False) == ("\u00e9", False)


# ------------------------------------------------------------ request checks


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({"text_input": obj("a"), "max_tokens": np.array([0], np.int32)}, "max_tokens"),
        ({"messages": obj("[{not json")}, "not JSON"),
        ({"messages": obj('{"role": "user"}')}, "JSON array"),
        ({"messages": obj('[{"role": "user", "content": 3}]')}, "content"),
        ({}, "exactly one"),
        ({"text_input": obj("a"), "messages": obj("[]")}, "exactly one"),
        ({"text_input": obj("a"), "n": np.array([9], np.int32)}, "'n'"),
        ({"text_input": obj("a"), "temperature": np.array([2.5], np.float32)}, "temperature"),
        ({"text_input": obj("a"), "top_p": np.array([0.0], np.float32)}, "top_p"),
        ({"text_input": obj("a"), "stop": obj("1", "2", "3", "4", "5")}, "at most 4"),
        ({"text_input": obj("a"), "stop": obj("")}, "stop string"),
        ({"text_input": np.array([b"\xff\xfe"], dtype=object)}, "UTF-8"),
    ],
)
def test_bad_requests_are_input_errors(inputs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_request(inputs, max_n=4)


def test_a_full_request_parses() -> None:
    req = parse_request(
        {
            "messages": obj('[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]'),
            "max_tokens": np.array([5], np.int32),
            "temperature": np.array([0.5], np.float32),
            "top_p": np.array([0.9], np.float32),
            "seed": np.array([42], np.int64),
            "stop": obj("a", "b"),
            "n": np.array([2], np.int32),
            "stream": np.array([True]),
        },
        max_n=4,
    )
    assert req.messages == [{"role": "user", "content": "hi"}]
    assert (req.max_tokens, req.seed, req.n, req.stop) == (5, 42, 2, ["a", "b"])
    assert req.temperature == pytest.approx(0.5) and req.top_p == pytest.approx(0.9)


# ------------------------------------------------------- continuous batching


class ToyLM:
    """A deterministic 'language model' over VOCAB tokens whose logits
    depend only on a sequence's own tokens: token t is followed by t + 1
    (mod VOCAB, skipping EOS) most likely, by others less. It records the
    batch size of every step."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def step(self, seqs: list[Any]) -> list[torch.Tensor]:
        self.batches.append(len(seqs))
        rows = []
        for seq in seqs:
            last = (seq.generated or seq.prompt_ids)[-1]
            seq.state = (seq.state or 0) + 1  # a "cache": steps taken
            logits = torch.full((VOCAB,), -2.0)
            nxt = last % (VOCAB - 1) + 1
            logits[nxt] = 2.0
            logits[(nxt * 3) % (VOCAB - 1) + 1] = 1.5
            rows.append(logits)
        return rows


def decode(ids: list[int]) -> str:
    return "".join(chr(ord("a") + (i - 1) % 26) for i in ids)


def batcher(lm: ToyLM, slots: int = 4, eos: int = EOS) -> ContinuousBatcher:
    return ContinuousBatcher(lm.step, decode, {eos}, slots)


def collect(events: list[Any], into: dict[int, list[Any]], ended: set[int]) -> None:
    for rid, out, end in events:
        if out is not None:
            into.setdefault(rid, []).append(out)
        if end:
            ended.add(rid)


def text_of(outs: list[Any], index: int = 0) -> str:
    return "".join(o["text_output"][0].decode() for o in outs if int(o["index"][0]) == index)


def alone(req: GenRequest, prompt: list[int], max_tokens: int) -> list[Any]:
    return list(batcher(ToyLM()).run_one(1, req, prompt, max_tokens))


def test_sequences_join_and_leave_between_steps() -> None:
    lm = ToyLM()
    b = batcher(lm)
    outs: dict[int, list[Any]] = {}
    ended: set[int] = set()
    b.start(1, GenRequest(prompt="x", temperature=0.0), [1], 3)
    collect(b.step(), outs, ended)
    b.start(2, GenRequest(prompt="y", temperature=0.0), [5], 5)  # joins mid-way
    while b.active():
        collect(b.step(), outs, ended)
    assert lm.batches == [1, 2, 2, 1, 1, 1]  # 2 joined at step 2; 1 left after step 3
    assert ended == {1, 2}
    assert text_of(outs[1]) == "bcd" and outs[1][-1]["finish_reason"][0] == b"length"
    assert text_of(outs[2]) == "fghij"
    assert [int(o["completion_tokens"][0]) for o in outs[2]] == [1, 2, 3, 4, 5]
    assert int(outs[2][0]["prompt_tokens"][0]) == 1


def test_batching_does_not_change_a_sequence_with_a_seed() -> None:
    reqs = [GenRequest(prompt="p", temperature=1.0, seed=s, n=2) for s in range(6)]
    b = batcher(ToyLM(), slots=6)
    outs: dict[int, list[Any]] = {}
    ended: set[int] = set()
    for rid, req in enumerate(reqs):
        b.start(rid, req, [rid + 1], 8)
        collect(b.step(), outs, ended)  # each joins a running batch
    while b.active():
        collect(b.step(), outs, ended)
    for rid, req in enumerate(reqs):
        solo = alone(req, [rid + 1], 8)
        for index in (0, 1):
            assert text_of(outs[rid], index) == text_of(solo, index)
    assert text_of(outs[0], 0) != text_of(outs[0], 1)  # choices differ (seed + index)


def test_slots_are_bounded_and_a_cancel_frees_one() -> None:
    b = batcher(ToyLM(), slots=2)
    b.start(1, GenRequest(prompt="a"), [1], 50)
    b.start(2, GenRequest(prompt="b"), [2], 50)
    with pytest.raises(InvalidInput, match="at most 2"):
        b.start(3, GenRequest(prompt="c"), [3], 50)
    b.step()
    assert b.cancel(1) and not b.cancel(1)
    assert b.active() == 1
    b.start(3, GenRequest(prompt="c"), [3], 50)
    assert {s.rid for s in b.running()} == {2, 3}


def test_eos_ends_with_stop_and_stop_strings_are_not_emitted() -> None:
    # prompt token 48 -> next 49 ("w"), then 49 % 49 + 1 = 1 ("a") ...
    outs = alone(GenRequest(prompt="p", temperature=0.0, stop=["ab"]), [48], 10)
    assert text_of(outs) == "w" and outs[-1]["finish_reason"][0] == b"stop"
    lm = ToyLM()
    b = ContinuousBatcher(lm.step, decode, {3}, 2)  # token 3 is EOS here
    got = list(b.run_one(1, GenRequest(prompt="p", temperature=0.0), [1], 10))
    assert text_of(got) == "b" and got[-1]["finish_reason"][0] == b"stop"
    assert int(got[-1]["completion_tokens"][0]) == 1


def test_a_request_ends_only_when_all_its_choices_did() -> None:
    b = batcher(ToyLM())
    outs: dict[int, list[Any]] = {}
    ended: set[int] = set()
    b.start(7, GenRequest(prompt="p", temperature=1.0, seed=1, n=3), [4], 4)
    while b.active():
        collect(b.step(), outs, ended)
    assert ended == {7}
    finals = [o for o in outs[7] if o["finish_reason"][0]]
    assert sorted(int(o["index"][0]) for o in finals) == [0, 1, 2]
