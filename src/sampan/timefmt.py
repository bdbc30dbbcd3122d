"""Time as Docker writes and reads it: RFC 3339 with nanoseconds, Go's zero time, the CLI's
relative forms ("10m"), and human durations ("Up 3 seconds", "2 hours ago")."""
from __future__ import annotations

import time

ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float | None = None) -> str:
    """Unix seconds (now when None) -> 2026-01-02T03:04:05.123456789Z."""
    return rfc3339_ns(time.time_ns() if ts is None else int(ts * 1_000_000_000))


def rfc3339_ns(ns: int | None = None) -> str:
    """Nanoseconds since the epoch (now when None) -> RFC 3339 in UTC with nine digits."""
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def rfc3339_seconds(ts: float | None) -> str:
    """Unix seconds -> 2026-01-02T03:04:05Z (whole seconds, as volumes and images are dated);
    Go's zero time for None or 0."""
    if not ts:
        return ZERO_TIME
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_rfc3339(text: str | None) -> float:
    """RFC 3339 (nanoseconds and offsets allowed) -> unix seconds; 0.0 for empty, Go's zero
    time or text that is not a time."""
    if not text or text.startswith("0001-"):
        return 0.0
    text = text.strip()
    base, frac, offset = text[:19], "", 0
    rest = text[19:]
    if rest.startswith("."):
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, rest = rest[1:i], rest[i:]
    if rest in ("", "Z", "z"):
        offset = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        try:
            offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
        except ValueError:
            return 0.0
    else:
        return 0.0
    try:
        import calendar
        whole = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    return whole + (float("0." + frac) if frac else 0.0) - offset


def parse_time_arg(value: object, now: float | None = None) -> float | None:
    """since/until as the docker CLI and API take them: unix seconds (with a fraction), RFC 3339,
    or a duration before now ("10m", "1h30m", "90s"); None for unset (None, "", 0).
    Raises ValueError for anything else."""
    if value in (None, "", 0, "0"):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    ago = parse_duration(text)
    if ago is not None:
        return (time.time() if now is None else now) - ago
    ts = parse_rfc3339(text)
    if not ts and not text.startswith("0001-"):
        # a date alone, or a time without seconds, as Go's time formats accept them
        for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
            try:
                import calendar
                return float(calendar.timegm(time.strptime(text.rstrip("Z"), fmt)))
            except ValueError:
                continue
        raise ValueError(f"invalid timestamp: {text!r}")
    return ts or None


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Go's time.ParseDuration ("1h30m", "10s", "250ms") -> seconds; None if it is not one."""
    text = text.strip()
    if not text:
        return None
    total, i, sign = 0.0, 0, 1.0
    if text[0] in "+-":
        sign, i = (-1.0 if text[0] == "-" else 1.0), 1
    seen = False
    while i < len(text):
        j = i
        while j < len(text) and (text[j].isdigit() or text[j] == "."):
            j += 1
        if j == i:
            return None
        number = text[i:j]
        k = j
        while k < len(text) and not (text[k].isdigit() or text[k] == "."):
            k += 1
        unit = text[j:k]
        if unit not in _DURATION_UNITS:
            return None
        try:
            total += float(number) * _DURATION_UNITS[unit]
        except ValueError:
            return None
        seen, i = True, k
    return sign * total if seen else None


def duration(seconds: float) -> str:
    """Docker's units.HumanDuration: "Less than a second", "About a minute", "3 hours"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)  # Go rounds halves up; Python to even
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(ts: float, now: float | None = None) -> str:
    """"2 weeks ago"; "N/A" for an unknown time."""
    if not ts:
        return "N/A"
    return duration((time.time() if now is None else now) - ts) + " ago"


def go_time_string(ts: float) -> str:
    """Go's time.Unix(ts, 0).String() in local time, as docker shows CreatedAt:
    "2026-01-02 03:04:05 +0000 UTC"."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(ts))
