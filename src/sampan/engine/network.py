"""Network modes until the networking issue: ``none`` (and the default, ``bridge``/``default``,
which means none for now) is a network namespace of the container's own with only ``lo``,
up; ``host`` is no network namespace at all (the host's /etc/hosts and /etc/resolv.conf).

``mode(host_config)`` is what the container really has ("none" or "host"), and what
inspect and ps show (HostConfig.NetworkMode, NetworkSettings.Networks) so the API never
claims a bridge it does not have.
"""
from __future__ import annotations

import hashlib
import os
import threading

REQUESTABLE = ("default", "bridge", "none", "host")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def mode(host_config: dict) -> str:
    return "host" if (host_config.get("NetworkMode") or "default") == "host" else "none"


def network_id(name: str) -> str:
    """A stable id for the built-in networks (there are no network objects yet)."""
    return hashlib.sha256(f"sampan-network-{name}".encode()).hexdigest()


def _endpoint(name: str, endpoint_id: str) -> dict:
    return {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
            "NetworkID": network_id(name), "EndpointID": endpoint_id, "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "DNSNames": None}


def settings(cid: str, host_config: dict, pid: int) -> dict:
    """ContainerInspect.NetworkSettings for a container (running when ``pid`` > 0)."""
    name = mode(host_config)
    running = pid > 0
    endpoint = hashlib.sha256(f"{cid}/{name}".encode()).hexdigest() if running else ""
    if not running:
        key = ""
    elif name == "host":
        key = "/proc/1/ns/net"
    else:
        key = f"/proc/{pid}/ns/net"
    return {"Bridge": "", "SandboxID": cid if running else "", "SandboxKey": key, "Ports": {},
            "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
            "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
            "Networks": {name: _endpoint(name, endpoint)}}


def summary(cid: str, host_config: dict, pid: int) -> tuple[dict, dict]:
    """ContainerSummary's (HostConfig, NetworkSettings)."""
    name = mode(host_config)
    endpoint = hashlib.sha256(f"{cid}/{name}".encode()).hexdigest() if pid > 0 else ""
    return {"NetworkMode": name}, {"Networks": {name: _endpoint(name, endpoint)}}


def _lo_up_here() -> None:
    import fcntl
    import socket
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req)[:18])[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def loopback_up(pid: int) -> None:
    """Bring ``lo`` up in the network namespace of ``pid`` (a container's init, still waiting
    for start). setns(CLONE_NEWNET) moves only the calling thread, so it runs in a thread of
    its own that goes back (or dies) afterwards. Raises OSError when it cannot."""
    from ..linux.namespaces import CLONE_NEWNET, setns
    errors: list[BaseException] = []

    def run() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(target, CLONE_NEWNET, "setns into the container's network namespace")
            finally:
                os.close(target)
            try:
                _lo_up_here()
            finally:
                setns(own, CLONE_NEWNET, "setns back")
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)
        finally:
            os.close(own)

    t = threading.Thread(target=run, name=f"lo-up-{pid}", daemon=True)
    t.start()
    t.join()
    if errors:
        e = errors[0]
        raise e if isinstance(e, OSError) else OSError(str(e))
