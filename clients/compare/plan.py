"""What a compare run measures: datasets, sizes, seeds, algorithms and the side experiments.

Three plans: `default_plan()` (`make compare`, under 10 minutes on a 2-core CPU),
`full_plan()` (`--full`: the 28x28 scale dataset with sizes up to 60 000, for a big machine)
and `tiny_plan()` (the end-to-end test). A size of 0 means the whole training split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FULL = 0


@dataclass(frozen=True)
class GenerateSpec:
    """A dataset the server generates when it does not exist yet (GenerateDataset)."""

    generator: str = "digits_scaled"
    n_samples: int = 70_000
    image_size: int = 28
    seed: int = 0


@dataclass(frozen=True)
class DatasetPlan:
    """Learning curves on one dataset: every algorithm at every size for every seed."""

    name: str
    algorithms: tuple[str, ...]
    sizes: tuple[int, ...]
    #: Held-out fraction for evaluation; 0 means the server's default (0.25).
    test_fraction: float = 0.0
    generate: GenerateSpec | None = None
    #: Upload this many generated reviews (clients/bench/reviews.py) when it is missing.
    reviews: int = 0
    #: Hyperparameters that differ from the catalog defaults, per algorithm (kept small).
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TuningPlan:
    """A budgeted random search per algorithm, on one dataset at its full training split.

    Trials are scored on the first seed's split; the best configuration and the defaults
    are then compared on the other seeds' splits, which the search never saw.
    """

    dataset: str
    algorithms: tuple[str, ...]
    trials: int = 6
    seed: int = 0


@dataclass(frozen=True)
class ExplainPlan:
    """Explain one model per algorithm (trained at full size, first seed) on its dataset."""

    dataset: str
    algorithms: tuple[str, ...]
    n_repeats: int = 5
    max_rows: int = 2000


@dataclass(frozen=True)
class ServingPlan:
    """Closed-loop load (one stream) at each batch size for one model per algorithm."""

    dataset: str
    algorithms: tuple[str, ...]
    batches: tuple[int, ...] = (1, 16, 256)
    duration_s: float = 2.0
    warmup_s: float = 0.5


@dataclass(frozen=True)
class Plan:
    name: str
    datasets: tuple[DatasetPlan, ...]
    seeds: tuple[int, ...]
    tuning: TuningPlan | None
    explain: ExplainPlan | None
    serving: ServingPlan | None
    #: Training jobs kept in flight at once (the server runs max_concurrent_jobs of them).
    parallel_jobs: int = 2

    def dataset(self, name: str) -> DatasetPlan | None:
        return next((d for d in self.datasets if d.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The built-in mixed table (categories, blanks, named species): one-hot classical against
#: the MLP on the same columns.
DATASET_PENGUINS = DatasetPlan(
    "penguins", ("logistic_regression", "random_forest", "mlp"), (30, 60, 120, FULL)
)
#: Images as a folder of scans would upload (uint8 pixels served raw): classical on raw
#: pixels, classical on hand-made HOG features, and the networks on raw pixels.
DATASET_IMAGES = DatasetPlan(
    "digits_images",
    ("logistic_regression", "logistic_regression+hog", "mlp", "cnn"),
    (100, 400, FULL),
)
#: Text: TF-IDF (classical) against word vectors the networks learn, on generated reviews.
DATASET_TEXT = DatasetPlan(
    "reviews", ("logistic_regression", "naive_bayes", "mlp", "lstm"), (200, FULL), reviews=1500
)


def default_plan() -> Plan:
    """`make compare`: digits (8x8 images), breast_cancer (numeric table) and penguins (a
    table with words and blanks), 3 seeds."""
    return Plan(
        name="default",
        datasets=(
            DatasetPlan(
                "digits",
                ("logistic_regression", "random_forest", "mlp", "cnn"),
                (50, 100, 200, 400, 800, FULL),
            ),
            DatasetPlan(
                "breast_cancer",
                ("logistic_regression", "random_forest", "mlp"),
                (50, 100, 200, FULL),
            ),
            DATASET_PENGUINS,
            DATASET_IMAGES,
            DATASET_TEXT,
        ),
        seeds=(0, 1, 2),
        tuning=TuningPlan("digits", ("logistic_regression", "mlp"), trials=6),
        explain=ExplainPlan(
            "breast_cancer", ("logistic_regression", "random_forest", "mlp"), n_repeats=20
        ),
        serving=ServingPlan("digits", ("logistic_regression", "cnn")),
    )


SCALE_DATASET = "compare-scale"


def full_plan() -> Plan:
    """`--full`: the 28x28 scale dataset up to 60 000 training rows, more seeds and algorithms.

    Meant for a machine with a GPU (or hours of CPU): the CNN at 60 000 rows is the
    expensive part.
    """
    scale = DatasetPlan(
        SCALE_DATASET,
        ("logistic_regression", "random_forest", "gradient_boosting", "mlp", "cnn"),
        (100, 300, 1000, 3000, 10_000, 30_000, FULL),
        # 70 000 rows: 10 000 held out, 60 000 to train on at FULL.
        test_fraction=1 / 7,
        generate=GenerateSpec(n_samples=70_000),
    )
    return Plan(
        name="full",
        datasets=(
            scale,
            DatasetPlan(
                "digits",
                ("logistic_regression", "random_forest", "svm", "knn", "mlp", "cnn", "lstm"),
                (50, 100, 200, 400, 800, FULL),
            ),
            DatasetPlan(
                "breast_cancer",
                ("logistic_regression", "random_forest", "svm", "naive_bayes", "mlp"),
                (50, 100, 200, FULL),
            ),
            DatasetPlan("diabetes", ("ridge", "random_forest", "mlp"), (50, 100, 200, FULL)),
            DATASET_PENGUINS,
            DATASET_IMAGES,
            DATASET_TEXT,
        ),
        seeds=(0, 1, 2, 3, 4),
        tuning=TuningPlan("digits", ("svm", "random_forest", "mlp", "cnn"), trials=12),
        explain=ExplainPlan(
            "breast_cancer", ("logistic_regression", "random_forest", "mlp"), n_repeats=20
        ),
        serving=ServingPlan(
            SCALE_DATASET,
            ("logistic_regression", "cnn"),
            batches=(1, 4, 16, 64, 256, 1024),
            duration_s=5.0,
            warmup_s=1.0,
        ),
    )


def tiny_plan() -> Plan:
    """The end-to-end test: one small dataset, two sizes, one seed, one algorithm each."""
    return Plan(
        name="tiny",
        datasets=(DatasetPlan("iris", ("logistic_regression", "mlp"), (30, FULL)),),
        seeds=(0, 1),
        tuning=TuningPlan("iris", ("logistic_regression", "mlp"), trials=1),
        explain=ExplainPlan("iris", ("logistic_regression", "mlp"), n_repeats=2, max_rows=100),
        serving=ServingPlan(
            "iris", ("logistic_regression", "mlp"), batches=(1, 8), duration_s=0.4, warmup_s=0.1
        ),
        parallel_jobs=2,
    )


PLANS = {"default": default_plan, "full": full_plan, "tiny": tiny_plan}
