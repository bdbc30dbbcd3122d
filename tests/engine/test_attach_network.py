"""Attach before start (docker run: create, attach, start, wait), --rm on a failed start,
and the network modes (none, host, the default), on real containers through the Engine."""
import ipaddress
import os
import socket
import subprocess
import struct
import time

import pytest

from sampan.engine.errors import Conflict, EngineError, NotFound


def _read_all(sock: socket.socket, timeout: float = 20) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return data


def _demux(data: bytes) -> dict[int, bytes]:
    out = {1: b"", 2: b""}
    while data:
        stream, n = struct.unpack(">BxxxL", data[:8])
        out[stream] += data[8:8 + n]
        data = data[8 + n:]
    return out


def test_attach_before_start_streams_from_the_first_byte(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["sh", "-c", "echo first; cat; echo done >&2; exit 3"],
                         "OpenStdin": True, "StdinOnce": True, "AttachStdin": True})
    sock = engine.attach(cid, stdin=True)
    # created in the supervisor, waiting for the start: nothing ran yet
    assert engine.inspect(cid)["State"]["Status"] == "created"
    engine.start(cid)
    sock.sendall(b"to stdin\n")
    sock.shutdown(socket.SHUT_WR)
    out = _demux(_read_all(sock))
    assert out == {1: b"first\nto stdin\n", 2: b"done\n"}
    assert engine.wait(cid, timeout=10)["StatusCode"] == 3
    # the log has the same
    assert b"".join(d for s, d in engine.logs(cid) if s == "stdout") == b"first\nto stdin\n"


def test_attach_before_start_fast_exit_and_start_a_again(engine):
    """A process that writes and exits at once: the attacher still gets every byte. And the
    same again on the exited container (docker start -a)."""
    cid = engine.create({"Image": "busybox", "Cmd": ["sh", "-c", "seq 1 2000; echo bye >&2"]})
    want = "".join(f"{i}\n" for i in range(1, 2001)).encode()
    for _ in range(2):
        sock = engine.attach(cid)
        engine.start(cid)
        out = _demux(_read_all(sock))
        assert out == {1: want, 2: b"bye\n"}
        assert engine.wait(cid, timeout=10)["StatusCode"] == 0
    assert engine.inspect(cid)["State"]["Status"] == "exited"


def test_attach_before_start_with_a_tty(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["sh", "-c", "tty; stty size; echo $TERM"], "Tty": True,
                         "HostConfig": {"ConsoleSize": [30, 100]}})
    sock = engine.attach(cid)
    engine.start(cid)
    out = _read_all(sock)
    assert out == b"/dev/pts/0\r\n30 100\r\nxterm\r\n", out


def test_attach_before_start_tty_with_stdin(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["sh"], "Tty": True, "OpenStdin": True, "StdinOnce": True,
                         "AttachStdin": True})
    sock = engine.attach(cid, stdin=True)
    engine.start(cid)
    sock.sendall(b"echo $((6*7))\nexit 5\n")
    out = _read_all(sock)
    assert b"42\r\n" in out, out
    assert engine.wait(cid, timeout=10)["StatusCode"] == 5


def test_attached_but_never_started_is_removed_cleanly(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["echo", "never"]})
    sock = engine.attach(cid)
    assert engine.list(all=True)[0]["State"] == "created"
    engine.remove(cid)          # no force needed: it is only created
    assert _read_all(sock, 10) == b""   # the stream ends with the container
    with pytest.raises(NotFound):
        engine.inspect(cid)


def test_attach_refusals(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["sleep", "30"]})
    engine.start(cid)
    engine.pause(cid)
    with pytest.raises(Conflict):
        engine.attach(cid)
    engine.unpause(cid)
    engine.remove(cid, force=True)


def test_failed_start_attach_then_auto_remove(engine):
    # the start fails (not found): the attach stream is just empty, the start reports it
    cid = engine.create({"Image": "busybox", "Cmd": ["nosuchcommand"]})
    sock = engine.attach(cid)
    with pytest.raises(EngineError) as e:
        engine.start(cid)
    assert "executable file not found" in str(e.value)
    assert _read_all(sock, 10) == b""
    st = engine.inspect(cid)["State"]
    assert st["Status"] == "created" and st["ExitCode"] == 127
    with pytest.raises(EngineError):
        engine.start(cid)
    kept = cid
    # --rm: the engine removes the container whose start failed
    cid = engine.create({"Image": "busybox", "Cmd": ["/etc/passwd"], "HostConfig": {"AutoRemove": True}})
    sock = engine.attach(cid)
    with pytest.raises(EngineError) as e:
        engine.start(cid)
    assert "permission denied" in str(e.value)   # as Go words it: the docker CLI maps it to 126
    sock.close()
    with pytest.raises(NotFound):
        engine.inspect(cid)
    assert [r["id"] for r in engine.store.all()] == [kept]
    assert sorted(os.listdir(engine.containers_dir)) == [kept]


# ------------------------------------------------------------------ networks
def _links(netns_path: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net={netns_path}", "ip", "-o", "link"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())


def test_network_none_has_only_lo_up(engine, run):
    code, out, cid = run(["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags; hostname; "
                                      "ip -4 addr show lo | grep -o 'inet [0-9./]*'"], HostConfig={"NetworkMode": "none"})
    assert code == 0, out
    assert out == b"lo\n0x9\n" + cid[:12].encode() + b"\ninet 127.0.0.1/8\n"   # 0x9: IFF_UP|IFF_LOOPBACK
    info = engine.inspect(cid)
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert list(info["NetworkSettings"]["Networks"]) == ["none"]
    assert info["NetworkSettings"]["IPAddress"] == "" and info["NetworkSettings"]["Ports"] == {}
    ps = engine.list(all=True, filters={"id": [cid]})[0]
    assert ps["HostConfig"] == {"NetworkMode": "none"} and list(ps["NetworkSettings"]["Networks"]) == ["none"]
    assert os.listdir(engine.net.netns_dir) == []  # (its namespace went with its run)


@pytest.mark.parametrize("mode", [None, "bridge"])
def test_default_network_is_the_bridge(engine, run, engine_netns, mode):
    hc = {"NetworkMode": mode} if mode else {}
    code, out, cid = run(["sh", "-c", "ls /sys/class/net; ip -4 -o addr show eth0 | grep -o 'inet [0-9./]*'; "
                                      "ip route | grep default; tail -1 /etc/hosts"], HostConfig=hc)
    assert code == 0, out
    assert out.decode().splitlines()[:2] == ["eth0", "lo"]
    inet, route, hosts_line = out.decode().splitlines()[2:5]
    net = engine.network_inspect("bridge")
    subnet = net["IPAM"]["Config"][0]["Subnet"]
    assert ipaddress.ip_interface(inet.split()[1]).network == ipaddress.ip_network(subnet)
    assert route.startswith(f"default via {net['IPAM']['Config'][0]['Gateway']} dev eth0")
    assert hosts_line == f"{inet.split()[1].split('/')[0]}\t{cid[:12]}"
    info = engine.inspect(cid)
    assert info["HostConfig"]["NetworkMode"] == "bridge" and list(info["NetworkSettings"]["Networks"]) == ["bridge"]
    # exited: no address, no veth, no namespace left; the bridge stays
    assert info["NetworkSettings"]["IPAddress"] == "" and info["NetworkSettings"]["Networks"]["bridge"]["NetworkID"] == net["Id"]
    assert os.listdir(engine.net.netns_dir) == [] and engine.net.endpoints() == []
    # the kernel deletes the veth with the namespace, in the background (its netns cleanup work)
    deadline = time.monotonic() + 5
    while _links(engine_netns) != ["lo", "sampan0"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _links(engine_netns) == ["lo", "sampan0"]


def test_network_host(engine, run, engine_netns):
    """host: the engine's own namespace (here the test's engine namespace), and the host's files."""
    code, out, cid = run(["sh", "-c", "ls /sys/class/net; echo ---; hostname; echo ---; cat /etc/hosts; "
                                      "echo ---; cat /etc/resolv.conf"], HostConfig={"NetworkMode": "host"})
    assert code == 0, out
    ifaces, hostname, hosts, resolv = out.decode().split("---\n")
    assert sorted(ifaces.split()) == _links(engine_netns)
    assert hostname.strip() == os.uname().nodename
    assert hosts == open("/etc/hosts").read()
    assert resolv == open("/etc/resolv.conf").read()
    info = engine.inspect(cid)
    assert info["HostConfig"]["NetworkMode"] == "host" and list(info["NetworkSettings"]["Networks"]) == ["host"]
    assert info["Config"]["Hostname"] == os.uname().nodename
    # the container's own UTS namespace: it cannot rename the host even when privileged
    code, out, _ = run(["sh", "-c", "hostname renamed && hostname"], HostConfig={"NetworkMode": "host",
                                                                                "Privileged": True})
    assert out == b"renamed\n" and os.uname().nodename != "renamed"


def test_network_running_inspect_and_unknown(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["sleep", "30"]})
    assert engine.inspect(cid)["NetworkSettings"]["SandboxKey"] == ""
    engine.start(cid)
    ns = engine.inspect(cid)["NetworkSettings"]
    pid = engine.inspect(cid)["State"]["Pid"]
    assert ns["SandboxKey"] == os.path.join(engine.exec_root, "netns", cid)
    assert os.stat(ns["SandboxKey"]).st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino
    assert ns["Networks"]["bridge"]["EndpointID"] and ns["IPAddress"] == ns["Networks"]["bridge"]["IPAddress"]
    engine.remove(cid, force=True)
    assert not os.path.exists(ns["SandboxKey"])
    with pytest.raises(NotFound):
        engine.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "nosuchnet"}})
