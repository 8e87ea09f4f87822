"""Token generation shared by the generative runtimes: the request's
settings, sampling, stop sequences, and the continuous batcher that runs
many sequences step by step (docs/generative.md).

The batcher knows nothing of a framework: a runtime gives it a *stepper*,
a function that takes the sequences to advance and returns each one's next
token logits (1-D, float). A sequence joins between two steps (``start``)
and leaves between two steps when it finishes or is cancelled, so a long
generation never holds back a short one. Each sequence samples with its own
``torch.Generator`` (seeded from the request's ``seed`` plus its choice
index), so the tokens a sequence gets never depend on which other sequences
ran beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInput

if TYPE_CHECKING:  # torch is imported where it is used: the llama_cpp backend runs without it
    import torch

__all__ = [
    "GenRequest",
    "GenSequence",
    "ContinuousBatcher",
    "StopScanner",
    "parse_request",
    "sample_token",
]

MAX_STOPS = 4
MAX_STOP_CHARS = 256


@dataclass
class GenRequest:
    """One request's settings, read from its inputs (the contract in
    docs/generative.md)."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1


def _scalar(inputs: Mapping[str, np.ndarray], name: str) -> Any:
    array = inputs.get(name)
    if array is None:
        return None
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise InvalidInput(f"input {name!r} must hold one value, got {flat.size}")
    return flat[0]


def _text(value: Any, name: str) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r} is not UTF-8 text") from None
    if isinstance(value, str):
        return value
    raise InvalidInput(f"input {name!r} must be BYTES text")


def _messages(text: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"input 'messages' is not JSON: {e}") from None
    if not isinstance(doc, list) or not doc:
        raise InvalidInput("input 'messages' must be a non-empty JSON array of messages")
    for i, msg in enumerate(doc):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise InvalidInput(f"messages[{i}] must be an object with a string 'role'")
        content = msg.get("content")
        if isinstance(content, list):  # OpenAI's content parts: text only
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise InvalidInput(f"messages[{i}].content: only text parts are supported")
                parts.append(str(part.get("text", "")))
            msg = dict(msg, content="".join(parts))
            doc[i] = msg
        elif not isinstance(content, str):
            raise InvalidInput(f"messages[{i}].content must be a string")
    return doc


def parse_request(inputs: Mapping[str, np.ndarray], max_n: int) -> GenRequest:
    """The request's settings; :class:`~berth.InvalidInput` for bad ones."""
    req = GenRequest()
    if (inputs.get("text_input") is None) == (inputs.get("messages") is None):
        raise InvalidInput("give exactly one of the inputs 'text_input' (a prompt) or 'messages'")
    if inputs.get("text_input") is not None:
        req.prompt = _text(_scalar(inputs, "text_input"), "text_input")
    else:
        req.messages = _messages(_text(_scalar(inputs, "messages"), "messages"))
    value = _scalar(inputs, "max_tokens")
    if value is not None:
        req.max_tokens = int(value)
        if req.max_tokens < 1:
            raise InvalidInput(f"input 'max_tokens' must be >= 1, got {req.max_tokens}")
    value = _scalar(inputs, "temperature")
    if value is not None:
        req.temperature = float(value)
        if not 0.0 <= req.temperature <= 2.0:
            raise InvalidInput(f"input 'temperature' must be in [0, 2], got {req.temperature}")
    value = _scalar(inputs, "top_p")
    if value is not None:
        req.top_p = float(value)
        if not 0.0 < req.top_p <= 1.0:
            raise InvalidInput(f"input 'top_p' must be in (0, 1], got {req.top_p}")
    value = _scalar(inputs, "seed")
    if value is not None:
        req.seed = int(value)
    value = _scalar(inputs, "n")
    if value is not None:
        req.n = int(value)
        if not 1 <= req.n <= max_n:
            raise InvalidInput(f"input 'n' must be from 1 to {max_n}, got {req.n}")
    stops = inputs.get("stop")
    if stops is not None:
        flat = np.asarray(stops).reshape(-1)
        if flat.size > MAX_STOPS:
            raise InvalidInput(f"input 'stop' holds at most {MAX_STOPS} strings, got {flat.size}")
        req.stop = [_text(s, "stop") for s in flat]
        if any(not s or len(s) > MAX_STOP_CHARS for s in req.stop):
            raise InvalidInput(f"each stop string must have 1 to {MAX_STOP_CHARS} characters")
    return req


def sample_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """The next token: greedy at temperature 0, else sampled from the
    softmax at ``temperature`` restricted to the smallest set of tokens whose
    probability reaches ``top_p`` (nucleus), with ``generator``."""
    import torch

    logits = logits.float()
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        keep = (cum - sorted_p) < top_p  # the first token is always kept
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        pick = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
        return int(order[int(pick)])
    return int(torch.multinomial(probs, 1, generator=generator))


class StopScanner:
    """Turns the growing decoded text into the deltas a client may see:
    text that could still become a stop string is held back, and a stop
    string ends the text before it (it is never emitted)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self.sent = 0  # characters already emitted

    def feed(self, text: str, final: bool) -> tuple[str, bool]:
        """The new delta of ``text`` (the whole decoded completion so far)
        and whether a stop string was found."""
        start = max(0, self.sent - max((len(s) for s in self.stops), default=0))
        hit = -1
        for s in self.stops:
            at = text.find(s, start)
            if at >= 0 and (hit < 0 or at < hit):
                hit = at
        if hit >= 0:
            delta = text[self.sent : max(hit, self.sent)]
            self.sent = max(hit, self.sent)
            return delta, True
        end = len(text)
        if text.endswith("\ufffd") and not final:  # a character still being decoded
            end -= 1
        hold = 0
        if not final:
            for s in self.stops:
                for k in range(min(len(s) - 1, end), hold, -1):
                    if text[end - k : end] == s[:k]:
                        hold = k
                        break
        safe = max(end - hold, self.sent)
        delta = text[self.sent : safe]
        self.sent = safe
        return delta, False


@dataclass
class GenSequence:
    """One choice of one request while it generates."""

    rid: int
    index: int
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    generator: torch.Generator
    scanner: StopScanner
    generated: list[int] = field(default_factory=list)
    state: Any = None  # the stepper's (a KV cache)
    finish: str = ""


Event = tuple[int, "dict[str, np.ndarray] | None", bool]


def _out(text: str, index: int, finish: str, prompt: int, completion: int) -> dict[str, Any]:
    blob = np.empty(1, dtype=object)
    blob[0] = text.encode("utf-8")
    reason = np.empty(1, dtype=object)
    reason[0] = finish.encode()
    return {
        "text_output": blob,
        "index": np.array([index], dtype=np.int32),
        "finish_reason": reason,
        "prompt_tokens": np.array([prompt], dtype=np.int32),
        "completion_tokens": np.array([completion], dtype=np.int32),
    }


class ContinuousBatcher:
    """Runs up to ``max_sequences`` requests at once, one decoding step for
    every running sequence per :meth:`step`.

    ``stepper(seqs)`` returns one 1-D logits tensor per sequence (in order),
    computing each from its prompt on its first step and from its last token
    and ``seq.state`` afterwards; ``decode(ids)`` turns token ids into text;
    ``eos`` is the set of ids that end a sequence.
    """

    def __init__(
        self,
        stepper: Callable[[list[GenSequence]], list[torch.Tensor]],
        decode: Callable[[list[int]], str],
        eos: set[int],
        max_sequences: int,
    ) -> None:
        self.stepper = stepper
        self.decode = decode
        self.eos = eos
        self.max_sequences = max_sequences
        self.requests: dict[int, list[GenSequence]] = {}

    def active(self) -> int:
        """Requests that have not ended."""
        return len(self.requests)

    def running(self) -> list[GenSequence]:
        return [s for seqs in self.requests.values() for s in seqs if not s.finish]

    def start(self, rid: int, req: GenRequest, prompt_ids: list[int], max_tokens: int) -> None:
        """Adds a request (its ``n`` choices) before the next step."""
        if rid in self.requests:
            raise InvalidInput(f"request {rid} is running already")
        if len(self.requests) >= self.max_sequences:
            raise InvalidInput(
                f"the model runs at most {self.max_sequences} requests at once (max_sequences)"
            )
        import torch

        base = req.seed if req.seed is not None else int.from_bytes(os.urandom(7), "little")
        self.requests[rid] = [
            GenSequence(
                rid=rid,
                index=i,
                prompt_ids=list(prompt_ids),
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                generator=torch.Generator().manual_seed((base + i) & 0xFFFF_FFFF_FFFF_FFFF),
                scanner=StopScanner(req.stop),
            )
            for i in range(req.n)
        ]

    def cancel(self, rid: int) -> bool:
        """Drops a request now (its KV caches go with it)."""
        return self.requests.pop(rid, None) is not None

    def step(self) -> list[Event]:
        """One decoding step; returns ``(rid, outputs, ended)`` events:
        a response to send (``outputs``, or ``None``) and whether the
        request ended with it."""
        seqs = self.running()
        if not seqs:
            return []
        logits = self.stepper(seqs)
        events: list[Event] = []
        for seq, row in zip(seqs, logits, strict=True):
            token = sample_token(row, seq.temperature, seq.top_p, seq.generator)
            out = self._advance(seq, token)
            if out is not None:
                events.append((seq.rid, out, False))
        for rid in [r for r, s in self.requests.items() if all(x.finish for x in s)]:
            del self.requests[rid]
            events.append((rid, None, True))
        return events

    def _advance(self, seq: GenSequence, token: int) -> dict[str, np.ndarray] | None:
        if token in self.eos:
            seq.finish = "stop"
            delta, _ = seq.scanner.feed(self.decode(seq.generated), final=True)
        else:
            seq.generated.append(token)
            final = len(seq.generated) >= seq.max_tokens
            delta, hit = seq.scanner.feed(self.decode(seq.generated), final=final)
            if hit:
                seq.finish = "stop"
            elif final:
                seq.finish = "length"
        if seq.finish:
            seq.state = None  # free the cache at once
        if not delta and not seq.finish:
            return None
        return _out(delta, seq.index, seq.finish, len(seq.prompt_ids), len(seq.generated))

    def run_one(
        self, rid: int, req: GenRequest, prompt_ids: list[int], max_tokens: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """One request alone, as a generator of its responses."""
        self.start(rid, req, prompt_ids, max_tokens)
        try:
            while rid in self.requests:
                for r, out, _ in self.step():
                    if r == rid and out is not None:
                        yield out
        finally:
            self.cancel(rid)
