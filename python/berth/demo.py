"""A demo model: ``python -m berth.demo OUTDIR`` writes ``OUTDIR/iris.joblib``.

It trains a scikit-learn logistic regression on the iris data set that ships
with scikit-learn (nothing is downloaded). Serve it with
``berth serve OUTDIR/iris.joblib``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["train_iris", "main"]


def train_iris(outdir: Path) -> Path:
    """Trains the iris classifier and saves it; returns the file's path."""
    try:
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        from .errors import MissingExtraError
        from .frameworks import framework

        sklearn = framework("sklearn")
        raise MissingExtraError(sklearn.display, sklearn.extra or "") from None

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir.resolve() / "iris.joblib"
    joblib.dump(model, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m berth.demo", description="Write a demo iris model (scikit-learn)."
    )
    parser.add_argument("outdir", type=Path, help="folder to write iris.joblib into")
    args = parser.parse_args(argv)
    from .errors import BerthError

    try:
        print(train_iris(args.outdir))
    except BerthError as e:
        print(f"berth: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
