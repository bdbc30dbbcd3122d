"""`run` and `create`'s flags (Docker's names, parsed by cli/fastargs.py on the way to a
container, by argparse otherwise) and the container-create body they make.

On the path of every `sampan run`: no argparse, no re."""
from __future__ import annotations

import os
import sys

from .. import fastjson
from ..units import parse_size
from .command import CLIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

REMAINDER = "..."  # argparse.REMAINDER


def size_flag(value: str, flag: str) -> int:
    """A size flag's bytes ("64m"), or docker's message for a value that is not one."""
    try:
        return parse_size(value)
    except ValueError as e:
        raise CLIError(f'invalid argument "{value}" for "{flag}" flag: {e}') from None


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


def env_list(items: list[str]) -> list[str]:
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
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = size_flag(v, "--mount")
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
    a("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    a("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    a("--rm", action="store_true",
      help="Automatically remove the container and its associated anonymous volumes when it exits")
    a("--name", help="Assign a name to the container")
    a("-e", "--env", action="append", default=[], help="Set environment variables")
    a("--env-file", action="append", default=[], help="Read in a file of environment variables")
    a("-v", "--volume", action="append", default=[], help="Bind mount a volume")
    a("--mount", action="append", default=[], help="Attach a filesystem mount to the container")
    a("--tmpfs", action="append", default=[], help="Mount a tmpfs directory")
    a("-w", "--workdir", help="Working directory inside the container")
    a("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])")
    a("--entrypoint", help="Overwrite the default ENTRYPOINT of the image")
    a("-h", "--hostname", help="Container host name")
    a("-l", "--label", action="append", default=[], help="Set meta data on a container")
    a("-m", "--memory", help="Memory limit")
    a("--memory-swap", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    a("--cpus", help="Number of CPUs")
    a("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
    a("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
    a("--pids-limit", type=int, help="Tune container pids limit (set -1 for unlimited)")
    a("--ulimit", action="append", default=[], help="Ulimit options")
    a("--read-only", action="store_true", help="Mount the container's root filesystem as read only")
    a("--cap-add", action="append", default=[], help="Add Linux capabilities")
    a("--cap-drop", action="append", default=[], help="Drop Linux capabilities")
    a("--privileged", action="store_true", help="Give extended privileges to this container")
    a("--security-opt", action="append", default=[], help="Security Options")
    a("--device", action="append", default=[], help="Add a host device to the container")
    a("--init", action="store_true",
      help="Run an init inside the container that forwards signals and reaps processes")
    a("--restart", help="Restart policy to apply when a container exits")
    a("--stop-signal", help="Signal to stop the container")
    a("--stop-timeout", type=int, help="Timeout (in seconds) to stop a container")
    a("--log-opt", action="append", default=[], help="Log driver options")
    a("--sysctl", action="append", default=[], help="Sysctl options")
    a("--shm-size", help="Size of /dev/shm")
    a("--network", "--net", help="Connect a container to a network")
    a("--platform", help="Set platform if server is multi-platform capable")
    a("--pull", default="missing", help='Pull image before running ("always", "missing", "never")')
    a("image", metavar="IMAGE")
    a("command", nargs=REMAINDER, metavar="COMMAND")


def create_body(ns: argparse.Namespace) -> dict:
    env = []
    for f in ns.env_file:
        try:
            env += read_env_file(f)
        except OSError as e:
            raise CLIError(f"open {f}: {e.strerror}") from None
    env += env_list(ns.env)
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
        hc["Memory"] = size_flag(ns.memory, "-m, --memory")
    if ns.memory_swap:
        hc["MemorySwap"] = -1 if ns.memory_swap == "-1" else size_flag(ns.memory_swap, "--memory-swap")
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
        hc["ShmSize"] = size_flag(ns.shm_size, "--shm-size")
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
