"""berth.sequences.SequenceStore: the worker's per-sequence state, read from
the engine's batch parameters (docs/worker-protocol.md)."""

from __future__ import annotations

import numpy as np
import pytest
from berth.errors import ProtocolError
from berth.sequences import SequenceStore


def batch(*entries: dict, drop: list | None = None) -> dict:
    params: dict = {"berth_sequences": list(entries), "other": 1}
    if drop is not None:
        params["berth_sequence_drop"] = drop
    return params


def test_state_is_kept_per_id_and_dropped_at_end() -> None:
    store = SequenceStore({})
    params = batch({"id": 1, "start": True, "end": False, "rows": 2},
                   {"id": "1", "start": True, "end": False, "rows": 1})
    seqs = store.take({}, params)
    assert params == {"other": 1}  # the engine's keys are taken out
    assert seqs is not None
    assert [s.rows for s in seqs] == [slice(0, 2), slice(2, 3)]
    seqs[0].state["n"] = 5
    seqs[1].state["n"] = 7  # the string "1" is another sequence than 1
    store.finish(seqs)
    seqs = store.take({}, batch({"id": 1, "start": False, "end": True, "rows": 1}))
    assert seqs is not None and seqs[0].state == {"n": 5} and seqs[0].end
    store.finish(seqs)
    assert list(store.states) == [("str", "1")]
    # a start gives a fresh state
    seqs = store.take({}, batch({"id": "1", "start": True, "end": False, "rows": 1}))
    assert seqs is not None and seqs[0].state == {}


def test_drops_expired_states_and_batches_without_sequences() -> None:
    store = SequenceStore({})
    store.finish(store.take({}, batch({"id": 9, "start": True, "end": False, "rows": -1})))
    assert store.states
    params = {"berth_sequence_drop": [9]}
    assert store.take({}, params) is None
    assert store.states == {}


def test_control_inputs() -> None:
    entry = {"sequence_batching": {"control_inputs": {"start": "S", "end": "E", "ready": "R",
                                                       "corrid": "C", "unused": None}}}
    store = SequenceStore(entry)
    inputs: dict = {}
    store.take(inputs, batch({"id": 4, "start": True, "end": False, "rows": 1},
                             {"id": 6, "start": False, "end": True, "rows": 2}))
    assert inputs["S"].tolist() == [[1], [0], [0]] and inputs["S"].dtype == np.int32
    assert inputs["E"].tolist() == [[0], [1], [1]]
    assert inputs["R"].tolist() == [[1], [1], [1]]
    assert inputs["C"].tolist() == [[4], [6], [6]] and inputs["C"].dtype == np.uint64
    inputs = {}
    store.take(inputs, batch({"id": "abc", "start": True, "end": False, "rows": -1}))
    assert inputs["C"].shape == (1,) and inputs["C"][0] == b"abc"


@pytest.mark.parametrize("bad", [None, 1.5, True, [1]])
def test_bad_ids_are_protocol_errors(bad: object) -> None:
    with pytest.raises(ProtocolError):
        SequenceStore({}).take({}, batch({"id": bad, "start": True, "end": False, "rows": 1}))
