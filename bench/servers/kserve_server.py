"""KServe's Python model server (pip `kserve`): one kserve.Model, OIP v2 REST.

KServe's model server has no dynamic batcher of its own (batching is a
sidecar agent in a Kubernetes deployment), so requests run one by one.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import common  # noqa: E402
import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402

OUT = {"identity": "y", "tabular": "proba", "embed": "embedding", "identity_onnx": "y",
       "tabular_onnx": "proba"}


class BenchModel(kserve.Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.kind = name
        self.m = common.MODELS[name]()
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        y = self.m(common.texts_of(x)) if self.kind == "embed" else self.m(x.astype(np.float32, copy=False))
        out = InferOutput(name=OUT[self.kind], shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "1")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    # gRPC on port + 1 (OIP's GRPCInferenceService), for perf_analyzer -i grpc
    kserve.ModelServer(http_port=a.port, grpc_port=a.port + 1, workers=a.workers,
                       enable_grpc=True).start([BenchModel(a.model)])
