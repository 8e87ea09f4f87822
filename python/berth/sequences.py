"""Per-sequence state for models served with ``sequence_batching``
(docs/sequences.md).

The engine sends, with each batch, one entry per request: the sequence's
id, its ``start``/``end`` flags and its rows. The worker keeps a ``state``
dict per live sequence: a fresh one at ``start``, the same one for the
sequence's later requests, dropped after ``end`` or when the engine says
the sequence expired (``max_sequence_idle_microseconds``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ProtocolError


@dataclass
class Sequence:
    """One request of a sequence in the current batch."""

    #: The client's ``sequence_id`` (an ``int`` or a ``str``).
    id: int | str
    #: The request carried ``sequence_start``: ``state`` is new and empty.
    start: bool
    #: The request carried ``sequence_end``: ``state`` is dropped after it.
    end: bool
    #: This request's rows of the batch (``slice(0, 1)`` for a model that
    #: does not batch).
    rows: slice
    #: The sequence's own state, kept between its requests.
    state: dict[str, Any] = field(default_factory=dict)


def _key(sid: Any) -> tuple[str, Any]:
    if isinstance(sid, bool) or not isinstance(sid, (int, str)):
        raise ProtocolError(f"sequence id must be an integer or a string, not {sid!r}")
    return (type(sid).__name__, sid)


class SequenceStore:
    """The worker's live sequences and the model's control inputs."""

    def __init__(self, entry: Mapping[str, Any]) -> None:
        block = entry.get("sequence_batching") or {}
        controls = block.get("control_inputs") or {}
        self.controls = {k: v for k, v in controls.items() if isinstance(v, str) and v}
        self.states: dict[tuple[str, Any], dict[str, Any]] = {}

    def take(self, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> list[Sequence] | None:
        """Reads and removes the engine's sequence keys from params, drops
        expired states, and returns the batch's sequences (None when the
        batch has none). Adds the configured control inputs to inputs."""
        for sid in params.pop("berth_sequence_drop", None) or ():
            self.states.pop(_key(sid), None)
        entries = params.pop("berth_sequences", None)
        if entries is None:
            return None
        out: list[Sequence] = []
        row = 0
        batched = False
        for e in entries:
            key = _key(e.get("id"))
            rows = int(e.get("rows", 1))
            batched = batched or rows >= 0
            n = max(rows, 1) if rows >= 0 else 1
            if e.get("start"):
                self.states[key] = {}
            state = self.states.setdefault(key, {})
            out.append(Sequence(e["id"], bool(e.get("start")), bool(e.get("end")), slice(row, row + n), state))
            row += n
        self._add_controls(inputs, out, batched)
        return out

    def _add_controls(self, inputs: dict[str, np.ndarray], seqs: list[Sequence], batched: bool) -> None:
        if not self.controls:
            return
        total = seqs[-1].rows.stop if seqs else 0
        shape = (total, 1) if batched else (1,)

        def column(value: Any, dtype: Any) -> np.ndarray:
            arr = np.zeros(shape, dtype=dtype) if dtype is not object else np.empty(shape, dtype=object)
            for s in seqs:
                arr[s.rows] = value(s)
            return arr

        for kind, name in self.controls.items():
            if kind == "start":
                inputs[name] = column(lambda s: int(s.start), np.int32)
            elif kind == "end":
                inputs[name] = column(lambda s: int(s.end), np.int32)
            elif kind == "ready":
                inputs[name] = column(lambda s: 1, np.int32)
            elif kind == "corrid":
                if all(isinstance(s.id, int) for s in seqs):
                    inputs[name] = column(lambda s: s.id, np.uint64)
                else:
                    inputs[name] = column(lambda s: str(s.id).encode(), object)

    def finish(self, seqs: list[Sequence] | None) -> None:
        """Drops the state of every sequence that ended in this batch."""
        for s in seqs or ():
            if s.end:
                self.states.pop(_key(s.id), None)
