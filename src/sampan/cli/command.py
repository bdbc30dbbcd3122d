"""How every `sampan` verb reports a failure, one convention, the docker CLI's:

- the daemon refused (an API error): ``Error response from daemon: <message>``, exit 1;
- the daemon is not reachable: ``Cannot connect to the sampan daemon at unix://…``, exit 1;
- the CLI itself refused (a bad flag value, an unreadable file): the message alone, exit 1;
- an error inside a JSON progress stream (pull, push, load): the message alone, exit 1;
- `run` and `create` prefix those with ``sampan: `` (but not a bad flag), add ``Run 'sampan
  run --help' for more information`` and exit 125; 126/127 when the container's command
  cannot be invoked or is not found.

On the path of every `sampan run`: the standard library's sys only.
"""
from __future__ import annotations

import sys

from .. import errors
from .client import APIError, Client, DaemonUnavailable, connect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

# The verbs whose failures docker reports as `run`'s (prefix, help line, exit 125).
RUN_STYLE = ("run", "create")


class CLIError(errors.Invalid):
    """A failure the CLI found without asking the daemon: printed as it is."""

    def __init__(self, message: str, code: int = errors.CLI_EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class StreamError(errors.Error):
    """The error message ending a JSON progress stream (the status was 200): printed as it is."""


def daemon_error(message: str) -> str:
    return f"Error response from daemon: {message}"


def start_exit_code(message: str) -> int:
    """The exit of a `run` whose container did not start, from the daemon's message, as the
    docker CLI tells them apart: 127 not found, 126 not executable, else 125."""
    if "executable file not found" in message or "no such file or directory" in message:
        return errors.CLI_EXIT_COMMAND_NOT_FOUND
    if "permission denied" in message or "is a directory" in message:
        return errors.CLI_EXIT_CANNOT_INVOKE
    return errors.CLI_EXIT_RUN_FAILURE


def report_run_failure(message: str, command: str = "run") -> None:
    """`run`/`create`'s report of a failure the daemon (or reaching it) caused."""
    print(f"sampan: {message}\n\nRun 'sampan {command} --help' for more information", file=sys.stderr)


def verb(fn: Callable[[Client, Any], int], name: str) -> Callable[[Any], int]:
    """``fn(client, args)`` as an argparse handler that fails in the convention above."""
    run_style = name in RUN_STYLE

    def handler(args: Any) -> int:
        try:
            return fn(connect(args), args)
        except APIError as e:
            message = daemon_error(e.message)
        except (DaemonUnavailable, StreamError) as e:
            message = str(e)
        except CLIError as e:
            if run_style:
                print(f"{e}\n\nRun 'sampan {name} --help' for more information", file=sys.stderr)
                return errors.CLI_EXIT_RUN_FAILURE
            print(e, file=sys.stderr)
            return e.code
        except BrokenPipeError:
            return 0
        if run_style:
            report_run_failure(message, name)
            return errors.CLI_EXIT_RUN_FAILURE
        print(message, file=sys.stderr)
        return errors.CLI_EXIT_FAILURE
    handler.__doc__ = fn.__doc__
    return handler


def object_group(sub: Any, name: str, help: str) -> Callable[..., Any]:
    """`sampan NAME VERB ...` (volume, network): the group's parser under ``sub``, and its
    add(verb, fn, help, aliases=()) that adds a verb and returns the verb's parser."""
    group = sub.add_parser(name, help=help, description=help).add_subparsers(dest=f"{name}_command",
                                                                             metavar="COMMAND")

    def add(verb_name: str, fn: Callable[[Client, Any], int], verb_help: str, aliases: tuple = ()) -> Any:
        p = group.add_parser(verb_name, help=verb_help, description=verb_help, aliases=list(aliases))
        p.set_defaults(func=verb(fn, f"{name} {verb_name}"))
        return p
    return add


def each(names: list[str], fn: Callable[[str], Any], quiet: bool = False) -> int:
    """``fn(name)`` for each name, printing it when done, as docker's multi-object verbs do
    (stop, rm, pause, ...): a refused one is reported and the others still go; exit 1 then."""
    code = 0
    for name in names:
        try:
            fn(name)
            if not quiet:
                print(name)
        except APIError as e:
            print(daemon_error(e.message), file=sys.stderr)
            code = errors.CLI_EXIT_FAILURE
    return code


def help_of(fn: Callable) -> str:
    """A verb's help line, Docker's style: its docstring's first line, without the period."""
    return (fn.__doc__ or "").strip().splitlines()[0].rstrip(".")
