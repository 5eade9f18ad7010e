"""What a deep fit on the GPU cost in energy: NVML's energy counter of GPU 0 over the fit."""

from __future__ import annotations

from service.cost.nvml import Nvml


class GpuEnergy:
    """NVML's energy counter of GPU 0, read at open and on demand."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self._start = nvml.energy_joules(0)

    @classmethod
    def open(cls) -> GpuEnergy | None:
        """A counter started now, or None without NVML or without a GPU."""
        nvml = Nvml.open()
        return cls(nvml) if nvml is not None and nvml.count else None

    def joules_since_open(self) -> float:
        return self._nvml.energy_joules(0) - self._start
