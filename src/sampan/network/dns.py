"""The embedded DNS server (Docker's 127.0.0.11) of containers on user-defined networks.

One ``EmbeddedDns`` lives in the warm daemon and serves every container from one thread running
an asyncio loop: no process per container. ``attach`` makes a UDP and a TCP socket bound to
127.0.0.11:53 inside the container's network namespace (a short-lived thread joins it,
``netns.run_in``; a socket stays in the namespace it was made in, and 127.0.0.0/8 is on ``lo``,
so no address is added) and hands them to that thread. Names the engine knows (``lookup``) are
answered here; others are forwarded to the upstream resolvers from the namespace the server was
made in (the daemon's), and the reply relayed as it came, with the client's id.

dnspython (~50 ms to import) is imported by the server's thread when the first container is
attached, never on the start path of the ones after it nor in a daemon that never attaches one.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..linux.namespaces import CLONE_NEWNET, setns
from . import files, netns
from .api import InvalidNetworkConfig, NetworkError

if TYPE_CHECKING:
    import asyncio

    import dns.message

log = logging.getLogger(__name__)

ADDRESS = files.INTERNAL_DNS
PORT = 53
TTL = 600                  # of the answers for containers' names, as Docker's
UPSTREAM_TIMEOUT = 2.0     # seconds an upstream has to answer before the next one is tried
TCP_IDLE_TIMEOUT = 10.0    # a client's TCP connection with no query for this long is closed
MAX_FORWARDS = 1024        # queries in flight to upstreams, all containers together (as Docker)
MAX_TCP_CLIENTS = 64       # open TCP connections of one container
_UDP_BATCH = 64            # datagrams read from one socket before the loop serves the others
_DETACH_WAIT = 5.0

# (container id, name lowercased, no trailing dot) -> its IPv4 addresses, or None: not a name
# of the container's networks (then the query is forwarded)
Lookup = Callable[[str, str], "list[str] | None"]
# (container id, IPv4 address) -> the name a PTR query for it answers, or None: forwarded
ReverseLookup = Callable[[str, str], "str | None"]
_Upstream = tuple[int, tuple[Any, ...]]  # socket family, socket address (port 53)


def host_upstreams(resolv_conf: str = files.HOST_RESOLV_CONF) -> list[str]:
    """The resolvers the embedded DNS forwards to by default: the host's, or Docker's default
    two when it has none (what ``files.resolv_conf`` writes as ``# ExtServers``)."""
    return files._parse(files.read_host_resolv_conf(resolv_conf)).nameservers or list(files.DEFAULT_NAMESERVERS)


def _resolve_upstreams(servers: list[str]) -> tuple[_Upstream, ...]:
    out = []
    for server in servers:
        try:
            info = socket.getaddrinfo(server, PORT, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise InvalidNetworkConfig(f"invalid DNS server address {server!r}") from None
        out.append((info[0][0], info[0][4]))
    return tuple(out)


@dataclass(frozen=True)
class _Policy:
    """What a container's unknown names get: forwarded to ``upstreams`` or SERVFAIL. Swapped
    whole by a later attach, so the server's thread reads one or the other, never a mix."""
    forward: bool
    upstreams: tuple[_Upstream, ...]


@dataclass(eq=False)
class _Attachment:
    container_id: str
    netns_path: str
    netns_id: tuple[int, int]      # (st_dev, st_ino) of the namespace: a path is reused by a restart
    udp: socket.socket
    tcp: socket.socket
    policy: _Policy
    # the rest is the server thread's alone
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    tcp_clients: int = 0
    closed: bool = False


def _bind_sockets() -> tuple[socket.socket, socket.socket]:
    """127.0.0.11:53 over UDP and TCP in this thread's network namespace."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((ADDRESS, PORT))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((ADDRESS, PORT))
        tcp.listen(64)
        udp.setblocking(False)
        tcp.setblocking(False)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def _namespace_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class EmbeddedDns:
    """Docker's embedded DNS for every attached container. ``lookup`` (and ``reverse``) are
    called from the server's thread, one query at a time: they must be thread-safe and quick
    (every container's queries wait for them), and must not wait for a lock held around
    ``detach`` (which waits for the server's thread: that would stall both for 5 s)."""

    def __init__(self, lookup: Lookup, upstreams: list[str] | None = None,
                 reverse: ReverseLookup | None = None) -> None:
        self._lookup = lookup
        self._reverse = reverse
        self._default_upstreams = _resolve_upstreams(host_upstreams() if upstreams is None else upstreams)
        # forwarded queries leave from the namespace this object is made in, whichever thread
        # attaches the first container
        self._home_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._attached: dict[str, _Attachment] = {}
        self._serving: set[_Attachment] = set()   # the server thread's: registered with its loop
        self._forwards = 0                        # the server thread's: queries at upstreams
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the engine's side (any thread) --

    def attach(self, container_id: str, netns_path: str, forward: bool,
               upstreams: list[str] | None = None) -> None:
        """Serve 127.0.0.11:53 in the network namespace at ``netns_path`` for ``container_id``.
        ``forward=False`` (only internal networks): unknown names answer SERVFAIL, nothing leaves.
        ``upstreams``: this container's resolvers (``--dns``) instead of the default ones.
        Attaching again to the same namespace only changes ``forward`` and ``upstreams``."""
        policy = _Policy(forward, self._default_upstreams if upstreams is None else _resolve_upstreams(upstreams))
        with self._lock:
            if self._closed:
                raise NetworkError("the embedded DNS server is closed")
            try:
                namespace = _namespace_id(netns_path)
            except OSError as e:
                raise NetworkError(f"embedded DNS for container {container_id[:12]}: {e}") from e
            current = self._attached.get(container_id)
            if current is not None and current.netns_id == namespace:
                current.policy = policy
                return
            if current is not None:
                self._detach_locked(container_id)
            try:
                udp, tcp = netns.run_in(netns_path, _bind_sockets)
            except OSError as e:
                raise NetworkError(f"embedded DNS for container {container_id[:12]}: "
                                   f"bind {ADDRESS}:{PORT} in {netns_path}: {e.strerror or e}") from e
            try:
                # after the bind: the new thread's import of dnspython would hold the GIL meanwhile
                loop = self._start_locked()
            except BaseException:
                udp.close()
                tcp.close()
                raise
            attachment = _Attachment(container_id, netns_path, namespace, udp, tcp, policy)
            self._attached[container_id] = attachment
            # not waited for: queries that come first wait in the sockets' queues
            loop.call_soon_threadsafe(self._serve, attachment)

    def detach(self, container_id: str) -> None:
        """Close the container's sockets (before its namespace is removed: a socket keeps its
        namespace, and the namespace's links, alive). Not attached: nothing to do."""
        with self._lock:
            self._detach_locked(container_id)

    def close(self) -> None:
        """Detach every container and end the server's thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._attached.clear()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                assert self._thread is not None
                self._thread.join()
            os.close(self._home_ns)

    def attached(self) -> list[str]:
        with self._lock:
            return sorted(self._attached)

    def _detach_locked(self, container_id: str) -> None:
        attachment = self._attached.pop(container_id, None)
        if attachment is None or self._loop is None:
            return
        done = threading.Event()

        def close_then_signal() -> None:
            self._close_attachment(attachment)
            done.set()
        # closed by the server's thread: an fd its selector watches must not be closed under it
        # (nor its number reused by a new socket before the selector forgets it)
        self._loop.call_soon_threadsafe(close_then_signal)
        if not done.wait(_DETACH_WAIT):
            raise NetworkError(f"embedded DNS: detaching container {container_id[:12]} timed out")

    def _start_locked(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            import asyncio
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._run, args=(loop,), name="embedded-dns", daemon=True)
            try:
                thread.start()
            except BaseException:
                loop.close()
                raise
            self._loop, self._thread = loop, thread
        return self._loop

    # -- the server's thread --

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        setns(self._home_ns, CLONE_NEWNET, "setns into the daemon's network namespace")
        import asyncio

        import dns.message  # noqa: F401 - imported here, off the attaching thread
        import dns.rrset  # noqa: F401
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = [task for attachment in self._serving for task in attachment.tasks]
            for attachment in list(self._serving):
                self._close_attachment(attachment)
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _serve(self, attachment: _Attachment) -> None:
        if attachment.closed:
            return
        assert self._loop is not None
        self._serving.add(attachment)
        self._loop.add_reader(attachment.udp.fileno(), self._udp_readable, attachment)
        self._loop.add_reader(attachment.tcp.fileno(), self._tcp_acceptable, attachment)

    def _close_attachment(self, attachment: _Attachment) -> None:
        """Stop serving and close the sockets; also for one detached before it was served."""
        assert self._loop is not None
        attachment.closed = True
        if attachment in self._serving:
            self._serving.discard(attachment)
            self._loop.remove_reader(attachment.udp.fileno())
            self._loop.remove_reader(attachment.tcp.fileno())
        attachment.udp.close()
        attachment.tcp.close()
        for task in attachment.tasks:
            task.cancel()

    def _spawn(self, attachment: _Attachment, coroutine: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        attachment.tasks.add(task)
        task.add_done_callback(attachment.tasks.discard)

    def _udp_readable(self, attachment: _Attachment) -> None:
        for _ in range(_UDP_BATCH):
            try:
                wire, client = attachment.udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            reply, query = self._decide(attachment, wire, via_tcp=False)
            if reply is not None:
                self._send_udp(attachment, reply, client)
            elif query is not None:
                self._spawn(attachment, self._forward_udp(attachment, wire, query, client))

    @staticmethod
    def _send_udp(attachment: _Attachment, reply: bytes, client: Any) -> None:
        try:
            attachment.udp.sendto(reply, client)
        except OSError:
            pass  # a full queue or a client gone: UDP's client asks again

    def _tcp_acceptable(self, attachment: _Attachment) -> None:
        while True:
            try:
                conn, _ = attachment.tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the connection was reset before accept(): nothing to serve
            if attachment.tcp_clients >= MAX_TCP_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            attachment.tcp_clients += 1
            self._spawn(attachment, self._tcp_client(attachment, conn))

    async def _tcp_client(self, attachment: _Attachment, conn: socket.socket) -> None:
        """Queries of one TCP connection, in turn (RFC 7766 framing: a 2-byte length first)."""
        import asyncio
        loop = asyncio.get_running_loop()
        try:
            with conn:
                while True:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        size = int.from_bytes(await _recv_exactly(loop, conn, 2), "big")
                        wire = await _recv_exactly(loop, conn, size)
                    reply, query = self._decide(attachment, wire, via_tcp=True)
                    if reply is None and query is not None:
                        reply = await self._forwarded(attachment, wire, query, via_tcp=True)
                    if reply is None:
                        return
                    await loop.sock_sendall(conn, len(reply).to_bytes(2, "big") + reply)
        except (OSError, EOFError, TimeoutError):
            pass  # the client went, or sent nothing for a while
        finally:
            attachment.tcp_clients -= 1

    def _decide(self, attachment: _Attachment, wire: bytes,
                via_tcp: bool) -> tuple[bytes | None, dns.message.Message | None]:
        """The reply to ``wire`` when it is decided here (or (None, None): no reply at all),
        else (None, query): the query goes to the upstreams."""
        import dns.flags
        import dns.message
        import dns.opcode
        import dns.rcode
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - whatever a bad packet makes dnspython raise
            return _format_error(wire), None
        if query.flags & dns.flags.QR:
            return None, None  # a response, not a query: never answered (no loops)
        limit = 65535 if via_tcp else _udp_limit(query)
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            rcode = dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR
            return _render(_response(query, rcode, attachment.policy), limit), None
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower().removesuffix(".")  # the root: ""
        try:
            answer = self._local_answer(attachment.container_id, question, name)
        except Exception:  # noqa: BLE001 - the engine's callback failing must not end the server
            log.exception("embedded DNS: looking up %r for container %s", name, attachment.container_id[:12])
            return _render(_response(query, dns.rcode.SERVFAIL, attachment.policy), limit), None
        if answer is None:
            if attachment.policy.forward and attachment.policy.upstreams:
                return None, query
            return _render(_response(query, dns.rcode.SERVFAIL, attachment.policy), limit), None
        response = _response(query, dns.rcode.NOERROR, attachment.policy)
        response.flags |= dns.flags.AA
        if answer.rdtype == question.rdtype and len(answer):  # other types of a known name: empty NOERROR
            response.answer.append(answer)
        return _render(response, limit), None

    def _local_answer(self, container_id: str, question: Any, name: str) -> Any:
        """The rrset for a name of the container's networks (of type A, AAAA or PTR; empty when
        the name has no address of that family), or None: not ours."""
        import dns.rdataclass
        import dns.rdatatype
        import dns.reversename
        import dns.rrset
        if question.rdclass != dns.rdataclass.IN or not name:
            return None
        if question.rdtype == dns.rdatatype.PTR and self._reverse is not None and name.endswith(".in-addr.arpa"):
            try:
                address = dns.reversename.to_address(question.name)
            except Exception:  # noqa: BLE001 - a partial or malformed reverse name: not a container's
                return None
            target = self._reverse(container_id, address)
            if target is None:
                return None
            return dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.PTR, target + ".")
        addresses = self._lookup(container_id, name)
        if addresses is None:
            return None
        # (``lookup`` gives both families; an AAAA query gets the IPv6 ones)
        rdtype = dns.rdatatype.AAAA if question.rdtype == dns.rdatatype.AAAA else dns.rdatatype.A
        chosen = [a for a in addresses if (":" in a) == (rdtype == dns.rdatatype.AAAA)]
        # shuffled as Docker's: containers sharing an alias take turns
        return dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, rdtype,
                                        random.sample(chosen, len(chosen)))

    async def _forward_udp(self, attachment: _Attachment, wire: bytes, query: dns.message.Message,
                           client: Any) -> None:
        reply = await self._forwarded(attachment, wire, query, via_tcp=False)
        if reply is not None and not attachment.closed:
            self._send_udp(attachment, reply, client)

    async def _forwarded(self, attachment: _Attachment, wire: bytes, query: dns.message.Message,
                         via_tcp: bool) -> bytes | None:
        """The first upstream's reply, with the client's id; SERVFAIL when none answers."""
        import dns.rcode
        policy = attachment.policy
        client_limit = 65535 if via_tcp else _udp_limit(query)
        if self._forwards >= MAX_FORWARDS:
            log.warning("embedded DNS: more than %d queries at the upstreams, refusing", MAX_FORWARDS)
            return _render(_response(query, dns.rcode.SERVFAIL, policy), client_limit)
        self._forwards += 1
        try:
            for upstream in policy.upstreams:
                try:
                    reply = await _ask(upstream, wire, via_tcp)
                    if not via_tcp and reply[2] & 0x02:  # TC: the whole answer over TCP, if it fits
                        try:
                            full = await _ask(upstream, wire, True)
                            reply = full if len(full) <= client_limit else reply
                        except (OSError, EOFError, TimeoutError):
                            pass  # the truncated one tells the client to ask over TCP itself
                    return wire[:2] + reply[2:]
                except (OSError, EOFError, TimeoutError):
                    continue
            return _render(_response(query, dns.rcode.SERVFAIL, policy), client_limit)
        finally:
            self._forwards -= 1


async def _ask(upstream: _Upstream, wire: bytes, via_tcp: bool) -> bytes:
    """One query to one upstream, under a fresh random id (the reply must carry it)."""
    import asyncio
    loop = asyncio.get_running_loop()
    query_id = random.getrandbits(16).to_bytes(2, "big")
    outgoing = query_id + wire[2:]
    family, address = upstream
    with socket.socket(family, socket.SOCK_STREAM if via_tcp else socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            await loop.sock_connect(sock, address)
            if via_tcp:
                await loop.sock_sendall(sock, len(outgoing).to_bytes(2, "big") + outgoing)
                size = int.from_bytes(await _recv_exactly(loop, sock, 2), "big")
                reply = await _recv_exactly(loop, sock, size)
                if _answers(reply, query_id):
                    return reply
                raise EOFError("a reply to another query")
            await loop.sock_sendall(sock, outgoing)
            while True:  # a connected UDP socket hears only its upstream; a stray id is skipped
                reply = await loop.sock_recv(sock, 65535)
                if _answers(reply, query_id):
                    return reply


def _answers(reply: bytes, query_id: bytes) -> bool:
    return len(reply) >= 12 and reply[:2] == query_id and bool(reply[2] & 0x80)


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _udp_limit(query: dns.message.Message) -> int:
    """The largest UDP reply the client takes: 512 bytes, or its EDNS payload size."""
    return max(512, query.payload) if query.edns >= 0 else 512


def _response(query: dns.message.Message, rcode: int, policy: _Policy) -> dns.message.Message:
    import dns.message
    response = dns.message.make_response(query, recursion_available=policy.forward)
    response.set_rcode(rcode)
    return response


def _render(response: dns.message.Message, limit: int) -> bytes:
    """The wire form; one larger than ``limit`` (the client's UDP size) goes without its
    answers and with TC set, so the client asks again over TCP."""
    import dns.exception
    import dns.flags
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer = []
        response.flags |= dns.flags.TC
        return response.to_wire()


def _format_error(wire: bytes) -> bytes | None:
    """FORMERR for a packet dnspython cannot read: its id, opcode and RD, QR set, no question;
    nothing for one too short to have a header, or that says it is a response."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    return wire[:2] + bytes([0x80 | (wire[2] & 0x79), 0x01]) + bytes(8)
