"""`volume ...`, `info`/`system info` and `version`: clients of sampand like the container
verbs, rendered by the one template renderer (cli/format.py)."""
from __future__ import annotations

import sys

from .. import API_VERSION
from ..units import bytes_size, human_size
from .client import Client
from .command import each, object_group, verb
from .containers import filters_query
from .createflags import parse_kv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

def cmd_volume_create(client: Client, ns: argparse.Namespace) -> int:
    v = client.post("/volumes/create", {"Name": ns.name or "", "Driver": ns.driver,
                                        "Labels": parse_kv(ns.label), "DriverOpts": parse_kv(ns.opt)})
    print(v["Name"])
    return 0


VOLUME_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
                  "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE"}
VOLUME_TABLE = "table {{.Driver}}\t{{.Name}}"


def cmd_volume_ls(client: Client, ns: argparse.Namespace) -> int:
    from . import format as fmt
    res = client.call("GET", "/volumes", {"filters": filters_query(ns.filter)})
    vols = res.get("Volumes") or []
    if ns.quiet:
        for v in vols:
            print(v["Name"])
        return 0
    rows = [{"Name": v["Name"], "Driver": v.get("Driver", "local"), "Scope": v.get("Scope", "local"),
             "Mountpoint": v.get("Mountpoint", ""), "Links": "N/A", "Size": "N/A",
             "Labels": ",".join(f"{k}={val}" for k, val in (v.get("Labels") or {}).items())} for v in vols]
    fmt.write_formatted(ns.format or VOLUME_TABLE, rows, VOLUME_HEADERS, sys.stdout.write, VOLUME_TABLE)
    return 0


def cmd_volume_inspect(client: Client, ns: argparse.Namespace) -> int:
    from . import format as fmt
    found: list[dict] = []
    code = each(ns.names, lambda n: found.append(client.get(f"/volumes/{n}")), quiet=True)
    fmt.write_inspected(ns.format, found, sys.stdout.write)
    return code


def cmd_volume_rm(client: Client, ns: argparse.Namespace) -> int:
    return each(ns.names, lambda n: client.delete(f"/volumes/{n}", force=1 if ns.force else 0))


def cmd_volume_prune(client: Client, ns: argparse.Namespace) -> int:
    res = client.call("POST", "/volumes/prune", {"filters": filters_query(["all=true"] if ns.all else [])})
    deleted = res.get("VolumesDeleted") or []
    if deleted:
        print("Deleted Volumes:")
        for n in deleted:
            print(n)
        print()
    print(f"Total reclaimed space: {human_size(res.get('SpaceReclaimed', 0))}")
    return 0


def cmd_info(client: Client, ns: argparse.Namespace) -> int:
    i = client.get("/info")
    if ns.format:
        from . import format as fmt
        print(fmt.render_flag(ns.format, i))
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
        print(f" Total Memory: {bytes_size(i['MemTotal'])}")
    return 0


def _client_version() -> dict:
    import platform
    from .. import __version__
    return {"Version": __version__, "ApiVersion": API_VERSION, "GoVersion": "python" + platform.python_version(),
            "Os": "linux", "Arch": platform.machine()}


def cmd_version(client: Client, ns: argparse.Namespace) -> int:
    cv = _client_version()
    if ns.format:
        from . import format as fmt
        doc = {"Client": cv, "Server": client.get("/version")}
        print(fmt.render_flag(ns.format, doc))
        return 0
    print("Client:")
    print(f" Version:           {cv['Version']}")
    print(f" API version:       {cv['ApiVersion']}")
    print(f" Python version:    {cv['GoVersion'][len('python'):]}")
    print(f" OS/Arch:           {cv['Os']}/{cv['Arch']}")
    v = client.get("/version")
    print()
    print(f"Server: {v.get('Platform', {}).get('Name', 'sampan')}")
    print(" Engine:")
    print(f"  Version:          {v.get('Version')}")
    print(f"  API version:      {v.get('ApiVersion')} (minimum version {v.get('MinAPIVersion')})")
    print(f"  OS/Arch:          {v.get('Os')}/{v.get('Arch')}")
    print(f"  Kernel Version:   {v.get('KernelVersion')}")
    return 0


def register(sub: argparse._SubParsersAction, system: argparse._SubParsersAction) -> None:
    """`volume ...`, `version`, `info` and `system info`."""
    add = object_group(sub, "volume", "Manage volumes")

    p = add("create", cmd_volume_create, "Create a volume")
    p.add_argument("-d", "--driver", default="local", help="Specify volume driver name")
    p.add_argument("--label", action="append", default=[], help="Set metadata for a volume")
    p.add_argument("-o", "--opt", action="append", default=[], help="Set driver specific options")
    p.add_argument("name", nargs="?", metavar="VOLUME")
    p = add("ls", cmd_volume_ls, "List volumes", ("list",))
    p.add_argument("-q", "--quiet", action="store_true", help="Only display volume names")
    p.add_argument("-f", "--filter", action="append", default=[], help="Provide filter values (e.g. \"dangling=true\")")
    p.add_argument("--format", help="Format output using a custom template: 'table', 'table TEMPLATE', "
                   "'json' or 'TEMPLATE'")
    p = add("inspect", cmd_volume_inspect, "Display detailed information on one or more volumes")
    p.add_argument("-f", "--format", help="Format output using a custom template: 'json' or 'TEMPLATE'")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p = add("rm", cmd_volume_rm, "Remove one or more volumes", ("remove",))
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of one or more volumes")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p = add("prune", cmd_volume_prune, "Remove unused local volumes")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused volumes, not just anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    for parent, name, fn, help in ((sub, "version", cmd_version, "Show the sampan version information"),
                                   (sub, "info", cmd_info, "Display system-wide information"),
                                   (system, "info", cmd_info, "Display system-wide information")):
        p = parent.add_parser(name, help=help, description=help)
        p.add_argument("-f", "--format", help="Format output using a custom template: 'json' or 'TEMPLATE'")
        p.set_defaults(func=verb(fn, name))
