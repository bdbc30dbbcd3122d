"""Errors the runtime reports to its callers with a one-line message."""


class RuntimeError_(Exception):
    """A failure the user caused or can act on; str() is the one-line message."""


class ContainerNotFound(RuntimeError_):
    pass


class ContainerExists(RuntimeError_):
    pass


class BadState(RuntimeError_):
    pass


def describe(exc: BaseException) -> str:
    """One line for a user: OSErrors without the "[Errno N]" noise, with their path if any."""
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename and str(exc.filename) not in exc.strerror:
            return f"{exc.strerror}: {exc.filename}"
        return exc.strerror
    return str(exc) or type(exc).__name__
