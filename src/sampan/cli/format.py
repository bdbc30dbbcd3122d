"""Output the way the docker CLI writes it: aligned tables (Go's tabwriter as docker sets
it up), human sizes and durations (go-units), and ``--format`` with the common subset of
Go templates (``{{.Field.Sub}}``, ``{{json .}}``, ``{{join .List ","}}``, ``{{index .M "k"}}``,
``{{lower}}``/``{{upper}}``, pipes, a ``table`` prefix) or ``json``."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Callable

from ..timefmt import duration


class TemplateError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# go-units

_DECIMAL = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]


def human_size(size: float) -> str:
    """units.HumanSizeWithPrecision(size, 3): 1.99MB, 77.9MB, 0B."""
    i = 0
    while size >= 1000.0 and i < len(_DECIMAL) - 1:
        size /= 1000.0
        i += 1
    return "%.*g%s" % (3, size, _DECIMAL[i])


def since(ts: float, now: float | None = None) -> str:
    """"2 weeks ago"; "N/A" for an unknown time."""
    if not ts:
        return "N/A"
    return duration((now if now is not None else time.time()) - ts) + " ago"


def go_time(ts: float) -> str:
    """Go's time.Time String(): 2024-01-02 03:04:05 +0000 UTC."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def ellipsis(s: str, width: int) -> str:
    return s if len(s) <= width else s[:width - 1] + "…"


# ---------------------------------------------------------------------------------------------
# tabwriter

def table(rows: list[list[str]], minwidth: int = 10, padding: int = 3) -> str:
    """Columns as tabwriter.NewWriter(out, 10, 1, 3, ' ', 0) lays them out: every cell but
    the last of a row padded to its column's widest cell plus 3, at least 10."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell) + padding, minwidth)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]
        lines.append("".join(cells))
    return "\n".join(lines) + ("\n" if lines else "")


# ---------------------------------------------------------------------------------------------
# Go templates (the subset docker users write)

def go_str(v: object) -> str:
    """fmt's %v for JSON-like values."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, list):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(v[k])}" for k in sorted(v)) + "]"
    return str(v)


_NO_VALUE = object()


def _lookup(data: object, path: str) -> object:
    value = data
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _NO_VALUE
    return value


def _json(v: object) -> str:
    """Go's json.Marshal: compact, and <, > and & escaped."""
    out = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_FUNCS: dict[str, Callable[..., object]] = {
    "json": _json,
    "join": lambda items, sep: sep.join(go_str(x) for x in (items or [])),
    "index": lambda obj, key: (obj or {}).get(key, _NO_VALUE) if isinstance(obj, dict) else
    (obj[int(key)] if isinstance(obj, list) else _NO_VALUE),
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "title": lambda s: go_str(s).title(),
    "len": lambda x: len(x or []),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
}
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|[^\s]+')


def _arg(token: str, data: object) -> object:
    if token.startswith('"'):
        return json.loads(token)
    if token.startswith("`"):
        return token[1:-1]
    if token.startswith("."):
        return _lookup(data, token)
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    raise TemplateError(f'template: function "{token}" not defined')


def _eval(expr: str, data: object) -> object:
    value: object = _NO_VALUE
    piped = False
    for command in _split_pipes(expr):
        tokens = _TOKEN.findall(command)
        if not tokens:
            raise TemplateError(f"template: missing value for command in {expr!r}")
        head = tokens[0]
        if head in _FUNCS:
            args = [_arg(t, data) for t in tokens[1:]] + ([value] if piped else [])
            try:
                value = _FUNCS[head](*args)
            except (TypeError, ValueError, IndexError, KeyError) as e:
                raise TemplateError(f"template: error calling {head}: {e}") from None
        elif len(tokens) == 1 and not piped:
            value = _arg(head, data)
        else:
            raise TemplateError(f'template: function "{head}" not defined')
        piped = True
    return value


def _split_pipes(expr: str) -> list[str]:
    parts, buf, quote = [], [], ""
    for ch in expr:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"`":
            quote = ch
            buf.append(ch)
        elif ch == "|":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return [p.strip() for p in parts]


def render(template: str, data: object) -> str:
    out = []
    pos = 0
    for m in re.finditer(r"\{\{-?\s*(.*?)\s*-?\}\}", template, re.S):
        out.append(template[pos:m.start()])
        value = _eval(m.group(1), data)
        out.append("<no value>" if value is _NO_VALUE else go_str(value))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)


def write_formatted(fmt: str, rows: list[dict], headers: dict[str, str], write: Callable[[str], None]) -> None:
    """``--format``: "json" (one object a line), "table ..." (a header, aligned), or a
    template applied to each row."""
    if fmt == "json":
        for row in rows:
            write(_json(dict(sorted(row.items()))) + "\n")
        return
    is_table = fmt.startswith("table")
    body = (fmt[len("table"):] if is_table else fmt).strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    lines = [render(body, row) for row in rows]
    if not is_table:
        for line in lines:
            write(line + "\n")
        return
    header = render(body, headers)
    write(table([line.split("\t") for line in [header, *lines]]))
