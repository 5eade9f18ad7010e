"""scikit-learn training and conversion to ONNX with skl2onnx.

Scaling lives inside the estimator (a Pipeline) where it helps, so the exported graph takes raw
features just like the native model. Runs in worker processes only.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from service.errors import InvalidArgument
from service.worker.fitting import FitRequest

# ai.onnx 21 and ai.onnx.ml 3 are the newest skl2onnx 1.20 has tested, and ONNX Runtime 1.31
# runs both. ml 3 keeps the TreeEnsemble* v3 operators every runtime implements.
TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}

# Distance- and margin-based models need standardized features; trees, naive Bayes and
# plain least squares are invariant to (or model) the feature scale themselves.
#: naive_bayes on word weights: scikit-learn's default smoothing. Measured on the generated
#: reviews (held-out accuracy, 600 / 3000 rows): alpha 0.01 0.71 / 0.87, 0.1 0.75 / 0.88,
#: 0.3 0.81 / 0.88, 1.0 0.85 / 0.90; GaussianNB on the same TF-IDF 0.62 / 0.81.
MULTINOMIAL_ALPHA = 1.0
_SCALED = frozenset({"logistic_regression", "svm", "knn"})


@contextlib.contextmanager
def _svc_probability_deprecation_silenced() -> Iterator[None]:
    """scikit-learn 1.9 deprecates SVC(probability=True) (and its probA_/probB_, which skl2onnx
    reads), to be removed in 1.11; the pin keeps it working. The replacement,
    CalibratedClassifierCV(SVC(), ensemble=False), also converts (parity 4.8e-7 on digits) but
    labels by calibrated probability instead of SVC's decision function.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*(`probability`|probA_|probB_)", FutureWarning)
        yield


def _depth(value: int) -> int | None:
    return None if value == 0 else value


def build_estimator(algorithm: str, params: dict[str, Any], *, task: str, seed: int) -> Any:
    """The unfitted scikit-learn estimator for a catalog algorithm (without any scaler)."""
    classify = task == "classification"
    if algorithm == "linear_regression":
        return LinearRegression(fit_intercept=params["fit_intercept"])
    if algorithm == "ridge":
        return Ridge(alpha=params["alpha"], random_state=seed)
    if algorithm == "logistic_regression":
        return LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=seed)
    if algorithm == "decision_tree":
        tree = DecisionTreeClassifier if classify else DecisionTreeRegressor
        return tree(
            max_depth=_depth(params["max_depth"]),
            min_samples_leaf=params["min_samples_leaf"],
            random_state=seed,
        )
    if algorithm == "random_forest":
        forest = RandomForestClassifier if classify else RandomForestRegressor
        return forest(
            n_estimators=params["n_estimators"],
            max_depth=_depth(params["max_depth"]),
            min_samples_leaf=params["min_samples_leaf"],
            random_state=seed,
        )
    if algorithm == "gradient_boosting":
        boosting = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return boosting(
            max_iter=params["max_iter"],
            learning_rate=params["learning_rate"],
            max_leaf_nodes=params["max_leaf_nodes"],
            max_depth=_depth(params["max_depth"]),
            random_state=seed,
        )
    if algorithm == "svm":
        gamma: float | str = params["gamma"] or "scale"
        if classify:
            return SVC(
                C=params["C"],
                kernel=params["kernel"],
                gamma=gamma,
                probability=True,
                random_state=seed,
            )
        return SVR(C=params["C"], kernel=params["kernel"], gamma=gamma)
    if algorithm == "naive_bayes":
        # "auto" is resolved by the training data (multinomial for text); gaussian here.
        if params.get("distribution") == "multinomial":
            return MultinomialNB(alpha=MULTINOMIAL_ALPHA)
        return GaussianNB(var_smoothing=params["var_smoothing"])
    if algorithm == "knn":
        neighbours = KNeighborsClassifier if classify else KNeighborsRegressor
        return neighbours(n_neighbors=params["n_neighbors"], weights=params["weights"])
    raise InvalidArgument(f"{algorithm!r} is not a classical algorithm")


def _array_size(value: Any) -> int:
    return int(np.size(value)) if value is not None else 0


def count_parameters(estimator: Any) -> int:
    """Learned numbers a model stores: weights, tree nodes, support vectors, samples ..."""
    if isinstance(estimator, Pipeline):
        return sum(count_parameters(step) for _, step in estimator.steps if step != "passthrough")
    if isinstance(estimator, StandardScaler):
        return _array_size(getattr(estimator, "mean_", None)) + _array_size(
            getattr(estimator, "scale_", None)
        )
    if isinstance(estimator, GaussianNB):
        return estimator.theta_.size + estimator.var_.size + estimator.class_prior_.size
    if hasattr(estimator, "support_vectors_"):
        return (
            estimator.support_vectors_.size
            + estimator.dual_coef_.size
            + _array_size(estimator.intercept_)
        )
    if hasattr(estimator, "n_samples_fit_"):
        return int(estimator.n_samples_fit_ * estimator.n_features_in_)
    if hasattr(estimator, "tree_"):
        return int(estimator.tree_.node_count)
    if hasattr(estimator, "estimators_"):
        members = np.asarray(estimator.estimators_, dtype=object).ravel()
        return sum(count_parameters(member) for member in members)
    # HistGradientBoosting keeps its trees as TreePredictor objects, one list per iteration.
    predictors = getattr(estimator, "_predictors", None)
    if predictors is not None:
        return sum(len(tree.nodes) for iteration in predictors for tree in iteration)
    if hasattr(estimator, "coef_"):
        intercept = getattr(estimator, "intercept_", 0.0)
        fitted_intercept = getattr(estimator, "fit_intercept", True)
        return estimator.coef_.size + (_array_size(intercept) if fitted_intercept else 0)
    # Anything else (imports): every fitted numeric array attribute.
    return sum(
        value.size
        for name, value in vars(estimator).items()
        if name.endswith("_")
        and isinstance(value, np.ndarray)
        and np.issubdtype(value.dtype, np.number)
    )


def final_estimator(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def native_importances(estimator: Any, n_features: int) -> tuple[str, list[float]]:
    """The model's own importance of each input feature, and what kind it is.

    "coefficients": |coef_|, summed over classes (or class pairs) for multi-class models.
    In a Pipeline they are the final estimator's, so in standardized units: the scaler
    comes first, and per standard deviation of a feature is what makes features of
    different scales comparable at all. "feature_importances": impurity importances of
    trees and forests. ("", []) for everything else: HistGradientBoosting keeps none, and
    naive Bayes, KNN and kernel SVMs have no per-feature weights.
    """
    final = final_estimator(estimator)
    kind, values = "", None
    # hasattr, not getattr with a default: SVC.coef_ is a property that raises
    # AttributeError for non-linear kernels.
    if hasattr(final, "coef_"):
        coef = np.abs(np.asarray(final.coef_, dtype=np.float64))
        kind, values = "coefficients", coef.sum(axis=0) if coef.ndim == 2 else coef
    elif hasattr(final, "feature_importances_"):
        kind, values = "feature_importances", np.asarray(final.feature_importances_)
    if values is None or values.shape != (n_features,) or not np.all(np.isfinite(values)):
        return "", []
    return kind, [float(v) for v in values]


def _names(graph: Any) -> set[str]:
    return {name for node in graph.node for name in (*node.input, *node.output)} | {
        v.name for v in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)
    }


def _rename(graph: Any, old: str, new: str) -> None:
    """Renames one value everywhere the top-level graph mentions it."""
    if new in _names(graph):
        raise InvalidArgument(f"cannot rename {old!r} to {new!r} in the ONNX graph: name taken")
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _float_interface(model: Any) -> None:
    """Makes a float64 graph take and return float32, computing inside in float64.

    The serving contract is FP32 in and out, but some models are ill-conditioned in float32:
    GaussianNB on digits sums (x - mean)^2 / var terms up to 7e9 (var_smoothing 1e-9 on
    near-constant pixels), and its float32 probabilities were 4.2e-3 from the exact float64
    values, in scikit-learn and ONNX Runtime alike. Computed in float64 the ONNX graph is
    within 3.6e-7 of scikit-learn, for 0.35 ms instead of 0.22 ms at batch 256.
    """
    graph = model.graph
    prologue, epilogue = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.DOUBLE:
            outer, inner = value.name, f"{value.name}_float64"
            _rename(graph, outer, inner)
            value.name = outer
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            prologue.append(helper.make_node("Cast", [outer], [inner], to=TensorProto.DOUBLE))
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.DOUBLE:
            outer, inner = value.name, f"{value.name}_float64"
            _rename(graph, outer, inner)
            value.name = outer
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            epilogue.append(helper.make_node("Cast", [inner], [outer], to=TensorProto.FLOAT))
    nodes = [*prologue, *graph.node, *epilogue]
    del graph.node[:]
    graph.node.extend(nodes)


def _round_down_to_float32(thresholds: np.ndarray) -> np.ndarray:
    rounded = thresholds.astype(np.float32)
    up = rounded.astype(np.float64) > thresholds
    rounded[up] = np.nextafter(rounded[up], np.float32(-np.inf))
    return rounded.astype(np.float64)


def _snap_thresholds(estimator: Any) -> None:
    """Rounds every tree split threshold down to a float32 value, in place.

    scikit-learn compares float64(x) <= t with float64 thresholds, ONNX TreeEnsemble compares
    float32(x) <= float32(t), and float32(t) rounded to nearest can land above t and send
    samples the other way. For float32 x, x <= t exactly when x <= (largest float32 <= t), so
    after this the native model decides as before on every float32 input and ONNX agrees
    exactly. Measured on diabetes: HistGradientBoostingRegressor parity 6.59 -> 6.1e-5.
    """
    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps:
            _snap_thresholds(step)
        return
    tree = getattr(estimator, "tree_", None)
    if tree is not None:
        tree.threshold[:] = _round_down_to_float32(tree.threshold)  # a view on the nodes
    members = getattr(estimator, "estimators_", None)
    if members is not None:
        for member in np.asarray(members, dtype=object).ravel():
            _snap_thresholds(member)
    for iteration in getattr(estimator, "_predictors", None) or ():
        for predictor in iteration:
            nodes = predictor.nodes
            nodes["num_threshold"] = _round_down_to_float32(nodes["num_threshold"])


def _computes_in_float64(estimator: Any) -> bool:
    """Models whose float32 arithmetic is too inexact to serve; see _float_interface."""
    return isinstance(final_estimator(estimator), GaussianNB)


def sklearn_to_onnx(estimator: Any, n_features: int, task: str) -> bytes:
    """One ONNX model with input "input" FP32 [batch, n_features] and the house output names.

    Classifiers: "label" [batch] and "probabilities" [batch, n_classes] as a plain tensor
    (zipmap=False: the default list of dicts measured 12x slower at batch 256 and cannot be
    served as a tensor). Regressors: "prediction" [batch, n_outputs].
    """
    # A copy: the caller's estimator stays as trained, and still agrees with the export on the
    # float32 inputs the service takes (see _snap_thresholds).
    estimator = copy.deepcopy(estimator)
    _snap_thresholds(estimator)
    final = final_estimator(estimator)
    options: dict[str, Any] = {}
    if task == "classification":
        options["zipmap"] = False
    if isinstance(final, KNeighborsClassifier | KNeighborsRegressor):
        # Measured 51x faster than the default TopK over a broadcast distance matrix.
        options["optim"] = "cdist"
    double = _computes_in_float64(estimator)
    tensor_type = DoubleTensorType if double else FloatTensorType
    try:
        with _svc_probability_deprecation_silenced():
            model = convert_sklearn(
                estimator,
                # skl2onnx names the graph with a random uuid otherwise; a fixed name makes
                # the bytes, and so the manifest checksum, reproducible from the same seed.
                name=type(final).__name__,
                initial_types=[("input", tensor_type([None, n_features]))],
                target_opset=TARGET_OPSET,
                options={id(final): options} if options else None,
            )
    except Exception as exc:  # skl2onnx raises RuntimeError, KeyError, NotImplementedError ...
        raise InvalidArgument(
            f"skl2onnx cannot convert {type(final).__name__}: {type(exc).__name__}: {exc}"
        ) from None
    names = ["label", "probabilities"] if task == "classification" else ["prediction"]
    outputs = [o.name for o in model.graph.output]
    if len(outputs) != len(names):
        raise InvalidArgument(
            f"the converted {type(final).__name__} has outputs {outputs}; "
            f"expected {len(names)} ({', '.join(names)})"
        )
    for old, new in zip(outputs, names, strict=True):
        if old != new:
            _rename(model.graph, old, new)
    if double:
        _float_interface(model)
    return bytes(model.SerializeToString())


class SklearnModel:
    """A fitted scikit-learn estimator as the pipeline sees it (spec.FittedModel)."""

    device = "cpu"

    def __init__(self, estimator: Any, task: str, preprocessing_seconds: float = 0.0) -> None:
        self.estimator = estimator
        self.task = task
        self.preprocessing_seconds = preprocessing_seconds
        self.parameter_count = count_parameters(estimator)

    def predict_outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        if self.task == "classification":
            label = np.asarray(self.estimator.predict(X))
            if np.issubdtype(label.dtype, np.integer):
                label = label.astype(np.int64)
            probabilities = self.estimator.predict_proba(X).astype(np.float32)
            return {"label": label, "probabilities": probabilities}
        prediction = np.asarray(self.estimator.predict(X), dtype=np.float32)
        return {"prediction": prediction.reshape(len(X), -1)}

    def to_onnx(self, n_features: int) -> bytes:
        return sklearn_to_onnx(self.estimator, n_features, self.task)


def fit(request: FitRequest) -> SklearnModel:
    """Fits a catalog algorithm; request.params must already be resolved by the catalog."""
    algorithm, task = request.algorithm, request.task
    X_train, y_train = request.X_train, request.y_train
    estimator = build_estimator(algorithm, request.params, task=task, seed=request.seed)
    # float32 in training too: tree thresholds are then float32 values, so comparisons in
    # the float32 ONNX graph split samples exactly as scikit-learn does.
    X = np.ascontiguousarray(
        X_train, dtype=np.float64 if _computes_in_float64(estimator) else np.float32
    )
    if isinstance(estimator, KNeighborsClassifier | KNeighborsRegressor) and (
        estimator.n_neighbors > len(X)
    ):
        raise InvalidArgument(
            f"n_neighbors={estimator.n_neighbors} exceeds the {len(X)} training samples; "
            f"choose at most {len(X)}"
        )
    if task == "classification" and len(np.unique(y_train)) < 2:
        raise InvalidArgument("classification needs at least two classes in the training data")
    if isinstance(estimator, MultinomialNB) and len(X) and X.min() < 0:
        raise InvalidArgument(
            "naive_bayes with distribution=multinomial needs features of at least 0 (word "
            "weights); this table has negative ones: use distribution=gaussian"
        )

    preprocessing_seconds = 0.0
    model: BaseEstimator = estimator
    if algorithm in _SCALED:
        request.emit("preprocessing", "standardizing features")
        started = time.perf_counter()
        scaler = StandardScaler().fit(X)
        X = scaler.transform(X)
        preprocessing_seconds = time.perf_counter() - started
        # Both steps are fitted here, so that the scaler's time is measured on its own; a
        # Pipeline of fitted steps predicts (and converts) like one fitted as a whole.
        model = Pipeline([("scaler", scaler), ("model", estimator)])
    request.emit("fitting", f"fitting {type(estimator).__name__} on {len(X)} samples")
    with _svc_probability_deprecation_silenced():
        estimator.fit(X, y_train)
    return SklearnModel(model, task, preprocessing_seconds)
