"""The Open Inference Protocol v2 over HTTP/JSON, beside gRPC on the same data plane."""
