"""`features`: what this runtime supports, in the runtime-spec features.md format."""
from __future__ import annotations


from ..linux.caps import NAMES
from ..oci.runtime_spec import HOOK_NAMES, NAMESPACE_TYPES, OCI_VERSION
from .mountopts import FLAGS, PROPAGATION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def features() -> dict[str, Any]:
    try:
        from .seccomp import features as seccomp_features
        seccomp = seccomp_features()
    except (ImportError, OSError):
        seccomp = {"enabled": False}
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_NAMES),
        "mountOptions": sorted(set(FLAGS) | set(PROPAGATION)),
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": list(NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": seccomp,
            # Not applied by this runtime on any host: a config naming a profile or label is
            # refused (process.refuse_lsm_label), never run unconfined.
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runc.version": "1.1.5", "io.github.sampan.version": "0.1.0"},
    }
