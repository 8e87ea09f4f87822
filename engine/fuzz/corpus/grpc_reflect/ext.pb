*
inference.ModelInferRequest	