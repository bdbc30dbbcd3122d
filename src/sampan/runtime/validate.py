"""Checks of a config.json against this runtime and host, made before anything is created."""
from __future__ import annotations

import os

from ..oci import runtime_spec
from . import process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def for_create(spec: dict[str, Any], bundle: str) -> tuple[str, list[str]]:
    """Validates the spec; returns the absolute rootfs path and warnings."""
    linux = spec.get("linux") or {}
    kinds = {n["type"]: n.get("path") for n in linux.get("namespaces") or []}
    if "mount" not in kinds:
        # The container's mounts go to its caller's namespace; nothing there may turn
        # read-only or be masked, nor its propagation change, for the container's sake.
        if linux.get("maskedPaths") or linux.get("readonlyPaths"):
            raise runtime_spec.SpecError("unable to restrict sys entries without a private MNT namespace")
        if linux.get("rootfsPropagation"):
            raise runtime_spec.SpecError("rootfsPropagation needs a private MNT namespace")
    for key in linux.get("sysctl") or {}:
        _check_sysctl(key, kinds)
    process.refuse_lsm_label("linux.mountLabel", linux.get("mountLabel"), "SELinux")
    warnings = process.validate(spec["process"])
    if linux.get("seccomp"):
        from . import seccomp
        seccomp.validate(linux["seccomp"])
    if linux.get("rootfsPropagation"):
        from .mountopts import root_propagation
        root_propagation(linux["rootfsPropagation"])
    for kind, path in kinds.items():
        if path and not os.path.exists(path):
            raise runtime_spec.SpecError(f"{kind} namespace path {path} does not exist")
    rootfs = spec["root"]["path"]
    if not rootfs.startswith("/"):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.realpath(rootfs)
    if not os.path.isdir(rootfs):
        raise runtime_spec.SpecError(f"rootfs ({rootfs}) does not exist")
    return rootfs, warnings


def _check_sysctl(key: str, kinds: dict[str, str | None]) -> None:
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if "ipc" in kinds:
            return
        raise runtime_spec.SpecError(f"sysctl {key!r} is not allowed in the host's ipc namespace")
    if key.startswith("net."):
        if "network" in kinds:
            return
        raise runtime_spec.SpecError(f"sysctl {key!r} is not allowed in the host's network namespace")
    if key in ("kernel.hostname", "kernel.domainname"):
        if "uts" in kinds:
            return
        raise runtime_spec.SpecError(f"sysctl {key!r} is not allowed in the host's uts namespace")
    raise runtime_spec.SpecError(f"sysctl {key!r} is not in a separate kernel namespace")
