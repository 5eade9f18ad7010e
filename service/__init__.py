"""Paradigm: train, export to ONNX and serve classical and deep models over gRPC."""

__version__ = "0.1.0"
