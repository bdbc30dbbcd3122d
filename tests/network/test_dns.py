"""The embedded DNS server on real namespaces: the test's thread plays the daemon in a namespace
of its own (conftest.host_ns), each container is a namespace made by netns.create, and queries
are made from inside those (a thread that joined one, or busybox nslookup under nsenter)
against 127.0.0.11. Unknown names go to an upstream resolver the test runs in its host
namespace (dnspython, UDP and TCP on port 53), which records what it was asked."""
from __future__ import annotations

import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from sampan.network import netns
from sampan.network.api import InvalidNetworkConfig, NetworkError
from sampan.network.dns import TTL, EmbeddedDns, host_upstreams

from conftest import ip, link_gone

UPSTREAM = "127.0.0.1"          # in the test's host namespace
DEAD_UPSTREAM = "127.0.0.2"     # nothing listens: refused at once
UPSTREAM_ANSWER = "192.0.2.7"
BIG_ANSWER = [f"198.51.100.{i}" for i in range(1, 61)]   # too much for 512 bytes of UDP


class Upstream:
    """A resolver on UDP and TCP port 53: ``big.test`` has 60 addresses (truncated over UDP),
    every other name one. ``seen`` holds (transport, name) of each query, in order."""

    def __init__(self, address: str = UPSTREAM) -> None:
        self.seen: list[tuple[str, str]] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((address, 53))
        self.tcp = socket.create_server((address, 53))
        self.stop_r, self.stop_w = socket.socketpair()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        name = query.question[0].name
        self.seen.append((transport, name.to_text(omit_final_dot=True)))
        response = dns.message.make_response(query, recursion_available=True)
        if query.question[0].rdtype == dns.rdatatype.A:
            addresses = BIG_ANSWER if name.to_text() == "big.test." else [UPSTREAM_ANSWER]
            response.answer.append(dns.rrset.from_text_list(name, 30, "IN", "A", addresses))
        try:
            return response.to_wire(max_size=65535 if transport == "tcp" else 512)
        except dns.exception.TooBig:
            response.answer, response.flags = [], response.flags | dns.flags.TC
            return response.to_wire()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            for s in (self.udp, self.tcp, self.stop_r):
                sel.register(s, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self.stop_r:
                        return
                    if key.fileobj is self.udp:
                        wire, client = self.udp.recvfrom(65535)
                        self.udp.sendto(self._answer(wire, "udp"), client)
                    else:
                        conn, _ = self.tcp.accept()
                        with conn:  # one query a connection, as the embedded DNS forwards
                            conn.settimeout(5)
                            wire = _recv_exactly(conn, int.from_bytes(_recv_exactly(conn, 2), "big"))
                            reply = self._answer(wire, "tcp")
                            conn.sendall(len(reply).to_bytes(2, "big") + reply)

    def close(self) -> None:
        self.stop_w.send(b"x")
        self.thread.join(5)
        for s in (self.udp, self.tcp, self.stop_r, self.stop_w):
            s.close()


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "the connection closed mid-message"
        data += chunk
    return data


@pytest.fixture
def upstream(host_ns) -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


class Names:
    """The engine's side: each container sees its own names; records what it was asked."""

    def __init__(self, names: dict[str, dict[str, list[str]]]) -> None:
        self.names = names
        self.asked: list[tuple[str, str]] = []

    def __call__(self, container_id: str, name: str) -> list[str] | None:
        self.asked.append((container_id, name))
        return self.names.get(container_id, {}).get(name)


A, B = "a" * 64, "b" * 64
MANY = [f"10.1.1.{i}" for i in range(1, 61)]   # a name 60 containers share: too much for 512 bytes


@pytest.fixture
def namespaces(tmp_path, host_ns) -> Iterator[Callable[[str], str]]:
    """Containers' namespaces (lo up, nothing else), made on demand, removed at teardown."""
    made: list[str] = []

    def make(name: str) -> str:
        path = str(tmp_path / f"netns-{name}")
        netns.create(path)
        made.append(path)
        return path
    yield make
    for path in made:
        netns.remove(path)


@pytest.fixture
def container(namespaces) -> str:
    return namespaces("a")


@pytest.fixture
def names() -> Names:
    return Names({A: {"web": ["10.1.0.2", "10.1.0.3"], "db": ["10.1.0.4"], "many": MANY},
                  B: {"web": ["10.2.0.9"]}})


@pytest.fixture
def server(host_ns, names) -> Iterator[EmbeddedDns]:
    server = EmbeddedDns(names, upstreams=[UPSTREAM],
                         reverse=lambda cid, addr: "db.net1" if (cid, addr) == (A, "10.1.0.4") else None)
    yield server
    server.close()


def ask(netns_path: str, name: str, rdtype: str = "A", tcp: bool = False, payload: int | None = None,
        timeout: float = 5.0) -> dns.message.Message:
    """A query to 127.0.0.11 from inside ``netns_path``."""
    query = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 512)
    send = dns.query.tcp if tcp else dns.query.udp
    reply = netns.run_in(netns_path, lambda: send(query, "127.0.0.11", timeout=timeout))
    assert reply.id == query.id
    return reply


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in reply.answer for r in rrset)


def raw_udp(netns_path: str, wire: bytes, timeout: float = 2.0) -> bytes:
    """``wire`` sent over a UDP socket connected to 127.0.0.11:53 in the namespace: the reply,
    or ConnectionRefusedError when nothing listens there (the kernel's ICMP port unreachable)."""
    def run() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect(("127.0.0.11", 53))
            s.send(wire)
            return s.recv(65535)
    return netns.run_in(netns_path, run)


def test_known_name_answers_all_its_addresses(server, names, container, upstream):
    server.attach(A, container, forward=True)
    reply = ask(container, "web")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.QR
    assert addresses(reply) == ["10.1.0.2", "10.1.0.3"] and reply.answer[0].ttl == TTL == 600
    assert addresses(ask(container, "WEB.", tcp=True)) == ["10.1.0.2", "10.1.0.3"]  # any case, trailing dot
    aaaa = ask(container, "db", "AAAA")
    assert (aaaa.rcode(), aaaa.answer) == (dns.rcode.NOERROR, [])  # the name exists, with no IPv6 address
    ptr = ask(container, "4.0.1.10.in-addr.arpa", "PTR")
    assert [r.target.to_text() for r in ptr.answer[0]] == ["db.net1."]
    # too large for the client's UDP size: TC and no answers, then over TCP in full
    query = dns.message.make_query("many", "A")
    truncated = dns.message.from_wire(raw_udp(container, query.to_wire()), raise_on_truncation=False)
    assert truncated.flags & dns.flags.TC and truncated.answer == []
    assert addresses(ask(container, "many", tcp=True)) == addresses(ask(container, "many", payload=4096)) == sorted(MANY)
    assert upstream.seen == []  # none of it left
    assert (A, "web") in names.asked
    # busybox's nslookup (A and AAAA) from inside the container
    done = subprocess.run(["nsenter", f"--net={container}", "busybox", "nslookup", "db", "127.0.0.11"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "Address: 10.1.0.4" in done.stdout, done.stdout + done.stderr


def test_unknown_name_is_forwarded_and_relayed(server, namespaces, container, upstream):
    server.attach(A, container, forward=True)
    reply = ask(container, "example.test")  # ask() checks the client's id came back
    assert addresses(reply) == [UPSTREAM_ANSWER] and reply.answer[0].ttl == 30
    assert upstream.seen == [("udp", "example.test")]
    done = subprocess.run(["nsenter", f"--net={container}", "busybox", "nslookup", "other.test", "127.0.0.11"],
                          capture_output=True, text=True, timeout=30)
    assert f"Address: {UPSTREAM_ANSWER}" in done.stdout, done.stdout + done.stderr
    # a name of another container's networks is not this one's: forwarded too
    assert addresses(ask(container, "db")) == ["10.1.0.4"]
    container_b = namespaces("b")
    server.attach(B, container_b, forward=True)
    assert addresses(ask(container_b, "db")) == [UPSTREAM_ANSWER]
    assert upstream.seen[-1] == ("udp", "db")


def test_truncated_upstream_reply_is_fetched_over_tcp(server, container, upstream):
    server.attach(A, container, forward=True)
    # EDNS 4096: the whole answer (fetched over TCP) fits the client's UDP size
    reply = ask(container, "big.test", payload=4096)
    assert addresses(reply) == sorted(BIG_ANSWER) and not reply.flags & dns.flags.TC
    assert upstream.seen == [("udp", "big.test"), ("tcp", "big.test")]
    # 512 bytes: the truncated reply, so the client asks over TCP, which is forwarded over TCP
    upstream.seen.clear()
    query = dns.message.make_query("big.test", "A")
    truncated = dns.message.from_wire(raw_udp(container, query.to_wire()), raise_on_truncation=False)
    assert truncated.id == query.id and truncated.flags & dns.flags.TC
    assert addresses(ask(container, "big.test", tcp=True)) == sorted(BIG_ANSWER)
    assert upstream.seen == [("udp", "big.test"), ("tcp", "big.test"), ("tcp", "big.test")]


def test_internal_only_container_gets_servfail_and_nothing_leaves(server, container, upstream):
    server.attach(A, container, forward=False)
    start = time.monotonic()
    reply = ask(container, "example.test")
    assert reply.rcode() == dns.rcode.SERVFAIL and time.monotonic() - start < 1.0
    assert ask(container, "example.test", tcp=True).rcode() == dns.rcode.SERVFAIL
    assert addresses(ask(container, "web")) == ["10.1.0.2", "10.1.0.3"]  # its networks' names still answer
    assert upstream.seen == []
    # connected to a network that is not internal: attached again, now forwarding
    server.attach(A, container, forward=True)
    assert addresses(ask(container, "example.test")) == [UPSTREAM_ANSWER]
    assert upstream.seen == [("udp", "example.test")]


def test_tcp_queries(server, container, upstream):
    server.attach(A, container, forward=True)
    assert addresses(ask(container, "db", tcp=True)) == ["10.1.0.4"]
    assert addresses(ask(container, "example.test", tcp=True)) == [UPSTREAM_ANSWER]
    assert upstream.seen == [("tcp", "example.test")]

    def two_on_one_connection() -> list[list[str]]:
        with socket.create_connection(("127.0.0.11", 53), timeout=5) as conn:
            out = []
            for name in ("web", "db"):
                q = dns.message.make_query(name, "A")
                dns.query.send_tcp(conn, q)
                out.append(addresses(dns.query.receive_tcp(conn, expiration=time.time() + 5)[0]))
            return out
    assert netns.run_in(container, two_on_one_connection) == [["10.1.0.2", "10.1.0.3"], ["10.1.0.4"]]


def test_upstreams_in_turn_then_servfail(host_ns, container, upstream):
    server = EmbeddedDns(Names({}), upstreams=[DEAD_UPSTREAM, UPSTREAM])
    try:
        server.attach(A, container, forward=True)
        assert addresses(ask(container, "example.test")) == [UPSTREAM_ANSWER]  # the dead one refused at once
        server.attach(A, container, forward=True, upstreams=[DEAD_UPSTREAM])  # as --dns
        assert ask(container, "example.test").rcode() == dns.rcode.SERVFAIL
        with pytest.raises(InvalidNetworkConfig, match="invalid DNS server address 'nope'"):
            server.attach(A, container, forward=True, upstreams=["nope"])
    finally:
        server.close()
    assert upstream.seen == [("udp", "example.test")]


def test_detach_closes_and_attach_again(server, container):
    server.attach(A, container, forward=True)
    assert addresses(ask(container, "db")) == ["10.1.0.4"]
    server.detach(A)
    query = dns.message.make_query("db", "A").to_wire()
    with pytest.raises(ConnectionRefusedError):
        raw_udp(container, query)
    with pytest.raises(ConnectionRefusedError):
        netns.run_in(container, lambda: socket.create_connection(("127.0.0.11", 53), timeout=2))
    server.detach(A)  # not attached: fine
    assert server.attached() == []
    server.attach(A, container, forward=True)
    assert addresses(ask(container, "db")) == ["10.1.0.4"]
    # the namespace goes first (a container that died): detach still closes what is left
    netns.remove(container)
    server.detach(A)
    assert server.attached() == []


def test_refused_attach_leaves_nothing(server, container, tmp_path):
    with pytest.raises(NetworkError, match="No such file"):
        server.attach(A, str(tmp_path / "gone"), forward=True)
    squatter = netns.run_in(container, lambda: socket.create_server(("127.0.0.11", 53)))
    with squatter, pytest.raises(NetworkError, match=r"bind 127\.0\.0\.11:53 in .*: Address already in use"):
        server.attach(A, container, forward=True)
    assert server.attached() == []
    # the UDP socket made before the TCP bind failed was closed: the port is free again
    netns.run_in(container, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.11", 53)))


def test_a_restarted_container_namespace_at_the_same_path_is_served(server, container):
    server.attach(A, container, forward=True)
    netns.remove(container)  # the engine forgot to detach; the sandbox is made again at its path
    netns.create(container)
    server.attach(A, container, forward=True)
    assert addresses(ask(container, "db")) == ["10.1.0.4"]


def test_many_namespaces_at_once(namespaces, upstream):
    count = 24
    ids = [f"{i:064x}" for i in range(count)]
    names = Names({cid: {"me": [f"10.9.0.{i + 2}"]} for i, cid in enumerate(ids)})
    server = EmbeddedDns(names, upstreams=[UPSTREAM])
    paths = [namespaces(f"c{i}") for i in range(count)]
    try:
        timings = []
        for cid, p in zip(ids, paths):
            start = time.perf_counter()
            server.attach(cid, p, forward=True)
            timings.append(time.perf_counter() - start)
        later = statistics.median(timings[1:]) * 1000
        print(f"\nattach: first {timings[0] * 1000:.2f} ms (starts the server's thread), "
              f"then median {later:.2f} ms, max {max(timings[1:]) * 1000:.2f} ms", file=sys.stderr)
        assert later < 5  # ~0.3 ms here; generous for a loaded host

        def both(i: int) -> tuple[list[str], list[str]]:
            return addresses(ask(paths[i], "me")), addresses(ask(paths[i], f"host{i}.test", tcp=True))
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(both, range(count)))
        assert results == [([f"10.9.0.{i + 2}"], [UPSTREAM_ANSWER]) for i in range(count)]
        assert sorted(upstream.seen) == sorted(("tcp", f"host{i}.test") for i in range(count))
        start = time.perf_counter()
        for cid in ids:
            server.detach(cid)
        print(f"detach: {(time.perf_counter() - start) / count * 1000:.2f} ms each", file=sys.stderr)
    finally:
        server.close()


def test_bad_packets_do_not_stop_the_server(host_ns, container):
    def lookup(container_id: str, name: str) -> list[str] | None:
        if name == "boom":
            raise RuntimeError("the engine's bug")
        return ["10.1.0.4"] if name == "db" else None
    server = EmbeddedDns(lookup, upstreams=[])
    try:
        server.attach(A, container, forward=True)
        query = dns.message.make_query("db", "A").to_wire()
        formerr = raw_udp(container, query[:2] + b"\x01\x00" + b"\x00\x05" + bytes(6) + b"\xff\xff")
        assert formerr[:2] == query[:2] and formerr[2] & 0x80 and formerr[3] & 0x0F == dns.rcode.FORMERR
        for junk in (b"", b"\x00", os.urandom(7), query[:12] + b"\x07", b"\x12\x34\x81\x80" + bytes(8)):
            netns.run_in(container, lambda j=junk: _send_only(j))
        assert ask(container, "boom").rcode() == dns.rcode.SERVFAIL
        assert ask(container, "elsewhere.test").rcode() == dns.rcode.SERVFAIL  # no upstream at all
        two = dns.message.make_query("db", "A")
        two.question.append(two.question[0])
        assert dns.message.from_wire(raw_udp(container, two.to_wire())).rcode() == dns.rcode.FORMERR
        # a TCP client that sends half a query and one that goes away do not block the others
        netns.run_in(container, lambda: socket.create_connection(("127.0.0.11", 53)).send(b"\x00\x30\x01"))
        netns.run_in(container, lambda: socket.create_connection(("127.0.0.11", 53)).close())
        assert addresses(ask(container, "db")) == ["10.1.0.4"]
        assert addresses(ask(container, "db", tcp=True)) == ["10.1.0.4"]
    finally:
        server.close()


def _send_only(wire: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(wire, ("127.0.0.11", 53))


def test_close_ends_everything(host_ns, container):
    server = EmbeddedDns(Names({}), upstreams=[])
    server.attach(A, container, forward=True)
    thread = next(t for t in threading.enumerate() if t.name == "embedded-dns")
    server.close()
    server.close()
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        raw_udp(container, dns.message.make_query("x", "A").to_wire())
    with pytest.raises(NetworkError, match="closed"):
        server.attach(A, container, forward=True)


def test_host_upstreams_and_lazy_import(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 10.255.255.53\nnameserver bogus\nnameserver ::1\nsearch x\n")
    assert host_upstreams(str(conf)) == ["10.255.255.53", "::1"]
    conf.write_text("search x\n")
    assert host_upstreams(str(conf)) == ["8.8.8.8", "8.8.4.4"]  # Docker's defaults, as resolv.conf says
    # making the server (in sampand) costs no dnspython import; only an attach does
    code = ("import sys; from sampan.network.dns import EmbeddedDns; EmbeddedDns(lambda c, n: None).close(); "
            "print(sorted(m for m in sys.modules if m == 'dns' or m.startswith(('dns.', 'asyncio'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_attached_sockets_keep_a_removed_namespace_until_detach(server, container):
    """Why the engine detaches before remove_sandbox: the sockets hold the namespace, and so its
    links (the veth's host end stays on the bridge) after its file is gone."""
    ip("link", "add", "vdns0", "type", "veth", "peer", "name", "eth0", "netns", container)
    server.attach(A, container, forward=True)
    netns.remove(container)
    assert not link_gone("vdns0", within=0.5)
    server.detach(A)
    assert link_gone("vdns0")
