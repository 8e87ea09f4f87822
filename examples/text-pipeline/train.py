"""Trains the text pipeline's classifier from a few sentences written here
(no download) and saves it as model/model.joblib.

    python train.py
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from text import featurize

POSITIVE = [
    "I love this product, it works great",
    "what a wonderful and happy day",
    "excellent service, very good experience",
    "great value, I am very pleased",
    "the film was fantastic and fun",
    "good quality and friendly staff",
    "amazing, brilliant, loved every minute",
    "nice design, works perfectly",
]
NEGATIVE = [
    "I hate this product, it broke at once",
    "what a terrible and sad day",
    "awful service, very bad experience",
    "poor value, I am very disappointed",
    "the film was boring and dull",
    "bad quality and rude staff",
    "horrible, broken, wasted every minute",
    "ugly design, never works",
]


def main() -> Path:
    x = featurize(POSITIVE + NEGATIVE)
    y = np.array([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    clf = LogisticRegression(C=10.0, max_iter=1000).fit(x, y)
    out = Path(__file__).resolve().parent / "model" / "model.joblib"
    out.parent.mkdir(exist_ok=True)
    joblib.dump(clf, out)
    return out


if __name__ == "__main__":
    print(f"saved {main()}")
