"""config.json: loading, validation and the default spec that `spec` writes."""
from __future__ import annotations

import os

from .. import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.0.2-dev"
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class SpecError(ValueError):
    """config.json is missing, malformed or asks for something invalid."""


def load(bundle: str) -> dict[str, Any]:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            spec = fastjson.loads(f.read())
    except FileNotFoundError:
        raise SpecError(f"JSON specification file {path} not found") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"parse {path}: {e}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"parse {path}: top level must be an object")
    validate(spec)
    return spec


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


def validate(spec: dict[str, Any]) -> None:
    """Checks what the runtime relies on; unknown fields are left alone as the spec asks."""
    _require(isinstance(spec.get("ociVersion"), str), "ociVersion must be a string")
    root = spec.get("root")
    _require(isinstance(root, dict) and isinstance(root.get("path"), str) and root["path"] != "",
             "root.path must be set")
    process = spec.get("process")
    _require(isinstance(process, dict), "process property must not be empty")
    args = process.get("args")
    _require(isinstance(args, list) and len(args) > 0 and all(isinstance(a, str) for a in args),
             "args must not be empty")
    _require(isinstance(process.get("cwd", "/"), str) and process.get("cwd", "/").startswith("/"),
             "cwd must be an absolute path")
    user = process.get("user", {})
    _require(isinstance(user, dict), "process.user must be an object")
    for key in ("uid", "gid"):
        _require(isinstance(user.get(key, 0), int) and user.get(key, 0) >= 0, f"process.user.{key} must be a non-negative integer")
    _require(all(isinstance(e, str) and "=" in e for e in process.get("env") or []),
             "process.env entries must be KEY=VALUE strings")
    for mount in spec.get("mounts") or []:
        _require(isinstance(mount, dict) and isinstance(mount.get("destination"), str),
                 "mount destination must be set")
        _require(mount["destination"].startswith("/"),
                 f"mount destination {mount['destination']} not absolute")
    linux = spec.get("linux") or {}
    _require(isinstance(linux, dict), "linux must be an object")
    seen: set[str] = set()
    for ns in linux.get("namespaces") or []:
        kind = ns.get("type") if isinstance(ns, dict) else None
        _require(kind in NAMESPACE_TYPES, f"namespace type {kind!r} is not supported")
        _require(kind not in seen, f"malformed spec file: duplicated ns {kind!r}")
        seen.add(kind)
    has_userns = "user" in seen
    if linux.get("uidMappings") or linux.get("gidMappings"):
        _require(has_userns, "user namespaces need to be enabled to use uid/gid mappings")
    if has_userns and not any(ns.get("path") for ns in linux.get("namespaces") or [] if ns.get("type") == "user"):
        _require(bool(linux.get("uidMappings")) and bool(linux.get("gidMappings")),
                 "user namespace requires uidMappings and gidMappings")
    if spec.get("hostname"):
        _require("uts" in seen, "unable to set hostname without a private UTS namespace")
    if spec.get("domainname"):
        _require("uts" in seen, "unable to set domainname without a private UTS namespace")
    for key in (linux.get("sysctl") or {}):
        _require(isinstance(key, str) and ".." not in key.split("."), f"sysctl {key!r} is not allowed")
    for name, hooks in (spec.get("hooks") or {}).items():
        _require(name in HOOK_NAMES, f"unknown hook {name!r}")
        for hook in hooks or []:
            _require(isinstance(hook, dict) and isinstance(hook.get("path"), str) and hook["path"].startswith("/"),
                     f"hook {name}: path must be absolute")
    for rlimit in process.get("rlimits") or []:
        _require(isinstance(rlimit, dict) and isinstance(rlimit.get("type"), str), "rlimit type must be set")


def default_spec(rootless: bool = False) -> dict[str, Any]:
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sampan",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        _make_rootless(spec)
    return spec


def _make_rootless(spec: dict[str, Any]) -> None:
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    mounts = []
    for mount in spec["mounts"]:
        if mount["destination"] == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        options = [o for o in mount.get("options", []) if not o.startswith(("gid=", "uid="))]
        if "options" in mount:
            mount = {**mount, "options": options}
        mounts.append(mount)
    spec["mounts"] = mounts
    del linux["resources"]
