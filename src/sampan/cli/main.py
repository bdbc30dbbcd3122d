"""`sampan`: docker's verbs. Each group of commands lives in its own module and registers
its subcommands here; the engine root comes from --root or $SAMPAN_ROOT."""
from __future__ import annotations

import os
import sys

from .. import errors, paths

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse is imported when a command line needs it (not `run`, `create`)
    import argparse

# Global options that take a value (to find the command word without parsing everything).
_GLOBAL_VALUE_OPTIONS = ("--root", "--exec-root", "-H", "--host")


def command_of(argv: list[str]) -> str | None:
    """The command word of a `sampan` command line, None if there is none or it is unclear."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _GLOBAL_VALUE_OPTIONS:
            i += 2
            continue
        if a.startswith("-"):
            if a.startswith(("--root=", "--exec-root=", "--host=")) or (a.startswith("-H") and len(a) > 2):
                i += 1
                continue
            return None  # --help, or an option of ours we do not know here
        return a
    return None


def _columns() -> int:
    """shutil.get_terminal_size().columns without shutil (whose import costs ~8 ms)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


_parser_class = None


def parser_class() -> type:
    """argparse's parser with a formatter that is told the width (argparse makes one for every
    add_argument, and left alone each asks shutil), and docker's exit code for bad flags."""
    global _parser_class
    if _parser_class is None:
        import argparse

        class Parser(argparse.ArgumentParser):
            def __init__(self, *args: object, add_help: bool = True, **kwargs: object) -> None:
                super().__init__(*args, add_help=False, **kwargs)  # type: ignore[arg-type]
                if add_help:  # docker's words for it
                    self.add_argument("-h", "--help", action="help", help="Print usage")

            def _get_formatter(self) -> argparse.HelpFormatter:
                return self.formatter_class(prog=self.prog, width=_columns() - 2)

            def error(self, message: str):  # type: ignore[override]
                """A bad flag or argument exits 125, as docker's does (argparse's would be 2)."""
                self.print_usage(sys.stderr)
                self.exit(125, f"{self.prog}: error: {message}\n")

        _parser_class = Parser
    return _parser_class


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, one that knows only that command (when
    it is a container verb): building them all costs more than a container start."""
    parser = parser_class()(prog="sampan", description="A container engine built from the Linux kernel up")
    parser.add_argument("--root", default=paths.engine_root(),
                        help=f"Engine state directory of the daemon started for you (default $SAMPAN_ROOT or "
                        f"{paths.ENGINE_ROOT})")
    parser.add_argument("--exec-root", default=paths.exec_root(),
                        help=f"Runtime state directory (default $SAMPAN_EXEC_ROOT or {paths.EXEC_ROOT})")
    parser.add_argument("-H", "--host", default=os.environ.get("SAMPAN_HOST"),
                        help="Daemon socket to connect to (unix://PATH; default <exec-root>/sampan.sock)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import containers
    if command is not None and command in containers.COMMANDS:
        containers.register(sub, only=command)
        return parser
    from . import build, networks
    for group in (networks, build):
        if command in group.COMMANDS:  # (their parsers alone: ~40 ms less than all of them)
            group.register(sub)
            return parser
    system = sub.add_parser("system", help="Manage sampan").add_subparsers(dest="system_command", metavar="COMMAND")
    containers.register(sub)
    from . import images, system as system_verbs
    system_verbs.register(sub, system)
    images.register(sub)
    networks.register(sub)
    build.register(sub)
    return parser


# Commands whose command lines cli/fastargs.py reads (argparse for what it leaves).
FAST_COMMANDS = ("run", "create")


def _fast_args(argv: list[str], command: str | None) -> object | None:
    if command not in FAST_COMMANDS:
        return None
    from . import containers
    from .fastargs import Namespace, parse_command_line
    values = parse_command_line(argv, command, lambda sub: containers.register(sub, only=command))
    return None if values is None else Namespace(**values)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    command = command_of(argv)
    args = _fast_args(argv, command)
    if args is None:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if args.command is None else 1
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a failure of the CLI itself: one line, as docker's
        print(f"sampan: {type(e).__name__}: {e}", file=sys.stderr)
        return errors.CLI_EXIT_FAILURE


def entry() -> None:
    argv = sys.argv[1:]
    code = main(argv)
    command = command_of(argv)
    if command is not None and command in _container_commands():
        # These write nothing but stdout and stderr: flush them and skip the interpreter's
        # shutdown (module teardown, ~3 ms of every `sampan run`).
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError):
                pass
        os._exit(code if isinstance(code, int) else 0)
    sys.exit(code)


def _container_commands() -> frozenset:
    from .containers import COMMANDS
    return COMMANDS


if __name__ == "__main__":
    entry()
