"""Benchmarks of the serving path: load generator, the limits it is compared with, the driver.

`load` drives any Open Inference Protocol v2 server with closed-loop streams; `bare_server`
and `inprocess` are the two limits (a minimal grpc.aio server, and ONNX Runtime called
in-process); `run` (`make bench`, `paradigm bench`) starts servers, trains the models and
writes the JSON, markdown table and plots.
"""
