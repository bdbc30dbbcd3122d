"""Networks through the engine, with real traffic: user networks with names resolved by the
embedded DNS (TCP and UDP between containers), published ports from the host's addresses
and from other containers, a port taken twice, internal networks, container:ID, connect and
disconnect of a running container, an engine restart. The engine's networks live in the
test's own namespace (``engine_netns``), which plays the host: its address 198.51.100.1 (on
a dummy link) is "the host's other address"."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import urllib.request

import pytest

import outside_netns
from sampan.engine.errors import Conflict, NotFound
from sampan.network import netns

HOST_ADDRESS = "198.51.100.1"


def ns_run(path: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={path}", *argv], capture_output=True, text=True, timeout=30)


@pytest.fixture
def host_address(engine_netns):
    for argv in (("ip", "link", "add", "uplink", "type", "bridge"), ("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", "uplink"),
                 ("ip", "link", "set", "uplink", "up")):
        assert ns_run(engine_netns, *argv).returncode == 0
    return HOST_ADDRESS


def _running(engine, cmd: list[str], name: str | None = None, **body) -> str:
    cid = engine.create({"Image": "busybox", "Cmd": cmd, **body}, name)
    engine.start(cid)
    return cid


def _output(engine, cid: str, timeout: float = 20) -> tuple[int, str]:
    res = engine.wait(cid, timeout=timeout)
    return res["StatusCode"], b"".join(d for _, d in engine.logs(cid)).decode()


def _http_get(path: str, url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    return netns.run_in(path, get)


def _httpd(engine, text: str, **body) -> str:
    """A busybox httpd on port 80 serving ``text`` at /index.html."""
    return _running(engine, ["sh", "-c", f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"],
                    **body)


def _wait_port(engine, cid: str, port: int = 80) -> None:
    path = engine.inspect(cid)["NetworkSettings"]["SandboxKey"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # (busybox httpd listens on a dual-stack IPv6 socket)
        listening = netns.run_in(path, lambda: open("/proc/thread-self/net/tcp").read() +
                                 open("/proc/thread-self/net/tcp6").read())
        if f":{port:04X} " in listening:
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port} in {cid[:12]}")


def test_user_network_names_over_tcp_and_udp(engine):
    engine.network_create({"Name": "appnet"})
    web = _httpd(engine, "from-web", name="web", NetworkingConfig={"EndpointsConfig": {"appnet": {"Aliases": ["www"]}}},
                 HostConfig={"NetworkMode": "appnet"})
    _wait_port(engine, web)
    ip = engine.inspect(web)["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
    client = _running(engine, ["sh", "-c", f"cat /etc/resolv.conf | grep nameserver; nslookup web | grep -c {ip}; "
                                           f"wget -qO- http://web/; wget -qO- http://www/; wget -qO- http://{web[:12]}/; "
                                           "wget -qO- http://web.appnet/"],
                      HostConfig={"NetworkMode": "appnet"})
    code, out = _output(engine, client)
    assert code == 0, out
    assert out == "nameserver 127.0.0.11\n1\n" + "from-web\n" * 4
    # UDP by name: busybox's tftp client fetches a file from a server the test runs in web's namespace
    sandbox = engine.inspect(web)["NetworkSettings"]["SandboxKey"]
    server = netns.run_in(sandbox, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    server.bind(("0.0.0.0", 69))
    server.settimeout(20)
    client = _running(engine, ["sh", "-c", "tftp -g -r hello -l /tmp/got web 69 && cat /tmp/got"],
                      HostConfig={"NetworkMode": "appnet"})
    request, peer = server.recvfrom(512)
    assert request.startswith(b"\x00\x01hello\x00")
    client_ip = engine.inspect(client)["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
    assert peer[0] == client_ip
    server.sendto(struct.pack("!HH", 3, 1) + b"over-udp\n", peer)
    ack, _ = server.recvfrom(512)
    assert ack == struct.pack("!HH", 4, 1)
    server.close()
    assert _output(engine, client) == (0, "over-udp\n")
    # the default bridge has no embedded DNS: names of others are not resolved there
    lone = _running(engine, ["sh", "-c", "grep -c 127.0.0.11 /etc/resolv.conf; exit 0"])
    assert _output(engine, lone) == (0, "0\n")


def test_published_port_from_the_host_and_from_a_container(engine, engine_netns, host_address):
    web = _httpd(engine, "published", HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}})
    _wait_port(engine, web)
    assert _http_get(engine_netns, "http://127.0.0.1:8080/") == "published\n"
    assert _http_get(engine_netns, f"http://{host_address}:8080/") == "published\n"
    ports = engine.inspect(web)["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    assert engine.list(filters={"id": [web]})[0]["Ports"] == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]
    # hairpin: another container, and the server itself, through the host's address
    other = _running(engine, ["wget", "-qO-", f"http://{host_address}:8080/"])
    assert _output(engine, other) == (0, "published\n")
    # a second container asking for the same host port fails with Docker's words, leaving nothing
    before = ns_run(engine_netns, "nft", "list", "table", "ip", "sampan").stdout
    second = engine.create({"Image": "busybox", "Cmd": ["sleep", "30"],
                            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}})
    with pytest.raises(Conflict, match="port is already allocated"):
        engine.start(second)
    assert not os.path.exists(os.path.join(engine.net.netns_dir, second))
    assert engine.net.endpoints(second) == []
    assert ns_run(engine_netns, "nft", "list", "table", "ip", "sampan").stdout == before
    # stopped: the port is free again, the rules are gone
    engine.remove(web, force=True)
    assert second not in ns_run(engine_netns, "nft", "list", "ruleset").stdout
    engine.start(second)
    assert engine.inspect(second)["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8080"}]


def test_publish_all_and_a_host_port_picked(engine, engine_netns):
    cid = _httpd(engine, "any", ExposedPorts={"80/tcp": {}, "53/udp": {}},
                 HostConfig={"PublishAllPorts": True})
    _wait_port(engine, cid)
    ports = engine.inspect(cid)["NetworkSettings"]["Ports"]
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert set(ports) == {"80/tcp", "53/udp"}
    host_port = int(ports["80/tcp"][0]["HostPort"])
    assert low <= host_port <= high
    assert _http_get(engine_netns, f"http://127.0.0.1:{host_port}/") == "any\n"


def test_internal_network_has_no_way_out(engine, host_address):
    engine.network_create({"Name": "sealed", "Internal": True})
    cid = _running(engine, ["sh", "-c", f"ip route; nc -w 2 {host_address} 80 </dev/null || echo unreachable; "
                                        "nslookup example.org 2>&1 | grep -q SERVFAIL && echo servfail"],
                   HostConfig={"NetworkMode": "sealed"})
    code, out = _output(engine, cid)
    lines = out.splitlines()
    assert not any(line.startswith("default") for line in lines), out
    assert "unreachable" in lines and lines[-1] == "servfail", out


def test_fixed_address_mac_extra_hosts_and_dns_options(engine):
    engine.network_create({"Name": "fixed", "IPAM": {"Config": [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.254"}]}})
    cid = _running(engine, ["sh", "-c", "ip -o -4 addr show eth0 | grep -o 'inet [0-9./]*'; cat /sys/class/net/eth0/address; "
                                        "grep -E 'gw|myhost' /etc/hosts; grep -E '^(search|options)' /etc/resolv.conf"],
                   HostConfig={"NetworkMode": "fixed", "ExtraHosts": ["myhost:10.1.2.3", "gw:host-gateway"],
                               "DnsSearch": ["example.test"], "DnsOptions": ["timeout:3"]},
                   NetworkingConfig={"EndpointsConfig": {"fixed": {"IPAMConfig": {"IPv4Address": "10.77.0.9"},
                                                                    "MacAddress": "02:00:00:00:00:09"}}})
    code, out = _output(engine, cid)
    gateway = engine.network_inspect("bridge")["IPAM"]["Config"][0]["Gateway"]
    assert code == 0, out
    assert out.splitlines() == ["inet 10.77.0.9/24", "02:00:00:00:00:09", "10.1.2.3\tmyhost", f"{gateway}\tgw",
                                "search example.test", "options timeout:3 ndots:0"]
    taken = engine.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "fixed"},
                           "NetworkingConfig": {"EndpointsConfig": {"fixed": {"IPAMConfig": {"IPv4Address": "10.77.0.254"}}}}})
    with pytest.raises(Conflict, match="Address already in use"):
        engine.start(taken)


def test_container_mode_shares_the_namespace(engine):
    first = _running(engine, ["sleep", "30"])
    joined = _running(engine, ["sh", "-c", "ip -o -4 addr show eth0 | grep -o 'inet [0-9.]*'"],
                      HostConfig={"NetworkMode": f"container:{first}"})
    ip = engine.inspect(first)["NetworkSettings"]["IPAddress"]
    assert _output(engine, joined) == (0, f"inet {ip}\n")
    assert engine.inspect(joined)["HostConfig"]["NetworkMode"] == f"container:{first}"
    engine.stop(first, timeout=0)
    with pytest.raises(Conflict, match="non running container"):
        engine.start(joined)
    with pytest.raises(NotFound):
        engine.create({"Image": "busybox", "HostConfig": {"NetworkMode": "container:nosuchcontainer"}})


def test_connect_and_disconnect_a_running_container(engine):
    engine.network_create({"Name": "second"})
    peer = _httpd(engine, "peer", name="peer", HostConfig={"NetworkMode": "second"})
    cid = _running(engine, ["sleep", "60"])
    engine.network_connect("second", {"Container": cid, "EndpointConfig": {"Aliases": ["late"]}})
    nets = engine.inspect(cid)["NetworkSettings"]["Networks"]
    assert set(nets) == {"bridge", "second"} and nets["second"]["IPAddress"]
    assert cid in engine.network_inspect("second")["Containers"]
    _wait_port(engine, peer)

    def run_exec(cmd: list[str]) -> str:
        sandbox = engine.inspect(cid)["NetworkSettings"]["SandboxKey"]
        return ns_run(sandbox, *cmd).stdout
    assert "eth1" in run_exec(["ip", "-o", "link"])
    engine.network_disconnect("second", {"Container": cid})
    assert set(engine.inspect(cid)["NetworkSettings"]["Networks"]) == {"bridge"}
    assert "eth1" not in run_exec(["ip", "-o", "link"])
    with pytest.raises(Exception, match="has active endpoints"):
        engine.network_remove("second")
    engine.remove(peer, force=True)
    engine.network_remove("second")
    assert [n["Name"] for n in engine.network_list()] == ["bridge", "host", "none"]


def test_network_objects(engine):
    made = engine.network_create({"Name": "objs", "Labels": {"team": "a"}, "Options": {"com.docker.network.bridge.name": "objs0"}})
    shape = engine.network_inspect("objs")
    assert shape["Id"] == made["Id"] and shape["Driver"] == "bridge" and shape["Labels"] == {"team": "a"}
    assert engine.network_inspect(made["Id"][:10])["Name"] == "objs"
    assert [n["Name"] for n in engine.network_list({"label": ["team=a"]})] == ["objs"]
    assert {n["Name"] for n in engine.network_list({"type": ["builtin"]})} == {"bridge", "host", "none"}
    with pytest.raises(Conflict, match="already exists"):
        engine.network_create({"Name": "objs"})
    with pytest.raises(Exception, match="pre-defined"):
        engine.network_remove("bridge")
    assert engine.network_prune() == {"NetworksDeleted": ["objs"]}
    with pytest.raises(NotFound):
        engine.network_inspect("objs")


def test_running_containers_keep_their_network_across_an_engine_restart(engine, roots, engine_netns):
    engine.network_create({"Name": "kept"})
    web = _httpd(engine, "still-here", name="web", HostConfig={"NetworkMode": "kept"})
    _wait_port(engine, web)
    gone = _running(engine, ["sleep", "60"], HostConfig={"NetworkMode": "kept"})
    engine.close()
    root, exec_root = roots
    # the same object made again on the same roots (the fixture removes what it holds)
    engine.__init__(root, exec_root, network_namespace=engine_netns)
    client = _running(engine, ["wget", "-qO-", "http://web/"], HostConfig={"NetworkMode": "kept"})
    assert _output(engine, client) == (0, "still-here\n")
    engine.remove(gone, force=True)
    assert gone not in engine.network_inspect("kept")["Containers"]


@pytest.fixture
def outside(engine_netns, tmp_path):
    """A namespace beyond the engine's "host" with an HTTP server at 203.0.113.2:8000 that
    answers with the address a request came from (tests/outside_netns.py)."""
    with outside_netns.outside(engine_netns, str(tmp_path / "outside-netns")):
        yield outside_netns.OUTSIDE


def test_egress_is_masqueraded_and_internal_networks_have_none(engine, outside):
    cid = _running(engine, ["wget", "-qO-", f"http://{outside}:8000/"])
    assert _output(engine, cid) == (0, "203.0.113.1")   # the host's address, not the container's
    engine.network_create({"Name": "user-egress"})
    cid = _running(engine, ["wget", "-qO-", f"http://{outside}:8000/"], HostConfig={"NetworkMode": "user-egress"})
    assert _output(engine, cid) == (0, "203.0.113.1")
    engine.network_create({"Name": "no-egress", "Internal": True})
    cid = _running(engine, ["sh", "-c", f"nc -w 2 {outside} 8000 </dev/null 2>/dev/null && echo reached || echo unreachable"],
                   HostConfig={"NetworkMode": "no-egress"})
    assert _output(engine, cid) == (0, "unreachable\n")


def test_legacy_links_on_the_default_bridge_and_as_aliases_on_a_user_network(engine):
    db = _running(engine, ["sleep", "60"], name="db", Env=["SECRET=s3"], ExposedPorts={"5432/tcp": {}})
    ip = engine.inspect(db)["NetworkSettings"]["IPAddress"]
    web = _running(engine, ["sh", "-c", "grep ' db$' /etc/hosts; env | grep ^DATA_ | sort"], name="web",
                   HostConfig={"Links": ["db:data"]})
    assert _output(engine, web) == (0, f"{ip}\tdata {db[:12]} db\n" + "".join(
        f"{v}\n" for v in sorted(["DATA_ENV_SECRET=s3", "DATA_NAME=/web/data", f"DATA_PORT=tcp://{ip}:5432",
                                   f"DATA_PORT_5432_TCP=tcp://{ip}:5432", f"DATA_PORT_5432_TCP_ADDR={ip}",
                                   "DATA_PORT_5432_TCP_PORT=5432", "DATA_PORT_5432_TCP_PROTO=tcp"])))
    assert engine.inspect(web)["HostConfig"]["Links"] == ["/db:/web/data"]
    with pytest.raises(Exception, match="could not get container for nosuch"):
        engine.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Links": ["nosuch:x"]}})
    engine.stop(db, timeout=0)
    with pytest.raises(Conflict, match="Cannot link to a non running container: /db AS /web/data"):
        engine.start(web)
    # on a user network a link is a name the embedded DNS answers for that container alone
    engine.network_create({"Name": "linked"})
    target = _running(engine, ["sleep", "60"], name="target", HostConfig={"NetworkMode": "linked"})
    ip = engine.inspect(target)["NetworkSettings"]["Networks"]["linked"]["IPAddress"]
    cid = _running(engine, ["sh", "-c", f"nslookup other | grep -c {ip}"],
                   HostConfig={"NetworkMode": "linked", "Links": ["target:other"]})
    assert _output(engine, cid) == (0, "1\n")


def test_stats_count_the_container_interfaces(engine, engine_netns):
    web = _httpd(engine, "x" * 5000, HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8081"}]}})
    _wait_port(engine, web)
    before = engine.stats(web)["networks"]["eth0"]
    assert _http_get(engine_netns, "http://127.0.0.1:8081/") == "x" * 5000 + "\n"
    after = engine.stats(web)["networks"]
    assert set(after) == {"eth0"}
    assert after["eth0"]["tx_bytes"] - before["tx_bytes"] > 5000 and after["eth0"]["rx_packets"] > before["rx_packets"]
    assert "networks" not in engine.stats(_running(engine, ["sleep", "5"], HostConfig={"NetworkMode": "none"}))


def test_ipv6_network(engine):
    made = engine.network_create({"Name": "six", "EnableIPv6": True,
                                  "IPAM": {"Config": [{"Subnet": "fd00:77::/64"}]}})
    shape = engine.network_inspect(made["Id"])
    assert shape["EnableIPv6"] is True
    assert [c["Subnet"] for c in shape["IPAM"]["Config"]][1] == "fd00:77::/64"
    web = _httpd(engine, "over-v6", name="web6", HostConfig={"NetworkMode": "six"})
    _wait_port(engine, web)
    ep = engine.inspect(web)["NetworkSettings"]["Networks"]["six"]
    assert ep["GlobalIPv6Address"].startswith("fd00:77::") and ep["GlobalIPv6PrefixLen"] == 64
    assert ep["IPv6Gateway"] == "fd00:77::1"
    client = _running(engine, ["sh", "-c", f"wget -qO- 'http://[{ep['GlobalIPv6Address']}]/'; tail -1 /etc/hosts; "
                                           f"nslookup -type=aaaa web6 | grep -c {ep['GlobalIPv6Address']}"],
                      HostConfig={"NetworkMode": "six"},
                      NetworkingConfig={"EndpointsConfig": {"six": {"IPAMConfig": {"IPv6Address": "fd00:77::99"}}}})
    assert _output(engine, client) == (0, f"over-v6\nfd00:77::99\t{client[:12]}\n1\n")
    with pytest.raises(Exception, match="needs --ipv6"):
        engine.network_create({"Name": "not-six", "IPAM": {"Config": [{"Subnet": "fd00:78::/64"}]}})


def test_default_bridge_with_ipv6(engine, roots, engine_netns):
    """The engine's (sampand's --ipv6 --fixed-cidr-v6) default bridge with IPv6 too."""
    engine.close()
    root, exec_root = roots
    # the fixture's engine made again with the options (the fixture removes what it holds)
    engine.__init__(root, exec_root, network_namespace=engine_netns, ipv6=True, bridge_subnet6="fd00:99::/64")
    cid = _running(engine, ["sh", "-c", "ip -6 -o addr show eth0 scope global | grep -o 'inet6 [0-9a-f:/]*'"])
    assert _output(engine, cid) == (0, "inet6 fd00:99::2/64\n")
    net = engine.network_inspect("bridge")
    assert net["EnableIPv6"] and net["IPAM"]["Config"][1]["Subnet"] == "fd00:99::/64"


def test_ports_published_on_ipv6_host_addresses(engine, engine_netns, host_address):
    """-p [ADDR6]:H:C on an IPv6 network answers on that host address; -p [::]:H:C on every
    IPv6 one (and on no IPv4 one); ::1, which the kernel cannot forward, and an IPv6 host
    address for a container without IPv6 are refused with the reason, leaving nothing."""
    assert ns_run(engine_netns, "ip", "addr", "add", "fd00:aa::1/64", "dev", "uplink", "nodad").returncode == 0
    engine.network_create({"Name": "six", "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": "fd00:78::/64"}]}})
    web = _httpd(engine, "v6-published", HostConfig={"NetworkMode": "six", "PortBindings": {
        "80/tcp": [{"HostIp": "fd00:aa::1", "HostPort": "8082"}, {"HostIp": "::", "HostPort": "8083"}]}})
    _wait_port(engine, web)
    assert sorted(engine.inspect(web)["NetworkSettings"]["Ports"]["80/tcp"], key=lambda b: b["HostPort"]) == [
        {"HostIp": "fd00:aa::1", "HostPort": "8082"}, {"HostIp": "::", "HostPort": "8083"}]
    assert _http_get(engine_netns, "http://[fd00:aa::1]:8082/") == "v6-published\n"
    assert _http_get(engine_netns, "http://[fd00:aa::1]:8083/") == "v6-published\n"
    with pytest.raises(OSError):
        _http_get(engine_netns, f"http://{host_address}:8083/")
    engine.network_inspect("bridge")  # the default network made (on first use): not a leftover
    before = ns_run(engine_netns, "nft", "list", "ruleset").stdout
    for network, host_ip, reason in (("six", "::1", "IPv6 loopback"), ("bridge", "fd00:aa::1", "has no IPv6")):
        with pytest.raises(Exception, match=reason):
            _running(engine, ["true"], HostConfig={"NetworkMode": network, "PortBindings": {
                "80/tcp": [{"HostIp": host_ip, "HostPort": "8084"}]}})
    assert ns_run(engine_netns, "nft", "list", "ruleset").stdout == before
    # (the refused containers stay created, not started, as with dockerd)
    assert sorted(c["State"] for c in engine.list(all=True)) == ["created", "created", "running"]
