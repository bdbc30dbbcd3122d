"""/networks through the real docker CLI (28) and docker-py against sampand: create, ls with
filters, inspect, rm, prune, connect and disconnect on created and running containers, with
dockerd's messages and the docker CLI's exit codes. The daemon has a network namespace of its
own, so its bridges and addresses are out of the host's way (and out of other tests')."""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest

from private_daemons import DOCKER_CLI

from sampan.network import netns


ID = re.compile(r"^[0-9a-f]{64}$")
# subnets of this module's networks (the daemon's namespace has no other routes to clash with)
SUBNET_A, SUBNET_B, SUBNET_C = "10.231.7.0/24", "10.231.8.0/24", "10.231.9.0/24"


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, (r.args, r.returncode, r.stdout, r.stderr)
    return r.stdout.decode()


def _fails(r: subprocess.CompletedProcess, stderr: str, code: int = 1, stdout: bytes = b"") -> None:
    """The command exited ``code`` and its stderr begins with ``stderr`` (the docker CLI adds
    "exit status 1" after network rm's errors)."""
    assert (r.returncode, r.stdout) == (code, stdout), (r.args, r.returncode, r.stdout, r.stderr)
    assert r.stderr.decode().startswith(stderr), (r.args, r.stderr)


@pytest.fixture
def networks_removed(sampand):
    """After the test, its containers and then every network it made are removed (the next
    test starts with bridge, host and none only)."""
    yield
    sampand.remove_containers()
    client = sampand.client()
    for n in client.get("/networks"):
        if n["Name"] not in ("bridge", "host", "none"):
            client.delete(f"/networks/{n['Id']}")


pytestmark = [pytest.mark.skipif(not DOCKER_CLI, reason="no docker CLI"), pytest.mark.usefixtures("networks_removed")]


def _net_inspect(sampand, ref: str) -> dict:
    return json.loads(_ok(sampand.docker("network", "inspect", ref)))[0]


def _addresses(sampand, container: str) -> str:
    """The container's IPv4 addresses as the kernel lists them (busybox has no `ip`)."""
    return _ok(sampand.docker("exec", container, "cat", "/proc/net/fib_trie"))


def _links(sampand, container: str) -> list[str]:
    return _ok(sampand.docker("exec", container, "ls", "/sys/class/net")).split()


def test_create_ls_inspect_rm_with_the_docker_cli(sampand):
    d = sampand.docker
    rows = _ok(d("network", "ls")).splitlines()
    assert rows[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [r.split()[1:] for r in rows[1:]] == [["bridge", "bridge", "local"], ["host", "host", "local"],
                                                 ["none", "null", "local"]]
    nid = _ok(d("network", "create", "--subnet", SUBNET_A, "--gateway", "10.231.7.1", "--label", "team=a",
                "-o", "com.docker.network.bridge.name=br-sampan-na", "na")).strip()
    assert ID.match(nid)
    _fails(d("network", "create", "na"), "Error response from daemon: network with name na already exists\n")
    net = _net_inspect(sampand, "na")
    assert (net["Name"], net["Id"], net["Driver"], net["Scope"], net["Internal"]) == ("na", nid, "bridge", "local",
                                                                                      False)
    assert net["IPAM"]["Config"] == [{"Subnet": SUBNET_A, "Gateway": "10.231.7.1"}]
    assert net["Labels"] == {"team": "a"} and net["Containers"] == {}
    assert net["Options"] == {"com.docker.network.bridge.name": "br-sampan-na"}
    # by id and by a unique prefix of it
    assert _ok(d("network", "inspect", "-f", "{{.Name}}", nid, nid[:10])) == "na\nna\n"
    _ok(d("network", "create", "--internal", "nb"))
    assert _net_inspect(sampand, "nb")["Internal"] is True

    def names(*filters: str) -> list[str]:
        return _ok(d("network", "ls", "--format", "{{.Name}}", *filters)).split()
    assert names() == ["bridge", "host", "na", "nb", "none"]
    assert names("-f", "label=team=a") == ["na"]
    assert names("-f", "type=custom") == ["na", "nb"]
    assert names("-f", "type=builtin") == ["bridge", "host", "none"]
    assert names("-f", "driver=bridge") == ["bridge", "na", "nb"]
    assert names("-f", "name=nb") == ["nb"]
    assert names("-f", f"id={nid[:12]}") == ["na"]
    assert _ok(d("network", "ls", "-q", "-f", "name=na")) == nid[:12] + "\n"
    _fails(d("network", "ls", "-f", "nosuch=1"), "Error response from daemon: invalid filter 'nosuch'\n")

    # what the daemon refuses
    _fails(d("network", "inspect", "nosuch"), "Error response from daemon: network nosuch not found\n", stdout=b"[]\n")
    _fails(d("network", "create", "-d", "nosuchdriver", "nx"),
           'Error response from daemon: plugin "nosuchdriver" not found\n')
    _fails(d("network", "create", "--subnet", "not-a-subnet", "nx"), "Error response from daemon: ")
    _fails(d("network", "create", "--subnet", SUBNET_A, "nx"), "Error response from daemon: ")  # na has it
    for builtin in ("bridge", "host", "none"):
        _fails(d("network", "rm", builtin),
               f"Error response from daemon: {builtin} is a pre-defined network and cannot be removed\n")
    _fails(d("network", "rm", "nosuch"), "Error response from daemon: network nosuch not found\n")
    assert "nx" not in names()
    assert _ok(d("network", "rm", "na", "nb")) == "na\nnb\n"
    assert names() == ["bridge", "host", "none"]


def test_connect_and_disconnect_created_and_running_containers(sampand):
    d = sampand.docker
    nc = _ok(d("network", "create", "--subnet", SUBNET_B, "nc")).strip()
    _ok(d("network", "create", "--subnet", SUBNET_C, "nd"))
    cid = _ok(d("create", "--name", "cc", "busybox", "sleep", "1000")).strip()
    # a created container: recorded, joined at start
    _ok(d("network", "connect", "--alias", "web", "--ip", "10.231.8.50", "nc", "cc"))
    _fails(d("network", "connect", "nc", "cc"), "Error response from daemon: endpoint with name cc already exists "
                                                "in network nc\n")
    settings = json.loads(_ok(d("inspect", "cc")))[0]["NetworkSettings"]["Networks"]
    assert set(settings) == {"bridge", "nc"}
    assert settings["nc"]["IPAMConfig"] == {"IPv4Address": "10.231.8.50"} and "web" in settings["nc"]["Aliases"]
    _ok(d("start", "cc"))
    assert "10.231.8.50" in _addresses(sampand, "cc")
    assert sorted(_links(sampand, "cc")) == ["eth0", "eth1", "lo"]
    attached = _net_inspect(sampand, "nc")["Containers"]
    assert list(attached) == [cid] and attached[cid]["Name"] == "cc"
    assert attached[cid]["IPv4Address"] == "10.231.8.50/24"
    _ok(d("exec", "cc", "ping", "-c", "1", "-W", "5", "10.231.8.1"))  # the network's gateway answers
    _fails(d("network", "rm", "nc"), f"Error response from daemon: error while removing network: network nc id {nc} "
                                     "has active endpoints\n")
    # a running container joins and leaves
    _ok(d("network", "connect", "nd", "cc"))
    ip = json.loads(_ok(d("inspect", "cc")))[0]["NetworkSettings"]["Networks"]["nd"]["IPAddress"]
    assert ip.startswith("10.231.9.") and ip in _addresses(sampand, "cc")
    assert len(_links(sampand, "cc")) == 4
    _ok(d("network", "disconnect", "nd", "cc"))
    assert ip not in _addresses(sampand, "cc") and len(_links(sampand, "cc")) == 3
    _fails(d("network", "disconnect", "nd", "cc"),
           f"Error response from daemon: container {cid} is not connected to network nd\n")
    _ok(d("network", "disconnect", "nc", "cc"))
    assert "10.231.8.50" not in _addresses(sampand, "cc")
    # what does not exist
    _fails(d("network", "connect", "nosuch", "cc"), "Error response from daemon: network nosuch not found\n")
    _fails(d("network", "connect", "nc", "nosuchc"), "Error response from daemon: No such container: nosuchc\n")
    _fails(d("network", "disconnect", "nc", "nosuchc"), "Error response from daemon: No such container: nosuchc\n")
    _ok(d("rm", "-f", "cc"))
    assert _ok(d("network", "rm", "nc", "nd")) == "nc\nnd\n"


def test_run_on_a_user_network_with_ip_and_alias(sampand):
    d = sampand.docker
    _ok(d("network", "create", "--subnet", SUBNET_B, "ne"))
    _ok(d("run", "-d", "--name", "ra", "--network", "ne", "--ip", "10.231.8.77", "--network-alias", "alpha",
          "busybox", "sleep", "1000"))
    net = json.loads(_ok(d("inspect", "ra")))[0]["NetworkSettings"]["Networks"]
    assert list(net) == ["ne"] and net["ne"]["IPAddress"] == "10.231.8.77" and "alpha" in net["ne"]["Aliases"]
    assert sorted(_links(sampand, "ra")) == ["eth0", "lo"]
    # the address is taken: a second container asking for it does not start
    r = d("run", "-d", "--name", "rb", "--network", "ne", "--ip", "10.231.8.77", "busybox", "sleep", "1000")
    assert r.returncode != 0 and b"Address already in use" in r.stderr, r
    _ok(d("rm", "-f", "ra", "rb"))
    _ok(d("network", "rm", "ne"))


def test_prune(sampand):
    d = sampand.docker
    for name, labels in (("pa", []), ("pb", ["--label", "keep=1"]), ("pc", [])):
        _ok(d("network", "create", *labels, name))
    _ok(d("run", "-d", "--name", "user", "--network", "pc", "busybox", "sleep", "1000"))
    # without -f it asks; anything but y keeps them
    r = d("network", "prune", input=b"n\n")
    assert r.returncode == 0 and r.stdout.decode().startswith("WARNING! This will remove all custom networks")
    assert _ok(d("network", "prune", "-f", "--filter", "label!=keep")) == "Deleted Networks:\npa\n\n"
    assert _ok(d("network", "prune", "-f")) == "Deleted Networks:\npb\n\n"
    assert _ok(d("network", "prune", "-f")) == ""                      # pc is in use
    assert _ok(d("network", "ls", "--format", "{{.Name}}")).split() == ["bridge", "host", "none", "pc"]
    _fails(d("network", "prune", "-f", "--filter", "nosuch=1"), "Error response from daemon: invalid filter 'nosuch'\n")


def test_docker_py(sampand):
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=sampand.host, version="1.45")
    try:
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=SUBNET_C, gateway="10.231.9.1")])
        net = client.networks.create("pyn", driver="bridge", ipam=ipam, labels={"by": "docker-py"})
        assert [n.id for n in client.networks.list(names=["pyn"])] == [net.id]
        assert net.attrs["IPAM"]["Config"] == [{"Subnet": SUBNET_C, "Gateway": "10.231.9.1"}]
        c = client.containers.run("busybox", ["sleep", "1000"], detach=True, name="pyc")
        net.connect(c, ipv4_address="10.231.9.9", aliases=["py"])
        net.reload()
        assert list(net.attrs["Containers"]) == [c.id]
        c.reload()
        assert c.attrs["NetworkSettings"]["Networks"]["pyn"]["IPAddress"] == "10.231.9.9"
        with pytest.raises(docker.errors.APIError) as e:
            net.remove()
        assert e.value.status_code == 403 and "has active endpoints" in str(e.value)
        net.disconnect(c)
        net.reload()
        assert net.attrs["Containers"] == {}
        c.remove(force=True)
        with pytest.raises(docker.errors.NotFound):
            client.networks.get("nosuch")
        assert client.networks.prune(filters={"label": ["by=docker-py"]})["NetworksDeleted"] == ["pyn"]
        with pytest.raises(docker.errors.NotFound):
            client.networks.get("pyn")
    finally:
        client.close()


def test_run_publish_link_and_rm_link_with_the_docker_cli(sampand):
    """docker run -p publishes (reached from the daemon's namespace, which plays the host here),
    --link gives the alias and variables, docker rm --link removes the link."""
    d = sampand.docker
    web = _ok(d("run", "-d", "--name", "pubweb", "-p", "18080:80", "busybox", "sh", "-c",
                "mkdir /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www")).strip()
    port = _ok(d("port", "pubweb", "80/tcp"))
    assert port == "0.0.0.0:18080\n"
    def get() -> str:
        with urllib.request.urlopen("http://127.0.0.1:18080/", timeout=2) as r:
            return r.read().decode()
    deadline = time.monotonic() + 10
    while True:
        try:
            got = netns.run_in(sampand.netns, get)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert got == "hello\n"
    out = _ok(d("run", "--rm", "--name", "linker", "--link", "pubweb:site", "busybox", "sh", "-c",
                "wget -qO- http://site/; echo $SITE_PORT_80_TCP_ADDR; echo $SITE_NAME"))
    ip = _ok(d("inspect", "-f", "{{.NetworkSettings.IPAddress}}", web)).strip()
    assert out == f"hello\n{ip}\n/linker/site\n"
    _ok(d("create", "--name", "keeper", "--link", "pubweb:site", "busybox", "true"))
    assert _ok(d("inspect", "-f", "{{json .HostConfig.Links}}", "keeper")) == '["/pubweb:/keeper/site"]\n'
    _ok(d("rm", "--link", "/keeper/site"))
    assert _ok(d("inspect", "-f", "{{json .HostConfig.Links}}", "keeper")) == "null\n"
    r = d("run", "-d", "-p", "18080:80", "busybox", "sleep", "30")
    assert r.returncode == 125 and b"Bind for 0.0.0.0:18080 failed: port is already allocated" in r.stderr
