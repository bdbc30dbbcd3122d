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


# ---------------------------------------------------------------------------- networking flags
# The docker CLI checks these before it sends anything (go-connections' nat, opts/hosts.go),
# with the words below; the daemon checks the rest (--ip, networks that do not exist).
_PROTOCOLS = ("tcp", "udp", "sctp")
_NON_USER_NETWORKS = ("default", "bridge", "host", "none")


def _uint16(text: str) -> int:
    """Go's strconv.ParseUint(text, 10, 16), with its error words."""
    if not text or not text.isdigit() or not text.isascii():
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    if int(text) > 0xFFFF:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return int(text)


def _port_range(text: str) -> tuple[int, int]:
    """nat.ParsePortRange: "80" or "8000-8010"."""
    if not text:
        raise ValueError("empty string specified for ports")
    if "-" not in text:
        port = _uint16(text)
        return port, port
    first, _, rest = text.partition("-")
    start, end = _uint16(first), _uint16(rest.split("-", 1)[0])
    if end < start:
        raise ValueError(f"invalid range specified for port: {text}")
    return start, end


def _split_proto(text: str) -> tuple[str, str]:
    """nat.SplitProtoPort: ("80/udp") -> ("udp", "80"); tcp when not given."""
    port, _, rest = text.partition("/")
    if not port:
        return "", ""
    proto = rest.split("/", 1)[0]
    return (proto or "tcp"), port


def is_ip(text: str) -> bool:
    """net.ParseIP(text) != nil (an IPv4 or IPv6 address, no zone)."""
    import _socket
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, text)
            return True
        except OSError:
            pass
    return False


def _standard_publish(spec: str) -> str:
    """--publish's long form (target=80,published=8080,protocol=udp) as the short one."""
    if "=" not in spec:
        return spec
    params = {"protocol": "tcp"}
    for param in spec.split(","):
        key, eq, value = param.partition("=")
        if not eq or not key:
            raise CLIError(f"invalid publish opts format (should be name=value but got '{param}')")
        params[key] = value
    if "target" not in params:
        raise CLIError("missing mandatory field 'target'")
    out = f"{params['target']}/{params['protocol']}"
    return f"{params['published']}:{out}" if "published" in params else out


def published_ports(specs: list[str]) -> tuple[dict, dict]:
    """-p/--publish as (Config.ExposedPorts, HostConfig.PortBindings), nat.ParsePortSpecs."""
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict]] = {}
    for spec in map(_standard_publish, specs):
        parts = spec.split(":")
        ip, host, container = ":".join(parts[:-2]), (parts[-2] if len(parts) > 1 else ""), parts[-1]
        proto, container = _split_proto(container)
        if ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        if ip and not is_ip(ip):
            raise CLIError(f"invalid IP address: {ip}")
        if not container:
            raise CLIError(f"no port specified: {spec}<empty>")
        try:
            start, end = _port_range(container)
        except ValueError:
            raise CLIError(f"invalid containerPort: {container}") from None
        host_start = host_end = 0
        if host:
            try:
                host_start, host_end = _port_range(host)
            except ValueError:
                raise CLIError(f"invalid hostPort: {host}") from None
            if end - start != host_end - host_start and end != start:
                raise CLIError(f"invalid ranges specified for container and host Ports: {container} and {host}")
        proto = proto.lower()
        if proto not in _PROTOCOLS:
            raise CLIError(f"invalid proto: {proto}")
        for i in range(end - start + 1):
            host_port = ""
            if host:  # a single container port takes a host range as the range to pick from
                host_port = str(host_start + i) + (f"-{host_end}" if start == end and host_start != host_end else "")
            key = f"{start + i}/{proto}"
            exposed[key] = {}
            bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": host_port})
    return exposed, bindings


def expose_ports(items: list[str], exposed: dict) -> None:
    """--expose PORT[-END][/PROTO] into Config.ExposedPorts."""
    for item in items:
        if ":" in item:
            raise CLIError(f"invalid port format for --expose: {item}")
        proto, port = _split_proto(item)
        try:
            start, end = _port_range(port)
        except ValueError as e:
            raise CLIError(f"invalid range format for --expose: {item}, error: {e}") from None
        for p in range(start, end + 1):
            exposed.setdefault(f"{p}/{proto}", {})


def extra_host(value: str) -> str:
    """--add-host NAME:IP or NAME=IP (IP may be [v6] or host-gateway) as the API's NAME:IP."""
    name, eq, ip = value.partition("=")
    if not eq:
        name, eq, ip = value.partition(":")
    if not eq or not name or ":" in name:
        raise CLIError(f'invalid argument "{value}" for "--add-host" flag: bad format for add-host: "{value}"')
    if ip != "host-gateway":
        if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
            ip = ip[1:-1]
        if not is_ip(ip):
            raise CLIError(f'invalid argument "{value}" for "--add-host" flag: invalid IP address in add-host: '
                           f'"{ip}"')
    return f"{name}:{ip}"


def dns_server(value: str) -> str:
    import _socket
    text = value.strip()
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            return _socket.inet_ntop(family, _socket.inet_pton(family, text))  # canonical, as Go's
        except OSError:
            pass
    raise CLIError(f'invalid argument "{value}" for "--dns" flag: IP address is not correctly formatted: {value}')


def link(value: str) -> str:
    """--link NAME[:ALIAS], checked as opts.ValidateLink."""
    if not value:
        raise CLIError('invalid argument "" for "--link" flag: empty string specified for links')
    if value.count(":") > 1:
        raise CLIError(f'invalid argument "{value}" for "--link" flag: bad format for links: {value}')
    return value


def _is_mac(text: str) -> bool:
    """net.ParseMAC's colon and hyphen forms of an EUI-48, EUI-64 or 20-byte address."""
    for sep in ":-":
        groups = text.split(sep)
        if len(groups) in (6, 8, 20) and all(len(g) == 2 and all(c in "0123456789abcdefABCDEF" for c in g)
                                             for g in groups):
            return True
    return False


def _user_defined(network: str) -> bool:
    return network not in _NON_USER_NETWORKS and not network.startswith("container:")


def network_endpoints(ns: argparse.Namespace) -> tuple[str, dict]:
    """HostConfig.NetworkMode and NetworkingConfig.EndpointsConfig, as the docker CLI makes
    them: --ip, --network-alias, --mac-address (and --link, on a user network) go to the
    first network; with no --network, to "default"."""
    networks = ns.network or []
    if len(set(networks)) != len(networks):
        twice = next(n for n in networks if networks.count(n) > 1)
        raise CLIError(f'network "{twice}" is specified multiple times')
    if len({_user_defined(n) for n in networks}) > 1:
        raise CLIError("conflicting options: cannot attach both user-defined and non-user-defined network-modes")
    first = networks[0] if networks else "default"
    if ns.mac_address and not _is_mac(ns.mac_address.strip()):
        raise CLIError(f"{ns.mac_address} is not a valid mac address")
    if ns.network_alias and not _user_defined(first):
        raise CLIError("network-scoped aliases are only supported for user-defined networks")
    endpoint: dict[str, Any] = {}
    if ns.network_alias:
        endpoint["Aliases"] = list(ns.network_alias)
    if ns.link and _user_defined(first):
        endpoint["Links"] = list(ns.link)
    if ns.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": ns.ip}
    if ns.ip6:
        endpoint.setdefault("IPAMConfig", {})["IPv6Address"] = ns.ip6
    if ns.mac_address:
        endpoint["MacAddress"] = ns.mac_address
    endpoints: dict[str, dict] = {}
    if len(networks) != 1 or endpoint:  # (one network and nothing to say of it: the daemon's default endpoint)
        endpoints[first] = endpoint
    for other in networks[1:]:
        endpoints[other] = {}
    return first, endpoints


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
    a("--log-driver", help="Logging driver for the container")
    a("--log-opt", action="append", default=[], help="Log driver options")
    a("--sysctl", action="append", default=[], help="Sysctl options")
    a("--shm-size", help="Size of /dev/shm")
    a("--network", "--net", action="append", default=[], help="Connect a container to a network")
    a("--network-alias", action="append", default=[], help="Add network-scoped alias for the container")
    a("--ip", help="IPv4 address (e.g., 172.30.100.104)")
    a("--ip6", help="IPv6 address (e.g., 2001:db8::33)")
    a("--mac-address", help="Container MAC address (e.g., 92:d0:c6:0a:29:33)")
    a("-p", "--publish", action="append", default=[], help="Publish a container's port(s) to the host")
    a("-P", "--publish-all", action="store_true", help="Publish all exposed ports to random ports")
    a("--expose", action="append", default=[], help="Expose a port or a range of ports")
    a("--add-host", action="append", default=[], help="Add a custom host-to-IP mapping (host:ip)")
    a("--dns", action="append", default=[], help="Set custom DNS servers")
    a("--dns-search", action="append", default=[], help="Set custom DNS search domains")
    a("--dns-option", "--dns-opt", action="append", default=[], help="Set DNS options")
    a("--link", action="append", default=[], help="Add link to another container")
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
    exposed, bindings = published_ports(ns.publish)
    expose_ports(ns.expose, exposed)
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
        "PortBindings": bindings or None, "PublishAllPorts": ns.publish_all or None,
        "ExtraHosts": [extra_host(h) for h in ns.add_host] or None,
        "Dns": [dns_server(d) for d in ns.dns] or None, "DnsSearch": ns.dns_search or None,
        "DnsOptions": ns.dns_option or None, "Links": [link(v) for v in ns.link] or None,
    }
    hc["NetworkMode"], endpoints = network_endpoints(ns)
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
    if ns.log_driver == "none" and ns.log_opt:  # refused by the docker CLI before it asks the daemon
        raise CLIError("invalid logging opts for driver none")
    if ns.log_driver or ns.log_opt:  # (no --log-driver: the daemon's default driver, as dockerd)
        hc["LogConfig"] = {"Type": ns.log_driver or "", "Config": parse_kv(ns.log_opt)}
    if ns.shm_size:
        hc["ShmSize"] = size_flag(ns.shm_size, "--shm-size")
    body: dict[str, Any] = {
        "Image": ns.image, "Cmd": ns.command or None, "Env": env or None, "Labels": labels or None,
        "Tty": ns.tty, "OpenStdin": ns.interactive, "StdinOnce": ns.interactive,
        "AttachStdin": ns.interactive, "AttachStdout": True, "AttachStderr": True,
        "Volumes": volumes or None, "ExposedPorts": exposed or None,
        "HostConfig": {k: v for k, v in hc.items() if v is not None},
        "NetworkingConfig": {"EndpointsConfig": endpoints},
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
