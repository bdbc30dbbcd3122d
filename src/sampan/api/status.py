"""The message the API answers an exception with (its status is ``errors.http_status``)."""
from __future__ import annotations


def message_of(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # not KeyError's quoted repr
    return str(exc) or type(exc).__name__
