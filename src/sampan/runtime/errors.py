"""Errors the runtime reports to its callers with a one-line message."""


class RuntimeError_(Exception):
    """A failure the user caused or can act on; str() is the one-line message."""


class ContainerNotFound(RuntimeError_):
    pass


class ContainerExists(RuntimeError_):
    pass


class BadState(RuntimeError_):
    pass
