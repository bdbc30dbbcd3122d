"""The engine's errors; ``status`` is the HTTP code the API answers with."""
from __future__ import annotations


class EngineError(Exception):
    status = 500


class NotFound(EngineError, LookupError):
    status = 404


class Conflict(EngineError):
    status = 409


class InvalidParameter(EngineError, ValueError):
    status = 400


class NotModified(EngineError):
    """304: start of a running container, stop of a stopped one."""
    status = 304
