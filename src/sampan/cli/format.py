"""Output the way the docker CLI writes it: aligned tables (Go's tabwriter as docker sets
it up) and ``--format``: ``json``, ``table TEMPLATE`` or a Go template, rendered by the one
renderer of the CLI (``render``: fields, variables, pipes, parentheses, ``if``/``else``,
``range``, ``with``, and the functions docker's templates have: json, join, split, index,
len, lower, upper, title, truncate, pad, println, printf, eq, ne, lt, le, gt, ge, and, or, not).
Sizes and times come from sampan/units.py and sampan/timefmt.py."""
from __future__ import annotations

import json
import re
from typing import Callable

from .. import fastjson


class TemplateError(ValueError):
    pass


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
# Go templates

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


_NO_VALUE = object()   # a missing map key: "<no value>", as Go prints it


def _lookup(value: object, path: str) -> object:
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _NO_VALUE
    return value


def _json(v: object) -> str:
    """Go's json.Marshal: compact, and <, > and & escaped."""
    out = json.dumps(None if v is _NO_VALUE else v, separators=(",", ":"), ensure_ascii=False)
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _truth(v: object) -> bool:
    """Go templates' truth: false, 0, nil, empty strings and collections, missing keys are false."""
    return v is not _NO_VALUE and bool(v)


def _index(obj: object, *keys: object) -> object:
    for key in keys:
        if isinstance(obj, dict):
            obj = obj.get(key, _NO_VALUE)  # type: ignore[call-overload]
        elif isinstance(obj, (list, str)):
            obj = obj[int(key)]  # type: ignore[call-overload]
        else:
            raise TemplateError(f"can't index item of type {type(obj).__name__}")
    return obj


def _printf(fmt: str, *args: object) -> str:
    """Go's Sprintf for the verbs templates use (%s %v %d %q %%)."""
    out, i, it = [], 0, iter(args)
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            i += 2
            if verb == "%":
                out.append("%")
            elif verb == "q":
                out.append(json.dumps(go_str(next(it, ""))))
            else:
                out.append(go_str(next(it, "")))
            continue
        out.append(c)
        i += 1
    return "".join(out)


_FUNCS: dict[str, Callable[..., object]] = {
    "json": _json,
    "join": lambda items, sep: sep.join(go_str(x) for x in (items or [])),
    "split": lambda s, sep: go_str(s).split(sep),
    "index": _index,
    "len": lambda x: len(x or []),
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "title": lambda s: go_str(s).title(),
    "truncate": lambda s, n: go_str(s)[:int(n)],
    "pad": lambda s, left, right: " " * int(left) + go_str(s) + " " * int(right),
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "printf": _printf,
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda a: not _truth(a),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
}

# strings, raw strings, parentheses, pipes, := and names ($x.A, .A.B, 12, len)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|[()|,]|:=|[^\s()|,]+')


class _Scope:
    def __init__(self, dot: object, variables: dict[str, object]) -> None:
        self.dot, self.vars = dot, variables


def _operand(tokens: list[str], pos: int, scope: _Scope) -> tuple[object, int]:
    tok = tokens[pos]
    if tok == "(":
        value, pos = _pipeline(tokens, pos + 1, scope, closing=")")
        pos += 1
        if pos < len(tokens) and tokens[pos].startswith(".") and tokens[pos] != ".":
            value, pos = _lookup(value, tokens[pos]), pos + 1   # (index .A "x").Field
        return value, pos
    if tok.startswith('"'):
        return json.loads(tok), pos + 1
    if tok.startswith("`"):
        return tok[1:-1], pos + 1
    if tok == ".":
        return scope.dot, pos + 1
    if tok.startswith("."):
        return _lookup(scope.dot, tok), pos + 1
    if tok.startswith("$"):
        name, _, path = tok.partition(".")
        if name not in scope.vars:
            raise TemplateError(f"template: undefined variable \"{name}\"")
        return _lookup(scope.vars[name], path), pos + 1
    if tok in ("true", "false"):
        return tok == "true", pos + 1
    if tok == "nil":
        return None, pos + 1
    if re.fullmatch(r"-?\d+", tok):
        return int(tok), pos + 1
    raise TemplateError(f'template: function "{tok}" not defined')


def _pipeline(tokens: list[str], pos: int, scope: _Scope, closing: str | None = None) -> tuple[object, int]:
    """Evaluate ``cmd | cmd ...`` from ``pos``; returns the value and the position of the
    closing token (or the end)."""
    value: object = _NO_VALUE
    piped = False
    while True:
        start = pos
        args: list[object] = []
        head = tokens[pos] if pos < len(tokens) else None
        if head is None or head == closing or head == "|":
            raise TemplateError("template: missing value for command")
        func = _FUNCS.get(head)
        if func is not None:
            pos += 1
        while pos < len(tokens) and tokens[pos] not in ("|", closing):
            arg, pos = _operand(tokens, pos, scope)
            args.append(arg)
        if func is not None:
            try:
                value = func(*args, *([value] if piped else []))
            except TemplateError:
                raise
            except (TypeError, ValueError, IndexError, KeyError) as e:
                raise TemplateError(f"template: error calling {head}: {e}") from None
        elif len(args) == 1 and not piped:
            value = args[0]
        else:
            raise TemplateError(f"template: can't give argument to non-function {tokens[start]}")
        piped = True
        if pos < len(tokens) and tokens[pos] == "|":
            pos += 1
            continue
        return value, pos


def _evaluate(expr: str, scope: _Scope) -> object:
    tokens = _TOKEN.findall(expr)
    value, pos = _pipeline(tokens, 0, scope)
    if pos != len(tokens):
        raise TemplateError(f"template: unexpected {tokens[pos]!r} in {expr!r}")
    return value


# A parsed template: text, {{pipeline}}, and blocks (keyword, clause, body, else-body).
_Node = object


def _parse(template: str) -> list[_Node]:
    parts: list[tuple[str, str]] = []   # ("text", s) / ("action", s)
    pos = 0
    for m in re.finditer(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", template, re.S):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    parts.append(("text", template[pos:]))
    nodes, i = _parse_list(parts, 0, top=True)
    return nodes


def _parse_list(parts: list[tuple[str, str]], i: int, top: bool = False) -> tuple[list[_Node], int]:
    """Nodes from ``parts[i:]`` up to an ``else`` or ``end`` (its index returned)."""
    nodes: list[_Node] = []
    while i < len(parts):
        kind, text = parts[i]
        if kind == "text":
            if text:
                nodes.append(text)
            i += 1
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"template: unexpected {{{{{word}}}}}")
            return nodes, i
        if word.startswith("/*"):
            i += 1
            continue
        if word in ("if", "range", "with"):
            node, i = _parse_block(parts, i + 1, word, text[len(word):].strip())
            nodes.append(node)
            i += 1   # past its {{end}}
            continue
        nodes.append(("expr", text))
        i += 1
    if not top:
        raise TemplateError("template: unexpected EOF")
    return nodes, i


def _parse_block(parts: list[tuple[str, str]], i: int, word: str, clause: str) -> tuple[_Node, int]:
    """An if/range/with from its body at ``parts[i]``; returns it and the index of its
    {{end}} (which an {{else if}} shares with the if it continues)."""
    body, i = _parse_list(parts, i)
    other: list[_Node] = []
    if parts[i][1].startswith("else"):
        rest = parts[i][1][4:].strip()
        if rest.startswith("if "):
            node, i = _parse_block(parts, i + 1, "if", rest[3:].strip())
            other = [node]
        else:
            other, i = _parse_list(parts, i + 1)
    if parts[i][1] != "end":
        raise TemplateError(f"template: unexpected {{{{{parts[i][1]}}}}} in {word}")
    return (word, clause, body, other), i


def _run(nodes: list[_Node], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
            continue
        kind = node[0]
        if kind == "expr":
            expr = node[1]
            name, sep, rest = expr.partition(":=")
            if sep and name.strip().startswith("$"):
                scope.vars[name.strip()] = _evaluate(rest, scope)
                continue
            value = _evaluate(expr, scope)
            # a missing key or a JSON null is Go's invalid value: "<no value>"
            out.append("<no value>" if value is _NO_VALUE or value is None else go_str(value))
            continue
        _, clause, body, other = node
        if kind == "range":
            names, sep, expr = clause.rpartition(":=")
            variables = [v.strip() for v in names.split(",")] if sep else []
            items = _evaluate(expr if sep else clause, scope)
            pairs = sorted(items.items()) if isinstance(items, dict) else \
                list(enumerate(items)) if isinstance(items, list) else []
            if not pairs:
                _run(other, scope, out)
            for key, item in pairs:
                inner = _Scope(item, dict(scope.vars))
                if len(variables) == 1:
                    inner.vars[variables[0]] = item
                elif len(variables) == 2:
                    inner.vars[variables[0]], inner.vars[variables[1]] = key, item
                _run(body, inner, out)
        else:
            value = _evaluate(clause, scope)
            if not _truth(value):
                _run(other, scope, out)
            elif kind == "with":
                _run(body, _Scope(value, dict(scope.vars)), out)
            else:
                _run(body, scope, out)


def render(template: str, data: object) -> str:
    """A Go template (text/template, with docker's functions) applied to ``data``."""
    out: list[str] = []
    _run(_parse(template), _Scope(data, {"$": data}), out)
    return "".join(out)


def render_flag(fmt: str, data: object) -> str:
    """One document under a user's ``--format``: "json", or a template with the \\t and \\n
    docker's users write."""
    if fmt == "json":
        return _json(data)
    return render(fmt.replace("\\t", "\t").replace("\\n", "\n"), data)


def write_inspected(template: str | None, objects: list, write: Callable[[str], None]) -> None:
    """`inspect`'s output: the objects as an indented JSON list, or the template (with the
    \\t and \\n docker's users write) once for each."""
    if not template:
        write(fastjson.dumps_indented(objects, "    ", ensure_ascii=False) + "\n")
        return
    for obj in objects:
        write(render_flag(template, obj) + "\n")


def write_formatted(fmt: str, rows: list[dict], headers: dict[str, str], write: Callable[[str], None],
                    default: str = "") -> None:
    """``--format``: "json" (one object a line), "table" (``default``), "table TEMPLATE" (a
    header, aligned), or a template applied to each row."""
    if fmt == "json":
        for row in rows:
            write(_json(dict(sorted(row.items()))) + "\n")
        return
    if fmt == "table" and default:
        fmt = default
    is_table = fmt.startswith("table")
    body = (fmt[len("table"):] if is_table else fmt).strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    lines = [render(body, row) for row in rows]
    if not is_table:
        for line in lines:
            write(line + "\n")
        return
    header = render(body, headers)
    write(table([line.split("\t") for line in [header, *lines]]))
