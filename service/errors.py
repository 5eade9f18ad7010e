"""One exception type per kind of failure, each carrying the gRPC status it maps to.

Only service/api turns these into gRPC statuses (one interceptor for every RPC); the rest of
the service raises them without knowing about gRPC beyond the status code enum. Messages are
written for the caller: they say what was expected.
"""

from __future__ import annotations

import grpc


class ParadigmError(Exception):
    """Base of every failure the service reports to a caller."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ParadigmError):
    """Bad input: wrong name, datatype, shape, value or hyperparameter."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ParadigmError):
    """Unknown model, version, job or dataset."""

    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ParadigmError):
    """A name that must be new is taken."""

    status = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(ParadigmError):
    """The thing exists but cannot serve yet (loading, shutting down, device missing)."""

    status = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(ParadigmError):
    """A queue is full or a message or upload is too large."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ParadigmError):
    """The request is well formed but the system is not in a state to do it."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(ParadigmError):
    """The request's deadline passed before it ran."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(ParadigmError):
    """Something unexpected; the trace goes to the log, the caller gets a request id."""

    status = grpc.StatusCode.INTERNAL
