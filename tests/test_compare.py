"""`paradigm compare`: one tiny run end to end against a real server, and the verdict rules.

The end-to-end run starts its own server (two training workers) and runs the tiny plan:
iris, two sizes, two seeds, logistic regression against an MLP, one search trial each,
two explanations and a short serving load; about 40 s on 2 cores. The rule tests build
synthetic measurements so that each verdict of each row is reached on purpose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from clients import cli
from clients.compare import driver, tuning, verdicts
from clients.compare.experiments import per_paradigm
from clients.compare.plan import FULL, PLANS
from clients.compare.records import CLASSICAL, DEEP, Measurements, Run
from clients.compare.report import write_report
from clients.compare.stats import summarize, welch
from clients.compare.verdicts import DEPENDS, HELD, NOT_HELD

# -- end to end -----------------------------------------------------------------------------


def test_tiny_run_writes_report_plots_and_json(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert driver.main(["--plan", "tiny", "--out", str(out), "--no-progress"]) == 0

    report = (out / "report.md").read_text()
    for row in verdicts.ROW_NAMES:
        line = next((x for x in report.splitlines() if x.startswith(f"| {row} |")), None)
        assert line is not None, f"no table row for {row}"
        assert any(f"**{v}**" in line for v in verdicts.VERDICTS), line
    assert "no GPU on this run" in report
    assert "python -m clients.compare --plan tiny" in report
    assert "AMD" in report or "Intel" in report or "cores" in report

    for name in ("learning_curves", "latency_vs_batch", "cost_per_1k", "accuracy_vs_cost"):
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
        assert f"({name}.png)" in report

    data = json.loads((out / "results.json").read_text())
    runs = data["runs"]
    assert runs and all(r["ok"] for r in runs), [r["error"] for r in runs if not r["ok"]]
    curve = [r for r in runs if r["purpose"] == "curve"]
    assert len(curve) == 2 * 2 * 2  # algorithms x sizes x seeds
    small = [r for r in curve if r["size"] == 30]
    assert small and all(r["metrics"]["train_samples"] == 30 for r in small)
    full = [r for r in curve if r["size"] == FULL]
    assert all(r["metrics"]["train_samples"] > 30 for r in full)
    # The test split does not shrink with the training rows.
    assert {r["metrics"]["test_samples"] for r in curve} == {38}
    for r in curve:
        assert r["metrics"]["fit_seconds"] > 0
        assert "preprocessing_seconds" in r["metrics"]
        assert r["cost"]["device_seconds"] > 0 and r["cost"]["dollars"] > 0
    assert {r["paradigm"] for r in curve} == {CLASSICAL, DEEP}
    assert [t["algorithm"] for t in data["tuning"]] == ["logistic_regression", "mlp"]
    assert any(r["purpose"] == "tune" for r in runs)
    explained = {e["algorithm"]: e for e in data["explanations"]}
    assert explained["logistic_regression"]["native_kind"] == "coefficients"
    assert explained["mlp"]["native_kind"] == ""
    assert len(explained["mlp"]["features"]) == 4
    points = data["serving"]["points"]
    assert {(p["algorithm"], p["batch"]) for p in points} == {
        (a, b) for a in ("logistic_regression", "mlp") for b in (1, 8)
    }
    assert all(p["requests"] > 0 and p["errors"] == 0 and p["p99_ms"] > 0 for p in points)
    assert {c["paradigm"] for c in data["serving"]["paradigms"]} == {CLASSICAL, DEEP}
    assert data["gpu"]["present"] is False
    assert set(data["meta"]["verdicts"]) == set(verdicts.ROW_NAMES)
    # The cascade section: iris, logistic regression first, the MLP when unsure.
    (cascade,) = data["cascades"]
    assert (cascade["dataset"], cascade["first"], cascade["then"]) == (
        "iris", "logistic_regression", "mlp",
    )  # fmt: skip
    assert 0.0 <= cascade["escalated"] <= 1.0 and cascade["dollars_per_1k"]["then"] > 0
    assert "## Cascades" in report and "| iris | logistic_regression | mlp |" in report


def test_cli_hands_compare_to_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_main(argv: list[str], prog: str = "") -> int:
        seen["argv"], seen["prog"] = argv, prog
        return 7

    monkeypatch.setattr(driver, "main", fake_main)
    assert cli.main(["compare", "--plan", "tiny"]) == 7
    assert seen == {"argv": ["--plan", "tiny"], "prog": "paradigm compare"}
    assert cli.main(["--target", "h:1", "compare", "--out", "x"]) == 7
    assert seen["argv"] == ["--target", "h:1", "--out", "x"]


def test_plans_are_consistent() -> None:
    for make in PLANS.values():
        plan = make()
        assert plan.seeds and plan.datasets
        for d in plan.datasets:
            assert FULL in d.sizes
    full = PLANS["full"]()
    scale = full.datasets[0]
    assert scale.generate is not None and max(scale.sizes) == 30_000 and FULL in scale.sizes
    # 70 000 rows with a 1/7 test fraction leave 60 000 to train on at FULL.
    assert 70_000 - math.ceil(scale.test_fraction * 70_000) == 60_000


# -- synthetic measurements -----------------------------------------------------------------


def _param(name: str, kind: str, low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "type": kind, "default": None, "minimum": low, "maximum": high,
            "choices": list(choices)}  # fmt: skip


def _catalog(deep_params: int = 8, classical_params: int = 2) -> list[dict[str, Any]]:
    def params(n: int) -> list[dict[str, Any]]:
        return [_param(f"p{i}", "float", 0.0, 1.0) for i in range(n)]

    sizes = {"lr": classical_params, "rf": classical_params, "net": deep_params}
    return [
        {"name": name, "paradigm": DEEP if name == "net" else CLASSICAL, "tasks": [],
         "hyperparameters": params(n)}
        for name, n in sizes.items()
    ]  # fmt: skip


def _run(algorithm: str, score: float, *, dataset: str = "ds", seed: int = 0, size: int = FULL,
         n: int = 1000, fit: float = 1.0, device: str = "cpu", purpose: str = "curve",
         pre: float = 0.001, **extra: Any) -> Run:  # fmt: skip
    paradigm = DEEP if algorithm == "net" else CLASSICAL
    return Run(
        purpose=purpose, dataset=dataset, algorithm=algorithm, paradigm=paradigm, seed=seed,
        size=size, ok=True, device=device,
        metrics={"accuracy": score, "fit_seconds": fit, "train_samples": float(n),
                 "preprocessing_seconds": pre},
        cost={"device_seconds": fit + 1.5, "joules": 10 * (fit + 1.5), "dollars": 1e-5,
              "energy_source": "estimate"},
        **extra,
    )  # fmt: skip


def _measure(runs: list[Run], **fields: Any) -> Measurements:
    m = Measurements(catalog=_catalog(), runs=runs, gpu={"present": False, "how": "test"})
    m.datasets = {"ds": {"task": "classification", "image_shape": [8, 8]}}
    for key, value in fields.items():
        setattr(m, key, value)
    return m


def _curves(classical: dict[int, float], deep: dict[int, float], seeds: int = 3) -> list[Run]:
    """Runs at each size (FULL as the largest key) with a tiny spread over seeds."""
    runs = []
    for algorithm, curve in (("lr", classical), ("net", deep)):
        largest = max(curve)
        for size, score in curve.items():
            for seed in range(seeds):
                runs.append(
                    _run(algorithm, score + 0.001 * seed, seed=seed,
                         size=FULL if size == largest else size, n=size)
                )  # fmt: skip
    return runs


@pytest.mark.parametrize(
    ("classical", "deep", "expected"),
    [
        ({100: 0.96, 400: 0.97, 1000: 0.97}, {100: 0.6, 400: 0.9, 1000: 0.97}, HELD),
        ({100: 0.95, 400: 0.97, 1000: 0.97}, {100: 0.96, 400: 0.97, 1000: 0.975}, NOT_HELD),
        ({100: 0.90, 150: 0.96, 1000: 0.97}, {100: 0.9, 150: 0.9, 200: 0.96, 1000: 0.97}, DEPENDS),
        ({100: 0.96, 1000: 0.97}, {100: 0.5, 1000: 0.6}, HELD),  # deep never gets there
    ],
)
def test_data_rule(classical: dict[int, float], deep: dict[int, float], expected: str) -> None:
    row = verdicts.data_row(_measure(_curves(classical, deep)))
    assert row.verdict == expected, row.evidence


def test_data_rule_needs_both_paradigms_and_datasets_must_agree() -> None:
    only_classical = [
        r for r in _curves({100: 0.9, 1000: 0.95}, {100: 0.9}) if r.paradigm == CLASSICAL
    ]
    assert verdicts.data_row(_measure(only_classical)).verdict == DEPENDS
    held = _curves({100: 0.96, 1000: 0.97}, {100: 0.5, 1000: 0.97})
    not_held = [
        Run(**{**r.__dict__, "dataset": "other"})
        for r in _curves({100: 0.95, 1000: 0.97}, {100: 0.97, 1000: 0.97})
    ]
    assert verdicts.data_row(_measure(held + not_held)).verdict == DEPENDS


@pytest.mark.parametrize(
    ("classical", "deep", "expected"),
    [
        ([0.90, 0.91, 0.905], [0.97, 0.975, 0.972], HELD),
        ([0.97, 0.975, 0.972], [0.90, 0.91, 0.905], NOT_HELD),
        ([0.90, 0.99, 0.95], [0.93, 0.96, 0.94], DEPENDS),
        ([0.90], [0.99], DEPENDS),  # one seed: no interval, no verdict
    ],
)
def test_accuracy_rule(classical: list[float], deep: list[float], expected: str) -> None:
    runs = [_run("lr", s, seed=i) for i, s in enumerate(classical)]
    runs += [_run("net", s, seed=i) for i, s in enumerate(deep)]
    assert verdicts.accuracy_row(_measure(runs)).verdict == expected


@pytest.mark.parametrize(
    ("gpu", "cpu_fit", "gpu_fit", "expected"),
    [
        (False, 5.0, None, NOT_HELD),
        (False, 500.0, None, DEPENDS),
        (True, 500.0, 20.0, HELD),
        (True, 500.0, 400.0, DEPENDS),
        (True, 5.0, 1.0, NOT_HELD),
    ],
)
def test_hardware_rule(gpu: bool, cpu_fit: float, gpu_fit: float | None, expected: str) -> None:
    runs = [_run("lr", 0.9, fit=0.1)]
    if gpu:
        assert gpu_fit is not None
        runs.append(_run("net", 0.95, fit=gpu_fit, device="cuda"))
        runs.append(_run("net", 0.95, fit=cpu_fit, purpose="hardware", device_requested="cpu"))
    else:
        runs += [_run("net", 0.95, fit=cpu_fit)]
    m = _measure(runs, gpu={"present": gpu, "how": "test"})
    row = verdicts.hardware_row(m)
    assert row.verdict == expected, row.evidence
    assert ("no GPU on this run" in row.key) == (not gpu)


@pytest.mark.parametrize(
    ("classical", "deep", "image", "expected"),
    [(0.90, 0.97, True, HELD), (0.97, 0.972, True, NOT_HELD), (0.95, 0.97, True, DEPENDS),
     (0.90, 0.97, False, DEPENDS)],
)  # fmt: skip
def test_engineering_rule(classical: float, deep: float, image: bool, expected: str) -> None:
    m = _measure([_run("lr", classical, preprocessing=["standardizing features"]),
                  _run("net", deep)])  # fmt: skip
    if not image:
        m.datasets["ds"]["image_shape"] = []
    row = verdicts.engineering_row(m)
    assert row.verdict == expected
    assert any("standardizing features" in e for e in row.evidence)


@pytest.mark.parametrize(
    ("lr_fit", "rf_fit", "net_fit", "expected"),
    [(0.01, 0.2, 3.0, HELD), (5.0, 9.0, 1.0, NOT_HELD), (0.01, 9.0, 3.0, DEPENDS)],
)
def test_training_time_rule(lr_fit: float, rf_fit: float, net_fit: float, expected: str) -> None:
    runs = [_run("lr", 0.9, fit=lr_fit), _run("rf", 0.9, fit=rf_fit), _run("net", 0.9, fit=net_fit)]
    assert verdicts.training_time_row(_measure(runs)).verdict == expected


def _tuned(algorithm: str, default: float, best: float) -> tuple[list[Run], dict[str, Any]]:
    """Defaults on seeds 0-2, one trial (index 0) scoring `best` on every seed."""
    runs = [_run(algorithm, default, seed=s) for s in range(3)]
    runs += [_run(algorithm, best, seed=s, purpose="tune", trial=0) for s in range(3)]
    record = {
        "algorithm": algorithm, "paradigm": DEEP if algorithm == "net" else CLASSICAL,
        "dataset": "ds", "search_seed": 0, "held_out_seeds": [1, 2], "box": {},
        "space": {"dims": 2, "continuous": 1, "log10_discrete": 1.0}, "trials": 1,
        "best_trial": 0, "best_params": {"p0": 0.5},
    }  # fmt: skip
    return runs, record


@pytest.mark.parametrize(
    ("deep_dims", "deep_gain", "classical_gain", "expected"),
    [(8, 0.05, 0.01, HELD), (2, 0.0, 0.03, NOT_HELD), (8, 0.0, 0.03, DEPENDS),
     (2, 0.05, 0.01, DEPENDS)],
)  # fmt: skip
def test_tuning_rule(
    deep_dims: int, deep_gain: float, classical_gain: float, expected: str
) -> None:
    runs_c, record_c = _tuned("lr", 0.90, 0.90 + classical_gain)
    runs_d, record_d = _tuned("net", 0.90, 0.90 + deep_gain)
    m = _measure(runs_c + runs_d, tuning=[record_c, record_d], catalog=_catalog(deep_dims, 2))
    row = verdicts.tuning_row(m)
    assert row.verdict == expected, row.evidence
    gains = {t.algorithm: t.gain for t in verdicts.tuning_results(m)}
    assert gains["net"] == pytest.approx(deep_gain) and gains["lr"] == pytest.approx(classical_gain)


def test_tuning_keeps_the_defaults_when_no_trial_beats_them() -> None:
    runs, record = _tuned("lr", 0.95, 0.80)
    record |= {"best_trial": -1, "best_params": {}}
    [result] = verdicts.tuning_results(_measure(runs, tuning=[record]))
    assert result.gain == 0.0 and result.search_best == pytest.approx(0.80)
    assert verdicts.tuning_row(_measure(runs, tuning=[record])).verdict == DEPENDS  # no deep search


@pytest.mark.parametrize(
    ("deep_pre", "expected"), [(7200.0, HELD), (0.002, NOT_HELD), (600.0, DEPENDS)]
)
def test_processing_rule(deep_pre: float, expected: str) -> None:
    runs = [_run("lr", 0.9, pre=0.001), _run("net", 0.9, pre=deep_pre)]
    assert verdicts.processing_row(_measure(runs)).verdict == expected


@pytest.mark.parametrize(
    ("guide", "expected"),
    [({CLASSICAL: 9, DEEP: 3}, HELD), ({CLASSICAL: 7, DEEP: 6}, DEPENDS), (None, DEPENDS)],
)
def test_algorithms_rule(guide: dict[str, int] | None, expected: str) -> None:
    assert verdicts.algorithms_row(_measure([]), guide).verdict == expected
    # A catalog with as many deep algorithms as classical ones, and a guide that agrees.
    flat = _measure([], catalog=_catalog()[1:])
    assert verdicts.algorithms_row(flat, {CLASSICAL: 2, DEEP: 2}).verdict == NOT_HELD


def _explanation(algorithm: str, native_kind: str, natives: list[float] | None) -> dict[str, Any]:
    importances = [0.3, 0.2, 0.1, 0.0]
    return {
        "algorithm": algorithm, "paradigm": DEEP if algorithm == "net" else CLASSICAL,
        "model": algorithm, "version": "1", "rows": 10, "metric": "accuracy",
        "baseline_score": 0.9, "native_kind": native_kind, "seconds": 1.0,
        "cost": {"device_seconds": 1.0, "joules": 10.0, "dollars": 1e-5, "energy_source": "x"},
        "features": [
            {"feature": f"x{i}", "importance_mean": v, "importance_std": 0.0,
             "native": None if natives is None else natives[i]}
            for i, v in enumerate(importances)
        ],
    }  # fmt: skip


OPAQUE_NET = _explanation("net", "", None)


@pytest.mark.parametrize(
    ("explanations", "expected"),
    [
        ([_explanation("lr", "coefficients", [4, 3, 2, 1]), OPAQUE_NET], HELD),
        ([_explanation("lr", "coefficients", [1, 2, 3, 4]), OPAQUE_NET], DEPENDS),
        ([_explanation("lr", "", None), OPAQUE_NET], NOT_HELD),
        ([_explanation("lr", "coefficients", [4, 3, 2, 1]),
          _explanation("net", "feature_importances", [4, 3, 2, 1])], NOT_HELD),
        ([{"algorithm": "lr", "paradigm": CLASSICAL, "error": "UNIMPLEMENTED: later"}], DEPENDS),
    ],
)  # fmt: skip
def test_interpretation_rule(explanations: list[dict[str, Any]], expected: str) -> None:
    row = verdicts.interpretation_row(_measure([], explanations=explanations))
    assert row.verdict == expected, row.key


def test_report_has_every_row_from_synthetic_measurements(tmp_path: Path) -> None:
    m = _measure(_curves({100: 0.9, 1000: 0.97}, {100: 0.6, 1000: 0.98}))
    rows = verdicts.all_rows(m)
    assert [r.row for r in rows] == list(verdicts.ROW_NAMES)
    text = write_report(m, rows, {}, tmp_path / "report.md")
    for row in rows:
        assert f"| {row.row} |" in text and row.rule in text
    # JSON round trip keeps every run, and the report can be rebuilt from the JSON alone.
    m.write(tmp_path / "results.json")
    assert Measurements.read(tmp_path / "results.json").runs == m.runs
    again = tmp_path / "again"
    assert driver.main(["--from-json", str(tmp_path / "results.json"), "--out", str(again)]) == 0
    assert (again / "report.md").read_text().count("**") == text.count("**")
    assert (again / "learning_curves.png").read_bytes().startswith(b"\x89PNG")


# -- helpers --------------------------------------------------------------------------------


def test_serving_cost_per_paradigm_counts_only_the_served_models() -> None:
    def model(paradigm: str, predictions: int, dollars: float) -> dict[str, Any]:
        total = {"device_seconds": dollars * 10, "joules": dollars * 100, "dollars": dollars,
                 "energy_source": "estimate"}  # fmt: skip
        return {"paradigm": paradigm, "device": "cpu", "predictions": predictions, "total": total}

    groups = per_paradigm(
        [model(CLASSICAL, 1000, 1e-6), model(CLASSICAL, 3000, 3e-6), model(DEEP, 500, 5e-5)]
    )
    assert [(g["paradigm"], g["predictions"]) for g in groups] == [(CLASSICAL, 4000), (DEEP, 500)]
    assert groups[0]["per_1k"]["dollars"] == pytest.approx(1e-6)
    assert groups[1]["per_1k"]["joules"] == pytest.approx(1e-2)
    assert groups[1]["per_1k"]["energy_source"] == "estimate"


def test_space_size_and_samples_stay_inside_the_catalog() -> None:
    algorithm = {
        "name": "svm",
        "hyperparameters": [
            _param("C", "float", 1e-6, 1e6),
            _param("kernel", "choice", choices=("rbf", "linear")),
            _param("epochs", "int", 1, 1000),
            _param("shuffle", "bool"),
        ],
    }
    size = tuning.space_size(algorithm)
    assert size == {"dims": 4, "continuous": 1,
                    "log10_discrete": pytest.approx(math.log10(2 * 1000 * 2))}  # fmt: skip
    configs = tuning.sample(algorithm, 20, seed=0)
    assert configs == tuning.sample(algorithm, 20, seed=0)  # seeded
    for config in configs:
        assert 1e-3 <= config["C"] <= 1e3  # catalog range inside the budget box
        assert 5 <= config["epochs"] <= 30 and isinstance(config["epochs"], int)
        assert config["kernel"] in ("rbf", "linear") and isinstance(config["shuffle"], bool)
    assert tuning.describe_box(algorithm)["C"] == "[0.001, 1000] log"


def test_intervals() -> None:
    s = summarize([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.std == 1.0
    assert s.half_width == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)
    assert math.isnan(summarize([1.0]).half_width)
    d = welch(summarize([1.0, 1.1, 0.9]), summarize([0.0, 0.1, -0.1]))
    assert d.estimate == pytest.approx(1.0) and 0 < d.low < d.high
