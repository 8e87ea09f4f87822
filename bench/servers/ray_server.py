"""Ray Serve (pip `ray[serve]`): one deployment, one replica, @serve.batch.

Ray runs on one CPU (the harness pins the whole process tree to the server
core); the replica asks for no CPU reservation so that the proxy, the GCS and
the raylet share the core with it, as every other server's processes do.
"""

import argparse
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import common  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--workers", type=int, default=1)
ap.add_argument("--max-batch", type=int, default=32)
ap.add_argument("--delay-us", type=int, default=2000)
a = ap.parse_args()

import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

KEY = {"identity": ("x", "y"), "tabular": ("x", "proba"), "embed": ("text", "embedding"),
       "identity_onnx": ("x", "y"), "tabular_onnx": ("x", "proba")}


@serve.deployment(num_replicas=a.workers, max_ongoing_requests=1024,
                  ray_actor_options={"num_cpus": 0})
class Bench:
    def __init__(self, kind: str, mb: int, delay_s: float):
        self.kind = kind
        self.m = common.MODELS[kind]()
        self.inkey, self.outkey = KEY[kind]
        self.batched.set_max_batch_size(max(mb, 1))
        self.batched.set_batch_wait_timeout_s(delay_s)

    def run(self, items):
        if self.kind == "embed":
            return self.m([t for item in items for t in item])
        return self.m(np.asarray([r for item in items for r in item], dtype=np.float32))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def batched(self, items: list) -> list:
        y = self.run(items)
        return [row[None, :].tolist() for row in y]

    async def __call__(self, req: Request):
        body = await req.json()
        return JSONResponse({self.outkey: await self.batched(body[self.inkey])})


ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
serve.start(http_options={"host": "127.0.0.1", "port": a.port})
serve.run(Bench.bind(a.model, a.max_batch, a.delay_us / 1e6), name=a.model,
          route_prefix="/" + a.model)
print("ray serve ready", flush=True)
signal.signal(signal.SIGTERM, lambda *_: (serve.shutdown(), ray.shutdown(), sys.exit(0)))
while True:
    time.sleep(3600)
