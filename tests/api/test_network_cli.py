"""The sampan CLI's `network ...` and `port` verbs and its networking flags of run/create,
against the docker CLI: both talk to one private sampand, so what each prints (output,
messages, exit codes) and what each asks the daemon to make must be the same. What the docker
CLI checks itself (-p, --add-host, --dns, --subnet pairing) is also checked without a daemon,
with the words the docker CLI 28 uses."""
from __future__ import annotations

import json
import re

import pytest

from private_daemons import DOCKER_CLI
from test_networks_api import networks_removed  # noqa: F401 - the fixture (containers, then networks, removed)

from sampan.cli import main as cli_main
from sampan.cli.command import CLIError
from sampan.cli.createflags import create_body, extra_host, published_ports
from sampan.cli.networks import go_time_of_rfc3339, ipam_config, natural_key

pytestmark = pytest.mark.usefixtures("networks_removed")
needs_docker = pytest.mark.skipif(not DOCKER_CLI, reason="no docker CLI")


@pytest.fixture
def clis(sampand):
    """(sampan, docker): each runs its CLI against the daemon -> (exit code, stdout, stderr)."""
    def cli(run):
        def call(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
            r = run(*args, input=input)
            return r.returncode, r.stdout.decode(), r.stderr.decode()
        return call
    return cli(sampand.sampan), cli(sampand.docker)


def _same(sampan, docker, *args: str) -> tuple[int, str, str]:
    """Both CLIs give the same exit code, output and messages (docker's name for sampan's)."""
    ours, theirs = sampan(*args), docker(*args)
    assert ours == (theirs[0], theirs[1], theirs[2].replace("docker", "sampan")), args
    return ours


# ------------------------------------------------------------------ no daemon
def _body(*flags: str) -> dict:
    """The create body of these flags, read by cli/fastargs.py (as argparse reads them)."""
    argv = ["create", *flags, "busybox"]
    ns = cli_main._fast_args(argv, "create")
    assert ns is not None, "left to argparse"
    parsed = vars(cli_main.build_parser("create").parse_args(argv))
    assert {k: v for k, v in vars(ns).items() if k != "func"} == {k: v for k, v in parsed.items() if k != "func"}
    return create_body(ns)


def test_publish_flags_as_the_docker_cli_sends_them():
    # (the bodies the docker CLI 28 sent for these flags, captured)
    b = _body("-p", "8080:80", "-p", "127.0.0.1:53:53/udp", "-p", "9000-9001:9000-9001", "-p", "5000",
              "-p", "[::1]:81:81", "-p", "127.0.0.2::82", "-p", "8000-8010:83", "--expose", "7000-7001/udp", "-P")
    assert b["ExposedPorts"] == {k: {} for k in ("80/tcp", "53/udp", "9000/tcp", "9001/tcp", "5000/tcp", "81/tcp",
                                                 "82/tcp", "83/tcp", "7000/udp", "7001/udp")}
    assert b["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "53"}],
        "9000/tcp": [{"HostIp": "", "HostPort": "9000"}], "9001/tcp": [{"HostIp": "", "HostPort": "9001"}],
        "5000/tcp": [{"HostIp": "", "HostPort": ""}], "81/tcp": [{"HostIp": "::1", "HostPort": "81"}],
        "82/tcp": [{"HostIp": "127.0.0.2", "HostPort": ""}], "83/tcp": [{"HostIp": "", "HostPort": "8000-8010"}]}
    assert b["HostConfig"]["PublishAllPorts"] is True
    assert published_ports(["published=8080,target=80,protocol=udp"]) == (
        {"80/udp": {}}, {"80/udp": [{"HostIp": "", "HostPort": "8080"}]})
    for spec, message in (("abc", "invalid containerPort: abc"), ("70000:80", "invalid hostPort: 70000"),
                          ("80:abc", "invalid containerPort: abc"), ("80/xyz", "invalid proto: xyz"),
                          ("1-3:1-2", "invalid ranges specified for container and host Ports: 1-2 and 1-3"),
                          ("1.2.3:80:80", "invalid IP address: 1.2.3"), ("80:", "no port specified: 80:<empty>")):
        with pytest.raises(CLIError) as e:
            published_ports([spec])
        assert str(e.value) == message, spec


def test_network_flags_as_the_docker_cli_sends_them():
    b = _body("--mac-address", "02:42:ac:11:00:09", "--add-host", "a:1.2.3.4", "--add-host", "b=::1",
              "--add-host", "gw:host-gateway", "--dns", "8.8.8.8", "--dns-search", "ex.com", "--dns-option",
              "ndots:2", "--link", "foo:bar")
    hc = b["HostConfig"]
    assert hc["NetworkMode"] == "default" and hc["ExtraHosts"] == ["a:1.2.3.4", "b:::1", "gw:host-gateway"]
    assert (hc["Dns"], hc["DnsSearch"], hc["DnsOptions"], hc["Links"]) == (["8.8.8.8"], ["ex.com"], ["ndots:2"],
                                                                           ["foo:bar"])
    assert b["NetworkingConfig"] == {"EndpointsConfig": {"default": {"MacAddress": "02:42:ac:11:00:09"}}}
    b = _body("--network", "n1", "--ip", "10.0.0.5", "--network-alias", "y", "--link", "foo:bar")
    assert b["HostConfig"]["NetworkMode"] == "n1"
    assert b["NetworkingConfig"] == {"EndpointsConfig": {"n1": {"Aliases": ["y"], "Links": ["foo:bar"],
                                                                "IPAMConfig": {"IPv4Address": "10.0.0.5"}}}}
    assert _body("--network", "n1")["NetworkingConfig"] == {"EndpointsConfig": {}}
    assert _body("--network", "a", "--network", "b")["NetworkingConfig"] == {"EndpointsConfig": {"a": {}, "b": {}}}
    for flags, message in (
            (["--add-host", "bad"], 'invalid argument "bad" for "--add-host" flag: bad format for add-host: "bad"'),
            (["--add-host", "a:notip"], 'invalid argument "a:notip" for "--add-host" flag: invalid IP address in '
                                        'add-host: "notip"'),
            (["--dns", "bad"], 'invalid argument "bad" for "--dns" flag: IP address is not correctly formatted: bad'),
            (["--mac-address", "bad"], "bad is not a valid mac address"),
            (["--expose", "abc"], 'invalid range format for --expose: abc, error: strconv.ParseUint: parsing "abc": '
                                  'invalid syntax'),
            (["--network-alias", "x"], "network-scoped aliases are only supported for user-defined networks"),
            (["--link", "a:b:c"], 'invalid argument "a:b:c" for "--link" flag: bad format for links: a:b:c'),
            (["--network", "a", "--network", "a"], 'network "a" is specified multiple times'),
            (["--network", "a", "--network", "host"], "conflicting options: cannot attach both user-defined and "
                                                      "non-user-defined network-modes")):
        with pytest.raises(CLIError) as e:
            _body(*flags)
        assert str(e.value) == message, flags
    with pytest.raises(CLIError):
        extra_host("a:b:notip")


def test_subnets_pair_with_ranges_and_gateways():
    assert ipam_config(["10.1.0.0/24", "10.2.0.0/24"], ["10.2.0.128/25"], ["10.1.0.1"]) == [
        {"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}, {"Subnet": "10.2.0.0/24", "IPRange": "10.2.0.128/25"}]
    assert ipam_config([], [], []) == []
    for args, message in (
            (([], [], ["10.0.0.1"]), "every ip-range or gateway must have a corresponding subnet"),
            ((["10.0.0.0/24"], [], ["10.1.0.1"]), "no matching subnet for gateway 10.1.0.1"),
            ((["10.0.0.0/24"], ["10.1.0.0/25"], []), "no matching subnet for range 10.1.0.0/25"),
            ((["10.0.0.0/16", "10.0.1.0/24"], [], []), "multiple overlapping subnet configuration is not supported"),
            ((["foo"], [], ["1.2.3.4"]), "invalid subnet: invalid CIDR address: foo"),
            ((["10.0.0.0/24"], [], ["bad"]), "no matching subnet for gateway bad")):
        with pytest.raises(CLIError) as e:
            ipam_config(*args)
        assert str(e.value) == message, args


def test_natural_order_and_go_times():
    assert sorted(["n10", "n2", "bridge", "n1", "n01"], key=natural_key) == ["bridge", "n1", "n01", "n2", "n10"]
    assert sorted(["90/udp -> x", "80/tcp -> y", "5555/tcp -> z"], key=natural_key) == [
        "80/tcp -> y", "90/udp -> x", "5555/tcp -> z"]
    assert go_time_of_rfc3339("2026-12-04T01:47:14.438935150Z") == "2026-12-04 01:47:14.43893515 +0000 UTC"
    assert go_time_of_rfc3339("2026-12-04T01:47:14Z") == "2026-12-04 01:47:14 +0000 UTC"


# ------------------------------------------------------------------ against the docker CLI
@needs_docker
def test_network_verbs_print_what_the_docker_cli_prints(clis):
    sampan, docker = clis
    rc, out, err = sampan("network", "create", "--subnet", "10.232.1.0/24", "--gateway", "10.232.1.1",
                          "--label", "a=b", "--internal", "s1")
    assert rc == 0 and re.fullmatch(r"[0-9a-f]{64}\n", out) and err == "", err
    # (one label each: the docker CLI joins a network's labels in Go's random map order; names that are
    # not hex, so none is also a prefix of an id)
    rc, out, err = docker("network", "create", "--subnet", "10.232.2.0/24", "--label", "c", "dk1")
    assert rc == 0, err
    for args in (["network", "ls"], ["network", "ls", "-q"], ["network", "ls", "--no-trunc"],
                 ["network", "list", "--format", "json"], ["network", "ls", "-f", "type=custom"],
                 ["network", "ls", "-f", "label=a=b", "--format", "{{.Name}} {{.ID}}"],
                 ["network", "ls", "--format", "table {{.Name}}\t{{.IPv6}}\t{{.Internal}}\t{{.Labels}}\t{{.CreatedAt}}"],
                 ["network", "ls", "-f", "nosuch=1"],
                 ["network", "inspect", "s1"], ["network", "inspect", "s1", "dk1", "bridge", "host", "none"],
                 ["network", "inspect", "-f", "{{.Name}} {{json .IPAM.Config}} {{json .Labels}}", "s1", "dk1"],
                 ["network", "inspect", "nosuch"], ["network", "inspect", "-f", "{{.Name}}", "nosuch", "s1"],
                 ["network", "create", "s1"], ["network", "create", "--gateway", "10.0.0.1", "x"],
                 ["network", "create", "--subnet", "10.0.0.0/24", "--ip-range", "10.1.0.0/25", "x"],
                 ["network", "create", "-d", "nosuchdriver", "x"], ["network", "rm", "-f", "nosuch"],
                 ["network", "connect", "nosuch", "nosuchc"],
                 ["network", "connect", "s1", "nosuchc"], ["network", "disconnect", "s1", "nosuchc"]):
        _same(sampan, docker, *args)
    # (the docker CLI 28 adds a line "exit status 1" after network rm's messages)
    assert docker("network", "rm", "host")[2] == "Error response from daemon: host is a pre-defined network and " \
                                                 "cannot be removed\nexit status 1\n"
    assert sampan("network", "rm", "host") == (1, "", "Error response from daemon: host is a pre-defined network "
                                                      "and cannot be removed\n")
    assert sampan("network", "rm", "nosuch", "s1") == (1, "s1\n", "Error response from daemon: network nosuch not "
                                                                  "found\n")
    assert docker("network", "rm", "-f", "nosuch", "dk1") == (0, "dk1\n", "")
    assert sampan("network", "create", "--subnet", "10.232.3.0/24", "p1")[0] == 0
    assert docker("network", "create", "--subnet", "10.232.4.0/24", "p2")[0] == 0
    assert sampan("network", "prune", input=b"n\n") == docker("network", "prune", input=b"\n") == (
        0, "WARNING! This will remove all custom networks not used by at least one container.\n"
           "Are you sure you want to continue? [y/N] ", "")
    assert sampan("network", "prune", "-f", "--filter", "label=nosuch") == (0, "", "")
    rc, out, _ = sampan("network", "prune", input=b"y\n")
    deleted = out.split("Deleted Networks:\n", 1)[1]
    assert rc == 0 and sorted(deleted.split("\n")) == ["", "", "p1", "p2"] and deleted.endswith("\n\n")


@needs_docker
def test_connect_disconnect_and_port_as_the_docker_cli(clis):
    sampan, docker = clis
    assert sampan("network", "create", "--subnet", "10.232.5.0/24", "cn")[0] == 0
    assert sampan("run", "-d", "--name", "pc", "-p", "127.0.0.1:18080:80", "-p", "18090:90/udp", "-p", "5555",
                  "-p", "17000-17001:7000-7001", "busybox", "sleep", "1000")[0] == 0
    assert sampan("network", "connect", "--alias", "a1", "--alias", "a2,a3", "--ip", "10.232.5.9", "cn",
                  "pc") == (0, "", "")
    endpoint = json.loads(sampan("inspect", "pc")[1])[0]["NetworkSettings"]["Networks"]["cn"]
    assert endpoint["IPAddress"] == "10.232.5.9" and {"a1", "a2", "a3"} <= set(endpoint["Aliases"])
    _same(sampan, docker, "network", "connect", "cn", "pc")             # already there
    assert sampan("network", "disconnect", "cn", "pc") == (0, "", "")
    _same(sampan, docker, "network", "disconnect", "cn", "pc")          # no longer there
    _same(sampan, docker, "network", "disconnect", "-f", "cn", "pc")
    rc, out, _ = _same(sampan, docker, "port", "pc")
    assert rc == 0 and "80/tcp -> 127.0.0.1:18080\n" in out and "90/udp -> " in out and "7001/tcp -> " in out
    for args in (["port", "pc", "80"], ["port", "pc", "80/tcp"], ["port", "pc", "90/udp"], ["port", "pc", "5555"],
                 ["port", "pc", "90"], ["port", "pc", "81"], ["port", "pc", "abc"], ["port", "pc", "70000"],
                 ["port", "pc", "80/xyz"], ["port", "nosuch"], ["port", "nosuch", "80"]):
        _same(sampan, docker, *args)
    assert sampan("create", "--name", "quiet", "busybox")[0] == 0
    _same(sampan, docker, "port", "quiet")                               # nothing published: nothing


@needs_docker
def test_run_flags_ask_the_daemon_for_what_the_docker_clis_ask(clis):
    sampan, docker = clis
    assert sampan("network", "create", "--subnet", "10.232.6.0/24", "rn")[0] == 0
    assert sampan("create", "--name", "target", "busybox")[0] == 0
    for k, flags in enumerate((["-p", "127.0.0.1:18081:80", "-p", "5556/udp", "--expose", "7000-7001", "-P",
                   "--add-host", "a:1.2.3.4", "--add-host", "gw:host-gateway", "--dns", "9.9.9.9",
                   "--dns-search", "example.com", "--dns-option", "ndots:2", "--mac-address", "02:42:0a:e8:06:63",
                   "--link", "target:tgt"],
                  ["--network", "rn", "--ip", "10.232.6.{n}", "--network-alias", "web", "--link", "target:tgt"],
                  ["--network", "none"], ["--network", "host"], ["--network", "container:target"])):
        made = []
        for n, cli in enumerate((sampan, docker), start=10):
            rc, out, err = cli("create", "--name", f"made{k}-{n}", *[f.format(n=n) for f in flags], "busybox")
            assert rc == 0, (flags, err)
            made.append(json.loads(sampan("inspect", out.strip())[1])[0])

        def asked(c: dict) -> str:
            """What the create asked for, the container's own name (in its links) left out."""
            networks = {name: {k: ep.get(k) for k in ("Aliases", "Links", "MacAddress", "NetworkID")} |
                        {"IPAMConfig": sorted(ep.get("IPAMConfig") or {})}
                        for name, ep in c["NetworkSettings"]["Networks"].items()}
            wanted = {"HostConfig": {k: c["HostConfig"].get(k) for k in (
                          "NetworkMode", "PortBindings", "PublishAllPorts", "ExtraHosts", "Dns", "DnsSearch",
                          "DnsOptions", "Links")},
                      "Config": {k: c["Config"].get(k) for k in ("ExposedPorts", "MacAddress")},
                      "Networks": networks}
            return json.dumps(wanted, sort_keys=True).replace(c["Name"], "/SELF")
        assert asked(made[0]) == asked(made[1]), flags
    for flags in (["-p", "abc"], ["-p", "70000:80"], ["--mac-address", "bad"], ["--network-alias", "x"],
                  ["--expose", "abc"], ["--network", "a", "--network", "a"]):
        (rc, _, ours), (code, _, theirs) = sampan("create", *flags, "busybox"), docker("create", *flags, "busybox")
        # (the docker CLI puts "docker: " before these; sampan's convention prints them alone)
        assert rc == code == 125 and ours.splitlines()[0] == theirs.splitlines()[0].removeprefix("docker: "), flags


@needs_docker
def test_ps_ports_and_networks_columns_as_the_docker_cli(sampand, clis):
    sampan, docker = clis
    code, out, err = docker("run", "-d", "-p", "127.0.0.1:18090:80", "-p", "18100-18102:7000-7002", "--expose", "9000",
                            "busybox", "sleep", "60")
    assert code == 0, err
    cid = out.strip()
    fmt = "{{.Ports}} {{.Networks}}"
    ours = _same(sampan, docker, "ps", "--filter", f"id={cid}", "--format", fmt)
    assert ours[1] == ("9000/tcp, 127.0.0.1:18090->80/tcp, 0.0.0.0:18100->7000/tcp, 0.0.0.0:18101->7001/tcp, "
                       "0.0.0.0:18102->7002/tcp bridge\n"), ours
    assert sampan("rm", "-f", cid)[0] == 0
    code, out, err = docker("run", "-d", "-p", "18200-18202:18200-18202", "-p", "18204:18204", "busybox", "sleep", "60")
    assert code == 0, err
    ours = _same(sampan, docker, "ps", "--filter", f"id={out.strip()}", "--format", fmt)
    assert ours[1] == "0.0.0.0:18200-18202->18200-18202/tcp, 0.0.0.0:18204->18204/tcp bridge\n", ours
    assert sampan("rm", "-f", out.strip())[0] == 0
