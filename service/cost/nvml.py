"""NVIDIA GPUs through NVML (nvidia-ml-py): energy counter, utilization, memory, power.

Where NVML is absent (no driver: NVMLError_LibraryNotFound) `Nvml.open()` returns None and
every GPU series stays absent rather than zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_ratio: float
    power_watts: float


class Nvml:
    """An initialised NVML; one per process."""

    def __init__(self, module: Any) -> None:
        self._nvml = module
        self._handles = [
            module.nvmlDeviceGetHandleByIndex(i) for i in range(module.nvmlDeviceGetCount())
        ]

    @classmethod
    def open(cls) -> Nvml | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            return cls(pynvml)
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError
            log.info("NVML unavailable (%s): GPU series are absent", type(exc).__name__)
            return None

    @property
    def count(self) -> int:
        return len(self._handles)

    def energy_joules(self, index: int = 0) -> float:
        """The GPU's total energy counter since driver load (NVML reports mJ)."""
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[index])) / 1e3

    def readings(self) -> list[GpuReading]:
        nvml = self._nvml
        readings = []
        for index, handle in enumerate(self._handles):
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            readings.append(
                GpuReading(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                    utilization_ratio=nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
                    power_watts=nvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                )
            )
        return readings

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # shutting down twice is harmless
            log.debug("nvmlShutdown failed", exc_info=True)
