"""The container verbs of `sampan` and their registration: a client of the Docker Engine API
that sampand serves. `run`, `create`, `start`, `attach` and `exec` are in cli/run.py;
`volume`, `info`, `version` in cli/system.py; how each fails is cli/command.py's.

Imported on the way to every `sampan run`: what ps, logs, inspect need (the renderer,
json) is imported when they run."""
from __future__ import annotations

import sys

from ..stdcopy import demux
from .client import APIError, Client, quote_ref, resp_chunks
from .command import CLIError, each, verb
from .createflags import REMAINDER, add_create_flags
from .run import cmd_attach, cmd_create, cmd_exec, cmd_run, cmd_start
from .streams import save_response

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse is imported when a command line needs it (not `run`, `create`)
    import argparse
    from typing import Any

_FILTER_FORMAT = "bad format of filter (expected name=value)"


def filters_query(items: list[str]) -> str | None:
    """``-f key=value`` flags as the API's ``filters`` JSON (the daemon checks the keys)."""
    filters: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise CLIError(_FILTER_FORMAT)
        filters.setdefault(key, []).append(value)
    if not filters:
        return None
    from .. import fastjson
    return fastjson.dumps(filters)


def cmd_stop(client: Client, ns: argparse.Namespace) -> int:
    q = {"t": ns.time} if ns.time is not None else {}
    if ns.signal:
        q["signal"] = ns.signal
    return each(ns.containers, lambda c: client.call("POST", f"/containers/{c}/stop", q))


def cmd_restart(client: Client, ns: argparse.Namespace) -> int:
    q = {"t": ns.time} if ns.time is not None else {}
    return each(ns.containers, lambda c: client.call("POST", f"/containers/{c}/restart", q))


def cmd_kill(client: Client, ns: argparse.Namespace) -> int:
    return each(ns.containers, lambda c: client.call("POST", f"/containers/{c}/kill", {"signal": ns.signal}))


def cmd_rm(client: Client, ns: argparse.Namespace) -> int:
    return each(ns.containers, lambda c: client.delete(f"/containers/{c}", force=1 if ns.force else 0,
                                                        v=1 if ns.volumes else 0))


def cmd_pause(client: Client, ns: argparse.Namespace) -> int:
    return each(ns.containers, lambda c: client.post(f"/containers/{c}/pause"))


def cmd_unpause(client: Client, ns: argparse.Namespace) -> int:
    return each(ns.containers, lambda c: client.post(f"/containers/{c}/unpause"))


def cmd_wait(client: Client, ns: argparse.Namespace) -> int:
    return each(ns.containers, lambda c: print(client.post(f"/containers/{c}/wait")["StatusCode"]), quiet=True)


def cmd_rename(client: Client, ns: argparse.Namespace) -> int:
    client.call("POST", f"/containers/{ns.container}/rename", {"name": ns.new_name})
    return 0


# ---------------------------------------------------------------------------- ps
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
              "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS"}
PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def ports_column(ports: list[dict]) -> str:
    """ps's PORTS as the docker CLI shows them: runs of consecutive ports (unpublished, or
    published on the same port number) as one range ("0.0.0.0:9000-9001->9000-9001/tcp",
    "7000-7001/tcp"), then each port published on another number ("127.0.0.1:8080->80/tcp")."""
    groups: dict[str, list[int]] = {}   # key -> [first, last] of its current run, in the order first seen
    closed, mappings = [], []
    for p in sorted(ports, key=lambda p: (p.get("PrivatePort", 0), p.get("IP", ""), p.get("PublicPort", 0),
                                          p.get("Type", ""))):
        private, proto, ip = p.get("PrivatePort", 0), p.get("Type", ""), p.get("IP", "")
        key = proto
        if ip:
            if p.get("PublicPort") != private:
                mappings.append(f"{_host_port(ip, p.get('PublicPort', 0))}->{private}/{proto}")
                continue
            key = f"{ip}/{proto}"
        group = groups.get(key)
        if group is not None and group[1] + 1 == private:
            group[1] = private
            continue
        if group is not None:  # a gap: that run is shown, a new one starts
            closed.append(_group(key, *group))
        groups[key] = [private, private]
    return ", ".join(closed + [_group(key, first, last) for key, (first, last) in groups.items()] + mappings)


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _group(key: str, first: int, last: int) -> str:
    span = str(first) if first == last else f"{first}-{last}"
    ip, _, proto = key.rpartition("/")
    return f"{_host_port(ip, first).rsplit(':', 1)[0]}:{span}->{span}/{proto}" if ip else f"{span}/{proto}"


def _ps_row(c: dict, no_trunc: bool) -> dict:
    import json
    from ..timefmt import ago, go_time_string
    cmd = c.get("Command") or ""
    if not no_trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    ports = ports_column(c.get("Ports") or [])
    names = ",".join(n.lstrip("/") for n in c.get("Names") or [])
    return {"ID": c["Id"] if no_trunc else c["Id"][:12], "Image": c.get("Image", ""),
            "Command": json.dumps(cmd, ensure_ascii=False), "CreatedAt": go_time_string(c.get("Created", 0)),
            "RunningFor": ago(c.get("Created", 0)),
            "Status": c.get("Status", ""), "State": c.get("State", ""), "Ports": ports, "Names": names,
            "Labels": ",".join(f"{k}={v}" for k, v in (c.get("Labels") or {}).items()), "Mounts": "",
            "Networks": ",".join(sorted((c.get("NetworkSettings") or {}).get("Networks") or {})), "Size": ""}


def cmd_ps(client: Client, ns: argparse.Namespace) -> int:
    from . import format as fmt
    q: dict[str, Any] = {"all": 1 if ns.all or ns.latest else 0, "filters": filters_query(ns.filter)}
    if ns.last is not None:
        q["limit"] = ns.last
    if ns.latest:
        q["limit"] = 1
    cs = client.call("GET", "/containers/json", q)
    if ns.quiet:
        for c in cs:
            print(c["Id"] if ns.no_trunc else c["Id"][:12])
        return 0
    fmt.write_formatted(ns.format or PS_TABLE, [_ps_row(c, ns.no_trunc) for c in cs], PS_HEADERS, sys.stdout.write,
                        PS_TABLE)
    return 0


# ---------------------------------------------------------------------------- logs, inspect, top, export
def _time_query(value: str | None, flag: str) -> str | None:
    """--since/--until as the API takes them: unix seconds (from "10m", RFC 3339, ...)."""
    if not value:
        return None
    from ..timefmt import parse_time_arg
    try:
        ts = parse_time_arg(value)
    except ValueError as e:
        raise CLIError(f'invalid argument "{value}" for "{flag}" flag: {e}') from None
    return None if ts is None else f"{ts:.9f}"


def cmd_logs(client: Client, ns: argparse.Namespace) -> int:
    c = ns.container
    q: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": 1 if ns.follow else 0,
                         "timestamps": 1 if ns.timestamps else 0, "tail": ns.tail,
                         "since": _time_query(ns.since, "--since"), "until": _time_query(ns.until, "--until")}
    tty = bool(client.get(f"/containers/{c}/json")["Config"].get("Tty"))
    resp = client.open("GET", f"/containers/{c}/logs", q)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    if tty:
        for data in resp_chunks(resp):
            out.write(data)
            out.flush()
    else:
        for stream, data in demux(resp_chunks(resp)):
            f = err if stream == 2 else out
            f.write(data)
            f.flush()
    return 0


_INSPECT_PATHS = {"container": "/containers/{}/json", "image": "/images/{}/json", "volume": "/volumes/{}"}


def cmd_inspect(client: Client, ns: argparse.Namespace) -> int:
    """Return low-level information on Docker objects."""
    from . import format as fmt
    found, code = [], 0
    for name in ns.names:
        obj = None
        for kind in [ns.type] if ns.type else list(_INSPECT_PATHS):
            try:
                obj = client.get(_INSPECT_PATHS[kind].format(quote_ref(name)))
                break
            except APIError as e:
                if e.status != 404:
                    raise
        if obj is None:
            print(f"Error: No such object: {name}", file=sys.stderr)
            code = 1
            continue
        found.append(obj)
    fmt.write_inspected(ns.format, found, sys.stdout.write)
    return code


def cmd_top(client: Client, ns: argparse.Namespace) -> int:
    from . import format as fmt
    res = client.call("GET", f"/containers/{ns.container}/top", {"ps_args": " ".join(ns.ps_args) or None})
    sys.stdout.write(fmt.table([res["Titles"]] + res["Processes"]))
    return 0


def cmd_export(client: Client, ns: argparse.Namespace) -> int:
    if not ns.output and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    save_response(client.open("GET", f"/containers/{ns.container}/export"), ns.output)
    return 0


# ---------------------------------------------------------------------------- registration
class _Skipped:
    """What register(only=...) hands out for the commands it leaves out."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_defaults(self, **kwargs: Any) -> None:
        pass


# The commands register() adds (main.build_parser builds only the one it runs).
COMMANDS = frozenset(("run", "create", "start", "stop", "restart", "kill", "rm", "pause", "unpause", "wait",
                      "rename", "ps", "logs", "exec", "attach", "inspect", "top", "export"))


def register(sub: argparse._SubParsersAction, only: str | None = None) -> None:
    def add(name: str, fn: Any, help: str, aliases: tuple = ()) -> argparse.ArgumentParser:
        if only is not None and only != name and only not in aliases:
            return _Skipped()  # type: ignore[return-value]
        p = sub.add_parser(name, help=help, description=help, aliases=list(aliases),
                           add_help=name not in ("run", "create"))
        if name in ("run", "create"):
            p.add_argument("--help", action="help", help="Print usage")
        p.set_defaults(func=verb(fn, name))
        return p

    p = add("run", cmd_run, "Create and run a new container from an image")
    p.add_argument("-d", "--detach", action="store_true", help="Run container in background and print container ID")
    add_create_flags(p)
    p = add("create", cmd_create, "Create a new container")
    add_create_flags(p)
    p = add("start", cmd_start, "Start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="Attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="Attach container's STDIN")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    for name, fn, h in (("stop", cmd_stop, "Stop one or more running containers"),
                        ("restart", cmd_restart, "Restart one or more containers")):
        p = add(name, fn, h)
        p.add_argument("-t", "--time", "--timeout", type=int, help="Seconds to wait before killing the container")
        if name == "stop":
            p.add_argument("-s", "--signal", help="Signal to send to the container")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = add("kill", cmd_kill, "Kill one or more running containers")
    p.add_argument("-s", "--signal", default="KILL", help="Signal to send to the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = add("rm", cmd_rm, "Remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of a running container")
    p.add_argument("-v", "--volumes", action="store_true", help="Remove anonymous volumes of the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    for name, fn, h in (("pause", cmd_pause, "Pause all processes within one or more containers"),
                        ("unpause", cmd_unpause, "Unpause all processes within one or more containers"),
                        ("wait", cmd_wait, "Block until one or more containers stop, then print their exit codes")):
        add(name, fn, h).add_argument("containers", nargs="+", metavar="CONTAINER")
    p = add("rename", cmd_rename, "Rename a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p = add("ps", cmd_ps, "List containers")
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display container IDs")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("--format", help="Format output using a custom template: 'table', 'table TEMPLATE', "
                   "'json' or 'TEMPLATE'")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("-n", "--last", type=int, help="Show n last created containers (includes all states)")
    p.add_argument("-l", "--latest", action="store_true", help="Show the latest created container")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes")
    p = add("logs", cmd_logs, "Fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="Follow log output")
    p.add_argument("-n", "--tail", default="all", help="Number of lines to show from the end of the logs")
    p.add_argument("--since", help="Show logs since timestamp or relative (e.g. 42m for 42 minutes)")
    p.add_argument("--until", help="Show logs before a timestamp or relative (e.g. 42m for 42 minutes)")
    p.add_argument("-t", "--timestamps", action="store_true", help="Show timestamps")
    p.add_argument("container", metavar="CONTAINER")
    p = add("exec", cmd_exec, "Execute a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="Detached mode: run command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], help="Set environment variables")
    p.add_argument("-w", "--workdir", help="Working directory inside the container")
    p.add_argument("-u", "--user", help="Username or UID (format: \"<name|uid>[:<group|gid>]\")")
    p.add_argument("--privileged", action="store_true", help="Give extended privileges to the command")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=REMAINDER, metavar="COMMAND")
    p = add("attach", cmd_attach, "Attach local standard input, output, and error streams to a running container")
    p.add_argument("--no-stdin", action="store_true", help="Do not attach STDIN")
    p.add_argument("container", metavar="CONTAINER")
    p = add("inspect", cmd_inspect, "Return low-level information on Docker objects")
    p.add_argument("-f", "--format", help="Format output using a custom template: 'json' or 'TEMPLATE'")
    p.add_argument("--type", choices=list(_INSPECT_PATHS), help="Return JSON for specified type")
    p.add_argument("names", nargs="+", metavar="NAME|ID")
    p = add("top", cmd_top, "Display the running processes of a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=REMAINDER, metavar="ps OPTIONS")
    p = add("export", cmd_export, "Export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", help="Write to a file, instead of STDOUT")
    p.add_argument("container", metavar="CONTAINER")
