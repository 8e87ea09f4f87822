"""Triton through PyTriton (pip `nvidia-pytriton`): the bundled tritonserver
binary with Triton's dynamic batcher, the model in a Python process."""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import common  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--workers", type=int, default=1)
ap.add_argument("--max-batch", type=int, default=32)
ap.add_argument("--delay-us", type=int, default=2000)
a = ap.parse_args()

m = common.MODELS[a.model]()
if a.model == "embed":
    @batch
    def infer(text):
        return {"embedding": m(common.texts_of(text))}
    ins = [Tensor(name="text", dtype=bytes, shape=(1,))]
    outs = [Tensor(name="embedding", dtype=np.float32, shape=(384,))]
else:
    n = common.FEATURES[a.model]
    out = "y" if a.model.startswith("identity") else "proba"

    @batch
    def infer(x):
        return {out: m(x)}
    ins = [Tensor(name="x", dtype=np.float32, shape=(n,))]
    outs = [Tensor(name=out, dtype=np.float32, shape=(n if out == "y" else 2,))]

cfg = ModelConfig(max_batch_size=max(a.max_batch, 1),
                  batcher=DynamicBatcher(max_queue_delay_microseconds=a.delay_us))
tc = TritonConfig(http_address="127.0.0.1", http_port=a.port, grpc_address="127.0.0.1",
                  grpc_port=a.port + 1, metrics_port=a.port + 2, allow_metrics=False)
# PyTriton restricts Triton's model-config and other admin endpoints behind a
# token; a known token lets perf_analyzer read the config (-H header).
sec = TritonSecurityConfig(access_token=os.environ.get("BENCH_TRITON_TOKEN", "bench-token"))
with Triton(config=tc, security_config=sec) as triton:
    triton.bind(model_name=a.model, infer_func=[infer] * a.workers, inputs=ins, outputs=outs,
                config=cfg, strict=False)
    triton.serve()
