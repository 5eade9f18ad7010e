"""Hardware cost: device time, energy (NVML, RAPL or an estimate) and money."""
