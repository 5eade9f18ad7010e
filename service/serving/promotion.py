"""Promotion: moving an alias to a version only on evidence.

`Promoter.promote` checks the gates asked for, then points the alias at the version and
keeps the evidence in the alias history; any failed gate refuses the whole promotion with
one FailedPrecondition that names every failed gate and by how much.

The gates:
- parity: the version was checked against its native model when it was made (every
  trained model and skops import is, or it is not published; an ONNX import has nothing
  to be checked against, so it fails this gate).
- metric: its held-out metric is at least the current holder's minus epsilon (at most
  plus epsilon for error metrics), on the same test rows. When both were split from the
  same dataset (same fingerprint) with the same seed and test fraction, the metrics
  recorded at training are on the same rows and are compared (the evidence says so);
  otherwise both are scored afresh in a worker on the rows that both held out from
  training (`compare`, the Explainer's; array datasets), and pairs that have no such rows
  (other datasets, imports, tables) are refused as not comparable.
- latency and energy: the serving probe (service/serving/probe.py) serves the version
  through the data plane at batch 1 and 64; the worse p99 and the worse joules per 1 000
  predictions of the two must be within the budgets.

The holder is read before the gates and the alias is set only if it has not moved since
(compare-and-set in the metadata store), so two promotions never both win on stale
evidence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from service.cost.ledger import Charge
from service.errors import FailedPrecondition, InvalidArgument
from service.registry.aliases import AliasEvent, validate_alias
from service.registry.manifest import Manifest
from service.registry.store import ModelRegistry, validate_model_name
from service.serving.dataplane import DataPlane
from service.serving.probe import DEFAULT_REQUESTS, MAX_REQUESTS, probe_serving

log = logging.getLogger(__name__)

#: The metric compared when none is named, by task.
DEFAULT_METRICS = {
    "classification": "accuracy",
    "regression": "r2",
    "anomaly_detection": "reconstruction_rmse",
}
#: Metrics where less is better: the holder's figure plus epsilon is the bar.
LOWER_IS_BETTER = frozenset(
    ("rmse", "mae", "mse", "loss", "log_loss", "reconstruction_rmse", "val_rmse", "val_loss")
)
PROBE_BATCH_SIZES = (1, 64)

#: Scores (candidate, holder) on the rows both held out, by metric: (rows, candidate's
#: score, holder's score, what it cost). service/training/explain.py's Explainer.compare,
#: wired in by the app (serving does not import training).
CompareOnSharedRows = Callable[
    [Manifest, Manifest, str], Awaitable[tuple[int, float, float, Charge]]
]


@dataclass(frozen=True)
class Gates:
    """What a version must show before an alias moves to it; unset gates are not checked."""

    require_parity: bool = False
    #: None: no metric gate.
    metric_epsilon: float | None = None
    #: "" takes DEFAULT_METRICS[task].
    metric: str = ""
    #: 0: no budget.
    max_p99_ms: float = 0.0
    max_joules_per_1k: float = 0.0
    #: Requests per batch size of the serving probe; 0: DEFAULT_REQUESTS.
    probe_requests: int = 0

    @property
    def probes(self) -> bool:
        return self.max_p99_ms > 0 or self.max_joules_per_1k > 0

    def check(self) -> None:
        if self.metric_epsilon is not None and not self.metric_epsilon >= 0:
            raise InvalidArgument(f"metric_epsilon {self.metric_epsilon} must be 0 or more")
        if not (self.max_p99_ms >= 0 and self.max_joules_per_1k >= 0):
            raise InvalidArgument("max_p99_ms and max_joules_per_1k must be 0 (none) or more")
        if not 0 <= self.probe_requests <= MAX_REQUESTS:
            raise InvalidArgument(
                f"probe_requests {self.probe_requests} must be between 0 (meaning "
                f"{DEFAULT_REQUESTS}) and {MAX_REQUESTS}"
            )


@dataclass
class _Verdict:
    #: Per gate checked: passed, and its figures.
    evidence: dict[str, Any]
    failures: list[str]
    #: The serving probe's figures, when a budget needed them.
    probe: dict[str, Any] | None = None


class Promoter:
    """Moves aliases on evidence; the one entry point for the RPC and for searches."""

    def __init__(
        self,
        registry: ModelRegistry,
        dataplane: DataPlane,
        compare: CompareOnSharedRows | None = None,
    ) -> None:
        self._registry = registry
        self._dataplane = dataplane
        self._compare = compare

    async def promote(
        self,
        name: str,
        version: str,
        alias: str,
        gates: Gates | None = None,
        *,
        note: str = "",
        source: str = "",
    ) -> AliasEvent:
        """Points alias at version (a number, "latest" or another alias) if every gate
        passes; FailedPrecondition naming each failed gate otherwise. `source` says who
        promoted (e.g. "search 1234"), kept with the evidence."""
        gates = gates or Gates()
        gates.check()
        validate_model_name(name)
        validate_alias(alias)
        candidate = await asyncio.to_thread(self._registry.get, name, version)
        holder_version = await asyncio.to_thread(self._holder, name, alias)
        holder = (
            await asyncio.to_thread(self._registry.get, name, holder_version)
            if holder_version
            else None
        )
        verdict = _Verdict(evidence={}, failures=[])
        if gates.require_parity:
            _parity_gate(candidate, verdict)
        if gates.metric_epsilon is not None:
            await self._metric_gate(candidate, holder, gates, verdict)
        if gates.probes:
            await self._serving_gates(candidate, gates, verdict)
        what = f"version {candidate.version} of {name!r} to alias {alias!r}"
        if verdict.failures:
            raise FailedPrecondition(f"not promoting {what}: " + "; ".join(verdict.failures))
        evidence: dict[str, Any] = {"gates": verdict.evidence}
        if verdict.probe is not None:
            evidence["probe"] = verdict.probe
        if note:
            evidence["note"] = note
        if source:
            evidence["source"] = source
        event = await asyncio.to_thread(
            self._registry.set_alias,
            name,
            alias,
            candidate.version,
            evidence,
            expected=holder_version,
        )
        log.info("promoted %s (gates: %s)", what, ", ".join(verdict.evidence) or "none")
        return event

    async def _metric_gate(
        self, candidate: Manifest, holder: Manifest | None, gates: Gates, verdict: _Verdict
    ) -> None:
        epsilon = gates.metric_epsilon or 0.0
        metric = gates.metric or DEFAULT_METRICS.get(candidate.task, "")
        record: dict[str, Any] = {"metric": metric, "epsilon": epsilon}
        verdict.evidence["metric"] = record
        if not metric:
            record["passed"] = False
            verdict.failures.append(
                f"metric gate: version {candidate.version} has no task, so there is no "
                "default metric; name one"
            )
            return
        if holder is None or holder.version == candidate.version:
            record["passed"] = True
            record["rows"] = "no current holder" if holder is None else "the holder itself"
            return
        record["holder_version"] = holder.version
        mismatch = _same_rows(candidate, holder)
        if mismatch:
            scores = await self._shared_rows(candidate, holder, metric, mismatch, record, verdict)
            if scores is None:
                return
            value, held = scores
        else:
            recorded = candidate.metrics.get(metric), holder.metrics.get(metric)
            if recorded[0] is None or recorded[1] is None:
                missing = [
                    f"version {m.version}"
                    for m, v in zip((candidate, holder), recorded, strict=True)
                    if v is None
                ]
                record["passed"] = False
                verdict.failures.append(
                    f"metric gate: {' and '.join(missing)} record no {metric!r} (version "
                    f"{candidate.version} has {sorted(candidate.metrics)})"
                )
                return
            value, held = recorded[0], recorded[1]
            record["rows"] = (
                f"the same held-out rows: dataset {candidate.dataset!r} (fingerprint "
                f"{candidate.dataset_fingerprint[:12]}), split seed {candidate.split_seed}, "
                f"test fraction {candidate.test_fraction:g}; compared the metrics recorded "
                "at training"
            )
        record["candidate"], record["holder"] = value, held
        lower = metric in LOWER_IS_BETTER
        bar = held + epsilon if lower else held - epsilon
        passed = value <= bar if lower else value >= bar
        record["passed"] = passed
        record["bar"] = bar
        if not passed:
            direction = "above" if lower else "below"
            verdict.failures.append(
                f"metric gate: {metric} {value:.4f} of version {candidate.version} is "
                f"{abs(value - held):.4f} {direction} holder version {holder.version}'s "
                f"{held:.4f}, more than the allowed {epsilon:g} (missed by "
                f"{abs(value - bar):.4f})"
            )

    async def _shared_rows(
        self,
        candidate: Manifest,
        holder: Manifest,
        metric: str,
        mismatch: str,
        record: dict[str, Any],
        verdict: _Verdict,
    ) -> tuple[float, float] | None:
        """Both scored afresh on the rows both held out, where their recorded metrics are
        not on the same rows; None (with the failure recorded) where that cannot be done."""
        pair = f"versions {candidate.version} and {holder.version}"
        if self._compare is None:
            reason = "this server cannot score models afresh"
        else:
            try:
                rows, value, held, charge = await self._compare(candidate, holder, metric)
            except (FailedPrecondition, InvalidArgument) as exc:
                # Not comparable (too few shared rows, a table...): the gate fails. A busy or
                # stopping worker (RESOURCE_EXHAUSTED, UNAVAILABLE...) is the caller's to retry.
                reason = str(exc)
            else:
                record["rows"] = (
                    f"{rows} rows of dataset {candidate.dataset!r} (fingerprint "
                    f"{candidate.dataset_fingerprint[:12]}) held out from training by both "
                    f"(their recorded metrics are on different rows: {mismatch}); both "
                    "scored afresh on them through ONNX Runtime"
                )
                record["shared_rows"] = rows
                record["comparison_cost"] = asdict(charge)
                return value, held
        record["passed"] = False
        verdict.failures.append(
            f"metric gate: cannot compare {metric} of {pair} on the same rows: their "
            f"recorded metrics are on different rows ({mismatch}), and {reason}"
        )
        return None

    def _holder(self, name: str, alias: str) -> str:
        """The version alias points at in the store now; "" when unset."""
        for current in self._registry.aliases(name):
            if current.alias == alias:
                return current.version
        return ""

    async def _serving_gates(self, candidate: Manifest, gates: Gates, verdict: _Verdict) -> None:
        probe = await probe_serving(
            self._dataplane,
            candidate.name,
            candidate.version,
            requests=gates.probe_requests or DEFAULT_REQUESTS,
            batch_sizes=PROBE_BATCH_SIZES,
        )
        verdict.probe = probe.to_dict()
        if gates.max_p99_ms > 0:
            worst = max(probe.batches, key=lambda m: m.p99_ms)
            passed = worst.p99_ms <= gates.max_p99_ms
            verdict.evidence["latency"] = {
                "passed": passed,
                "max_p99_ms": gates.max_p99_ms,
                "p99_ms": worst.p99_ms,
                "batch_size": worst.batch_size,
            }
            if not passed:
                verdict.failures.append(
                    f"latency gate: p99 {worst.p99_ms:.3f} ms at batch {worst.batch_size} "
                    f"is {worst.p99_ms - gates.max_p99_ms:.3f} ms over the budget of "
                    f"{gates.max_p99_ms:g} ms"
                )
        if gates.max_joules_per_1k > 0:
            worst = max(probe.batches, key=lambda m: m.joules_per_1k)
            measured = bool(probe.energy_source)
            passed = measured and worst.joules_per_1k <= gates.max_joules_per_1k
            verdict.evidence["energy"] = {
                "passed": passed,
                "max_joules_per_1k": gates.max_joules_per_1k,
                "joules_per_1k": worst.joules_per_1k,
                "batch_size": worst.batch_size,
                "energy_source": probe.energy_source,
            }
            if not measured:
                verdict.failures.append(
                    f"energy gate: energy on {probe.device} cannot be measured on this server "
                    "(no NVML), so the joules budget cannot be checked"
                )
            elif not passed:
                verdict.failures.append(
                    f"energy gate: {worst.joules_per_1k:.4g} J per 1 000 predictions at batch "
                    f"{worst.batch_size} is {worst.joules_per_1k - gates.max_joules_per_1k:.4g} J "
                    f"over the budget of {gates.max_joules_per_1k:g} J"
                )


def _parity_gate(candidate: Manifest, verdict: _Verdict) -> None:
    checked = candidate.hyperparameters.get("source_format") != "onnx"
    verdict.evidence["parity"] = {
        "passed": checked,
        "parity_max_abs_error": candidate.parity_max_abs_error,
        "checked": "when the version was made, ONNX Runtime against the native model"
        if checked
        else "never: imported as ONNX, with no native model to compare with",
    }
    if not checked:
        verdict.failures.append(
            f"parity gate: version {candidate.version} was imported as ONNX, so no parity "
            "with a native model was ever checked"
        )


def _same_rows(a: Manifest, b: Manifest) -> str:
    """Why a's and b's recorded held-out metrics are not on the same rows; "" when they are."""
    differences = [
        what
        for what, ours, theirs in (
            ("dataset", a.dataset, b.dataset),
            ("dataset fingerprint", a.dataset_fingerprint, b.dataset_fingerprint),
            ("task", a.task, b.task),
            ("split seed", a.split_seed, b.split_seed),
            ("test fraction", a.test_fraction, b.test_fraction),
        )
        if ours != theirs
    ]
    if differences:
        return "different " + ", ".join(differences)
    if not a.dataset_fingerprint or a.test_fraction <= 0:
        return "no recorded held-out split (imported, or made before splits were recorded)"
    return ""
