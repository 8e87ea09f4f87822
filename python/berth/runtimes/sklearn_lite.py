"""Berth's own reader of common fitted scikit-learn estimators: serves them
with NumPy alone, without importing scikit-learn (issue 19, cold start).

Importing scikit-learn takes 1.5 s or more (it imports SciPy and pandas),
which is most of ``berth serve model.joblib``'s start; the file itself
unpickles in milliseconds. :func:`read` unpickles a ``joblib.dump`` (or
``pickle.dump``) file with an unpickler that resolves only the classes listed
in ``_CLASSES`` below, NumPy's and joblib's array constructors, and nothing
else: each listed class is a small stand-in here that keeps the fitted
attributes and computes ``predict`` / ``predict_proba`` the way scikit-learn
does (tests/unit/test_sklearn_lite.py compares both, class by class). A file
that names any other class or function, or whose attributes are not as
expected, is not read here (:func:`read` returns ``None`` with the reason)
and the runtime loads it with scikit-learn as before; nothing from such a
file runs here.

Equal outputs are promised for files written by scikit-learn 1.4 or later
and read where the installed scikit-learn (if any) has the same major.minor
version as the writer: otherwise scikit-learn reads the file (as it would,
with its version warning).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import Any

import numpy as np

log = logging.getLogger("berth.sklearn_lite")

#: The oldest writer whose attribute layout this module knows (1.4 stores a
#: classification tree's leaf values as fractions, which predict_proba reads).
_OLDEST = (1, 4)


class NotReadable(Exception):
    """The file holds something this reader does not handle exactly."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise NotReadable(what)


def _array(value: Any, what: str, ndim: int | tuple[int, ...], kind: str = "f") -> np.ndarray:
    _need(isinstance(value, np.ndarray), f"{what} is not an array")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    _need(value.ndim in dims and value.dtype.kind in kind, f"{what} has an unexpected shape or type")
    return value


def _labels(value: Any, what: str) -> np.ndarray:
    return _array(value, what, 1, "iufbOUS")


class Unusual(Exception):
    """Rows this reader does not compute as scikit-learn would (NaN,
    infinity, a width or a float32 overflow scikit-learn refuses): the
    caller hands them to scikit-learn itself."""


_F32_MAX = float(np.finfo(np.float32).max)


def _usual(x: np.ndarray, width: int, float32: bool = False) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != width or x.dtype != np.float64:
        raise Unusual("shape or type")
    if x.size and not (np.isfinite(x).all() and (not float32 or np.abs(x).max() <= _F32_MAX)):
        raise Unusual("values")
    return x


# ---- the stand-ins ----------------------------------------------------------


class _Fitted:
    """A fitted object's attributes as unpickled (``__dict__`` state)."""

    def __setstate__(self, state: Any) -> None:
        _need(isinstance(state, dict), f"{type(self).__name__}: unexpected pickled state")
        self.__dict__.update(state)

    def check(self) -> None:
        """Raises NotReadable unless every attribute predict uses is sound."""

    def features(self) -> int:
        n = self.__dict__.get("n_features_in_")
        _need(isinstance(n, (int, np.integer)) and n > 0, "n_features_in_ is missing")
        return int(n)


class _Inert(_Fitted):
    """Fitted state that predict never reads (a solver's optimizer)."""


class _Transformer(_Fitted):
    def transform(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _StandardScaler(_Transformer):
    def check(self) -> None:
        n = self.features()
        for attr, flag in (("mean_", "with_mean"), ("scale_", "with_std")):
            if self.__dict__.get(flag):
                _need(_array(self.__dict__.get(attr), attr, 1).shape == (n,), f"{attr} width")

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.array(_usual(x, self.n_features_in_), dtype=np.float64)
        if self.with_mean:
            x -= self.mean_
        if self.with_std:
            x /= self.scale_
        return x


class _MinMaxScaler(_Transformer):
    def check(self) -> None:
        n = self.features()
        for attr in ("scale_", "min_"):
            _need(_array(self.__dict__.get(attr), attr, 1).shape == (n,), f"{attr} width")
        low_high = self.__dict__.get("feature_range")
        _need(isinstance(low_high, tuple) and len(low_high) == 2, "feature_range")
        _need(isinstance(self.__dict__.get("clip", False), bool), "clip")

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.array(_usual(x, self.n_features_in_), dtype=np.float64)
        x *= self.scale_
        x += self.min_
        if self.__dict__.get("clip", False):
            np.clip(x, self.feature_range[0], self.feature_range[1], out=x)
        return x


class _Estimator(_Fitted):
    classifier = False

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError



def _expit(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1)[:, np.newaxis]
    np.exp(x, out=x)
    x /= x.sum(axis=1)[:, np.newaxis]
    return x


class _Linear(_Estimator):
    """LinearRegression, Ridge, Lasso, ElasticNet: ``X @ coef_.T + intercept_``."""

    def check(self) -> None:
        n = self.features()
        coef = _array(self.__dict__.get("coef_"), "coef_", (1, 2))
        _need(coef.shape[-1] == n, "coef_ width")
        icpt = self.__dict__.get("intercept_")
        _need(isinstance(icpt, (float, int, np.floating, np.ndarray)), "intercept_")

    def decision(self, x: np.ndarray) -> np.ndarray:
        x = _usual(x, self.n_features_in_)
        coef = self.coef_
        return x @ (coef if coef.ndim == 1 else coef.T) + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.decision(x)



class _LogisticRegression(_Linear):
    classifier = True

    def check(self) -> None:
        super().check()
        classes = _labels(self.__dict__.get("classes_"), "classes_")
        _need(len(classes) >= 2 and self.coef_.ndim == 2, "classes_")
        rows = 1 if len(classes) == 2 else len(classes)
        _need(self.coef_.shape[0] == rows, "coef_ rows")
        _need(np.shape(self.intercept_) == (rows,), "intercept_")
        multi = self.__dict__.get("multi_class", "deprecated")
        _need(rows == 1 or multi in ("deprecated", "auto", "multinomial"), "one-vs-rest model")

    def decision(self, x: np.ndarray) -> np.ndarray:
        scores = _usual(x, self.n_features_in_) @ self.coef_.T + self.intercept_
        return scores.reshape(-1) if scores.shape[1] == 1 else scores

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = self.decision(x)
        idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_.take(idx, axis=0)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = self.decision(x)
        if scores.ndim == 1:
            p = _expit(scores)
            return np.vstack([1 - p, p]).T
        return _softmax(scores)



class _Tree(_Fitted):
    """sklearn.tree._tree.Tree, rebuilt from its pickled arrays."""

    def __init__(self, n_features: Any = 0, n_classes: Any = None, n_outputs: Any = 1) -> None:
        self.n_features = n_features
        self.n_classes = n_classes
        self.n_outputs = n_outputs

    def check(self) -> None:
        nodes = self.__dict__.get("nodes")
        _need(isinstance(nodes, np.ndarray) and nodes.ndim == 1 and nodes.dtype.names is not None,
              "tree nodes")
        for field in ("left_child", "right_child", "feature", "threshold"):
            _need(field in nodes.dtype.names, f"tree nodes lack {field}")
        values = _array(self.__dict__.get("values"), "tree values", 3)
        count = len(nodes)
        _need(count > 0 and values.shape[0] == count, "tree size")
        left, right = nodes["left_child"], nodes["right_child"]
        leaf = left == -1
        _need(bool(np.all((right == -1) == leaf)), "tree children")
        inner = ~leaf
        for child in (left[inner], right[inner]):
            _need(bool(np.all((child > 0) & (child < count))), "tree child index")
        feat = nodes["feature"][inner]
        _need(bool(np.all((feat >= 0) & (feat < int(self.n_features)))), "tree feature index")
        depth = self.__dict__.get("max_depth")
        _need(isinstance(depth, (int, np.integer)) and 0 <= depth < count, "tree max_depth")

    def arrays(self) -> tuple[np.ndarray, ...]:
        n = self.nodes
        return n["left_child"], n["right_child"], n["feature"], n["threshold"], n["left_child"] == -1

    def leaf_values(self) -> np.ndarray:
        return self.values

    def depth(self) -> int:
        return int(self.max_depth)


class _Trees:
    """One or more trees flattened into shared arrays, walked together: every
    leaf points to itself, so max_depth steps bring every row to its leaf.
    Rows are finite (NaN, which some trees route by a learned side, goes to
    scikit-learn: :class:`Unusual`). ``float32``: rows are compared as
    scikit-learn's trees compare them, cast to float32 first (the
    histogram-based boosters compare float64 rows)."""

    def __init__(self, trees: list[_Tree] | list[_HistTree], n_features: int,
                 float32: bool = True) -> None:
        lefts, rights, feats, thresholds, values, roots = [], [], [], [], [], []
        offset = 0
        for t in trees:
            left, right, feature, threshold, leaf = t.arrays()
            idx = np.arange(len(left), dtype=np.intp) + offset
            lefts.append(np.where(leaf, idx, left + offset))
            rights.append(np.where(leaf, idx, right + offset))
            feats.append(np.where(leaf, 0, feature))
            thresholds.append(np.where(leaf, np.inf, threshold))
            values.append(t.leaf_values())
            roots.append(offset)
            offset += len(left)
        _need(offset < (1 << 31) and n_features > 0, "forest size")
        self.left = np.concatenate(lefts).astype(np.intp)
        self.right = np.concatenate(rights).astype(np.intp)
        self.feature = np.concatenate(feats).astype(np.intp)
        self.threshold = np.concatenate(thresholds).astype(np.float64)
        self.width, self.float32 = n_features, float32
        shapes = {v.shape[1:] for v in values}
        _need(len(shapes) == 1, "trees of different output shapes")
        self.values = np.concatenate(values).astype(np.float64)
        self.roots = np.array(roots, dtype=np.intp)
        self.depth = max(t.depth() for t in trees)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Leaf index per tree and row, shape (trees, rows)."""
        x = _usual(x, self.width, float32=self.float32)
        if self.float32:
            x = x.astype(np.float32).astype(np.float64)
        rows = np.arange(x.shape[0], dtype=np.intp)[np.newaxis, :]
        node = np.repeat(self.roots[:, np.newaxis], x.shape[0], axis=1)
        for _ in range(self.depth):
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return node


class _DecisionTree(_Estimator):
    walk: _Trees | None = None

    def check(self) -> None:
        self.features()
        tree = self.__dict__.get("tree_")
        _need(isinstance(tree, _Tree), "tree_ is missing")
        tree.check()
        _need(self.__dict__.get("n_outputs_") == 1, "multi-output tree")
        if self.classifier:
            classes = _labels(self.__dict__.get("classes_"), "classes_")
            _need(int(self.n_classes_) == len(classes), "n_classes_")
            _need(tree.values.shape[1] == 1 and tree.values.shape[2] >= len(classes),
                  "tree values shape")
        else:
            _need(tree.values.shape[1:] == (1, 1), "tree values shape")

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Leaf values per row, shape (rows, width)."""
        if self.walk is None:
            self.walk = _Trees([self.tree_], self.n_features_in_)
        return self.walk.values[self.walk.leaves(x)[0]][:, 0, :]

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.classifier:
            return self.classes_.take(self.predict_proba(x).argmax(axis=1), axis=0)
        return self.raw(x)[:, 0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.raw(x)[:, : int(self.n_classes_)]


class _TreeClassifier(_DecisionTree):
    classifier = True


class _TreeRegressor(_DecisionTree):
    predict_proba = None  # type: ignore[assignment]


class _Forest(_Estimator):
    def check(self) -> None:
        n = self.features()
        trees = self.__dict__.get("estimators_")
        _need(isinstance(trees, list) and len(trees) > 0, "estimators_")
        _need(self.__dict__.get("n_outputs_") == 1, "multi-output forest")
        want = _TreeClassifier if self.classifier else _TreeRegressor
        for t in trees:
            _need(isinstance(t, want), "estimators_ holds another estimator")
            t.check()
        if self.classifier:
            classes = _labels(self.__dict__.get("classes_"), "classes_")
            _need(int(self.n_classes_) == len(classes), "n_classes_")
            _need(all(int(t.n_classes_) == len(classes) for t in trees), "trees' classes")
        self.walk = _Trees([t.tree_ for t in trees], n)
        self.count = len(trees)

    def mean(self, x: np.ndarray, width: int) -> np.ndarray:
        """The trees' leaf values averaged, as scikit-learn sums then divides."""
        per_tree = self.walk.values[self.walk.leaves(x)][:, :, 0, :width]
        total = per_tree.sum(axis=0)
        total /= self.count
        return total

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.classifier:
            return self.classes_.take(self.predict_proba(x).argmax(axis=1), axis=0)
        return self.mean(x, 1)[:, 0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.mean(x, int(self.n_classes_))


class _ForestClassifier(_Forest):
    classifier = True


class _ForestRegressor(_Forest):
    predict_proba = None  # type: ignore[assignment]


# ---- gradient boosting ------------------------------------------------------


class _Loss(_Fitted):
    """A boosting loss: only the link between raw scores and outputs is read."""

    kind = "identity"  # the link (the pickled state has its own `link` object)

    def inverse(self, raw: np.ndarray) -> np.ndarray:
        if self.kind == "log":
            return np.exp(raw)
        if self.kind == "logit":
            return _expit(raw)
        if self.kind == "multinomial":
            return _softmax(np.array(raw, dtype=np.float64))
        return raw

    def forward(self, p: np.ndarray) -> np.ndarray:
        """The link itself (GradientBoosting's start from its init estimator)."""
        if self.kind == "logit":
            return np.log(p / (1 - p))
        if self.kind == "multinomial":
            logs = np.log(p)
            return logs - logs.mean(axis=1)[:, np.newaxis]
        _need(self.kind == "identity", "a link this reader does not invert")
        return p

    def proba(self, raw: np.ndarray) -> np.ndarray:
        if self.kind == "logit":
            r = raw[:, 0] if raw.ndim == 2 else raw
            out = np.empty((r.shape[0], 2), dtype=r.dtype)
            out[:, 1] = _expit(r)
            out[:, 0] = 1 - out[:, 1]
            return out
        return self.inverse(raw)


class _IdentityLoss(_Loss):
    kind = "identity"


class _LogLinkLoss(_Loss):
    kind = "log"


class _BinomialLoss(_Loss):
    kind = "logit"


class _MultinomialLoss(_Loss):
    kind = "multinomial"


def _inert(*_args: Any) -> _Inert:
    """A Cython class's unpickling function (a loss's compiled half)."""
    return _Inert()


class _HistTree(_Fitted):
    """A histogram-based booster's TreePredictor (its ``nodes`` records)."""

    def check(self, n_features: int) -> None:
        nodes = self.__dict__.get("nodes")
        _need(isinstance(nodes, np.ndarray) and nodes.ndim == 1 and nodes.dtype.names is not None
              and len(nodes) > 0, "predictor nodes")
        for field in ("value", "feature_idx", "num_threshold", "left", "right", "is_leaf",
                      "is_categorical", "depth"):
            _need(field in nodes.dtype.names, f"predictor nodes lack {field}")
        _need(not nodes["is_categorical"].any(), "categorical splits")
        inner = nodes["is_leaf"] == 0
        for child in (nodes["left"][inner], nodes["right"][inner]):
            _need(bool(np.all((child > 0) & (child < len(nodes)))), "predictor child index")
        feat = nodes["feature_idx"][inner]
        _need(bool(np.all((feat >= 0) & (feat < n_features))), "predictor feature index")

    def arrays(self) -> tuple[np.ndarray, ...]:
        n = self.nodes
        return n["left"], n["right"], n["feature_idx"], n["num_threshold"], n["is_leaf"] != 0

    def leaf_values(self) -> np.ndarray:
        return np.asarray(self.nodes["value"], dtype=np.float64)[:, np.newaxis]

    def depth(self) -> int:
        return int(self.nodes["depth"].max())


class _Boosting(_Estimator):
    """What both boosters share: per-iteration trees, K scores per row."""

    walk: _Trees
    k: int
    rate = 1.0
    #: whether a binary score of exactly 0 is the positive class
    #: (GradientBoosting: yes; HistGradientBoosting: no)
    zero_is_positive = False

    def check_loss(self) -> _Loss:
        loss = self.__dict__.get("_loss")
        _need(isinstance(loss, _Loss), "a loss this reader does not know")
        if self.classifier:
            classes = _labels(self.__dict__.get("classes_"), "classes_")
            binary = len(classes) == 2
            _need((loss.kind, self.k) == (("logit", 1) if binary else ("multinomial", len(classes))),
                  "a loss that does not match the classes")
        else:
            _need(self.k == 1 and loss.kind in ("identity", "log"), "regression loss")
        return loss

    def start(self, rows: int) -> np.ndarray:
        raise NotImplementedError

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (rows, K), summed in scikit-learn's order."""
        values = self.walk.values.reshape(len(self.walk.values), -1)[:, 0]
        per_tree = values[self.walk.leaves(x)]
        raw = self.start(x.shape[0])
        for i in range(per_tree.shape[0]):
            raw[:, i % self.k] += self.rate * per_tree[i]  # x 1.0 is exact
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.raw(x)
        if not self.classifier:
            return self._loss.inverse(raw.ravel())
        if self.k > 1:
            return self.classes_[raw.argmax(axis=1)]
        score = raw.ravel()
        positive = score >= 0 if self.zero_is_positive else score > 0
        return self.classes_[positive.astype(np.intp)]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._loss.proba(self.raw(x))


class _HistBoosting(_Boosting):
    def check(self) -> None:
        n = self.features()
        _need(self.__dict__.get("_preprocessor") is None, "a categorical preprocessor")
        _need(not np.any(self.__dict__.get("is_categorical_") or False), "categorical features")
        self.k = int(self.n_trees_per_iteration_)
        self.check_loss()
        base = _array(self.__dict__.get("_baseline_prediction"), "_baseline_prediction", 2)
        _need(base.shape == (1, self.k), "_baseline_prediction shape")
        preds = self.__dict__.get("_predictors")
        _need(isinstance(preds, list) and len(preds) > 0, "_predictors")
        trees = []
        for it in preds:
            _need(isinstance(it, list) and len(it) == self.k, "trees per iteration")
            for t in it:
                _need(isinstance(t, _HistTree), "a predictor of another kind")
                t.check(n)
                trees.append(t)
        self.walk = _Trees(trees, n, float32=False)

    def start(self, rows: int) -> np.ndarray:
        raw = np.zeros((rows, self.k), dtype=self._baseline_prediction.dtype)
        raw += self._baseline_prediction
        return raw

class _HistClassifier(_HistBoosting):
    classifier = True


class _HistRegressor(_HistBoosting):
    predict_proba = None  # type: ignore[assignment]


class _Dummy(_Fitted):
    """GradientBoosting's init estimator: a constant per class or output."""

    def check(self, classifier: bool, k: int) -> None:
        if classifier:
            _need(self.__dict__.get("strategy") == "prior", "init strategy")
            prior = _array(self.__dict__.get("class_prior_"), "class_prior_", 1)
            _need(len(prior) == (2 if k == 1 else k), "class_prior_ width")
        else:
            const = _array(self.__dict__.get("constant_"), "constant_", 2)
            _need(const.shape == (1, 1), "constant_ shape")


class _GradientBoosting(_Boosting):
    zero_is_positive = True

    def check(self) -> None:
        n = self.features()
        est = self.__dict__.get("estimators_")
        _need(isinstance(est, np.ndarray) and est.ndim == 2 and est.size > 0, "estimators_")
        self.k = est.shape[1]
        # its regressors return the raw sum: only identity links qualify
        _need(self.check_loss().kind != "log", "a log-link regression loss")
        for t in est.ravel():
            _need(isinstance(t, _TreeRegressor), "estimators_ holds another estimator")
            t.check()
        init = self.__dict__.get("init_")
        _need(init == "zero" or isinstance(init, _Dummy), "an init estimator")
        if init != "zero":
            init.check(self.classifier, self.k)
        self.rate = float(self.learning_rate)
        self.walk = _Trees([t.tree_ for t in est.ravel()], n)

    def start(self, rows: int) -> np.ndarray:
        if self.init_ == "zero":
            return np.zeros((rows, self.k), dtype=np.float64)
        if self.classifier:
            p = np.tile(self.init_.class_prior_, (rows, 1))
            if self.k == 1:
                p = p[:, 1]
            eps = np.finfo(np.float64).eps
            p = np.clip(p, eps, 1 - eps, dtype=np.float64)
        else:
            p = np.full(rows, self.init_.constant_[0, 0], dtype=np.float64)
        raw = self._loss.forward(p)
        return raw.reshape(-1, 1) if raw.ndim == 1 else raw

class _GBClassifier(_GradientBoosting):
    classifier = True


class _GBRegressor(_GradientBoosting):
    predict_proba = None  # type: ignore[assignment]


class _LabelBinarizer(_Fitted):
    def check(self) -> None:
        _labels(self.__dict__.get("classes_"), "classes_")
        _need(self.__dict__.get("y_type_") in ("binary", "multiclass"), "label type")
        _need(self.__dict__.get("neg_label", 0) == 0 and self.__dict__.get("pos_label", 1) == 1,
              "labels other than 0/1")
        _need(not self.__dict__.get("sparse_output", False), "sparse labels")


_ACTIVATIONS = {
    "identity": lambda a: a,
    "tanh": lambda a: np.tanh(a, out=a),
    "logistic": _expit,
    "relu": lambda a: np.maximum(a, 0, out=a),
    "softmax": _softmax,
}


class _MLP(_Estimator):
    def check(self) -> None:
        n = self.features()
        coefs, icpts = self.__dict__.get("coefs_"), self.__dict__.get("intercepts_")
        _need(isinstance(coefs, list) and isinstance(icpts, list) and len(coefs) == len(icpts),
              "coefs_/intercepts_")
        _need(len(coefs) == int(self.n_layers_) - 1 and len(coefs) > 0, "n_layers_")
        width = n
        for i, (w, b) in enumerate(zip(coefs, icpts, strict=True)):
            _array(w, f"coefs_[{i}]", 2)
            _array(b, f"intercepts_[{i}]", 1)
            _need(w.shape[0] == width and b.shape == (w.shape[1],), f"layer {i} shape")
            width = w.shape[1]
        _need(self.__dict__.get("activation") in _ACTIVATIONS, "activation")
        _need(self.__dict__.get("out_activation_") in _ACTIVATIONS, "out_activation_")
        _need(int(self.n_outputs_) == width, "n_outputs_")
        if self.classifier:
            lb = self.__dict__.get("_label_binarizer")
            _need(isinstance(lb, _LabelBinarizer), "_label_binarizer")
            lb.check()
            classes = _labels(self.__dict__.get("classes_"), "classes_")
            _need(np.array_equal(classes, lb.classes_), "classes_")
            _need(width == (1 if lb.y_type_ == "binary" else len(classes)), "output width")

    def forward(self, x: np.ndarray) -> np.ndarray:
        a = _usual(x, self.n_features_in_)
        hidden = _ACTIVATIONS[self.activation]
        last = len(self.coefs_) - 1
        for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            a = a @ w
            a += b
            if i != last:
                a = hidden(a)
        return _ACTIVATIONS[self.out_activation_](a)



class _MLPClassifier(_MLP):
    classifier = True

    def predict(self, x: np.ndarray) -> np.ndarray:
        y = self.forward(x)
        classes = self._label_binarizer.classes_
        if self._label_binarizer.y_type_ == "multiclass":
            return classes.take(y.argmax(axis=1), mode="clip")
        picked = (y.ravel() > 0.5).astype(np.intp)
        return np.repeat(classes[0], len(picked)) if len(classes) == 1 else classes[picked]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        y = self.forward(x)
        if y.shape[1] == 1:
            p = y.ravel()
            return np.vstack([1 - p, p]).T
        return y


class _MLPRegressor(_MLP):
    predict_proba = None  # type: ignore[assignment]

    def predict(self, x: np.ndarray) -> np.ndarray:
        y = self.forward(x)
        return y.ravel() if y.shape[1] == 1 else y


class _Pipeline(_Estimator):
    def check(self) -> None:
        steps = self.__dict__.get("steps")
        _need(isinstance(steps, list) and len(steps) > 0, "steps")
        self.transforms: list[_Transformer] = []
        for i, step in enumerate(steps):
            _need(isinstance(step, tuple) and len(step) == 2, "a step is not (name, estimator)")
            est = step[1]
            if est is None or est == "passthrough":
                _need(i < len(steps) - 1, "the last step is passthrough")
                continue
            if i < len(steps) - 1:
                _need(isinstance(est, _Transformer), "a step that is no known transformer")
                self.transforms.append(est)
            else:
                _need(isinstance(est, _Estimator), "a last step that is no known estimator")
            est.check()
        self.final: _Estimator = steps[-1][1]
        widths = {t.features() for t in self.transforms} | {self.final.features()}
        _need(len(widths) == 1, "steps of different widths")
        self.n_features_in_ = widths.pop()
        self.classifier = self.final.classifier
        if self.classifier:
            self.classes_ = self.final.classes_
        else:
            self.predict_proba = None

    def _through(self, x: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            x = t.transform(x)
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.final.predict(self._through(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return self.final.predict_proba(self._through(x))  # type: ignore[misc]



#: (module prefix, class name) -> stand-in. A class is read only from the
#: scikit-learn subpackage it lives in.
_CLASSES: dict[tuple[str, str], type] = {
    ("sklearn.linear_model", "LinearRegression"): _Linear,
    ("sklearn.linear_model", "Ridge"): _Linear,
    ("sklearn.linear_model", "Lasso"): _Linear,
    ("sklearn.linear_model", "ElasticNet"): _Linear,
    ("sklearn.linear_model", "LogisticRegression"): _LogisticRegression,
    ("sklearn.tree", "Tree"): _Tree,
    ("sklearn.tree", "DecisionTreeClassifier"): _TreeClassifier,
    ("sklearn.tree", "DecisionTreeRegressor"): _TreeRegressor,
    ("sklearn.tree", "ExtraTreeClassifier"): _TreeClassifier,
    ("sklearn.tree", "ExtraTreeRegressor"): _TreeRegressor,
    ("sklearn.ensemble", "RandomForestClassifier"): _ForestClassifier,
    ("sklearn.ensemble", "RandomForestRegressor"): _ForestRegressor,
    ("sklearn.ensemble", "ExtraTreesClassifier"): _ForestClassifier,
    ("sklearn.ensemble", "ExtraTreesRegressor"): _ForestRegressor,
    ("sklearn.neural_network", "MLPClassifier"): _MLPClassifier,
    ("sklearn.neural_network", "MLPRegressor"): _MLPRegressor,
    ("sklearn.neural_network", "AdamOptimizer"): _Inert,
    ("sklearn.neural_network", "SGDOptimizer"): _Inert,
    ("sklearn.preprocessing", "LabelBinarizer"): _LabelBinarizer,
    ("sklearn.preprocessing", "StandardScaler"): _StandardScaler,
    ("sklearn.preprocessing", "MinMaxScaler"): _MinMaxScaler,
    ("sklearn.pipeline", "Pipeline"): _Pipeline,
    ("sklearn.ensemble", "GradientBoostingClassifier"): _GBClassifier,
    ("sklearn.ensemble", "GradientBoostingRegressor"): _GBRegressor,
    ("sklearn.ensemble", "HistGradientBoostingClassifier"): _HistClassifier,
    ("sklearn.ensemble", "HistGradientBoostingRegressor"): _HistRegressor,
    ("sklearn.ensemble._hist_gradient_boosting", "TreePredictor"): _HistTree,
    ("sklearn.ensemble._hist_gradient_boosting", "_BinMapper"): _Inert,
    ("sklearn.preprocessing", "LabelEncoder"): _Inert,
    ("sklearn.dummy", "DummyClassifier"): _Dummy,
    ("sklearn.dummy", "DummyRegressor"): _Dummy,
    ("sklearn._loss", "HalfSquaredError"): _IdentityLoss,
    ("sklearn._loss", "AbsoluteError"): _IdentityLoss,
    ("sklearn._loss", "PinballLoss"): _IdentityLoss,
    ("sklearn._loss", "HuberLoss"): _IdentityLoss,
    ("sklearn._loss", "HalfPoissonLoss"): _LogLinkLoss,
    ("sklearn._loss", "HalfGammaLoss"): _LogLinkLoss,
    ("sklearn._loss", "HalfTweedieLoss"): _LogLinkLoss,
    ("sklearn._loss", "HalfBinomialLoss"): _BinomialLoss,
    ("sklearn._loss", "HalfMultinomialLoss"): _MultinomialLoss,
    ("sklearn._loss", "Interval"): _Inert,
    ("sklearn._loss", "IdentityLink"): _Inert,
    ("sklearn._loss", "LogLink"): _Inert,
    ("sklearn._loss", "LogitLink"): _Inert,
    ("sklearn._loss", "MultinomialLogit"): _Inert,
}

#: NumPy's and joblib's own constructors of arrays, dtypes, scalars and
#: random states: resolved as they are.
_NUMPY = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
}


def _resolve(module: str, name: str) -> Any:
    for (prefix, cls), standin in _CLASSES.items():
        if name == cls and (module == prefix or module.startswith(prefix + ".")):
            return standin
    if module == "sklearn._loss._loss" and name.startswith(("Cy", "__pyx_unpickle_Cy")):
        return _inert  # a loss's compiled half: predict never calls it
    return None


def _unpickler_class() -> type:
    import joblib.numpy_pickle as jp

    class Unpickler(jp.NumpyUnpickler):  # type: ignore[misc]
        def find_class(self, module: str, name: str) -> Any:
            standin = _resolve(module, name)
            if standin is not None:
                return standin
            if (module, name) in _NUMPY:
                return super().find_class(module, name)
            raise NotReadable(f"it names {module}.{name}")

    return Unpickler


def _version(text: Any) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", text) if isinstance(text, str) else None
    return (int(m.group(1)), int(m.group(2))) if m else None


def installed_sklearn() -> tuple[int, int] | None:
    """The installed scikit-learn's major.minor, read from its package
    without importing it; None when it is not installed or unreadable."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    try:
        with open(spec.origin, encoding="utf-8") as f:
            m = re.search(r"""^__version__\s*=\s*["']([^"']+)""", f.read(), re.M)
    except OSError:
        return None
    return _version(m.group(1)) if m else None


def _load(path: str) -> Any:
    import joblib.numpy_pickle as jp

    with open(path, "rb") as f, jp._validate_fileobject_and_memmap(f, path, None) as (fobj, _):
        _need(not isinstance(fobj, str), "a joblib file older than 0.10")
        return _unpickler_class()(path, fobj, True).load()


def read(path: str) -> tuple[_Estimator | None, str]:
    """The estimator in ``path`` as a stand-in, or ``(None, why not)``."""
    try:
        obj = _load(path)
        _need(isinstance(obj, _Estimator), "it holds no estimator this reader knows")
        written = _version(obj.__dict__.get("_sklearn_version"))
        _need(written is not None and written >= _OLDEST, "written by scikit-learn before 1.4")
        if importlib.util.find_spec("sklearn") is not None:
            installed = installed_sklearn()
            _need(installed == written, f"written by scikit-learn {written}, installed {installed}")
        obj.check()
        return obj, ""
    except NotReadable as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - any surprise: scikit-learn reads it
        return None, f"{type(e).__name__}: {e}"
