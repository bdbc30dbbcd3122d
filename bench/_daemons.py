"""The benchmarks' two daemons: a private dockerd and a private sampand (tests/private_daemons.py,
each in its own temporary directory, network namespace and mount namespace, so a test suite
running at the same time neither trips over their mounts nor takes them away), the same
busybox image in both, torn down without leaving mounts, cgroups or processes behind.

The image is `tar -C .cache/images/busybox -c . | docker import -c 'CMD ["sh"]' - busybox:local`
(the harness's Dockerd.start), and sampan gets the very same image through `docker save |
sampan load`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from private_daemons import DOCKER_CLI, DOCKERD, Dockerd, Sampand, busybox_rootfs  # noqa: E402

SAMPAN_CLI = "/usr/local/bin/sampan" if os.access("/usr/local/bin/sampan", os.X_OK) else str(REPO / ".venv/bin/sampan")
IMAGE = Dockerd.image


def start_both(one_netns: bool = False, docker_bridge: str | None = None) -> tuple[Dockerd, Sampand]:
    """Both daemons up, busybox:local in both; with one_netns sampand runs in dockerd's
    network namespace (both reach one registry there on 127.0.0.1); docker_bridge: dockerd's
    default networking on that --bip (Dockerd's bridge), else none."""
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if not (DOCKERD and DOCKER_CLI):
        raise SystemExit("dockerd and the docker CLI are needed (scripts/setup.sh installs them)")
    d = Dockerd(busybox_rootfs(), bridge=docker_bridge, own_mounts=True)
    s = None
    try:
        d.start()
        s = Sampand(network=d.netns if one_netns else "own", own_mounts=True)
        s.start()
        archive = os.path.join(d.tmp, "busybox.tar")
        d.docker("save", "-o", archive, IMAGE)
        s.sampan("load", "-q", "-i", archive, check=True)
        os.unlink(archive)
    except BaseException:
        stop_both(d, s)
        raise
    return d, s


def stop_both(d: Dockerd | None, s: Sampand | None) -> None:
    """Tears both down (sampand first: it may share dockerd's network namespace); what had to
    be cleaned up by force is a warning."""
    for daemon in (s, d):
        if daemon is not None:
            problems = daemon.teardown()
            if problems:
                print(f"warning: {daemon.name} teardown: " + "; ".join(problems[:4]), file=sys.stderr)
