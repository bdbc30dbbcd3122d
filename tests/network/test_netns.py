"""Named network namespaces: made without a fork, lo up, removed, tolerant of what is gone."""
from __future__ import annotations

import os
import socket

import pytest

from sampan.network import netns
from sampan.network.api import NetworkError

from conftest import ip


def test_create_run_in_remove(tmp_path):
    path = str(tmp_path / "netns" / "c1")
    own = os.readlink("/proc/thread-self/ns/net")
    netns.create(path)
    try:
        assert os.readlink("/proc/thread-self/ns/net") == own  # the caller never moved
        assert "lo" in ip("-br", "link", netns_path=path) and "UP" in ip("-br", "link", netns_path=path)
        assert netns.run_in(path, lambda: os.readlink("/proc/thread-self/ns/net")) != own
        # a socket made in the namespace stays there: loopback works on it after the thread is gone
        server = netns.run_in(path, lambda: socket.create_server(("127.0.0.1", 0)))
        with server, socket.socket() as probe:
            assert probe.connect_ex(server.getsockname()) != 0  # not the caller's loopback
        with pytest.raises(NetworkError, match="already exists"):
            netns.create(path)
    finally:
        netns.remove(path)
    assert not os.path.exists(path)
    assert path not in open("/proc/self/mountinfo").read()
    netns.remove(path)  # already gone: fine

