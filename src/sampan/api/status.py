"""The one mapping from an exception to the HTTP status and message the API answers with."""
from __future__ import annotations

from .. import errors


def status_of(exc: BaseException) -> int:
    """``errors.http_status`` for errors of a kind. Layers not yet moved to kinds carry an HTTP
    ``status`` on their classes (engine.errors, image.store): that is honoured meanwhile."""
    if isinstance(exc, errors.Error):
        return errors.http_status(exc)
    legacy = getattr(exc, "status", None)
    if isinstance(legacy, int) and 300 <= legacy < 600:
        return legacy
    if isinstance(exc, LookupError):
        return 404
    if isinstance(exc, ValueError):
        return 400
    return 500


def message_of(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # not KeyError's quoted repr
    return str(exc) or type(exc).__name__
