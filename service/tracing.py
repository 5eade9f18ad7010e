"""OpenTelemetry traces, configured the standard way and off unless asked for.

`configure()` (once, at server start) installs a tracer provider only when the environment
asks for traces: OTEL_TRACES_EXPORTER=otlp|console, or an OTLP endpoint
(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT). Everything else is read
by the SDK itself from its OTEL_* variables: the sampler (OTEL_TRACES_SAMPLER, e.g.
parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG), the exporter's endpoint, headers and
TLS, the batch processor's schedule (OTEL_BSP_*), the service name and resource attributes.

Off, nothing here is imported from OpenTelemetry and the hot path pays one check of
`ENABLED`: callers test it before building anything, and the gRPC interceptor and the
batcher's run observer are not installed at all. On, W3C `traceparent`/`tracestate` are
read from gRPC metadata and HTTP headers (a caller's trace continues here) and written into
the metadata of calls forwarded to the job-owning worker.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

#: Whether traces are on in this process; read it before calling anything below.
ENABLED = False

#: The W3C trace context headers (lower case, as gRPC metadata and ASGI carry them).
TRACE_HEADERS = ("traceparent", "tracestate")

_tracer: Tracer | None = None
_provider: Any = None
#: The share of requests without a caller's trace that start one; None: the sampler says.
_root_ratio: float | None = None
# Bound by configure(): what the per-request functions use, without an import each call.
_get_current_span: Any = None
_get_current: Any = None
_server_kind: Any = None
#: Added to a perf_counter() reading to make it nanoseconds since the epoch.
_epoch_offset_ns = 0


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return bool(exporter) or bool(endpoint)


def configure() -> bool:
    """Installs the tracer provider if the environment asks for traces; returns whether
    traces are on. ValueError for an exporter this server does not ship."""
    global ENABLED, _tracer, _provider, _epoch_offset_ns, _root_ratio
    global _get_current_span, _get_current, _server_kind
    if ENABLED or not requested():
        return ENABLED
    from opentelemetry import context, trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider, sampling
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    names = [
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if name.strip()
    ]
    exporters: list[Any] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={name!r} is not available: use otlp (OTLP over gRPC), "
                "console or none"
            )
    # A request without a caller's trace that the sampler would drop is dropped before any
    # span object exists: the SDK's own drop costs tens of microseconds, a tenth of a
    # batch-1 request. parentbased_traceidratio's roots are then decided here, and its
    # sampler keeps everything that has a sampled parent, as it would have.
    sampler: Any = None  # the SDK's, from OTEL_TRACES_SAMPLER
    _root_ratio = None
    chosen = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if chosen == "parentbased_traceidratio":
        _root_ratio = _ratio(os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""))
        sampler = sampling.ParentBased(sampling.ALWAYS_ON)
    elif chosen == "parentbased_always_off":
        _root_ratio = 0.0
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over this default.
    default = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "paradigm"}
    provider = TracerProvider(sampler=sampler, resource=Resource.create(default))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if _provider is None:  # the global one can be set once per process
        trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("paradigm")
    _get_current_span, _server_kind = trace.get_current_span, trace.SpanKind.SERVER
    _get_current = context.get_current
    _epoch_offset_ns = time.time_ns() - time.perf_counter_ns()
    ENABLED = True
    roots = "sampler" if _root_ratio is None else f"ratio {_root_ratio:g}"
    log.info(
        "OpenTelemetry traces on: exporting to %s (%s; requests without a trace: %s)",
        ",".join(names), provider.sampler.get_description(), roots,
    )  # fmt: skip
    return True


def _ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number: sampling every trace", text)
        return 1.0
    return min(max(ratio, 0.0), 1.0)


def shutdown() -> None:
    """Exports what is buffered and stops the exporter (at server stop)."""
    global ENABLED
    if _provider is not None and ENABLED:
        _provider.shutdown()
        ENABLED = False


def tracer() -> Tracer:
    assert _tracer is not None, "tracing.configure() turned traces on first"
    return _tracer


def epoch_ns(perf_counter_seconds: float) -> int:
    """A time.perf_counter() reading as OpenTelemetry's nanoseconds since the epoch."""
    return int(perf_counter_seconds * 1e9) + _epoch_offset_ns


def extract(headers: Iterable[tuple[str, Any]]) -> Context:
    """The caller's trace context from gRPC metadata or HTTP headers (lower-case keys)."""
    from opentelemetry.propagate import extract as otel_extract

    carrier = {key: value for key, value in headers if key in TRACE_HEADERS}
    return otel_extract(carrier)


def inject(metadata: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The metadata with the caller's trace headers replaced by the current span's, so the
    next hop's spans are children of this one; unchanged when this request is not traced."""
    from opentelemetry.propagate import inject as otel_inject
    from opentelemetry.trace import get_current_span

    current = get_current_span()
    if not current.is_recording():
        return metadata
    current.set_attribute("paradigm.forwarded_to_owner", True)
    carrier: dict[str, str] = {}
    otel_inject(carrier)
    kept = [(key, value) for key, value in metadata if key not in TRACE_HEADERS]
    return kept + list(carrier.items())


def start_server_span(
    name: str, traceparent: Any, tracestate: Any, attributes: Mapping[str, Any]
) -> Span | None:
    """The span of a request that arrived with these trace headers (None when absent),
    or None when it is not sampled: the caller then runs the request untouched."""
    if traceparent is None:
        if _root_ratio is not None and (_root_ratio == 0.0 or random.random() >= _root_ratio):
            return None
        parent = None
    else:
        parent = extract([("traceparent", traceparent), ("tracestate", tracestate or "")])
    started = tracer().start_span(name, parent, kind=_server_kind, attributes=attributes)
    return started if started.is_recording() else None


def trace_headers(metadata: Iterable[tuple[str, Any]]) -> tuple[Any, Any]:
    """traceparent and tracestate from gRPC metadata (None where absent)."""
    parent = state = None
    for key, value in metadata:
        if key == "traceparent":
            parent = value
        elif key == "tracestate":
            state = value
    return parent, state


def activate(current: Span) -> object:
    """Makes the span current (its children hang under it); returns the token for
    deactivate()."""
    from opentelemetry import context, trace

    return context.attach(trace.set_span_in_context(current))


def deactivate(token: object) -> None:
    from opentelemetry import context

    context.detach(token)  # type: ignore[arg-type]


def recording() -> bool:
    """Whether the current request is being traced (its children are worth making)."""
    return bool(_get_current_span().is_recording())


def current_context() -> Context:
    from opentelemetry.context import get_current

    return get_current()


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A child span of the current one, current meanwhile (callers check recording())."""
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


def _context_in(request_context: contextvars.Context) -> Any:
    """The OpenTelemetry context inside a request's contextvars. A batch's task runs in its
    first request's, and a Context cannot be entered twice: that one is the current one."""
    try:
        return request_context.run(_get_current)
    except RuntimeError:
        return _get_current()


class RunObserver:
    """The batcher's hook after each model run: a "queue wait" and a "run" span in the
    trace of every sampled request the run served. A batch serves several requests, each
    in its own trace, so each gets its own copy of the run span; `paradigm.batch.requests`
    and `paradigm.batch.rows` say how many shared it."""

    def __init__(self, model: str, version: str) -> None:
        self._attributes = {"paradigm.model": model, "paradigm.model_version": version}

    def __call__(
        self,
        contexts: Sequence[contextvars.Context] | None,
        enqueued: Sequence[float],
        handed: float,
        done: float,
        rows: int,
    ) -> None:
        attributes: dict[str, str | int] | None = None
        for index, moment in enumerate(enqueued):
            parent = _get_current() if contexts is None else _context_in(contexts[index])
            if not _get_current_span(parent).is_recording():
                continue  # the request is not traced (the usual case: check it first)
            if attributes is None:
                attributes = {
                    **self._attributes,
                    "paradigm.batch.rows": rows,
                    "paradigm.batch.requests": len(enqueued),
                }
            run_started = epoch_ns(handed)
            queue = tracer().start_span("queue wait", parent, start_time=epoch_ns(moment))
            queue.end(end_time=run_started)
            run = tracer().start_span("run", parent, start_time=run_started, attributes=attributes)
            run.end(end_time=epoch_ns(done))
