"""Command lines of `sampan run` and `sampan create` without argparse.

Importing argparse costs ~9 ms (re, enum, functools, collections, gettext, locale): more
than a third of what `sampan run --rm busybox true` may take. The flags are the ones
``containers.add_create_flags`` declares, recorded through a stand-in parser, and read the
way argparse reads them: ``--flag value``, ``--flag=value``, ``-f value``, ``-fvalue``,
``-f=value``, clustered short switches (``-it``), the image, then everything after it as the
command. Whatever falls outside that (an unknown or abbreviated option, --help, a missing or
ill-typed value, a flag kind argparse has that this does not) returns None, and the caller
uses argparse, which then parses or reports the error exactly as before.
"""
from __future__ import annotations

import os

from .. import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

REMAINDER = "..."  # argparse.REMAINDER


class Namespace:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        return f"Namespace({', '.join(f'{k}={v!r}' for k, v in sorted(self.__dict__.items()))})"


class _Option:
    __slots__ = ("dest", "kind", "type", "default", "choices")

    def __init__(self, dest: str, kind: str, type_: Any, default: Any, choices: Any = None) -> None:
        self.dest, self.kind, self.type, self.default, self.choices = dest, kind, type_, default, choices


class Recorder:
    """Stands in for an ArgumentParser in ``add_create_flags``: records the flags, and gives
    up (``ok`` False) on any kind of argument it does not read the way argparse does."""

    def __init__(self) -> None:
        self.ok = True
        self.options: dict[str, _Option] = {}
        self.positionals: list[tuple[str, str | None]] = []  # (dest, nargs)
        self.defaults: dict[str, Any] = {}

    def set_defaults(self, **kw: Any) -> None:
        self.defaults.update(kw)

    def add_argument(self, *names: str, **kw: Any) -> None:
        if kw.get("action") == "help":
            return  # argparse's own --help: not an option here, so argparse gets that command line
        if not names or set(kw) - {"action", "default", "type", "nargs", "dest", "help", "metavar", "choices"}:
            self.ok = False
            return
        action, type_, nargs = kw.get("action"), kw.get("type"), kw.get("nargs")
        if not names[0].startswith("-"):
            if len(names) != 1 or action is not None or type_ is not None or nargs not in (None, REMAINDER) or \
                    "choices" in kw or \
                    (self.positionals and self.positionals[-1][1] == REMAINDER):
                self.ok = False
                return
            self.positionals.append((kw.get("dest") or names[0], nargs))
            self.defaults[kw.get("dest") or names[0]] = [] if nargs == REMAINDER else None
            return
        if nargs is not None or type_ not in (None, int, float, str) or \
                action not in (None, "store", "store_true", "append") or \
                (action == "store_true" and (type_ is not None or "choices" in kw)) or \
                isinstance(kw.get("default"), str) and type_ not in (None, str):  # (argparse converts those)
            self.ok = False  # (--help, counts, choices, ...: argparse's)
            return
        longs = [n for n in names if n.startswith("--")]
        dest = kw.get("dest") or (longs[0] if longs else names[0]).lstrip("-").replace("-", "_")
        kind = {"store_true": "flag", "append": "append"}.get(action or "store", "store")
        default = kw.get("default", False if kind == "flag" else None)
        opt = _Option(dest, kind, type_, default, kw.get("choices"))
        for n in names:
            if n in self.options:
                self.ok = False
            self.options[n] = opt
        self.defaults[dest] = default


class _Subparsers:
    """Stands in for argparse's subparsers action: every add_parser gets a Recorder."""

    def __init__(self) -> None:
        self.parsers: dict[str, Recorder] = {}

    def add_parser(self, name: str, **kw: Any) -> Recorder:
        rec = self.parsers[name] = Recorder()
        for alias in kw.get("aliases") or ():
            self.parsers[alias] = rec
        return rec


_SPECS: dict[str, Recorder] = {}


def spec_for(command: str, register: Callable[[Any], None]) -> Recorder:
    """The flags ``register(subparsers)`` declares for ``command``."""
    rec = _SPECS.get(command)
    if rec is None:
        sub = _Subparsers()
        try:
            register(sub)
            rec = sub.parsers[command]
        except Exception:  # noqa: BLE001 - a parser feature the stand-ins lack
            rec = Recorder()
            rec.ok = False
        if not rec.positionals or rec.positionals[-1][1] != REMAINDER:
            rec.ok = False
        _SPECS[command] = rec
    return rec


def _looks_like_option(s: str) -> bool:
    return s.startswith("-") and s != "-" and not s[1:2].isdigit()


def parse(rec: Recorder, args: list[str]) -> dict[str, Any] | None:
    """The values of ``args`` (what follows the command word), or None to let argparse do it."""
    if not rec.ok:
        return None
    values = {k: (list(v) if isinstance(v, list) else v) for k, v in rec.defaults.items()}
    positionals = list(rec.positionals)
    i = 0

    def store(opt: _Option, value: str) -> bool:
        if opt.type is not None:
            try:
                value = opt.type(value)
            except (TypeError, ValueError):
                return False
        if opt.choices is not None and value not in opt.choices:
            return False
        if opt.kind == "append":
            values[opt.dest] = (values[opt.dest] or []) + [value]
        else:
            values[opt.dest] = value
        return True

    def store_next(opt: _Option) -> bool:
        """The option's value is the next argument (not one that looks like an option)."""
        return i + 1 < len(args) and not _looks_like_option(args[i + 1]) and store(opt, args[i + 1])

    while i < len(args):
        a = args[i]
        if a == "--" or (a.startswith("-") and a != "-" and a[1:2].isdigit()):
            return None  # rare: let argparse have it
        if a.startswith("--"):
            name, eq, explicit = a.partition("=")
            opt = rec.options.get(name)
            if opt is None:
                return None  # unknown, abbreviated, --help
            if opt.kind == "flag":
                if eq:
                    return None
                values[opt.dest] = True
            elif eq:
                if not store(opt, explicit):
                    return None
            else:
                if not store_next(opt):
                    return None
                i += 1
        elif a.startswith("-") and a != "-":
            name, eq, explicit = a.partition("=")
            opt = rec.options.get(name) if eq else None
            if opt is not None:  # -e=A=1
                if opt.kind == "flag" or not store(opt, explicit):
                    return None
            else:
                j = 1
                while j < len(a):
                    opt = rec.options.get("-" + a[j])
                    if opt is None:
                        return None
                    if opt.kind == "flag":
                        values[opt.dest] = True
                        j += 1
                        continue
                    rest = a[j + 1:]
                    if rest:
                        if rest.startswith("=") or not store(opt, rest):
                            return None
                    else:
                        if not store_next(opt):
                            return None
                        i += 1
                    break
        else:
            if not positionals:
                return None
            dest, nargs = positionals.pop(0)
            if nargs == REMAINDER:
                values[dest] = args[i:]
                i = len(args)
                break
            values[dest] = a
            if positionals and positionals[0][1] == REMAINDER:
                dest, _ = positionals.pop(0)
                values[dest] = args[i + 1:]
                i = len(args)
                break
        i += 1
    if any(nargs != REMAINDER for _, nargs in positionals):
        return None  # a required positional is missing: argparse says so
    return values


def parse_command_line(argv: list[str], command: str, register: Callable[[Any], None]) -> dict[str, Any] | None:
    """The global options (as main.build_parser declares them), ``command``, then the flags
    that ``register(subparsers)`` declares for it; None to let argparse do it."""
    glob = {"root": paths.engine_root(), "exec_root": paths.exec_root(),
            "host": os.environ.get("SAMPAN_HOST")}
    names = {"--root": "root", "--exec-root": "exec_root", "-H": "host", "--host": "host"}
    i = 0
    while i < len(argv) and argv[i] != command:
        a = argv[i]
        name, eq, value = a.partition("=")
        if name in names and eq and name != "-H":
            glob[names[name]] = value
        elif a in names and i + 1 < len(argv) and not _looks_like_option(argv[i + 1]):
            glob[names[a]] = argv[i + 1]
            i += 1
        else:
            return None
        i += 1
    if i >= len(argv):
        return None
    values = parse(spec_for(command, register), argv[i + 1:])
    if values is None:
        return None
    return {**glob, "command": command, **values}
