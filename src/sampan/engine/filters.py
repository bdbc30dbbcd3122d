"""The parts of Docker's `filters` that containers, images and volumes share: the check of
which filters a list or prune accepts, label matching, a single time argument."""
from __future__ import annotations

from ..timefmt import parse_time_arg
from .errors import InvalidParameter

Filters = dict[str, list[str]]


def accept(filters: Filters, accepted: frozenset[str]) -> None:
    """Raises InvalidParameter (400, dockerd's words) for the first filter not accepted."""
    for key in sorted(filters):
        if key not in accepted:
            raise InvalidParameter(f"invalid filter '{key}'")


def label_matches(labels: dict[str, str], wanted: str) -> bool:
    """``key`` (present) or ``key=value`` (equal)."""
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def labels_match(labels: dict[str, str], filters: Filters) -> bool:
    """``label``: every one matches; ``label!``: not all of them match (dockerd's prune)."""
    if not all(label_matches(labels, wanted) for wanted in filters.get("label") or ()):
        return False
    negated = filters.get("label!")
    return not (negated and all(label_matches(labels, wanted) for wanted in negated))


def time_filter(filters: Filters, key: str) -> float | None:
    """The one time of ``until`` (or ``since`` as a time): unix seconds, RFC 3339 or a duration
    ago; None when absent."""
    values = filters.get(key) or []
    if len(values) > 1:
        raise InvalidParameter(f"more than one {key} filter specified")
    if not values:
        return None
    try:
        return parse_time_arg(values[0])
    except ValueError:
        raise InvalidParameter(f"failed to parse value as time or duration: \"{values[0]}\"") from None
