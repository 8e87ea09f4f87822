"""Mosec (pip `mosec`): Rust HTTP front, Python worker processes, batching.

JSON in and out on POST /inference; max_wait_time is in whole milliseconds
and 0 means Mosec's default (10 ms), so a delay of 0 runs without the batcher
(max_batch_size 1) and any other delay rounds to at least 1 ms."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import common  # noqa: E402
from mosec import Server, Worker  # noqa: E402

KIND = os.environ["BENCH_MODEL"]
DELAY_US = int(os.environ.get("BENCH_DELAY_US", "2000"))
MB = int(os.environ.get("BENCH_MAX_BATCH", "32")) if DELAY_US > 0 else 1
DELAY_MS = max(1, round(DELAY_US / 1000))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
KEY = {"identity": ("x", "y"), "tabular": ("x", "proba"), "embed": ("text", "embedding"),
       "identity_onnx": ("x", "y"), "tabular_onnx": ("x", "proba")}


class Bench(Worker):
    def __init__(self):
        super().__init__()
        self.m = common.MODELS[KIND]()
        self.inkey, self.outkey = KEY[KIND]

    def forward(self, data):
        items = data if MB > 1 else [data]
        rows = [r for d in items for r in d[self.inkey]]
        y = self.m(rows) if KIND == "embed" else self.m(np.asarray(rows, dtype=np.float32))
        outs = [{self.outkey: y[i:i + 1].tolist()} for i in range(len(items))]
        return outs if MB > 1 else outs[0]


if __name__ == "__main__":
    server = Server()
    if MB > 1:
        server.append_worker(Bench, num=WORKERS, max_batch_size=MB, max_wait_time=DELAY_MS)
    else:
        server.append_worker(Bench, num=WORKERS)
    server.run()
