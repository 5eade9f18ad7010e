"""Logging with the request's model name/version and request id in every line.

The data plane sets the context variables; the filter copies them into each record, so a
log line from deep inside serving says which model and request it belongs to.
"""

from __future__ import annotations

import contextvars
import logging

model_name_var: contextvars.ContextVar[str] = contextvars.ContextVar("model_name", default="-")
model_version_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "model_version", default="-"
)
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(model)s:%(version)s %(request_id)s] %(message)s"


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.model = model_name_var.get()
        record.version = model_version_var.get()
        record.request_id = request_id_var.get()
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
