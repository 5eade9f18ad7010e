"""A training or import job's span tree, built in the serving process from its events.

The job's span is a child of the call that queued it (StartTraining's server span, so a
caller's trace continues into its job) and lives until the job ends. Under it, one span
per phase: queued, start worker, load, fit (each epoch an event with its metrics),
evaluate, export, parity, publish. The worker reports its stages over its pipe as it
reaches them (service/worker/entry.py); a phase starts when its first event arrives and
ends when the next phase's does. docs/architecture.md says why the tree is built here and
not by an exporter inside the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

#: The span each stage belongs to; a stage not listed gets a span of its own name.
PHASES = {
    "queued": "queued",
    "started": "start worker",
    "loading": "load",
    "preprocessing": "fit",
    "fitting": "fit",
    "epoch": "fit",
    "evaluating": "evaluate",
    "exporting": "export",
    "parity": "parity",
    "publish": "publish",
}


class JobTrace:
    """The spans of one job; made only when traces are on."""

    def __init__(self, job_id: str, kind: str, attributes: dict[str, str]) -> None:
        from opentelemetry import trace

        self._root = tracing.tracer().start_span(
            f"{kind} job",
            tracing.current_context(),
            attributes={"paradigm.job.id": job_id, **attributes},
        )
        self._context = trace.set_span_in_context(self._root)
        self._phase: Span | None = None
        self._phase_name = ""

    def stage(
        self, stage: str, message: str = "", epoch: int = 0, metrics: dict[str, float] | None = None
    ) -> None:
        """The job reached `stage` (an event of its history, or "publish")."""
        name = PHASES.get(stage, stage)
        if name != self._phase_name or self._phase is None:
            self._end_phase()
            self._phase = tracing.tracer().start_span(name, self._context)
            self._phase_name = name
        if stage == "epoch":
            attributes: dict[str, Any] = {"epoch": epoch}
            attributes.update({f"metric.{key}": value for key, value in (metrics or {}).items()})
            self._phase.add_event("epoch", attributes)
        elif message:
            self._phase.add_event(stage, {"message": message})

    def end(self, state: str, error: str = "") -> None:
        """The job ended in `state`; its spans are exported."""
        from opentelemetry.trace import Status, StatusCode

        self._end_phase()
        self._root.set_attribute("paradigm.job.state", state)
        if error:
            self._root.set_status(Status(StatusCode.ERROR, error[:200]))
        self._root.end()

    def _end_phase(self) -> None:
        if self._phase is not None:
            self._phase.end()
            self._phase = None
