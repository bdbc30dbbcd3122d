"""The one mapping from an exception to the HTTP status and message the API answers with."""
from __future__ import annotations

from .. import errors


def status_of(exc: BaseException) -> int:
    """``errors.http_status``: the status of the error's kind; errors of no kind are internal.
    The one exception meanwhile: image.reference still raises a plain ValueError for a bad
    reference ("invalid reference format: ..."), which Docker answers with 400."""
    if isinstance(exc, ValueError) and not isinstance(exc, errors.Error):
        return errors.HTTP_STATUS[errors.INVALID]
    return errors.http_status(exc)


def message_of(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # not KeyError's quoted repr
    return str(exc) or type(exc).__name__
