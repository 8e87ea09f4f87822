"""The in-process limit: each model called directly in a loop, no server.

Run by the harness with the same thread settings and on the same core as the
servers. Prints JSON: {case: {"b1": rows/s at batch 1, "bN": rows/s at the
servers' max batch size}}, each the median of `--reps` timed loops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
import common  # noqa: E402


def rate(fn, arg, rows: int, seconds: float, reps: int) -> float:
    fn(arg)  # warm
    out = []
    for _ in range(reps):
        n, t0 = 0, time.perf_counter()
        while True:
            fn(arg)
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        out.append(n * rows / dt)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="tabular,short,long")
    ap.add_argument("--batch", type=int, default=32, help="max batch size, W1/W2")
    ap.add_argument("--text-batch", type=int, default=16, help="max batch size, W3")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    res: dict[str, dict[str, float]] = {}
    cases = a.cases.split(",")
    if "tabular" in cases:
        m = common.Tabular()
        x = np.random.default_rng(0).standard_normal((a.batch, 32)).astype(np.float32)
        res["tabular"] = {"b1": rate(m, x[:1], 1, a.seconds, a.reps),
                          "bN": rate(m, x, a.batch, a.seconds, a.reps), "N": a.batch}
    if "tabular_onnx" in cases:  # the same model as an ONNX graph on onnxruntime (W2N)
        m = common.TabularOnnx()
        x = np.random.default_rng(0).standard_normal((a.batch, 32)).astype(np.float32)
        res["tabular_onnx"] = {"b1": rate(m, x[:1], 1, a.seconds, a.reps),
                               "bN": rate(m, x, a.batch, a.seconds, a.reps), "N": a.batch}
    texts = json.loads((common.WORK / "texts.json").read_text())
    emb = None
    for case in ("short", "long"):
        if case not in cases:
            continue
        emb = emb or common.Embed()
        t = [texts[case]] * a.text_batch
        res[case] = {"b1": rate(emb, t[:1], 1, a.seconds, a.reps),
                     "bN": rate(emb, t, a.text_batch, a.seconds, a.reps), "N": a.text_batch}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
