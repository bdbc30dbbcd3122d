"""Whether the host runs the Linux security modules a container config can name."""
from __future__ import annotations

import os

APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
SELINUXFS = "/sys/fs/selinux"


def apparmor_enabled() -> bool:
    """AppArmor is built in and switched on (as runc's apparmor.IsEnabled reads it)."""
    try:
        with open(APPARMOR_ENABLED) as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    """SELinux has its filesystem mounted, which it has once a policy is loaded; a kernel
    with SELinux compiled in but no policy (this kind of host) has none."""
    return os.path.exists(os.path.join(SELINUXFS, "enforce"))
