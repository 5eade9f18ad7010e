"""CPU energy: Intel/AMD RAPL where readable, else a labelled estimate.

RAPL's package counter measures the whole CPU package, whatever runs on it. We share it out
in proportion to busy time: a sampler reads the package energy and the machine's busy
CPU-seconds (/proc/stat) every interval, and each piece of work is charged its own
CPU-seconds times the joules per busy CPU-second of the latest interval. Without RAPL the
rate is the configured watts per busy core, and the figures say `estimate`.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")
PROC_STAT = Path("/proc/stat")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass
class _Domain:
    energy_file: Path
    max_range_uj: int
    last_uj: int


class RaplPackages:
    """The package domains (intel-rapl:N, also used on AMD); None if none are readable."""

    def __init__(self, domains: list[_Domain]) -> None:
        self._domains = domains

    @classmethod
    def open(cls, root: Path = POWERCAP) -> RaplPackages | None:
        domains = []
        for zone in sorted(root.glob("intel-rapl:*")):
            # Only top-level packages: sub-zones (core, uncore, dram) are inside them.
            if zone.name.count(":") != 1:
                continue
            try:
                if not (zone / "name").read_text().startswith("package"):
                    continue
                energy_file = zone / "energy_uj"
                domains.append(
                    _Domain(
                        energy_file=energy_file,
                        max_range_uj=int((zone / "max_energy_range_uj").read_text()),
                        last_uj=int(energy_file.read_text()),
                    )
                )
            except (OSError, ValueError):
                # Since 2020 kernels make energy_uj root-only (PLATYPUS); unreadable = absent.
                continue
        return cls(domains) if domains else None

    def read_delta_joules(self) -> float:
        """Joules used by all packages since the last call, across counter wraparound."""
        total_uj = 0
        for domain in self._domains:
            now = int(domain.energy_file.read_text())
            delta = now - domain.last_uj
            if delta < 0:  # the counter wrapped at max_energy_range_uj
                delta += domain.max_range_uj
            domain.last_uj = now
            total_uj += delta
        return total_uj / 1e6


def busy_cpu_seconds(stat: Path = PROC_STAT) -> float:
    """Machine-wide CPU-seconds spent not idle (user, nice, system, irq, softirq, steal)."""
    fields = stat.read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_SECOND


class CpuEnergyMeter:
    """Joules for a number of CPU-seconds, measured (rapl) or estimated."""

    def __init__(
        self,
        watts_per_core: float,
        *,
        interval: float = 1.0,
        rapl: RaplPackages | None = None,
        use_rapl: bool = True,
    ) -> None:
        self.watts_per_core = watts_per_core
        self._interval = interval
        self._rapl = rapl if rapl is not None else (RaplPackages.open() if use_rapl else None)
        self._joules_per_cpu_second = watts_per_core
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = "rapl" if self._rapl is not None else "estimate"

    def start(self) -> None:
        if self._rapl is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._sample, name="rapl-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def joules(self, cpu_seconds: float) -> float:
        return cpu_seconds * self._joules_per_cpu_second

    def _sample(self) -> None:
        assert self._rapl is not None
        busy = busy_cpu_seconds()
        while not self._stop.wait(self._interval):
            try:
                joules = self._rapl.read_delta_joules()
                now = busy_cpu_seconds()
            except OSError:
                log.exception("RAPL stopped being readable; keeping the last rate")
                return
            busy_delta, busy = now - busy, now
            # An idle interval says nothing about the cost of a busy second: keep the rate.
            if busy_delta > 0.05 * self._interval:
                self._joules_per_cpu_second = joules / busy_delta
