"""A real OTLP trace receiver on loopback: the collector's TraceService/Export over gRPC,
from the opentelemetry-proto package, keeping every span it is sent (for tests and the
tracing benchmark)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as collector
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as collector_grpc


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    service: str


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass
class OtlpReceiver(collector_grpc.TraceServiceServicer):
    spans: list[ReceivedSpan] = field(default_factory=list)
    #: False: count the spans, keep none (a benchmark's receiver).
    keep: bool = True
    count: int = 0
    exports: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(self, request: collector.ExportTraceServiceRequest, context: Any) -> Any:
        if not self.keep:
            counted = sum(
                len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans
            )
            with self._lock:
                self.count += counted
                self.exports += 1
            return collector.ExportTraceServiceResponse()
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes=_attributes(span.attributes),
                            events=[(e.name, _attributes(e.attributes)) for e in span.events],
                            status_code=span.status.code,
                            service=service,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.count += len(received)
            self.exports += 1
        return collector.ExportTraceServiceResponse()

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()

    def wait_for(
        self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """Every span so far, once `found` says they include what is awaited."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if found(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({span.name for span in spans})
                raise AssertionError(f"spans not received in {timeout:g} s; have {names}")
            time.sleep(0.05)


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return sorted(
        (s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id),
        key=lambda s: s.start_ns,
    )


def tree(spans: list[ReceivedSpan], root: ReceivedSpan, depth: int = 0) -> str:
    """The span and its descendants, indented, with durations and attributes."""
    shown = ("paradigm.", "rpc.m", "http.")
    attributes = {k: v for k, v in root.attributes.items() if k.startswith(shown)}
    line = (
        f"{'  ' * depth}{root.name}  [{(root.end_ns - root.start_ns) / 1e3:.0f} us]"
        f"{'  ' + str(attributes) if attributes else ''}"
    )
    lines = [line]
    lines += [f"{'  ' * depth}  * event {name} {attrs}" for name, attrs in root.events]
    lines += [tree(spans, child, depth + 1) for child in children(spans, root)]
    return "\n".join(lines)


@dataclass
class RunningReceiver:
    receiver: OtlpReceiver
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self, **extra: str) -> dict[str, str]:
        """OTEL_* variables that send a server's traces here, every trace sampled."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "paradigm-test",
            **extra,
        }


def start_receiver(keep: bool = True) -> tuple[grpc.Server, RunningReceiver]:
    receiver = OtlpReceiver(keep=keep)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collector_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, RunningReceiver(receiver, port)


def running_receiver() -> Iterator[RunningReceiver]:
    """A receiver for a `with`-style fixture; stopped afterwards."""
    server, running = start_receiver()
    try:
        yield running
    finally:
        server.stop(grace=None)
