"""Fixtures of the network layer's tests: everything runs in a network namespace of the test's own.

``host_ns`` moves the test's thread (and so every thread and process it starts) into a fresh
network namespace that plays the host: its bridges, veths, routes, sysctls and firewall
tables are the test's alone, so tests run in parallel and the real host is never touched.
The namespace (and whatever links a failing test left in it) goes away at teardown; the
thread goes back to the namespace it came from. ``manager`` is a Manager on a state.db and
exec root under tmp_path, in that namespace, with no firewall (tests/network/test_firewall*
test the firewall); ``net_state()`` is what the namespace holds, to compare before/after.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Iterator

import pytest

from sampan.linux.namespaces import CLONE_NEWNET, setns
from sampan.network import netns
from sampan.network.api import NoFirewall
from sampan.network.ipam import Ipam
from sampan.network.manager import Manager


@pytest.fixture
def host_ns(tmp_path) -> Iterator[str]:
    path = str(tmp_path / "host-netns")
    netns.create(path)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target, CLONE_NEWNET, "setns into the test's host namespace")
        yield path
    finally:
        setns(back, CLONE_NEWNET, "setns back")
        os.close(back)
        os.close(target)
        netns.remove(path)


@pytest.fixture
def manager(host_ns, tmp_path) -> Iterator[Manager]:
    m = Manager(Ipam.open(str(tmp_path / "root")), str(tmp_path / "exec"), NoFirewall())
    yield m
    m.close()
    m.ipam.close()
    for name in sandboxes(m):  # a failed test's: the links in them go with host_ns
        netns.remove(os.path.join(m.netns_dir, name))


def ip(*argv: str, netns_path: str | None = None) -> str:
    """`ip` in this thread's namespace (or in ``netns_path``): for checking, never on the tested path."""
    prefix = ["nsenter", f"--net={netns_path}"] if netns_path else []
    done = subprocess.run([*prefix, "ip", *argv], capture_output=True, text=True)
    assert done.returncode == 0, f"ip {' '.join(argv)}: {done.stderr.strip()}"
    return done.stdout


def net_state(netns_path: str | None = None, ipv6: bool = False) -> tuple[str, ...]:
    """Links, IPv4 addresses and IPv4 routes of a namespace, without what changes by itself a
    moment after a link is up: IPv6 link-local addresses, carrier (a bridge's comes when a
    port starts forwarding: the state column, a route's "linkdown"). With ``ipv6``, its IPv6
    addresses and routes too, but for link-local and multicast ones (which come and go with
    links' carrier)."""
    links = sorted(line.split()[0] for line in ip("-br", "link", netns_path=netns_path).splitlines())
    addrs = sorted(" ".join(w for i, w in enumerate(line.split()) if i != 1)
                   for line in ip("-4", "-br", "addr", netns_path=netns_path).splitlines())
    routes = ip("-4", "route", "show", "table", "all", netns_path=netns_path).replace(" linkdown", "")
    state: tuple[str, ...] = ("\n".join(links), "\n".join(addrs), routes)
    if ipv6:
        addrs6 = sorted(" ".join(w for i, w in enumerate(line.split()) if i != 1 and not w.startswith("fe80:"))
                        for line in ip("-6", "-br", "addr", netns_path=netns_path).splitlines())
        routes6 = sorted(line.replace(" linkdown", "") for line in
                         ip("-6", "route", "show", "table", "all", netns_path=netns_path).splitlines()
                         if "fe80:" not in line and not line.startswith(("multicast", "ff00:")))
        state += ("\n".join(addrs6), "\n".join(routes6))
    return state


def sandboxes(m: Manager) -> list[str]:
    return sorted(os.listdir(m.netns_dir)) if os.path.isdir(m.netns_dir) else []


def link_gone(ifname: str, within: float = 2.0) -> bool:
    """Whether a link leaves this thread's namespace within ``within`` s: the kernel removes a
    namespace's veths in the background once the namespace is released, so a moment may pass."""
    deadline = time.monotonic() + within
    while ifname in ip("-br", "link"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
