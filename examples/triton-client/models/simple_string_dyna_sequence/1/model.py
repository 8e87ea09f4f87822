"""Stand-in for Triton's `simple_string_dyna_sequence`: an accumulator
whose sequences are named by string ids that hold a decimal number. Each
request answers the running sum of the sequence's inputs; the last one
adds the id's number (CORRID)."""

import numpy as np

import berth


class SimpleStringDynaSequence(berth.Model):
    inputs = [berth.TensorSpec("INPUT", "INT32", [-1, 1])]
    outputs = [berth.TensorSpec("OUTPUT", "INT32", [-1, 1])]

    def predict(self, inputs, sequences=None):
        x = inputs["INPUT"]
        out = np.empty_like(x, dtype=np.int32)
        for seq in sequences or []:
            total = seq.state.get("sum", 0) + int(x[seq.rows].sum())
            seq.state["sum"] = total
            if seq.end:
                try:
                    total += int(seq.id)
                except ValueError as err:
                    raise berth.InvalidInput(
                        f"sequence id {seq.id!r} is not a decimal number"
                    ) from err
            out[seq.rows] = total
        return {"OUTPUT": out}
