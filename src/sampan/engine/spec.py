"""The OCI runtime spec of a container: image config + Docker ContainerCreate body, Docker's defaults.

``merge_config(image_config, body)`` gives the container's effective Config (what inspect
shows); ``mounts.parse_mounts(host_config)`` the mounts the user asked for; ``build(...)``
the config.json once the engine resolved volumes and wrote the hosts files.
"""
from __future__ import annotations

import json
import os
import signal as _signal
import stat
from typing import Any

from . import seccomp_profile
from .errors import SpecInputError
from .users import resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
ALL_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
            "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
            "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
            "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
            "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
            "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
            "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEFAULT_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": -1, "minor": -1, "access": "m"},
    {"allow": True, "type": "b", "major": -1, "minor": -1, "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},    # null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},    # random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},    # full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},    # tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},    # zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},    # urandom
    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},  # pts
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},    # ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # tun
]
DEFAULT_SHM = 64 * 1024 * 1024
TINI = "/usr/bin/tini-static"
INIT_PATH = "/sbin/docker-init"
CGROUP_PARENT = "/sampan"


# ---------------------------------------------------------------- Config merge
def strslice(v: Any) -> list[str] | None:
    """Docker's StrSlice (Cmd, Entrypoint): a string or a list of strings; None when unset."""
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return list(v)
    raise SpecInputError(f"invalid command: {v!r}")


def _env_key(e: str) -> str:
    return e.split("=", 1)[0]


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: later keys replace earlier ones in place. An entry
    without "=" ("-e NAME" the CLI could not resolve) is kept as given, as dockerd keeps it in
    Config.Env; process_env() leaves it out of the process's environment."""
    out = list(base)
    index = {_env_key(e): i for i, e in enumerate(out)}
    for e in extra:
        k = _env_key(e)
        if k in index:
            out[index[k]] = e
        else:
            index[k] = len(out)
            out.append(e)
    return out


def process_env(base: list[str], extra: list[str]) -> list[str]:
    """The environment a process gets: extra merged over base, and a NAME without a value
    unset (as dockerd does: it removes the variable rather than setting it empty)."""
    return [e for e in merge_env(base, extra) if "=" in e]


def merge_config(image_config: dict, body: dict, container_id: str) -> dict:
    """The container's Config as Docker stores it: user values over the image's."""
    img = (image_config or {}).get("config") or {}
    entrypoint = strslice(body.get("Entrypoint"))
    cmd = strslice(body.get("Cmd"))
    if entrypoint:  # an explicit entrypoint (even [""]) clears the image's cmd
        if entrypoint == [""]:
            entrypoint = []
    else:
        entrypoint = strslice(img.get("Entrypoint")) or []
        if not cmd:
            cmd = strslice(img.get("Cmd"))
    cmd = cmd or []
    if not entrypoint and not cmd:
        raise SpecInputError("No command specified")
    env = merge_env(list(img.get("Env") or []), list(body.get("Env") or []))
    labels = dict(img.get("Labels") or {})
    labels.update(body.get("Labels") or {})
    volumes = dict(img.get("Volumes") or {})
    volumes.update(body.get("Volumes") or {})
    return {
        "Hostname": body.get("Hostname") or container_id[:12],
        "Domainname": body.get("Domainname") or "",
        "User": body.get("User") or img.get("User") or "",
        "AttachStdin": bool(body.get("AttachStdin")),
        "AttachStdout": bool(body.get("AttachStdout")),
        "AttachStderr": bool(body.get("AttachStderr")),
        "ExposedPorts": body.get("ExposedPorts") or img.get("ExposedPorts"),
        "Tty": bool(body.get("Tty")),
        "OpenStdin": bool(body.get("OpenStdin")),
        "StdinOnce": bool(body.get("StdinOnce")),
        "Env": env,
        "Cmd": cmd or None,
        "Image": body.get("Image") or "",
        "Volumes": volumes or None,
        "WorkingDir": body.get("WorkingDir") or img.get("WorkingDir") or "",
        "Entrypoint": entrypoint or None,
        "OnBuild": None,
        "Labels": labels,
        "StopSignal": body.get("StopSignal") or img.get("StopSignal") or None,
        **({"StopTimeout": body["StopTimeout"]} if body.get("StopTimeout") is not None else {}),
    }


def path_and_args(config: dict) -> tuple[str, list[str]]:
    argv = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    return argv[0], argv[1:]


def parse_signal(value: str | int | None, default: int = _signal.SIGTERM) -> int:
    if value is None or value == "":
        return int(default)
    if isinstance(value, int) or str(value).isdigit():
        n = int(value)
        if not 0 < n < 65:
            raise SpecInputError(f"Invalid signal: {value}")
        return n
    name = str(value).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise SpecInputError(f"Invalid signal: {value}") from None



# ---------------------------------------------------------------- capabilities, security
def _norm_cap(c: str) -> str:
    c = c.upper()
    return c if c.startswith("CAP_") else "CAP_" + c


def host_capabilities() -> list[str]:
    """The capabilities this process can hand out (its bounding set): what ALL means."""
    try:
        with open("/proc/self/status") as f:
            bnd = next(int(l.split()[1], 16) for l in f if l.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return list(ALL_CAPS)
    return [c for i, c in enumerate(ALL_CAPS) if bnd >> i & 1]


def capabilities(host_config: dict) -> list[str]:
    if host_config.get("Privileged"):
        return host_capabilities()
    add = [_norm_cap(c) for c in host_config.get("CapAdd") or []]
    drop = [_norm_cap(c) for c in host_config.get("CapDrop") or []]
    for c in add + drop:
        if c != "CAP_ALL" and c not in ALL_CAPS:
            raise SpecInputError(f"unknown capability: \"{c}\"")
    if "CAP_ALL" in add:
        return [c for c in host_capabilities() if c not in drop]
    base = [] if "CAP_ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    for c in add:
        if c not in base:
            base.append(c)
    return base


def security_options(host_config: dict) -> tuple[bool, Any]:
    """(no_new_privileges, seccomp) where seccomp is None (default), 'unconfined' or a dict."""
    nnp = False
    seccomp: Any = None
    for opt in host_config.get("SecurityOpt") or []:
        key, sep, value = opt.partition("=")
        if not sep:
            key, sep, value = opt.partition(":")
        if key == "no-new-privileges":
            nnp = value.lower() in ("", "true", "1")
        elif key == "seccomp":
            if value == "unconfined":
                seccomp = "unconfined"
            elif value.lstrip().startswith("{"):
                seccomp = json.loads(value)
            else:
                try:
                    with open(value) as f:
                        seccomp = json.load(f)
                except (OSError, ValueError) as e:
                    raise SpecInputError(f"opening seccomp profile ({value}) failed: {e}") from None
        elif key == "apparmor" and value != "unconfined" or key == "label" and value not in ("disable", "nested"):
            # Never dropped: a container its user asked to confine must not run unconfined.
            raise SpecInputError(f"invalid --security-opt {opt!r}: {_lsm_refusal(key)}")
        elif key in ("label", "apparmor", "systempaths", "mask", "unmask"):
            pass  # unconfined / disable: nothing to apply; systempaths, mask, unmask: the caller's
        else:
            raise SpecInputError(f"Invalid --security-opt: \"{opt}\"")
    return nnp, seccomp


def _lsm_refusal(key: str) -> str:
    from ..linux import lsm
    name, enabled = ("AppArmor", lsm.apparmor_enabled()) if key == "apparmor" else ("SELinux", lsm.selinux_enabled())
    if not enabled:
        return f"{name} is not enabled on this host"
    return f"sampan cannot apply {name} {'profiles' if key == 'apparmor' else 'labels'} yet"


def _check_caps_for_profile(profile: dict, caps: list[str]) -> dict:
    """Resolve Docker-style includes/excludes on caps in a user profile (names lists only)."""
    out = dict(profile)
    rules = []
    for r in profile.get("syscalls") or []:
        inc = (r.get("includes") or {}).get("caps") or []
        exc = (r.get("excludes") or {}).get("caps") or []
        if inc and not all(c in caps for c in inc):
            continue
        if exc and any(c in caps for c in exc):
            continue
        r = {k: v for k, v in r.items() if k not in ("includes", "excludes", "comment")}
        if "name" in r and "names" not in r:
            r["names"] = [r.pop("name")]
        rules.append(r)
    out["syscalls"] = rules
    if "archMap" in out and "architectures" not in out:
        out["architectures"] = [a["architecture"] for a in out["archMap"]]
    out.pop("archMap", None)
    return out


# ---------------------------------------------------------------- resources
_ULIMITS = {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
            "rss", "rtprio", "rttime", "sigpending", "stack", "as"}


def resources(host_config: dict) -> dict:
    r: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    memory = int(host_config.get("Memory") or 0)
    swap = int(host_config.get("MemorySwap") or 0)
    if memory:
        if memory < 6 * 1024 * 1024:
            raise SpecInputError("Minimum memory limit allowed is 6MB")
        mem["limit"] = memory
        if swap > 0:
            if swap < memory:
                raise SpecInputError("Minimum memoryswap limit should be larger than memory limit, "
                                     "see usage for details")
            mem["swap"] = swap
        elif swap == 0:
            mem["swap"] = memory * 2
        else:
            mem["swap"] = -1
    elif swap > 0:
        raise SpecInputError("You should always set the Memory limit when using Memoryswap limit, "
                             "see usage for details")
    if host_config.get("MemoryReservation"):
        mem["reservation"] = int(host_config["MemoryReservation"])
    if host_config.get("OomKillDisable"):
        mem["disableOOMKiller"] = True
    if host_config.get("MemorySwappiness") not in (None, -1):
        mem["swappiness"] = int(host_config["MemorySwappiness"])
    if mem:
        r["memory"] = mem
    cpu: dict[str, Any] = {}
    nano = int(host_config.get("NanoCpus") or 0)
    if nano:
        if host_config.get("CpuQuota") or host_config.get("CpuPeriod"):
            raise SpecInputError("Conflicting options: Nano CPUs and CPU Period cannot both be set")
        ncpu = os.cpu_count() or 1
        if nano > ncpu * 10 ** 9:
            raise SpecInputError(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs "
                                 "available")
        cpu["period"] = 100000
        cpu["quota"] = nano * 100000 // 10 ** 9
    if host_config.get("CpuQuota"):
        cpu["quota"] = int(host_config["CpuQuota"])
    if host_config.get("CpuPeriod"):
        cpu["period"] = int(host_config["CpuPeriod"])
    if host_config.get("CpuShares"):
        cpu["shares"] = int(host_config["CpuShares"])
    if host_config.get("CpusetCpus"):
        cpu["cpus"] = host_config["CpusetCpus"]
    if host_config.get("CpusetMems"):
        cpu["mems"] = host_config["CpusetMems"]
    if cpu:
        r["cpu"] = cpu
    pids = host_config.get("PidsLimit")
    if pids is not None and int(pids) > 0:
        r["pids"] = {"limit": int(pids)}
    if host_config.get("BlkioWeight"):
        r["blockIO"] = {"weight": int(host_config["BlkioWeight"])}
    return r


def rlimits(host_config: dict) -> list[dict]:
    out = []
    for u in host_config.get("Ulimits") or []:
        name = (u.get("Name") or "").lower()
        if name not in _ULIMITS:
            raise SpecInputError(f"invalid ulimit type: {name}")
        soft, hard = int(u.get("Soft", 0)), int(u.get("Hard", 0))
        if soft > hard:
            raise SpecInputError(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
        out.append({"type": "RLIMIT_" + name.upper(), "soft": soft, "hard": hard})
    return out


def _device(d: dict) -> tuple[list[dict], list[dict]]:
    host = d.get("PathOnHost") or ""
    ctr = d.get("PathInContainer") or host
    perms = d.get("CgroupPermissions") or "rwm"
    try:
        st = os.stat(host)
    except OSError:
        raise SpecInputError(f"error gathering device information while adding custom device \"{host}\": "
                             "no such file or directory") from None
    if stat.S_ISDIR(st.st_mode):
        devs, rules = [], []
        for name in sorted(os.listdir(host)):
            sub = os.path.join(host, name)
            a, b = _device({"PathOnHost": sub, "PathInContainer": os.path.join(ctr, name),
                            "CgroupPermissions": perms})
            devs += a
            rules += b
        return devs, rules
    if stat.S_ISCHR(st.st_mode):
        typ = "c"
    elif stat.S_ISBLK(st.st_mode):
        typ = "b"
    else:
        raise SpecInputError(f"error gathering device information while adding custom device \"{host}\": "
                             "not a device node")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    dev = {"path": ctr, "type": typ, "major": major, "minor": minor, "fileMode": stat.S_IMODE(st.st_mode),
           "uid": st.st_uid, "gid": st.st_gid}
    return [dev], [{"allow": True, "type": typ, "major": major, "minor": minor, "access": perms}]


def _all_host_devices() -> list[dict]:
    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue", "fd")]
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                continue
            if p in ("/dev/console", "/dev/ptmx", "/dev/tty") or p.startswith("/dev/tty"):
                continue
            out.append({"path": p, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                        "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                        "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out


# ---------------------------------------------------------------- the spec
def build(*, container_id: str, config: dict, host_config: dict, rootfs: str, container_dir: str,
          mounts: list[dict], netns_path: str | None) -> dict:
    """The OCI config.json. ``mounts`` are resolved (each has a host Source; tmpfs none);
    ``netns_path``: the network namespace the container joins (None: the caller's own)."""
    hc = host_config
    privileged = bool(hc.get("Privileged"))
    host_net = (hc.get("NetworkMode") or "default") == "host"
    caps = capabilities(hc)
    nnp, seccomp = security_options(hc)
    user = resolve_user(rootfs, config.get("User") or "", hc.get("GroupAdd"))
    path, args = path_and_args(config)
    argv = [path, *args]
    if hc.get("Init"):
        argv = [INIT_PATH, "--", *argv]
    env = process_env([f"PATH={DEFAULT_PATH}", f"HOSTNAME={config['Hostname']}"]
                      + (["TERM=xterm"] if config.get("Tty") else []), config.get("Env") or [])
    cwd = config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise SpecInputError(f"the working directory '{cwd}' is invalid, it needs to be an absolute path")
    shm = int(hc.get("ShmSize") or 0) or DEFAULT_SHM

    process: dict[str, Any] = {
        "terminal": bool(config.get("Tty")),
        "user": user,
        "args": argv,
        "env": env,
        "cwd": cwd,
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": nnp,
        "oomScoreAdj": int(hc.get("OomScoreAdj") or 0),
    }
    rl = rlimits(hc)
    if rl:
        process["rlimits"] = rl
    if user["uid"] != 0:
        # Docker: a non-root user has no effective/permitted capabilities (only the bounding set).
        process["capabilities"]["effective"] = []
        process["capabilities"]["permitted"] = []

    mnts: list[dict] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]},
    ]
    user_dests = {m["Destination"] for m in mounts}
    for name, dest in (("resolv.conf", "/etc/resolv.conf"), ("hostname", "/etc/hostname"), ("hosts", "/etc/hosts")):
        if dest in user_dests:
            continue
        mnts.append({"destination": dest, "type": "bind", "source": os.path.join(container_dir, name),
                     "options": ["rbind", "rprivate"] + (["ro"] if hc.get("ReadonlyRootfs") else [])})
    if hc.get("Init"):
        mnts.append({"destination": INIT_PATH, "type": "bind", "source": TINI, "options": ["bind", "ro"]})
    for m in sorted(mounts, key=lambda m: m["Destination"].count("/")):
        if m["Type"] == "tmpfs":
            opts = ["nosuid", "nodev", "noexec"]
            extra = list(m.get("TmpfsOptions") or [])
            for o in extra:
                if o in ("exec", "dev", "suid"):
                    opts = [x for x in opts if x != "no" + o]
            opts += [o for o in extra if o not in ("exec", "dev", "suid")]
            mnts = [x for x in mnts if x["destination"] != m["Destination"]]
            mnts.append({"destination": m["Destination"], "type": "tmpfs", "source": "tmpfs", "options": opts})
            continue
        opts = ["rbind", m.get("Propagation") or "rprivate", "rw" if m["RW"] else "ro"]
        mnts = [x for x in mnts if x["destination"] != m["Destination"]]
        mnts.append({"destination": m["Destination"], "type": "bind", "source": m["Source"], "options": opts})

    # --network host: the engine's network namespace; the UTS namespace stays the container's
    # own (with the host's name as its hostname, as Docker does), so the host's name cannot be
    # changed. Every other mode joins a namespace the engine made (engine/networking.py).
    namespaces = [{"type": t} for t in ("mount", "uts", "pid", "ipc", "cgroup")]
    if netns_path:
        namespaces.append({"type": "network", "path": netns_path})
    devices: list[dict] = []
    rules = list(DEFAULT_DEVICE_RULES)
    if privileged:
        devices = _all_host_devices()
        rules = [{"allow": True, "access": "rwm"}]
    for d in hc.get("Devices") or []:
        devs, drules = _device(d)
        devices += devs
        rules += drules
    res = resources(hc)
    res["devices"] = rules
    linux: dict[str, Any] = {
        "resources": res,
        "cgroupsPath": f"{CGROUP_PARENT}/{container_id}",
        "namespaces": namespaces,
        "maskedPaths": [] if privileged else list(MASKED_PATHS),
        "readonlyPaths": [] if privileged else list(READONLY_PATHS),
    }
    if any(o.startswith("systempaths=unconfined") for o in hc.get("SecurityOpt") or []):
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
    if devices:
        linux["devices"] = devices
    if hc.get("Sysctls"):
        sysctls = dict(hc["Sysctls"])
        for k in sysctls:
            if host_net and k.startswith("net."):
                raise SpecInputError(f"sysctl '{k}' not allowed in host network namespace")
        linux["sysctl"] = sysctls
    if not privileged and seccomp != "unconfined":
        if seccomp is None:
            linux["seccomp"] = seccomp_profile.profile(caps)
        else:
            linux["seccomp"] = _check_caps_for_profile(seccomp, caps)
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": bool(hc.get("ReadonlyRootfs"))},
        "hostname": config["Hostname"],
        "mounts": mnts,
        "linux": linux,
    }
    if config.get("Domainname"):
        spec["domainname"] = config["Domainname"]
    return spec
