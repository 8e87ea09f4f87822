"""The same text pipeline declared in Python:

    berth serve --config app.py
"""

import berth

models = [{"name": "clf", "path": "model/model.joblib", "max_batch_size": 64}]

sentiment = berth.Pipeline(
    "sentiment",
    inputs=[berth.TensorSpec("text", "BYTES", [-1])],
    steps=[
        berth.Step("tokenize", python="text.py:tokenize", max_batch_size=64),
        berth.Step("classify", model="clf"),
        berth.Step(
            "label",
            python="text.py:label",
            max_batch_size=64,
            inputs={"predict_proba": "classify.predict_proba"},
        ),
    ],
    outputs={"label": "label.label", "score": "label.score"},
)
