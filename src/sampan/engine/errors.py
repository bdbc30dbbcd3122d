"""The engine's errors: each is one of the error kinds of ``sampan.errors`` (which gives the
HTTP status and the CLI's exit code); the names stay for the engine's callers."""
from __future__ import annotations

from .. import errors


class EngineError(errors.Internal):
    """A failure of the engine itself (500); the base of the engine's errors."""

    @property
    def status(self) -> int:
        """The HTTP status, for callers that read it off the exception (the one mapping is
        errors.http_status)."""
        return errors.http_status(self)


class NotFound(EngineError, errors.NotFound):
    kind = errors.NOT_FOUND


class Conflict(EngineError, errors.Conflict):
    kind = errors.CONFLICT


class Forbidden(EngineError, errors.Forbidden):
    """403: what the object forbids (removing a pre-defined network, one with endpoints)."""
    kind = errors.FORBIDDEN


class InvalidParameter(EngineError, errors.Invalid):
    kind = errors.INVALID


class NotModified(EngineError, errors.NotModified):
    """304: start of a running container, stop of a stopped one."""
    kind = errors.NOT_MODIFIED


class Unsupported(EngineError, errors.NotImplemented_):
    """501: what the container's configuration does not offer (logs of the `none` driver)."""
    kind = errors.NOT_IMPLEMENTED


class SpecInputError(InvalidParameter):
    """The body asks for something the spec cannot be built with (400)."""
