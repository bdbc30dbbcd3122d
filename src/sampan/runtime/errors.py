"""Errors the runtime reports to its callers with a one-line message, each of a kind of
sampan.errors (what the supervisor, the engine and the API map to codes and statuses)."""
from .. import errors


class RuntimeError_(errors.Error):
    """A failure the user caused or can act on (bad input, a request the runtime cannot
    honour); str() is the one-line message."""
    kind = errors.INVALID


class ContainerNotFound(errors.NotFound, RuntimeError_):
    pass


class ContainerExists(errors.Conflict, RuntimeError_):
    pass


class BadState(errors.Conflict, RuntimeError_):
    """The container's state does not allow the operation (start of a stopped one, delete of
    a running one without force)."""


def describe(exc: BaseException) -> str:
    """One line for a user: OSErrors without the "[Errno N]" noise, with their path if any."""
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename and str(exc.filename) not in exc.strerror:
            return f"{exc.strerror}: {exc.filename}"
        return exc.strerror
    return str(exc) or type(exc).__name__
