"""`sampan-runc`: the OCI runtime with runc's command line, for containerd, dockerd and people."""
from __future__ import annotations

import os
import sys
import time

from .. import fastjson, paths
from .flags import Flag, Parsed, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

VERSION = "0.1.0"

GLOBAL_FLAGS = [
    Flag(("root",), "str", paths.RUNTIME_ROOT), Flag(("log",), "str", ""), Flag(("log-format",), "str", "text"),
    Flag(("debug",)), Flag(("systemd-cgroup",)), Flag(("criu",), "str", ""), Flag(("rootless",), "str", "auto"),
    Flag(("help", "h")), Flag(("version", "v")),
]


class Log:
    """runc's logging: errors and warnings to the --log file (text or json) and to stderr."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.json = fmt == "json"

    def write(self, level: str, message: str) -> None:
        from ..timefmt import rfc3339_seconds
        now = rfc3339_seconds(time.time())
        if self.path:
            line = fastjson.dumps({"level": level, "msg": message, "time": now}) if self.json else \
                f'time="{now}" level={level} msg={fastjson.dumps(message)}'
            try:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
            except OSError:
                pass
        print(message if level == "error" else f"{level}: {message}", file=sys.stderr)


def _signal(value: str) -> int:
    import signal
    if value.isdigit():
        return int(value)
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise UsageError(f"unknown signal {value!r}") from None


def _one_id(p: Parsed, command: str) -> str:
    if len(p.args) != 1:
        raise UsageError(f'"{command}" requires exactly 1 argument(s)')
    return p.args[0]


def _create_flags() -> list[Flag]:
    return [Flag(("bundle", "b"), "str", "."), Flag(("console-socket",), "str", ""), Flag(("pid-file",), "str", ""),
            Flag(("no-pivot",)), Flag(("no-new-keyring",)), Flag(("preserve-fds",), "str", "0")]


def cmd_create(rt: Any, argv: list[str]) -> int:
    from ..runtime.container import CreateOptions
    p = parse(argv, _create_flags())
    rt.create(_one_id(p, "create"), str(p["bundle"]), CreateOptions(
        console_socket=str(p["console-socket"]) or None, pid_file=str(p["pid-file"]) or None,
        no_pivot=bool(p["no-pivot"]), preserve_fds=int(str(p["preserve-fds"]))))
    return 0


def cmd_start(rt: Any, argv: list[str]) -> int:
    rt.start(_one_id(parse(argv, []), "start"))
    return 0


def cmd_run(rt: Any, argv: list[str]) -> int:
    from ..runtime import foreground
    from ..runtime.container import CreateOptions
    p = parse(argv, _create_flags() + [Flag(("detach", "d")), Flag(("no-subreaper",)), Flag(("keep",))])
    cid = _one_id(p, "run")
    detach = bool(p["detach"])
    if not detach:
        foreground.become_subreaper()
    opts = CreateOptions(console_socket=str(p["console-socket"]) or None, pid_file=str(p["pid-file"]) or None,
                         no_pivot=bool(p["no-pivot"]), preserve_fds=int(str(p["preserve-fds"])), own_terminal=not detach)
    pid = rt.create(cid, str(p["bundle"]), opts)
    if detach:
        _start_or_delete(rt, cid, opts)
        return 0
    # Installed before start: the container's process may be told to stop as soon as it runs.
    with foreground.SignalForwarder() as forwarder:
        forwarder.target(pid)
        master = _start_or_delete(rt, cid, opts)
        code = foreground.wait(pid) if master is None else foreground.wait_with_terminal(pid, master)
    if not p["keep"]:
        rt.delete(cid, force=True)
    return code


def _start_or_delete(rt: Any, cid: str, opts: Any) -> int | None:
    """Start a container run has just created; returns the master of its terminal when we hold
    it. A container that fails to start is deleted."""
    try:
        master = _receive_terminal(opts)
        rt.start(cid)
        return master
    except BaseException:
        rt.delete(cid, force=True)
        raise


def cmd_state(rt: Any, argv: list[str]) -> int:
    print(fastjson.dumps_indented(rt.state(_one_id(parse(argv, []), "state")), "  "))
    return 0


def cmd_kill(rt: Any, argv: list[str]) -> int:
    p = parse(argv, [Flag(("all", "a"))])
    if len(p.args) not in (1, 2):
        raise UsageError('"kill" requires a minimum of 1 and a maximum of 2 arguments')
    sig = _signal(p.args[1]) if len(p.args) == 2 else 15
    rt.kill(p.args[0], sig, bool(p["all"]))
    return 0


def cmd_delete(rt: Any, argv: list[str]) -> int:
    p = parse(argv, [Flag(("force", "f"))])
    rt.delete(_one_id(p, "delete"), force=bool(p["force"]))
    return 0


def cmd_list(rt: Any, argv: list[str]) -> int:
    p = parse(argv, [Flag(("format", "f"), "str", "table"), Flag(("quiet", "q"))])
    states = rt.list()
    if p["quiet"]:
        for s in states:
            print(s["id"])
    elif p["format"] == "json":
        print(fastjson.dumps(states))
    elif p["format"] == "table":
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")] + [
            (s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], "root") for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for r in rows:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    else:
        raise UsageError(f"invalid format option {p['format']!r}")
    return 0


def cmd_ps(rt: Any, argv: list[str]) -> int:
    p = parse(argv, [Flag(("format", "f"), "str", "table")], interspersed=False)
    if not p.args:
        raise UsageError('"ps" requires a minimum of 1 argument')
    cid, ps_args = p.args[0], p.args[1:] or ["-ef"]
    state = rt.state(cid)
    if state["status"] == "stopped":
        from ..runtime.errors import BadState
        raise BadState("container not running")
    pids = rt.pids(cid)
    if p["format"] == "json":
        print(fastjson.dumps(pids))
        return 0
    import subprocess
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout.splitlines()
    header = out[0].split()
    if "PID" not in header:
        raise UsageError("couldn't find PID field in ps output")
    col = header.index("PID")
    print(out[0])
    for line in out[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            print(line)
    return 0


def cmd_exec(rt: Any, argv: list[str]) -> int:
    from ..runtime import foreground
    from ..runtime.container import ExecOptions
    p = parse(argv, [Flag(("console-socket",), "str", ""), Flag(("cwd",), "str", ""), Flag(("env", "e"), "multi"),
                     Flag(("tty", "t")), Flag(("user", "u"), "str", ""), Flag(("additional-gids", "g"), "multi"),
                     Flag(("process", "p"), "str", ""), Flag(("detach", "d")), Flag(("pid-file",), "str", ""),
                     Flag(("process-label",), "str", ""), Flag(("apparmor",), "str", ""), Flag(("no-new-privs",)),
                     Flag(("cap", "c"), "multi"), Flag(("preserve-fds",), "str", "0"), Flag(("cgroup",), "multi"),
                     Flag(("ignore-paused",))], interspersed=False)
    if not p.args:
        raise UsageError('"exec" requires a minimum of 1 argument')
    cid = p.args[0]
    proc = _exec_process(rt, cid, p)
    detach = bool(p["detach"])
    if not detach:
        foreground.become_subreaper()
    opts = ExecOptions(console_socket=str(p["console-socket"]) or None, pid_file=str(p["pid-file"]) or None,
                       detach=detach, preserve_fds=int(str(p["preserve-fds"])), own_terminal=not detach)
    if detach:
        rt.exec(cid, proc, opts)
        _receive_terminal(opts)
        return 0
    # Before the process runs (it has by the time exec returns): signals meanwhile wait for it.
    with foreground.SignalForwarder() as forwarder:
        pid = rt.exec(cid, proc, opts)
        forwarder.target(pid)
        master = _receive_terminal(opts)
        return foreground.wait(pid) if master is None else foreground.wait_with_terminal(pid, master)


def _receive_terminal(opts: Any) -> int | None:
    if opts.terminal_receiver is None:
        return None
    from ..runtime.console import recv_master
    try:
        return recv_master(opts.terminal_receiver)
    finally:
        opts.terminal_receiver.close()


def _exec_process(rt: Any, cid: str, p: Parsed) -> dict[str, Any]:
    if p["process"]:
        try:
            with open(str(p["process"])) as f:
                return fastjson.loads(f.read())  # type: ignore[return-value]
        except (OSError, ValueError) as e:
            raise UsageError(f"process file {p['process']}: {e}") from None
    if len(p.args) < 2:
        raise UsageError("exec args cannot be empty")
    from ..runtime import state as st
    base = dict(st.load(rt.root, cid).get("config", {}).get("process") or {})
    proc: dict[str, Any] = {**base, "args": p.args[1:], "terminal": bool(p["tty"])}
    proc.pop("consoleSize", None)
    proc["env"] = list(base.get("env") or []) + list(p["env"])  # type: ignore[arg-type]
    if p["cwd"]:
        proc["cwd"] = p["cwd"]
    user = dict(base.get("user") or {})
    if p["user"]:
        uid, _, gid = str(p["user"]).partition(":")
        try:
            user["uid"] = int(uid)
            user["gid"] = int(gid) if gid else user.get("gid", 0)
        except ValueError:
            raise UsageError(f"invalid user {p['user']!r}: expected UID[:GID]") from None
    if p["additional-gids"]:
        user["additionalGids"] = [int(g) for g in p["additional-gids"]]  # type: ignore[union-attr]
    proc["user"] = user
    if p["cap"]:
        caps = {k: list(v or []) for k, v in (base.get("capabilities") or {}).items()}
        for cap in p["cap"]:  # type: ignore[union-attr]
            for kind in ("bounding", "effective", "permitted", "ambient"):
                if cap not in caps.setdefault(kind, []):
                    caps[kind].append(cap)
        proc["capabilities"] = caps
    if p["no-new-privs"]:
        proc["noNewPrivileges"] = True
    if p["apparmor"]:
        proc["apparmorProfile"] = p["apparmor"]
    if p["process-label"]:
        proc["selinuxLabel"] = p["process-label"]
    return proc


def cmd_pause(rt: Any, argv: list[str]) -> int:
    rt.pause(_one_id(parse(argv, []), "pause"))
    return 0


def cmd_resume(rt: Any, argv: list[str]) -> int:
    rt.resume(_one_id(parse(argv, []), "resume"))
    return 0


_UPDATE_FLAGS = {  # runc update flag -> (resources section, key)
    "memory": ("memory", "limit"), "memory-reservation": ("memory", "reservation"),
    "memory-swap": ("memory", "swap"), "kernel-memory": ("memory", "kernel"),
    "cpu-share": ("cpu", "shares"), "cpu-shares": ("cpu", "shares"),  # runc's flag is --cpu-share
    "cpu-quota": ("cpu", "quota"), "cpu-period": ("cpu", "period"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime"), "cpu-rt-period": ("cpu", "realtimePeriod"),
    "cpuset-cpus": ("cpu", "cpus"), "cpuset-mems": ("cpu", "mems"),
    "pids-limit": ("pids", "limit"), "blkio-weight": ("blockIO", "weight"),
}


def cmd_update(rt: Any, argv: list[str]) -> int:
    p = parse(argv, [Flag(("resources", "r"), "str", "")] + [Flag((name,), "str", "") for name in _UPDATE_FLAGS])
    cid = _one_id(p, "update")
    resources: dict[str, Any] = {}
    if p["resources"]:
        source = sys.stdin if p["resources"] == "-" else open(str(p["resources"]))
        try:
            loaded = fastjson.loads(source.read())
        except ValueError as e:
            raise UsageError(f"invalid resources JSON: {e}") from None
        finally:
            if source is not sys.stdin:
                source.close()
        if not isinstance(loaded, dict):
            raise UsageError("resources must be a JSON object")
        resources = loaded
    for name, (section, key) in _UPDATE_FLAGS.items():
        raw = str(p[name])
        if raw:
            resources.setdefault(section, {})[key] = raw if key in ("cpus", "mems") else _update_value(section, raw)
    rt.update(cid, resources)
    return 0


def _update_value(section: str, raw: str) -> int:
    """As runc update: memory sizes in go-units ("64m"), -1 for unlimited; other values plain integers."""
    try:
        if section == "memory" and raw.strip() != "-1":
            from ..units import parse_size
            return parse_size(raw)
        return int(raw)
    except ValueError:
        raise UsageError(f"invalid value {raw!r}") from None


def cmd_spec(rt: Any, argv: list[str]) -> int:
    from ..oci.runtime_spec import default_spec
    p = parse(argv, [Flag(("bundle", "b"), "str", ""), Flag(("rootless",))])
    path = os.path.join(str(p["bundle"]) or ".", "config.json")
    if os.path.exists(path):
        raise UsageError(f"File {path} exists. Remove it first")
    with open(path, "w") as f:
        f.write(fastjson.dumps_indented(default_spec(rootless=bool(p["rootless"])), "\t"))
    return 0


def cmd_features(rt: Any, argv: list[str]) -> int:
    from ..runtime.features import features
    print(fastjson.dumps_indented(features(), "    "))
    return 0


COMMANDS: dict[str, Callable[[Any, list[str]], int]] = {
    "create": cmd_create, "start": cmd_start, "run": cmd_run, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "list": cmd_list, "ps": cmd_ps, "exec": cmd_exec, "pause": cmd_pause,
    "resume": cmd_resume, "spec": cmd_spec, "features": cmd_features, "update": cmd_update,
}

USAGE = """usage: sampan-runc [global options] command [command options] [arguments...]

An OCI runtime with runc's command line, written in Python.

commands: create start run state kill delete list ps exec pause resume update spec features
global options: --root DIR, --log FILE, --log-format text|json, --systemd-cgroup, --debug"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log = Log("", "text")
    try:
        g = parse(argv, GLOBAL_FLAGS, interspersed=False)
        log = Log(str(g["log"]), str(g["log-format"]))
        if g["version"]:
            # dockerd parses these three lines ("X version Y", "commit: Z", "spec: W").
            print(f"sampan-runc version {VERSION}\ncommit: sampan-{VERSION}\nspec: 1.0.2-dev")
            return 0
        if g["help"] or not g.args:
            print(USAGE)
            return 0
        command, rest = g.args[0], g.args[1:]
        handler = COMMANDS.get(command)
        if handler is None:
            raise UsageError(f"No help topic for '{command}'")
        if g["debug"]:
            os.environ["SAMPAN_DEBUG"] = "1"
        from ..runtime.container import Runtime
        rt = Runtime(root=str(g["root"]), systemd_cgroup=bool(g["systemd-cgroup"]),
                     warn=lambda message: log.write("warning", message))
        return handler(rt, rest)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line and exit 1
        from ..runtime.errors import RuntimeError_
        from ..oci.runtime_spec import SpecError
        if os.environ.get("SAMPAN_DEBUG") and not isinstance(e, (RuntimeError_, SpecError, UsageError)):
            import traceback
            traceback.print_exc()
        from ..runtime.errors import describe
        log.write("error", describe(e))
        return 1


def entry() -> None:
    """Process entry point: skips interpreter teardown (milliseconds per container)."""
    # A command lives for milliseconds and makes no cyclic garbage worth collecting (nor do
    # the foreground waits of run and exec); the collector's passes over the objects of the
    # modules it loads cost CPU, and after a fork each pass copies the pages it touches.
    import gc
    gc.disable()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
