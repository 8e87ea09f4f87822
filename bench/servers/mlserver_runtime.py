"""The MLServer runtime class (imported by MLServer's worker processes)."""

import common
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

OUT = {"identity": "y", "tabular": "proba", "embed": "embedding", "identity_onnx": "y",
       "tabular_onnx": "proba"}


class BenchRuntime(MLModel):
    async def load(self) -> bool:
        self.kind = self._settings.parameters.extra["kind"]
        self.m = common.MODELS[self.kind]()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inp = payload.inputs[0]
        if self.kind == "embed":
            y = self.m(common.texts_of(StringCodec.decode_input(inp)))
        else:
            y = self.m(NumpyCodec.decode_input(inp).astype(np.float32, copy=False))
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(OUT[self.kind], y)])
