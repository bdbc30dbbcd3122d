"""/etc/hosts, resolv.conf and hostname as Docker writes them (libnetwork's etchosts and
resolvconf: the same lines and trailing comments)."""
from __future__ import annotations

from sampan.network import files


def test_legacy_resolv_conf_keeps_routable_resolvers():
    host = "# a comment\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nsearch corp example\noptions edns0\n"
    assert files.resolv_conf(host, internal_dns=False) == (
        "nameserver 10.255.255.53\nsearch corp example\noptions edns0\n\n"
        "# Based on host file: '/etc/resolv.conf' (legacy)\n# Overrides: []\n")


def test_legacy_resolv_conf_falls_back_to_googles_resolvers():
    assert files.resolv_conf("nameserver 127.0.0.53\nnameserver ::1\n", internal_dns=False) == (
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n\n# Based on host file: '/etc/resolv.conf' (legacy)\n"
        "# Used default nameservers.\n# Overrides: []\n")


def test_overrides_are_used_as_given():
    out = files.resolv_conf("nameserver 10.0.0.1\nsearch a\n", internal_dns=False, dns=["127.0.0.1"],
                            search=["b", "."], options=["ndots:2"])
    assert out == ("nameserver 127.0.0.1\nsearch b\noptions ndots:2\n\n"
                   "# Based on host file: '/etc/resolv.conf' (legacy)\n# Overrides: [nameservers search options]\n"
                   "# Option ndots from: override\n")


def test_internal_resolver_on_user_networks():
    out = files.resolv_conf("nameserver 10.0.0.1\nnameserver 127.0.0.53\nbogus line\n", internal_dns=True)
    assert out == ("nameserver 127.0.0.11\noptions ndots:0\nbogus line\n\n"
                   "# Based on host file: '/etc/resolv.conf' (internal resolver)\n"
                   "# ExtServers: [10.0.0.1 host(127.0.0.53)]\n# Overrides: []\n# Option ndots from: internal\n")
    assert "# Used default nameservers.\n# ExtServers: [8.8.8.8 8.8.4.4]\n" in files.resolv_conf("", internal_dns=True)
    assert "options ndots:3\n" in files.resolv_conf("options ndots:3\n", internal_dns=True)


def test_hosts_and_hostname():
    assert files.hosts_file() == ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                                  "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                                  "ff02::2\tip6-allrouters\n")
    out = files.hosts_file("172.18.0.2", "web", "example.com", [("db", "10.0.0.9")])
    assert out.endswith("ff02::2\tip6-allrouters\n10.0.0.9\tdb\n172.18.0.2\tweb.example.com web\n")
    assert files.hosts_file("172.17.0.2", "3b6f1b1d7f8e").endswith("\n172.17.0.2\t3b6f1b1d7f8e\n")
    assert files.hostname_file("web") == "web\n"


def test_hosts_file_has_the_ipv6_address_too():
    out = files.hosts_file("172.18.0.2", "web", "", [("db", "10.0.0.9")], ip6="fd12:3456:789a::2")
    assert out.endswith("10.0.0.9\tdb\n172.18.0.2\tweb\nfd12:3456:789a::2\tweb\n")


def test_legacy_resolv_conf_keeps_ipv6_resolvers_for_a_container_with_ipv6():
    host = "nameserver 10.0.0.1\nnameserver fd00::53\nnameserver fe80::1%eth0\nnameserver ::1\n"
    assert files.resolv_conf(host, internal_dns=False).splitlines()[:2] == ["nameserver 10.0.0.1", ""]
    assert files.resolv_conf(host, internal_dns=False, ipv6=True).splitlines()[:3] == \
        ["nameserver 10.0.0.1", "nameserver fd00::53", ""]
    assert files.resolv_conf("nameserver ::1\n", internal_dns=False, ipv6=True).splitlines()[:4] == [
        "nameserver 8.8.8.8", "nameserver 8.8.4.4", "nameserver 2001:4860:4860::8888",
        "nameserver 2001:4860:4860::8844"]
