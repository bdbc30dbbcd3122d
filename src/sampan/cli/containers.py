"""The container verbs of `sampan` (run, create, start, stop, ps, logs, exec, ...) and
`volume`, `system info`, `version`: a client of the Docker Engine API that sampand serves.

Exit codes follow docker: 125 when the daemon fails, 126 when the command cannot be
invoked, 127 when it is not found, else the container's own."""
from __future__ import annotations

import _socket
import os
import sys
import time

from .. import fastjson
from ..timefmt import duration
from .client import APIError, Client, DaemonUnavailable, connect, demux, quote_ref, resp_chunks, _sock_chunks

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, argparse, re, json, threading, signal: not imported on the way to `run`
    import argparse
    from typing import Any

REMAINDER = "..."  # argparse.REMAINDER


class _Lazy:
    """A module imported when first used (argparse and re cost ~9 ms; `run` and `create`
    parse their command line with cli/fastargs.py and need neither; fastjson covers the API)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module = __import__(self._name)
        globals()[self._name] = module
        return getattr(module, attr)


json = _Lazy("json")
re = _Lazy("re")
argparse = _Lazy("argparse")


class CLIError(Exception):
    def __init__(self, message: str, code: int = 125) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- parsing helpers
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def parse_bytes(v: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", v.lower())
    if not m:
        raise CLIError(f"invalid size: '{v}'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse_kv(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        out[k] = v
    return out


def read_env_file(path: str) -> list[str]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                v = os.environ.get(line)
                if v is None:
                    continue
                line = f"{line}={v}"
            out.append(line)
    return out


def _env(items: list[str]) -> list[str]:
    out = []
    for e in items or []:
        if "=" not in e:
            if e in os.environ:
                out.append(f"{e}={os.environ[e]}")
        else:
            out.append(e)
    return out


def parse_mount(spec: str) -> dict:
    m: dict[str, Any] = {"Type": "volume"}
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        k = k.strip().lower()
        if k == "type":
            m["Type"] = v
        elif k in ("source", "src"):
            m["Source"] = v
        elif k in ("target", "destination", "dst"):
            m["Target"] = v
        elif k in ("readonly", "ro"):
            m["ReadOnly"] = (not eq) or v.lower() in ("1", "true")
        elif k == "bind-propagation":
            m.setdefault("BindOptions", {})["Propagation"] = v
        elif k == "tmpfs-size":
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = parse_bytes(v)
        elif k == "tmpfs-mode":
            m.setdefault("TmpfsOptions", {})["Mode"] = int(v, 8)
        elif k == "volume-nocopy":
            m.setdefault("VolumeOptions", {})["NoCopy"] = True
    if "Target" not in m:
        raise CLIError(f"invalid argument \"{spec}\" for \"--mount\" flag: target is required")
    return m


def parse_ulimit(v: str) -> dict:
    name, _, rng = v.partition("=")
    soft, _, hard = rng.partition(":")
    try:
        s = int(soft)
        h = int(hard) if hard else s
    except ValueError:
        raise CLIError(f"invalid ulimit argument: {v}") from None
    return {"Name": name, "Soft": s, "Hard": h}


def parse_device(v: str) -> dict:
    parts = v.split(":")
    host = parts[0]
    cont = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host
    perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
    return {"PathOnHost": host, "PathInContainer": cont, "CgroupPermissions": perms}


def security_opts(opts: list[str]) -> list[str]:
    """As docker's CLI: ``seccomp=FILE`` is sent as the profile's text (the daemon may not see
    the file, nor resolve a path relative to our directory)."""
    out = []
    for o in opts or []:
        key, sep, value = o.partition("=")
        if key == "seccomp" and sep and value != "unconfined" and not value.lstrip().startswith("{"):
            try:
                with open(value) as f:
                    text = f.read()
            except OSError as e:
                raise CLIError(f"opening seccomp profile ({value}) failed: {e.strerror}") from None
            try:
                text = fastjson.dumps(fastjson.loads(text))  # compact, and checked
            except ValueError as e:
                raise CLIError(f"parsing seccomp profile ({value}) failed: {e}") from None
            o = "seccomp=" + text
        out.append(o)
    return out


def parse_restart(v: str) -> dict:
    name, _, n = v.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped", ""):
        raise CLIError(f"invalid restart policy: {v}")
    return {"Name": name or "no", "MaximumRetryCount": int(n) if n else 0}


def add_create_flags(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("-i", "--interactive", action="store_true")
    a("-t", "--tty", action="store_true")
    a("--rm", action="store_true")
    a("--name")
    a("-e", "--env", action="append", default=[])
    a("--env-file", action="append", default=[])
    a("-v", "--volume", action="append", default=[])
    a("--mount", action="append", default=[])
    a("--tmpfs", action="append", default=[])
    a("-w", "--workdir")
    a("-u", "--user")
    a("--entrypoint")
    a("-h", "--hostname")
    a("-l", "--label", action="append", default=[])
    a("-m", "--memory")
    a("--memory-swap")
    a("--cpus")
    a("-c", "--cpu-shares", type=int)
    a("--cpuset-cpus")
    a("--pids-limit", type=int)
    a("--ulimit", action="append", default=[])
    a("--read-only", action="store_true")
    a("--cap-add", action="append", default=[])
    a("--cap-drop", action="append", default=[])
    a("--privileged", action="store_true")
    a("--security-opt", action="append", default=[])
    a("--device", action="append", default=[])
    a("--init", action="store_true")
    a("--restart")
    a("--stop-signal")
    a("--stop-timeout", type=int)
    a("--log-opt", action="append", default=[])
    a("--sysctl", action="append", default=[])
    a("--shm-size")
    a("--network", "--net")
    a("--platform")
    a("--pull", default="missing")
    a("image")
    a("command", nargs=REMAINDER)


def create_body(ns: argparse.Namespace) -> dict:
    env = []
    for f in ns.env_file:
        try:
            env += read_env_file(f)
        except OSError as e:
            raise CLIError(f"open {f}: {e.strerror}") from None
    env += _env(ns.env)
    labels = parse_kv(ns.label)
    binds, volumes = [], {}
    for v in ns.volume:
        if ":" in v and not v.startswith(":"):
            binds.append(v)
        else:
            volumes[v] = {}
    hc: dict[str, Any] = {
        "Binds": binds or None, "Mounts": [parse_mount(m) for m in ns.mount] or None,
        "AutoRemove": ns.rm, "Privileged": ns.privileged, "ReadonlyRootfs": ns.read_only,
        "CapAdd": ns.cap_add or None, "CapDrop": ns.cap_drop or None, "SecurityOpt": security_opts(ns.security_opt) or None,
        "Devices": [parse_device(d) for d in ns.device] or None,
        "Ulimits": [parse_ulimit(u) for u in ns.ulimit] or None,
        "Sysctls": parse_kv(ns.sysctl) or None,
        "NetworkMode": ns.network or "none",
    }
    if ns.tmpfs:
        hc["Tmpfs"] = {t.split(":", 1)[0]: (t.split(":", 1)[1] if ":" in t else "") for t in ns.tmpfs}
    if ns.memory:
        hc["Memory"] = parse_bytes(ns.memory)
    if ns.memory_swap:
        hc["MemorySwap"] = -1 if ns.memory_swap == "-1" else parse_bytes(ns.memory_swap)
    if ns.cpus:
        try:
            hc["NanoCpus"] = int(float(ns.cpus) * 1e9)
        except ValueError:
            raise CLIError(f"invalid argument \"{ns.cpus}\" for \"--cpus\" flag") from None
    if ns.cpu_shares:
        hc["CpuShares"] = ns.cpu_shares
    if ns.cpuset_cpus:
        hc["CpusetCpus"] = ns.cpuset_cpus
    if ns.pids_limit is not None:
        hc["PidsLimit"] = ns.pids_limit
    if ns.init:
        hc["Init"] = True
    if ns.restart:
        hc["RestartPolicy"] = parse_restart(ns.restart)
    if ns.log_opt:
        hc["LogConfig"] = {"Type": "json-file", "Config": parse_kv(ns.log_opt)}
    if ns.shm_size:
        hc["ShmSize"] = parse_bytes(ns.shm_size)
    body: dict[str, Any] = {
        "Image": ns.image, "Cmd": ns.command or None, "Env": env or None, "Labels": labels or None,
        "Tty": ns.tty, "OpenStdin": ns.interactive, "StdinOnce": ns.interactive,
        "AttachStdin": ns.interactive, "AttachStdout": True, "AttachStderr": True,
        "Volumes": volumes or None, "HostConfig": {k: v for k, v in hc.items() if v is not None},
    }
    if ns.workdir:
        body["WorkingDir"] = ns.workdir
    if ns.user:
        body["User"] = ns.user
    if ns.entrypoint is not None:
        body["Entrypoint"] = [ns.entrypoint] if ns.entrypoint else [""]
    if ns.hostname:
        body["Hostname"] = ns.hostname
    if ns.stop_signal:
        body["StopSignal"] = ns.stop_signal
    if ns.stop_timeout is not None:
        body["StopTimeout"] = ns.stop_timeout
    if ns.tty:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
            body["HostConfig"]["ConsoleSize"] = [size.lines, size.columns]
        except OSError:
            pass
    return {k: v for k, v in body.items() if v is not None}


# ---------------------------------------------------------------------------- formatting
def table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(widths[i] + 3) if i < len(r) - 1 else c for i, c in enumerate(r)]
        out.append("".join(cells).rstrip())
    return "\n".join(out)


def render(template: str, obj: Any) -> str:
    """A small subset of Go templates: {{.A.B}}, {{json .X}}, {{json .}}, {{upper/lower}} not supported."""
    def lookup(expr: str) -> Any:
        expr = expr.strip()
        fn = None
        if expr.startswith("json "):
            fn, expr = "json", expr[5:].strip()
        cur = obj
        if expr != ".":
            for part in expr.lstrip(".").split("."):
                if isinstance(cur, dict):
                    cur = cur.get(part)
                else:
                    cur = None
        if fn == "json":
            return json.dumps(cur)
        if cur is None:
            return "<no value>"
        if isinstance(cur, bool):
            return "true" if cur else "false"
        if isinstance(cur, (dict, list)):
            return json.dumps(cur) if isinstance(cur, dict) else "[" + " ".join(map(str, cur)) + "]"
        return str(cur)
    text = re.sub(r"\{\{(.*?)\}\}", lambda m: lookup(m.group(1)), template)
    return text.replace("\\t", "\t").replace("\\n", "\n")


# ---------------------------------------------------------------------------- streams
class _Raw:
    """The terminal in raw mode while a tty session runs."""

    def __init__(self, enable: bool) -> None:
        self.enable = enable and sys.stdin.isatty()
        self.saved = None

    def __enter__(self) -> "_Raw":
        if self.enable:
            import termios
            import tty
            self.saved = termios.tcgetattr(sys.stdin.fileno())
            tty.setraw(sys.stdin.fileno())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.saved)


def _pump_stdin(sock: _socket.socket) -> None:
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(_socket.SHUT_WR)
    except OSError:
        pass


def stream_output(sock: _socket.socket, first: bytes, tty: bool, stdin: bool) -> None:
    """Copy a hijacked stream to our stdout/stderr (and stdin to it) until it ends."""
    if stdin:
        import threading
        threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    chunks = _sock_chunks(sock, first)
    if tty:
        for data in chunks:
            out.write(data)
            out.flush()
    else:
        for stream, data in demux(chunks):
            f = err if stream == 2 else out
            f.write(data)
            f.flush()


def _watch_resize(client: Client, path: str) -> None:
    def resize(*_: Any) -> None:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
            client.post(path, h=size.lines, w=size.columns)
        except (OSError, APIError):
            pass
    if sys.stdout.isatty():
        import signal
        signal.signal(signal.SIGWINCH, resize)
        resize()


def _start_exit_code(e: APIError) -> int:
    low = e.message.lower()
    if "executable file not found" in low or "no such file" in low or "not found" in low:
        return 127
    if "permission denied" in low or "cannot invoke" in low or "is a directory" in low:
        return 126
    return 125


# ---------------------------------------------------------------------------- commands
def _create(client: Client, ns: argparse.Namespace) -> str:
    body = create_body(ns)
    query = {"name": ns.name} if ns.name else {}
    if ns.platform:
        query["platform"] = ns.platform
    try:
        res = client.call("POST", "/containers/create", query, body)
    except APIError as e:
        if e.status != 404 or "image" not in e.message.lower() or ns.pull == "never":
            raise
        print(f"Unable to find image '{ns.image}' locally", file=sys.stderr)
        _pull(client, ns.image)
        res = client.call("POST", "/containers/create", query, body)
    for w in res.get("Warnings") or []:
        print(f"WARNING: {w}", file=sys.stderr)
    return res["Id"]


def _pull(client: Client, image: str) -> None:
    name, tag = image, "latest"
    if "@" in image:
        name, tag = image.split("@", 1)
    elif ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    for msg in client.json_lines("POST", "/images/create", {"fromImage": name, "tag": tag}):
        if msg.get("error"):
            raise APIError(500, msg["error"])
        if msg.get("status") and not msg.get("progressDetail"):
            print((msg.get("id") + ": " if msg.get("id") else "") + msg["status"], file=sys.stderr)


def cmd_create(client: Client, ns: argparse.Namespace) -> int:
    print(_create(client, ns))
    return 0


def cmd_run(client: Client, ns: argparse.Namespace) -> int:
    cid = _create(client, ns)
    if ns.detach:
        try:
            client.post(f"/containers/{cid}/start")
        except APIError as e:
            print(f"sampan: Error response from daemon: {e.message}", file=sys.stderr)
            return _start_exit_code(e)
        print(cid)
        return 0
    # As the docker CLI does: attach and wait (both sent at once; the wait's headers come back
    # before the start, so the exit cannot be missed; with --rm until the container is
    # removed), then start, then stream.
    attaching = client.hijack_send(f"/containers/{cid}/attach",
                                   {"stream": 1, "stdin": 1 if ns.interactive else 0, "stdout": 1, "stderr": 1})
    try:
        waiting = client.send("POST", f"/containers/{cid}/wait", {"condition": "removed" if ns.rm else "next-exit"})
    except BaseException:
        attaching.close()
        raise
    try:
        sock, first = client.hijacked(attaching)
    except BaseException:
        waiting.close()
        raise
    wait = None
    try:
        wait = client.response(waiting, "POST")
    except APIError as e:
        if e.status != 404:
            sock.close()
            raise
    try:
        client.post(f"/containers/{cid}/start")
    except APIError as e:
        sock.close()
        if wait is not None:
            wait.close()
        print(f"sampan: Error response from daemon: {e.message}", file=sys.stderr)
        if ns.rm:
            try:
                client.delete(f"/containers/{cid}", force=1)
            except APIError:
                pass
        return _start_exit_code(e)
    if ns.tty:
        _watch_resize(client, f"/containers/{cid}/resize")
    with _Raw(ns.tty and ns.interactive):
        try:
            stream_output(sock, first, ns.tty, ns.interactive)
        finally:
            sock.close()
    if wait is None:
        return 0
    try:
        result = fastjson.loads(wait.read() or b"{}")
    except APIError as e:
        if e.status == 404:
            return 0
        raise
    if result.get("Error") and result["Error"].get("Message"):
        print(f"sampan: {result['Error']['Message']}", file=sys.stderr)
    return int(result.get("StatusCode", 0))


def _each(ns: argparse.Namespace, fn: Any, quiet: bool = False) -> int:
    rc = 0
    for c in ns.containers:
        try:
            fn(c)
            if not quiet:
                print(c)
        except APIError as e:
            print(f"Error response from daemon: {e.message}", file=sys.stderr)
            rc = 1
    return rc


def cmd_start(client: Client, ns: argparse.Namespace) -> int:
    if not (ns.attach or ns.interactive):
        return _each(ns, lambda c: client.post(f"/containers/{c}/start"))
    c = ns.containers[0]
    info = client.get(f"/containers/{c}/json")
    tty = bool(info["Config"].get("Tty"))
    sock, first = client.hijack(f"/containers/{c}/attach",
                                {"stream": 1, "stdin": 1 if ns.interactive else 0, "stdout": 1, "stderr": 1})
    try:
        client.post(f"/containers/{c}/start")
    except APIError as e:
        sock.close()
        print(f"Error response from daemon: {e.message}", file=sys.stderr)
        return _start_exit_code(e)
    with _Raw(tty and ns.interactive):
        stream_output(sock, first, tty, ns.interactive)
    sock.close()
    try:
        return int(client.post(f"/containers/{c}/wait")["StatusCode"])
    except APIError:
        return 0


def cmd_stop(client: Client, ns: argparse.Namespace) -> int:
    q = {"t": ns.time} if ns.time is not None else {}
    if ns.signal:
        q["signal"] = ns.signal
    return _each(ns, lambda c: client.call("POST", f"/containers/{c}/stop", q))


def cmd_restart(client: Client, ns: argparse.Namespace) -> int:
    q = {"t": ns.time} if ns.time is not None else {}
    return _each(ns, lambda c: client.call("POST", f"/containers/{c}/restart", q))


def cmd_kill(client: Client, ns: argparse.Namespace) -> int:
    return _each(ns, lambda c: client.call("POST", f"/containers/{c}/kill", {"signal": ns.signal}))


def cmd_rm(client: Client, ns: argparse.Namespace) -> int:
    return _each(ns, lambda c: client.delete(f"/containers/{c}", force=1 if ns.force else 0,
                                             v=1 if ns.volumes else 0))


def cmd_pause(client: Client, ns: argparse.Namespace) -> int:
    return _each(ns, lambda c: client.post(f"/containers/{c}/pause"))


def cmd_unpause(client: Client, ns: argparse.Namespace) -> int:
    return _each(ns, lambda c: client.post(f"/containers/{c}/unpause"))


def cmd_wait(client: Client, ns: argparse.Namespace) -> int:
    rc = 0
    for c in ns.containers:
        try:
            print(client.post(f"/containers/{c}/wait")["StatusCode"])
        except APIError as e:
            print(f"Error response from daemon: {e.message}", file=sys.stderr)
            rc = 1
    return rc


def cmd_rename(client: Client, ns: argparse.Namespace) -> int:
    client.call("POST", f"/containers/{ns.container}/rename", {"name": ns.new_name})
    return 0


def _ps_row(c: dict, no_trunc: bool) -> dict:
    cmd = c.get("Command") or ""
    if not no_trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    ports = ", ".join(f"{p.get('PublicPort')}->{p.get('PrivatePort')}/{p.get('Type')}" if p.get("PublicPort")
                      else f"{p.get('PrivatePort')}/{p.get('Type')}" for p in c.get("Ports") or [])
    names = ",".join(n.lstrip("/") for n in c.get("Names") or [])
    return {"ID": c["Id"] if no_trunc else c["Id"][:12], "Image": c.get("Image", ""),
            "Command": json.dumps(cmd, ensure_ascii=False), "CreatedAt": time.strftime(
                "%Y-%m-%d %H:%M:%S %z %Z", time.localtime(c.get("Created", 0))),
            "RunningFor": duration(time.time() - c.get("Created", 0)) + " ago",
            "Status": c.get("Status", ""), "State": c.get("State", ""), "Ports": ports, "Names": names,
            "Labels": ",".join(f"{k}={v}" for k, v in (c.get("Labels") or {}).items()), "Mounts": "",
            "Networks": "", "Size": ""}


def cmd_ps(client: Client, ns: argparse.Namespace) -> int:
    filters: dict[str, list[str]] = {}
    for f in ns.filter:
        k, _, v = f.partition("=")
        filters.setdefault(k, []).append(v)
    q: dict[str, Any] = {"all": 1 if ns.all or ns.latest else 0}
    if filters:
        q["filters"] = json.dumps(filters)
    if ns.last is not None:
        q["limit"] = ns.last
    if ns.latest:
        q["limit"] = 1
    cs = client.call("GET", "/containers/json", q)
    if ns.quiet:
        for c in cs:
            print(c["Id"] if ns.no_trunc else c["Id"][:12])
        return 0
    rows = [_ps_row(c, ns.no_trunc) for c in cs]
    fmt = ns.format
    if fmt == "json":
        for r in rows:
            print(json.dumps(r))
        return 0
    if fmt and not fmt.startswith("table"):
        for r in rows:
            print(render(fmt, r))
        return 0
    cols = [("CONTAINER ID", "ID"), ("IMAGE", "Image"), ("COMMAND", "Command"), ("CREATED", "RunningFor"),
            ("STATUS", "Status"), ("PORTS", "Ports"), ("NAMES", "Names")]
    if fmt:
        fields = re.findall(r"\{\{\s*\.(\w+)\s*\}\}", fmt)
        heads = {"ID": "CONTAINER ID", "RunningFor": "CREATED", "CreatedAt": "CREATED AT"}
        cols = [(heads.get(f, f.upper()), f) for f in fields]
    print(table([[h for h, _ in cols]] + [[r.get(f, "") for _, f in cols] for r in rows]))
    return 0


def cmd_logs(client: Client, ns: argparse.Namespace) -> int:
    c = ns.container
    info = client.get(f"/containers/{c}/json")
    tty = bool(info["Config"].get("Tty"))
    q: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": 1 if ns.follow else 0,
                         "timestamps": 1 if ns.timestamps else 0, "tail": ns.tail}
    if ns.since:
        q["since"] = _time_arg(ns.since)
    if ns.until:
        q["until"] = _time_arg(ns.until)
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


def _time_arg(v: str) -> str:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", v)
    if m:
        secs = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
        return f"{time.time() - secs:.9f}"
    return v


def cmd_exec(client: Client, ns: argparse.Namespace) -> int:
    body: dict[str, Any] = {"Cmd": ns.command, "Tty": ns.tty, "AttachStdin": ns.interactive and not ns.detach,
                            "AttachStdout": not ns.detach, "AttachStderr": not ns.detach,
                            "Env": _env(ns.env) or None, "Privileged": ns.privileged}
    if ns.workdir:
        body["WorkingDir"] = ns.workdir
    if ns.user:
        body["User"] = ns.user
    if not ns.command:
        raise CLIError("exec requires at least 2 arguments", 1)
    if ns.tty:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
            body["ConsoleSize"] = [size.lines, size.columns]
        except OSError:
            pass
    eid = client.post(f"/containers/{ns.container}/exec", body)["Id"]
    if ns.detach:
        client.post(f"/exec/{eid}/start", {"Detach": True, "Tty": ns.tty})
        return 0
    try:
        sock, first = client.hijack(f"/exec/{eid}/start", None, {"Detach": False, "Tty": ns.tty})
    except APIError as e:
        print(f"sampan: Error response from daemon: {e.message}", file=sys.stderr)
        return _start_exit_code(e) if e.status >= 500 else 1
    if ns.tty:
        _watch_resize(client, f"/exec/{eid}/resize")
    with _Raw(ns.tty and ns.interactive):
        stream_output(sock, first, ns.tty, ns.interactive)
    sock.close()
    for _ in range(200):
        info = client.get(f"/exec/{eid}/json")
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        time.sleep(0.025)
    return 0


def cmd_attach(client: Client, ns: argparse.Namespace) -> int:
    c = ns.container
    info = client.get(f"/containers/{c}/json")
    tty = bool(info["Config"].get("Tty"))
    stdin = not ns.no_stdin and bool(info["Config"].get("OpenStdin"))
    sock, first = client.hijack(f"/containers/{c}/attach", {"stream": 1, "stdin": 1 if stdin else 0,
                                                             "stdout": 1, "stderr": 1})
    with _Raw(tty and stdin):
        stream_output(sock, first, tty, stdin)
    sock.close()
    try:
        return int(client.get(f"/containers/{c}/json")["State"]["ExitCode"])
    except APIError:
        return 0


def cmd_inspect(client: Client, ns: argparse.Namespace) -> int:
    out, rc = [], 0
    for name in ns.names:
        obj = None
        kinds = [ns.type] if ns.type else ["container", "image", "volume"]
        for kind in kinds:
            try:
                if kind == "container":
                    obj = client.get(f"/containers/{name}/json")
                elif kind == "image":
                    obj = client.get(f"/images/{quote_ref(name)}/json")
                elif kind == "volume":
                    obj = client.get(f"/volumes/{name}")
                break
            except APIError as e:
                if e.status != 404:
                    raise
        if obj is None:
            print(f"Error: No such object: {name}", file=sys.stderr)
            rc = 1
            continue
        out.append(obj)
    if ns.format:
        for o in out:
            print(render(ns.format, o))
    else:
        print(json.dumps(out, indent=4))
    return rc


def cmd_top(client: Client, ns: argparse.Namespace) -> int:
    res = client.call("GET", f"/containers/{ns.container}/top", {"ps_args": " ".join(ns.ps_args) or None})
    print(table([res["Titles"]] + res["Processes"]))
    return 0


def cmd_export(client: Client, ns: argparse.Namespace) -> int:
    if not ns.output and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = client.open("GET", f"/containers/{ns.container}/export")
    out = open(ns.output, "wb") if ns.output else sys.stdout.buffer
    try:
        while chunk := resp.read1():
            out.write(chunk)
    finally:
        resp.close()
        if ns.output:
            out.close()
    return 0


def cmd_volume_create(client: Client, ns: argparse.Namespace) -> int:
    v = client.post("/volumes/create", {"Name": ns.name or "", "Driver": ns.driver,
                                        "Labels": parse_kv(ns.label), "DriverOpts": parse_kv(ns.opt)})
    print(v["Name"])
    return 0


def cmd_volume_ls(client: Client, ns: argparse.Namespace) -> int:
    filters: dict[str, list[str]] = {}
    for f in ns.filter:
        k, _, v = f.partition("=")
        filters.setdefault(k, []).append(v)
    res = client.call("GET", "/volumes", {"filters": json.dumps(filters)} if filters else None)
    vols = res.get("Volumes") or []
    if ns.quiet:
        for v in vols:
            print(v["Name"])
        return 0
    if ns.format:
        for v in vols:
            print(json.dumps(v) if ns.format == "json" else render(ns.format, v))
        return 0
    print(table([["DRIVER", "VOLUME NAME"]] + [[v.get("Driver", "local"), v["Name"]] for v in vols]))
    return 0


def cmd_volume_inspect(client: Client, ns: argparse.Namespace) -> int:
    out, rc = [], 0
    for n in ns.names:
        try:
            out.append(client.get(f"/volumes/{n}"))
        except APIError as e:
            print(f"Error response from daemon: {e.message}", file=sys.stderr)
            rc = 1
    if ns.format:
        for o in out:
            print(render(ns.format, o))
    else:
        print(json.dumps(out, indent=4))
    return rc


def cmd_volume_rm(client: Client, ns: argparse.Namespace) -> int:
    rc = 0
    for n in ns.names:
        try:
            client.delete(f"/volumes/{n}", force=1 if ns.force else 0)
            print(n)
        except APIError as e:
            print(f"Error response from daemon: {e.message}", file=sys.stderr)
            rc = 1
    return rc


def cmd_volume_prune(client: Client, ns: argparse.Namespace) -> int:
    filters = {"all": ["true"]} if ns.all else {}
    res = client.call("POST", "/volumes/prune", {"filters": json.dumps(filters)} if filters else None)
    deleted = res.get("VolumesDeleted") or []
    if deleted:
        print("Deleted Volumes:")
        for n in deleted:
            print(n)
        print()
    print(f"Total reclaimed space: {res.get('SpaceReclaimed', 0)}B")
    return 0


def cmd_info(client: Client, ns: argparse.Namespace) -> int:
    i = client.get("/info")
    if getattr(ns, "format", None):
        print(json.dumps(i) if ns.format == "json" else render(ns.format, i))
        return 0
    print("Server:")
    print(f" Containers: {i.get('Containers')}")
    print(f"  Running: {i.get('ContainersRunning')}")
    print(f"  Paused: {i.get('ContainersPaused')}")
    print(f"  Stopped: {i.get('ContainersStopped')}")
    print(f" Images: {i.get('Images')}")
    for k, label in (("ServerVersion", "Server Version"), ("Driver", "Storage Driver"),
                     ("LoggingDriver", "Logging Driver"), ("CgroupDriver", "Cgroup Driver"),
                     ("CgroupVersion", "Cgroup Version"), ("DefaultRuntime", "Default Runtime"),
                     ("KernelVersion", "Kernel Version"), ("OperatingSystem", "Operating System"),
                     ("OSType", "OSType"), ("Architecture", "Architecture"), ("NCPU", "CPUs"),
                     ("Name", "Name"), ("DockerRootDir", "Root Dir")):
        if i.get(k) not in (None, ""):
            print(f" {label}: {i[k]}")
    if i.get("MemTotal"):
        print(f" Total Memory: {i['MemTotal'] / 1024 ** 3:.2f}GiB")
    return 0


def cmd_version(client: Client | None, ns: argparse.Namespace) -> int:
    from .. import __version__
    import platform
    print("Client:")
    print(f" Version:           {__version__}")
    print(f" API version:       1.45")
    print(f" Python version:    {platform.python_version()}")
    print(f" OS/Arch:           linux/{platform.machine()}")
    if client is None:
        return 0
    v = client.get("/version")
    print()
    print(f"Server: {v.get('Platform', {}).get('Name', 'sampan')}")
    print(" Engine:")
    print(f"  Version:          {v.get('Version')}")
    print(f"  API version:      {v.get('ApiVersion')} (minimum version {v.get('MinAPIVersion')})")
    print(f"  OS/Arch:          {v.get('Os')}/{v.get('Arch')}")
    print(f"  Kernel Version:   {v.get('KernelVersion')}")
    return 0


# ---------------------------------------------------------------------------- registration
def _with_client(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            client = connect(args)
            return fn(client, args)
        except DaemonUnavailable as e:
            print(f"sampan: {e}", file=sys.stderr)
            return 125
        except APIError as e:
            print(f"sampan: Error response from daemon: {e.message}", file=sys.stderr)
            return 125
        except CLIError as e:
            print(f"sampan: {e}", file=sys.stderr)
            return e.code
        except BrokenPipeError:
            return 0
    return run


class _Skipped:
    """What register(only=...) hands out for the commands it leaves out."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_defaults(self, **kwargs: Any) -> None:
        pass


# The commands register() adds (main.build_parser builds only the one it runs).
COMMANDS = frozenset(("run", "create", "start", "stop", "restart", "kill", "rm", "pause", "unpause", "wait",
                      "rename", "ps", "logs", "exec", "attach", "inspect", "top", "export", "volume"))


def register(sub: argparse._SubParsersAction, only: str | None = None) -> None:
    def add(name: str, fn: Any, help: str, aliases: tuple = ()) -> argparse.ArgumentParser:
        if only is not None and only != name and only not in aliases:
            return _Skipped()  # type: ignore[return-value]
        p = sub.add_parser(name, help=help, aliases=list(aliases), add_help=name not in ("run", "create"))
        if name in ("run", "create"):
            p.add_argument("--help", action="help")
        p.set_defaults(func=_with_client(fn))
        return p

    p = add("run", cmd_run, "create and run a new container")
    p.add_argument("-d", "--detach", action="store_true")
    add_create_flags(p)
    p = add("create", cmd_create, "create a new container")
    add_create_flags(p)
    p = add("start", cmd_start, "start containers")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("containers", nargs="+")
    for name, fn, h in (("stop", cmd_stop, "stop containers"), ("restart", cmd_restart, "restart containers")):
        p = add(name, fn, h)
        p.add_argument("-t", "--time", "--timeout", type=int)
        if name == "stop":
            p.add_argument("-s", "--signal")
        p.add_argument("containers", nargs="+")
    p = add("kill", cmd_kill, "kill containers")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")
    p = add("rm", cmd_rm, "remove containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("containers", nargs="+")
    for name, fn, h in (("pause", cmd_pause, "pause containers"), ("unpause", cmd_unpause, "unpause containers"),
                        ("wait", cmd_wait, "wait for containers to stop; print their exit codes")):
        add(name, fn, h).add_argument("containers", nargs="+")
    p = add("rename", cmd_rename, "rename a container")
    p.add_argument("container")
    p.add_argument("new_name")
    p = add("ps", cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("-n", "--last", type=int)
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("-s", "--size", action="store_true")
    p = add("logs", cmd_logs, "fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("container")
    p = add("exec", cmd_exec, "run a command in a running container")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("container")
    p.add_argument("command", nargs=REMAINDER)
    p = add("attach", cmd_attach, "attach to a running container")
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("container")
    p = add("inspect", cmd_inspect, "low-level information on objects")
    p.add_argument("-f", "--format")
    p.add_argument("--type", choices=["container", "image", "volume"])
    p.add_argument("names", nargs="+")
    p = add("top", cmd_top, "the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs=REMAINDER)
    p = add("export", cmd_export, "export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output")
    p.add_argument("container")

    if only is not None and only != "volume":
        return
    vol = sub.add_parser("volume", help="manage volumes").add_subparsers(dest="volume_command", metavar="COMMAND")
    p = vol.add_parser("create", help="create a volume")
    p.set_defaults(func=_with_client(cmd_volume_create))
    p.add_argument("-d", "--driver", default="local")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("-o", "--opt", action="append", default=[])
    p.add_argument("name", nargs="?")
    p = vol.add_parser("ls", aliases=["list"], help="list volumes")
    p.set_defaults(func=_with_client(cmd_volume_ls))
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p = vol.add_parser("inspect", help="inspect volumes")
    p.set_defaults(func=_with_client(cmd_volume_inspect))
    p.add_argument("-f", "--format")
    p.add_argument("names", nargs="+")
    p = vol.add_parser("rm", aliases=["remove"], help="remove volumes")
    p.set_defaults(func=_with_client(cmd_volume_rm))
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("names", nargs="+")
    p = vol.add_parser("prune", help="remove unused volumes")
    p.set_defaults(func=_with_client(cmd_volume_prune))
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true")


def register_system(sub: argparse._SubParsersAction, system: argparse._SubParsersAction) -> None:
    """`version`, `info` and `system info` as API calls (replacing the local ones)."""
    for parent, name in ((sub, "version"), (sub, "info"), (system, "info")):
        p = parent.add_parser(name, help="show the version" if name == "version" else
                              "show system-wide information")
        p.add_argument("-f", "--format")
        p.set_defaults(func=_with_client(cmd_version if name == "version" else cmd_info))
