"""What `make gpu-wheels` and `make gpu-check` run: the GPU verification (docs/gpu.md)."""
