"""BentoML (pip `bentoml`): one service per model, adaptive batching.

Started as `bentoml serve bentoml_svc:<Class>` from this folder. Batch
settings come from BENCH_MAX_BATCH / BENCH_DELAY_US; BentoML has no fixed
queue delay: its batcher adapts the wait to observed latency and refuses
requests whose wait would pass max_latency_ms, set here to a generous 1 s
so that it never refuses in this benchmark.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import bentoml  # noqa: E402
import common  # noqa: E402

MB = int(os.environ.get("BENCH_MAX_BATCH", "32"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
BATCH = dict(batchable=True, batch_dim=0, max_batch_size=MB, max_latency_ms=1000) if MB > 1 else {}
SVC = dict(workers=WORKERS, traffic={"timeout": 60, "max_concurrency": 1024})


@bentoml.service(**SVC)
class Identity:
    def __init__(self):
        self.m = common.Identity()

    @bentoml.api(**BATCH)
    def identity(self, x: np.ndarray) -> np.ndarray:
        return self.m(x.astype(np.float32, copy=False))


@bentoml.service(**SVC)
class Tabular:
    def __init__(self):
        self.m = common.Tabular()

    @bentoml.api(**BATCH)
    def tabular(self, x: np.ndarray) -> np.ndarray:
        return self.m(x.astype(np.float32, copy=False))


@bentoml.service(**SVC)
class IdentityOnnx:
    def __init__(self):
        self.m = common.IdentityOnnx()

    @bentoml.api(**BATCH)
    def identity_onnx(self, x: np.ndarray) -> np.ndarray:
        return self.m(x)


@bentoml.service(**SVC)
class TabularOnnx:
    def __init__(self):
        self.m = common.TabularOnnx()

    @bentoml.api(**BATCH)
    def tabular_onnx(self, x: np.ndarray) -> np.ndarray:
        return self.m(x)


@bentoml.service(**SVC)
class Embed:
    def __init__(self):
        self.m = common.Embed()

    @bentoml.api(**BATCH)
    def embed(self, text: list[str]) -> np.ndarray:
        return self.m(text)
