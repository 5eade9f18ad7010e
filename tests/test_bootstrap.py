"""The held-out metrics' bootstrap intervals: each resample scored as scikit-learn scores it."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score

from service.worker import bootstrap


def test_each_resample_is_scored_like_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = np.array(["a", "b", "c"] * 20)
    labels = np.where(rng.random(60) < 0.8, y, "b")
    labels[0] = "never-seen"  # a class only the model answers: f1_score counts it too
    rows = rng.integers(0, 60, size=(5, 60))
    scores = bootstrap._classification(y, labels, rows)
    for i, picked in enumerate(rows):
        assert scores["accuracy"][i] == accuracy_score(y[picked], labels[picked])
        expected = f1_score(y[picked], labels[picked], average="macro")
        assert np.isclose(scores["f1_macro"][i], expected)
    truth = rng.normal(size=40)
    prediction = truth + rng.normal(scale=0.3, size=40)
    rows = rng.integers(0, 40, size=(5, 40))
    scores = bootstrap._regression(truth, prediction, rows)
    for i, picked in enumerate(rows):
        rmse = np.sqrt(mean_squared_error(truth[picked], prediction[picked]))
        assert np.isclose(scores["rmse"][i], rmse)
        assert np.isclose(scores["r2"][i], r2_score(truth[picked], prediction[picked]))


def test_intervals_bracket_the_metric_and_repeat_with_the_seed() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    labels = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    first = bootstrap.intervals("classification", y, {"label": labels}, seed=3)
    accuracy = float(np.mean(y == labels))
    assert first["accuracy_ci_low"] < accuracy < first["accuracy_ci_high"]
    assert first["f1_macro_ci_low"] < first["f1_macro_ci_high"]
    assert bootstrap.intervals("classification", y, {"label": labels}, seed=3) == first
    assert bootstrap.intervals("classification", y[:1], {"label": labels[:1]}, seed=3) == {}
    assert bootstrap.intervals("anomaly_detection", y, {"label": labels}, seed=3) == {}
