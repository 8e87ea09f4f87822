"""Stand-in for Triton's `simple_dyna_sequence`: like `simple_sequence`
(the first request answers its input plus one, the others their input),
and the last request of a sequence adds the sequence's id (the CORRID
control input Triton's dyna_sequence backend reads)."""

import numpy as np

import berth


class SimpleDynaSequence(berth.Model):
    inputs = [berth.TensorSpec("INPUT", "INT32", [-1, 1])]
    outputs = [berth.TensorSpec("OUTPUT", "INT32", [-1, 1])]

    def predict(self, inputs, sequences=None):
        out = np.array(inputs["INPUT"], dtype=np.int32, copy=True)
        start, end, corrid = inputs["START"], inputs["END"], inputs["CORRID"]
        for seq in sequences or []:
            rows = seq.rows
            out[rows] += start[rows].astype(np.int32)
            if end[rows].any():
                out[rows] += np.int32(int(corrid[rows].reshape(-1)[0]))
        return {"OUTPUT": out}
