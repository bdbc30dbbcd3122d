"""The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.

Runs inside the container's mount namespace, in the init process, before execve.
"""
from __future__ import annotations

import os
import stat

from ..linux import mount as m
from . import mountopts
from .fsutil import secure_join

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_DEVICES = (  # path, major, minor (all char devices, 0666)
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
)
DEV_SYMLINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"))
_LOCKED_FLAGS = ((os.ST_NOSUID, m.MS_NOSUID), (os.ST_NODEV, m.MS_NODEV), (os.ST_NOEXEC, m.MS_NOEXEC),
                 (os.ST_NOATIME, m.MS_NOATIME), (os.ST_NODIRATIME, m.MS_NODIRATIME),
                 (os.ST_RELATIME, m.MS_RELATIME), (os.ST_RDONLY, m.MS_RDONLY))


class Rootfs:
    def __init__(self, spec: dict[str, Any], rootfs: str, bundle: str, *, userns: bool, cgroupns: bool,
                 shared_mount_ns: bool = False) -> None:
        self.spec = spec
        # Without a mount namespace of its own the container shares its caller's: its mounts are
        # made there (delete takes them away again, see unmount_new), the caller's propagation is
        # left alone and the process is chrooted rather than pivoted, as runc does.
        self.shared_mount_ns = shared_mount_ns
        self.root = rootfs
        self.bundle = bundle
        self.userns = userns
        self.cgroupns = cgroupns
        self.linux = spec.get("linux") or {}
        self.mounts = spec.get("mounts") or []
        self.dev_readonly = False

    # -- before pivot_root ------------------------------------------------------------
    def prepare(self) -> None:
        if not self.shared_mount_ns:
            prop = self.linux.get("rootfsPropagation")
            m.mount(None, "/", None, mountopts.root_propagation(prop) if prop else m.MS_SLAVE | m.MS_REC)
            self._make_parent_private()
            m.mount(self.root, self.root, None, m.MS_BIND | m.MS_REC)
        elif (self.spec.get("root") or {}).get("readonly"):
            m.mount(self.root, self.root, None, m.MS_BIND | m.MS_REC)  # a mount of its own to turn read-only
        for entry in self.mounts:
            self._mount(entry)
        if self._needs_dev_setup():
            self._create_devices()
            self._dev_symlinks()

    def _make_parent_private(self) -> None:
        """pivot_root refuses a new root whose parent mount is shared."""
        parent = _mountpoint_of(os.path.dirname(self.root))
        try:
            m.mount(None, parent, None, m.MS_PRIVATE)
        except OSError:
            pass

    def _needs_dev_setup(self) -> bool:
        return not any(e.get("destination") == "/dev" and _is_bind(e) for e in self.mounts)

    def _target(self, destination: str) -> str:
        return secure_join(self.root, destination)

    def _mount(self, entry: dict[str, Any]) -> None:
        dest = entry["destination"]
        fstype = entry.get("type") or ""
        source = entry.get("source") or ""
        flags, propagation, data = mountopts.parse(entry.get("options") or [])
        target = self._target(dest)
        try:
            if fstype == "cgroup" or fstype == "cgroup2":
                self._mount_cgroups(target, flags)
            elif flags & m.MS_BIND or fstype == "bind":
                self._bind(source, target, flags | m.MS_BIND)
            else:
                self._mount_fs(fstype, source, target, dest, flags, data)
            for prop in propagation:
                m.mount(None, target, None, prop)
        except OSError as e:
            raise OSError(e.errno, f"mount {source or fstype} to {dest}: {e.strerror}") from None

    def _mount_fs(self, fstype: str, source: str, target: str, dest: str, flags: int, data: str) -> None:
        os.makedirs(target, 0o755, exist_ok=True)
        if dest == "/dev" and flags & m.MS_RDONLY:
            # Devices are made inside /dev first; it turns read-only at finalize().
            self.dev_readonly = True
            flags &= ~m.MS_RDONLY
        try:
            m.mount(source or fstype, target, fstype, flags, data or None)
        except PermissionError:
            if fstype != "sysfs":
                raise
            # Without its own network namespace a user namespace may not mount sysfs.
            self._bind("/sys", target, m.MS_BIND | m.MS_REC | flags)

    def _bind(self, source: str, target: str, flags: int) -> None:
        if not source.startswith("/"):
            source = os.path.join(self.bundle, source)
        st = os.stat(source)
        if stat.S_ISDIR(st.st_mode):
            os.makedirs(target, 0o755, exist_ok=True)
        elif not os.path.lexists(target):
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        m.mount(source, target, None, m.MS_BIND | (flags & m.MS_REC))
        extra = flags & ~(m.MS_BIND | m.MS_REC | m.MS_REMOUNT)
        if extra:
            self.remount(target, extra)

    def remount(self, target: str, flags: int) -> None:
        """Bind-remount with flags, keeping the flags a user namespace may not drop."""
        if self.userns:
            vfs = os.statvfs(target).f_flag
            for st_flag, ms_flag in _LOCKED_FLAGS:
                if vfs & st_flag and ms_flag != m.MS_RDONLY:
                    flags |= ms_flag
        m.mount(None, target, None, m.MS_BIND | m.MS_REMOUNT | flags)

    def _mount_cgroups(self, target: str, flags: int) -> None:
        os.makedirs(target, 0o755, exist_ok=True)
        mounts = _cgroup_mounts()
        unified_only = all(fstype == "cgroup2" for _, fstype, _, _ in mounts) and any(
            mp == "/sys/fs/cgroup" for mp, _, _, _ in mounts)
        own = _own_cgroups()  # read once, not once per hierarchy
        if unified_only:
            self._mount_one_cgroup(target, "cgroup2", "", "/sys/fs/cgroup", flags, own)
            return
        m.mount("tmpfs", target, "tmpfs", m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, "mode=755")
        for mountpoint, fstype, options, _ in mounts:
            name = os.path.relpath(mountpoint, "/sys/fs/cgroup")
            if name.startswith(".."):
                continue
            sub = os.path.join(target, name)
            os.makedirs(sub, 0o755, exist_ok=True)
            self._mount_one_cgroup(sub, fstype, options, mountpoint, flags, own)
            if "," in name:  # co-mounted controllers, e.g. cpu,cpuacct: link each name
                for alias in name.split(","):
                    link = os.path.join(target, alias)
                    if not os.path.lexists(link):
                        os.symlink(name, link)
        if flags & m.MS_RDONLY:
            m.mount(None, target, None, m.MS_REMOUNT | m.MS_RDONLY | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC)

    def _mount_one_cgroup(self, target: str, fstype: str, options: str, host_mountpoint: str, flags: int,
                          own: list[tuple[str, str, str]]) -> None:
        flags = (flags | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC) & ~m.MS_BIND
        if self.cgroupns:
            m.mount("cgroup", target, fstype, flags, options or None)
            return
        # Without a cgroup namespace, show only the container's own cgroup, as runc does.
        source = os.path.join(host_mountpoint, _own_cgroup(own, fstype, options).lstrip("/"))
        m.mount(source, target, None, m.MS_BIND | m.MS_REC)
        self.remount(target, flags & ~m.MS_REMOUNT)

    def _create_devices(self) -> None:
        old_umask = os.umask(0)
        try:
            for path, major, minor in DEFAULT_DEVICES:
                self._make_device({"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666,
                                   "uid": 0, "gid": 0})
            for dev in self.linux.get("devices") or []:
                self._make_device(dev)
        finally:
            os.umask(old_umask)

    def _make_device(self, dev: dict[str, Any]) -> None:
        target = self._target(dev["path"])
        if not target.startswith(os.path.join(self.root, "dev") + "/") and dev["path"].startswith("/dev/"):
            raise OSError(1, f"device path {dev['path']} escapes /dev")
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        kind = dev.get("type", "c")
        mode = dev.get("fileMode", 0o666) & 0o7777
        if self.userns:
            # mknod is not allowed in a user namespace: bind the host's node instead.
            if not os.path.lexists(target):
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            m.mount(dev["path"], target, None, m.MS_BIND)
            return
        fmt = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}.get(kind)
        if fmt is None:
            raise ValueError(f"device {dev['path']}: unknown type {kind!r}")
        if os.path.lexists(target):
            os.unlink(target)
        try:
            os.mknod(target, fmt | mode, os.makedev(dev.get("major", 0), dev.get("minor", 0)) if kind != "p" else 0)
        except OSError as e:
            raise OSError(e.errno, f"mknod {dev['path']}: {e.strerror}") from None
        os.chown(target, dev.get("uid", 0) or 0, dev.get("gid", 0) or 0)

    def _dev_symlinks(self) -> None:
        links = list(DEV_SYMLINKS)
        if os.path.exists("/proc/kcore"):
            links.append(("/proc/kcore", "/dev/core"))
        for src, dst in links:
            target = self._target(dst)
            if not os.path.lexists(target):
                os.symlink(src, target)
        ptmx = self._target("/dev/ptmx")
        if os.path.lexists(ptmx):
            os.unlink(ptmx)
        os.symlink("pts/ptmx", ptmx)

    # -- pivot ------------------------------------------------------------------------
    def pivot(self, no_pivot: bool) -> None:
        if self.shared_mount_ns:
            os.chdir(self.root)
            os.chroot(".")
            os.chdir("/")
            return
        if no_pivot:
            os.chdir(self.root)
            m.mount(self.root, "/", None, m.MS_MOVE)
            os.chroot(".")
            os.chdir("/")
            return
        old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new_root = os.open(self.root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new_root)
            m.pivot_root(".", ".")
            os.fchdir(old_root)
            # Detach the old root without letting the unmount propagate to the host.
            m.mount(None, ".", None, m.MS_SLAVE | m.MS_REC)
            m.umount(".", m.MNT_DETACH)
            os.chdir("/")
        finally:
            os.close(old_root)
            os.close(new_root)

    # -- after pivot_root -------------------------------------------------------------
    def finalize(self) -> None:
        for path in self.linux.get("readonlyPaths") or []:
            self._readonly(path)
        for path in self.linux.get("maskedPaths") or []:
            self._mask(path)
        if self.dev_readonly:
            self.remount("/dev", m.MS_RDONLY)
        if (self.spec.get("root") or {}).get("readonly"):
            self.remount("/", m.MS_RDONLY)
        prop = self.linux.get("rootfsPropagation")
        if prop and not self.shared_mount_ns:
            m.mount(None, "/", None, mountopts.root_propagation(prop))

    def _readonly(self, path: str) -> None:
        target = secure_join("/", path)
        try:
            m.mount(target, target, None, m.MS_BIND | m.MS_REC)
        except FileNotFoundError:
            return
        self.remount(target, m.MS_RDONLY | m.MS_REC | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC)

    def _mask(self, path: str) -> None:
        target = secure_join("/", path)
        try:
            if os.path.isdir(target):
                m.mount("tmpfs", target, "tmpfs", m.MS_RDONLY)
            else:
                m.mount("/dev/null", target, None, m.MS_BIND)
        except (FileNotFoundError, NotADirectoryError):
            pass


def _is_bind(entry: dict[str, Any]) -> bool:
    return entry.get("type") == "bind" or any(o in ("bind", "rbind") for o in entry.get("options") or [])


def _mountinfo() -> list[list[str]]:
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f]


def mounts_at_or_below(path: str) -> list[tuple[str, str]]:
    """(mount id, mountpoint) of the caller's mounts at `path` or below it, in mount order."""
    below = path.rstrip("/") + "/"
    found = [(fields[0], m.unescape_mountinfo(fields[4])) for fields in _mountinfo()]
    return [(mount_id, mp) for mount_id, mp in found if mp == path or mp.startswith(below)]


def unmount_new(path: str, before: list[str]) -> None:
    """Detach the mounts at or below `path` that are not among the mount ids `before` (those a
    container without a mount namespace of its own made in its caller's), the last made first."""
    for mount_id, mountpoint in reversed(mounts_at_or_below(path)):
        if mount_id not in before:
            try:
                m.umount(mountpoint, m.MNT_DETACH)
            except OSError:
                pass  # already gone with a parent


def _mountpoint_of(path: str) -> str:
    path = os.path.realpath(path)
    best = "/"
    for fields in _mountinfo():
        mp = fields[4]
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best = mp
    return best


def _cgroup_mounts() -> list[tuple[str, str, str, str]]:
    """(mountpoint, fstype, controller options, root) of each cgroup hierarchy mounted on the host."""
    found = []
    for fields in _mountinfo():
        sep = fields.index("-")
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        supers = fields[sep + 3].split(",")
        controllers = [o for o in supers if o not in ("rw", "ro") and not o.startswith(("nsdelegate", "memory_", "favordynmods", "release_agent", "clone_children", "xattr", "noprefix", "cpuset_v2_mode"))]
        found.append((fields[4], fstype, ",".join(controllers) if fstype == "cgroup" else "", fields[3]))
    return found


def _own_cgroups() -> list[tuple[str, str, str]]:
    """(hierarchy id, controllers, path) of each line of /proc/self/cgroup."""
    with open("/proc/self/cgroup") as f:
        return [tuple(line.rstrip("\n").split(":", 2)) for line in f]  # type: ignore[misc]


def _own_cgroup(own: list[tuple[str, str, str]], fstype: str, options: str) -> str:
    wanted = set(options.split(",")) if options else set()
    for hid, controllers, path in own:
        if fstype == "cgroup2" and hid == "0":
            return path
        if fstype == "cgroup" and controllers and set(controllers.split(",")) == wanted:
            return path
    return "/"
