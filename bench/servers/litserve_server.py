"""LitServe (pip `litserve`): FastAPI/uvicorn front, an inference worker
process, batching (max_batch_size, batch_timeout in seconds). POST /predict.

LitServe starts its workers with multiprocessing "spawn", so everything the
worker needs comes from the environment (BENCH_MODEL, BENCH_MAX_BATCH,
BENCH_DELAY_US, BENCH_WORKERS) and the server starts under the main guard.
"""

import argparse
import inspect
import os

import common
import litserve as ls
import numpy as np

KIND = os.environ["BENCH_MODEL"]
KEY = {"identity": ("x", "y"), "tabular": ("x", "proba"), "embed": ("text", "embedding"),
       "identity_onnx": ("x", "y"), "tabular_onnx": ("x", "proba")}
INKEY, OUTKEY = KEY[KIND]


class API(ls.LitAPI):
    def setup(self, device):
        self.m = common.MODELS[KIND]()

    def decode_request(self, request):
        return request[INKEY]

    def batch(self, inputs):
        return [r for item in inputs for r in item]

    def predict(self, rows):
        if KIND == "embed":
            return self.m(rows)
        return self.m(np.asarray(rows, dtype=np.float32))

    def unbatch(self, output):
        return [output[i:i + 1] for i in range(len(output))]

    def encode_response(self, output):
        return {OUTKEY: output.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    mb = int(os.environ.get("BENCH_MAX_BATCH", "32"))
    batching = dict(max_batch_size=max(mb, 1),
                    batch_timeout=int(os.environ.get("BENCH_DELAY_US", "2000")) / 1e6)
    if "max_batch_size" in inspect.signature(ls.LitAPI.__init__).parameters:
        api, server_kw = API(**batching), {}
    else:
        api, server_kw = API(), batching
    server = ls.LitServer(api, accelerator="cpu",
                          workers_per_device=int(os.environ.get("BENCH_WORKERS", "1")),
                          timeout=60, **server_kw)
    server.run(port=a.port, host="127.0.0.1", num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
