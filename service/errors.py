"""One exception type per kind of failure, each carrying the gRPC status it maps to.

Only service/api turns these into gRPC statuses (one interceptor for every RPC); the rest of
the service raises them without knowing about gRPC beyond the status code enum. Messages are
written for the caller: they say what was expected.
"""

from __future__ import annotations

import errno
import sqlite3

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


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(exc: BaseException, doing: str) -> ParadigmError | None:
    """The caller's error for a failed write (disk full, read-only), or None for others.

    No space is RESOURCE_EXHAUSTED (gRPC's own definition names a full file system). A
    read-only or unwritable directory is FAILED_PRECONDITION, not UNAVAILABLE: retrying
    cannot help until an operator fixes the mount or the permissions, and UNAVAILABLE
    tells clients to retry.
    """
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE | _NOT_WRITABLE:
        detail = str(exc.strerror or exc)
        if exc.filename:
            detail += f": {exc.filename}"
        if exc.filename2:
            detail += f" -> {exc.filename2}"
        if exc.errno in _NO_SPACE:
            return ResourceExhausted(f"{doing}: no space left to write ({detail})")
        return FailedPrecondition(
            f"{doing}: the data directory is read-only or not writable by the server ({detail})"
        )
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorname", "")
        if code == "SQLITE_FULL":
            return ResourceExhausted(f"{doing}: no space left to write ({exc})")
        if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
            return FailedPrecondition(
                f"{doing}: the data directory is read-only or not writable by the server ({exc})"
            )
        if code.startswith("SQLITE_IOERR"):
            # SQLite reports a write refused for size (EFBIG) or by the device as an I/O
            # error: the disk may recover, so this one is worth a retry.
            return Unavailable(f"{doing}: the disk refused a write ({exc})")
    return None


def describe_failure(exc: BaseException) -> str:
    """A failure in the words a job reports: a ParadigmError's message, else its text."""
    if isinstance(exc, ParadigmError):  # already written for the caller
        return exc.message
    if isinstance(exc, OSError):
        error = storage_error(exc, "the worker could not write the model")
        if error is not None:
            return error.message
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ValueError | TypeError | KeyError | RuntimeError):
        return text
    return f"{type(exc).__name__}: {text}"
