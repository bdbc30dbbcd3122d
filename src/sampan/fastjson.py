"""JSON through the C accelerator alone.

The json package imports re and enum (about 9 ms): too much for every container start.
Output and accepted input match json.dumps / json.loads with default settings.
"""
from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


class _DecoderSettings:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


def _unserializable(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_scan = _json.make_scanner(_DecoderSettings())
_encode = _json.make_encoder({}, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)


def loads(data: str | bytes) -> object:
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        obj, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return obj


def dumps(obj: object) -> str:
    return "".join(_encode(obj, 0))
