"""A small parser for runc-style command lines (Go flag rules: `-x`, `--x`, `--x=v`;
flags stop at the first positional argument). argparse costs more than a container start can spare."""
from __future__ import annotations



class UsageError(Exception):
    pass


class Flag:
    __slots__ = ("names", "kind", "default")

    def __init__(self, names: tuple[str, ...], kind: str = "bool", default: object = None) -> None:
        self.names = names
        self.kind = kind  # bool | str | multi
        self.default = default


class Parsed:
    __slots__ = ("values", "args")

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values
        self.args: list[str] = []

    def __getitem__(self, key: str) -> object:
        return self.values[key]


def parse(argv: list[str], flags: list[Flag], interspersed: bool = True) -> Parsed:
    """Flags may also follow positional arguments (runc moves them before), except where the
    positionals are a command line of their own (`interspersed=False`: exec, ps)."""
    table = {name: f for f in flags for name in f.names}
    out = Parsed({f.names[0]: ([] if f.kind == "multi" else (False if f.kind == "bool" and f.default is None else f.default))
                  for f in flags})
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.args.extend(argv[i + 1:])
            return out
        if not arg.startswith("-") or arg == "-":
            if not interspersed:
                out.args.extend(argv[i:])
                return out
            out.args.append(arg)
            i += 1
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        flag = table.get(name)
        if flag is None:
            if out.args and interspersed and not name.isalpha():
                out.args.append(arg)  # e.g. `kill ID -9`: a value, not a flag
                i += 1
                continue
            raise UsageError(f"flag provided but not defined: -{name}")
        key = flag.names[0]
        if flag.kind == "bool":
            out.values[key] = value.lower() not in ("false", "0") if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            if flag.kind == "multi":
                out.values[key].append(value)  # type: ignore[union-attr]
            else:
                out.values[key] = value
        i += 1
    return out
