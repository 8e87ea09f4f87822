"""Calls the text pipeline with tritonclient over REST:

    python client.py [URL]     (default 127.0.0.1:8080)
"""

from __future__ import annotations

import sys

import numpy as np
import tritonclient.http as httpclient


def classify(url: str, texts: list[str]) -> list[tuple[str, float]]:
    client = httpclient.InferenceServerClient(url)
    data = np.array([t.encode() for t in texts], dtype=object)
    inp = httpclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(data)
    result = client.infer("sentiment", [inp])
    labels = result.as_numpy("label")
    scores = result.as_numpy("score")
    return [(lab.decode(), float(s)) for lab, s in zip(labels, scores)]


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    for text, (lab, score) in zip(
        ["what a great day", "this is awful"],
        classify(url, ["what a great day", "this is awful"]),
    ):
        print(f"{text!r}: {lab} ({score:.2f})")
