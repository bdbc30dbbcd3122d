"""Error kinds, defined once for every layer, and their one mapping to HTTP and CLI codes.

Each layer's errors subclass one of the kinds below (or carry ``kind``); the API answers with
``http_status(exc)`` and the CLI exits with ``cli_exit(...)``. Imported on the runtime's hot
path: the standard library only, nothing at import time.
"""
from __future__ import annotations

NOT_FOUND = "not_found"
CONFLICT = "conflict"
INVALID = "invalid"
FORBIDDEN = "forbidden"
UNAVAILABLE = "unavailable"
NOT_MODIFIED = "not_modified"  # a no-op request (start of a running container): HTTP 304
NOT_IMPLEMENTED = "not_implemented"  # a feature this configuration lacks (logs of a `none` log driver)
INTERNAL = "internal"

HTTP_STATUS = {NOT_FOUND: 404, CONFLICT: 409, INVALID: 400, FORBIDDEN: 403, UNAVAILABLE: 503,
               NOT_MODIFIED: 304, NOT_IMPLEMENTED: 501, INTERNAL: 500}

# The docker CLI's exit codes: a failed request exits 1, a `run`/`create` that the engine
# refuses exits 125 (126/127 when the command cannot be run, the container's code otherwise).
CLI_EXIT_FAILURE = 1
CLI_EXIT_RUN_FAILURE = 125
CLI_EXIT_CANNOT_INVOKE = 126     # the command is not executable (a directory, no permission)
CLI_EXIT_COMMAND_NOT_FOUND = 127


class Error(Exception):
    """A failure with a kind; str() is the one-line message a user sees."""
    kind = INTERNAL

    def __init__(self, message: str = "", kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class NotFound(Error, LookupError):
    kind = NOT_FOUND


class Conflict(Error):
    kind = CONFLICT


class Invalid(Error, ValueError):
    kind = INVALID


class Forbidden(Error):
    kind = FORBIDDEN


class Unavailable(Error):
    kind = UNAVAILABLE


class NotModified(Error):
    kind = NOT_MODIFIED


class NotImplemented_(Error):
    """501 (the name avoids Python's NotImplemented constant)."""
    kind = NOT_IMPLEMENTED


class Internal(Error):
    kind = INTERNAL


def kind_of(exc: BaseException) -> str:
    """The kind an exception carries; errors of no kind are internal."""
    kind = getattr(exc, "kind", None)
    return kind if kind in HTTP_STATUS else INTERNAL


def http_status(exc: BaseException) -> int:
    return HTTP_STATUS[kind_of(exc)]


def from_kind(kind: str | None, message: str) -> Error:
    """The exception for a kind received over a wire (the supervisor's `code`, an API status)."""
    cls = {NOT_FOUND: NotFound, CONFLICT: Conflict, INVALID: Invalid, FORBIDDEN: Forbidden,
           NOT_IMPLEMENTED: NotImplemented_,
           UNAVAILABLE: Unavailable, NOT_MODIFIED: NotModified}.get(kind or "", Internal)
    return cls(message)


def kind_of_status(status: int) -> str:
    """HTTP status -> kind (for clients of the API)."""
    for kind, code in HTTP_STATUS.items():
        if code == status:
            return kind
    return INVALID if 400 <= status < 500 else INTERNAL
