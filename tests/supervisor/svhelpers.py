"""Helpers of the supervisor tests."""
from __future__ import annotations

import time

import pytest


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_all(sock, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def demux(data: bytes) -> tuple[bytes, bytes]:
    """Docker's multiplexed framing -> (stdout, stderr)."""
    out = {1: b"", 2: b""}
    i = 0
    while i < len(data):
        stream, length = data[i], int.from_bytes(data[i + 4:i + 8], "big")
        assert data[i + 1:i + 4] == b"\0\0\0", data[i:i + 8]
        out[stream] += data[i + 8:i + 8 + length]
        i += 8 + length
    assert i == len(data)
    return out[1], out[2]
