"""Parent <-> init messages: one JSON object per datagram on a SOCK_SEQPACKET socketpair."""
from __future__ import annotations

import _socket

from .. import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Channel:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def send(self, kind: str, **fields: Any) -> None:
        self.sock.send(fastjson.dumps({"type": kind, **fields}).encode())

    def recv(self) -> dict[str, Any]:
        """The next message; {"type": "eof"} once the other side closed (exec'd or died)."""
        data = self.sock.recv(1 << 20)
        if not data:
            return {"type": "eof"}
        return fastjson.loads(data)  # type: ignore[return-value]

    def expect(self, kind: str) -> dict[str, Any]:
        msg = self.recv()
        if msg["type"] == "error":
            raise ChildError(msg["message"])
        if msg["type"] != kind:
            raise ChildError(f"container init: expected {kind}, got {msg['type']}")
        return msg

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class ChildError(Exception):
    """The container's init (or exec'd process) reported a failure before execve."""
