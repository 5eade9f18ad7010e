"""What work cost: device-seconds, joules and dollars, per phase and model version.

Every charge goes to the Prometheus counters and to an in-process ledger that the cost
report RPC reads (serving since this process started; training from the manifests).
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field

from service.cost.energy import CpuEnergyMeter
from service.cost.nvml import Nvml
from service.metrics import Metrics, ServingSeries


@dataclass
class Charge:
    """What one piece of work consumed."""

    device_seconds: float = 0.0
    joules: float = 0.0
    dollars: float = 0.0
    energy_source: str = ""

    def add(self, other: Charge) -> None:
        self.device_seconds += other.device_seconds
        self.joules += other.joules
        self.dollars += other.dollars
        self.energy_source = other.energy_source or self.energy_source


@dataclass
class ServingTotals:
    """A model version's serving totals since the server started."""

    paradigm: str
    model: str
    version: str
    algorithm: str
    device: str
    predictions: int = 0
    requests: int = 0
    charge: Charge | None = None


@dataclass
class ServingTap:
    """The serving charges of the requests made in one context: a probe's own bill.

    Set in `serving_tap` around a caller's requests; the data plane runs each batch in its
    (first) request's context, so the ledger finds the tap there and adds the run to it. A
    probe request batched together with others brings the whole batch's charge and rows,
    so per-row figures stay right.
    """

    runs: int = 0
    rows: int = 0
    charge: Charge = field(default_factory=Charge)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, rows: int, charge: Charge) -> None:
        with self._lock:
            self.runs += 1
            self.rows += rows
            self.charge.add(charge)


#: The tap of the current context, if any (see ServingTap).
serving_tap: ContextVar[ServingTap | None] = ContextVar("serving_tap", default=None)


class GpuEnergyMeter:
    """Joules per busy GPU-second, from NVML's energy counter shared out by busy time."""

    def __init__(self, nvml: Nvml, index: int = 0) -> None:
        self._nvml = nvml
        self._index = index
        self._lock = threading.Lock()
        self._last_energy = nvml.energy_joules(index)
        self._busy_since_last = 0.0
        readings = nvml.readings()
        # Until a busy interval is measured, the current draw is the best rate there is.
        self._joules_per_second = readings[index].power_watts if readings else 0.0

    def charge(self, busy_seconds: float) -> float:
        with self._lock:
            self._busy_since_last += busy_seconds
            return busy_seconds * self._joules_per_second

    def sample(self) -> None:
        energy = self._nvml.energy_joules(self._index)
        with self._lock:
            delta, self._last_energy = energy - self._last_energy, energy
            if self._busy_since_last > 0:
                self._joules_per_second = delta / self._busy_since_last
            self._busy_since_last = 0.0


class CostLedger:
    """Prices work and records it in the metrics and in the ledger."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        cpu_meter: CpuEnergyMeter,
        cpu_price_per_core_hour: float,
        gpu_price_per_hour: float,
        gpu_meter: GpuEnergyMeter | None = None,
    ) -> None:
        self._metrics = metrics
        self.cpu_meter = cpu_meter
        self.gpu_meter = gpu_meter
        self._prices = {"cpu": cpu_price_per_core_hour, "cuda": gpu_price_per_hour}
        self._lock = threading.Lock()
        self._serving: dict[tuple[str, str], ServingTotals] = {}
        for device, price in self._prices.items():
            metrics.device_price.labels(device).set(price)
        metrics.energy_source.labels("cpu", cpu_meter.source).set(1)
        if gpu_meter is not None:
            metrics.energy_source.labels("cuda", "nvml").set(1)

    def energy_source(self, device: str) -> str:
        """How energy is obtained on a device here; "" where it cannot be (GPU, no NVML)."""
        if device == "cuda":
            return "nvml" if self.gpu_meter is not None else ""
        return self.cpu_meter.source

    def price(self, device: str, device_seconds: float, gpu_joules: float | None = None) -> Charge:
        """Joules and dollars for device-seconds on a device (GPU joules if measured)."""
        dollars = device_seconds / 3600.0 * self._prices.get(device, 0.0)
        if device == "cuda":
            if gpu_joules is not None:
                return Charge(device_seconds, gpu_joules, dollars, "nvml")
            if self.gpu_meter is not None:
                return Charge(
                    device_seconds, self.gpu_meter.charge(device_seconds), dollars, "nvml"
                )
            return Charge(device_seconds, 0.0, dollars, "")
        return Charge(
            device_seconds, self.cpu_meter.joules(device_seconds), dollars, self.cpu_meter.source
        )

    def serve(self, series: ServingSeries, rows: int, device_seconds: float) -> None:
        """Charges one model run; called from the inference thread that ran it."""
        paradigm, model, version, algorithm, device = series.labels
        charge = self.price(device, device_seconds)
        series.device_seconds.inc(charge.device_seconds)
        series.cost.inc(charge.dollars)
        if series.energy is not None:
            series.energy.inc(charge.joules)
        with self._lock:
            totals = self._serving.get((model, version))
            if totals is None:
                totals = self._serving[(model, version)] = ServingTotals(
                    paradigm, model, version, algorithm, device, charge=Charge()
                )
            totals.predictions += rows
            totals.requests += 1
            assert totals.charge is not None
            totals.charge.add(charge)
        tap = serving_tap.get()
        if tap is not None:
            tap.record(rows, charge)

    def price_training(
        self, cpu_seconds: float, gpu_seconds: float = 0.0, gpu_joules: float | None = None
    ) -> dict[str, Charge]:
        """What a job cost per device: its workers' CPU time, and GPU time if it used one."""
        charges = {"cpu": self.price("cpu", cpu_seconds)}
        if gpu_seconds > 0:
            charges["cuda"] = self.price("cuda", gpu_seconds, gpu_joules)
        return charges

    def record_training(
        self, charges: dict[str, Charge], *, paradigm: str, model: str, version: str,
        algorithm: str, phase: str = "train",
    ) -> None:  # fmt: skip
        """Adds a priced job (phase "train") or explanation ("explain") to the cost counters
        (after the job's own counter, so a scrape in between sees a job without its cost
        rather than a cost without a job)."""
        for device, charge in charges.items():
            labels = (phase, paradigm, model, version, algorithm, device)
            self._metrics.device_seconds.labels(*labels).inc(charge.device_seconds)
            self._metrics.cost.labels(*labels).inc(charge.dollars)
            if charge.energy_source:
                self._metrics.energy.labels(*labels, charge.energy_source).inc(charge.joules)

    def serving_totals(self) -> list[ServingTotals]:
        with self._lock:
            return [
                ServingTotals(**{**vars(t), "charge": Charge(**vars(t.charge))})  # a copy
                for t in self._serving.values()
                if t.charge is not None
            ]
