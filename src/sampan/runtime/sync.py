"""Parent <-> init messages: one JSON object per datagram on a SOCK_SEQPACKET socketpair."""
from __future__ import annotations

import json
import socket
from typing import Any


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def send(self, kind: str, **fields: Any) -> None:
        self.sock.send(json.dumps({"type": kind, **fields}).encode())

    def recv(self) -> dict[str, Any]:
        """The next message; {"type": "eof"} once the other side closed (exec'd or died)."""
        data = self.sock.recv(1 << 20)
        if not data:
            return {"type": "eof"}
        return json.loads(data)

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
