"""Named network namespaces: a file bind-mounted on a namespace so it lives without a process.

``create(path)`` unshares a new network namespace in a short-lived thread (setns and unshare
move only the calling thread, so the process itself never changes namespace), bind-mounts
that thread's /proc/thread-self/ns/net on ``path`` and brings ``lo`` up; no fork, no helper
process. ``remove(path)`` unmounts and unlinks, and is a no-op for what is already gone.
``run_in(path, fn)`` runs ``fn`` in a thread that joined the namespace: a socket it opens
(netlink included) stays in that namespace after the thread is gone.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
from typing import Callable, TypeVar

from ..linux.mount import MNT_DETACH, MS_BIND, mount, umount
from ..linux.namespaces import CLONE_NEWNET, setns, unshare
from . import netlink
from .api import NetworkError

T = TypeVar("T")


def _in_thread(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread and return its result or raise its exception here. The
    thread ends after ``fn``: whatever namespace it joined goes with it."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(e)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _set_lo_up() -> None:
    with netlink.Socket() as nl:
        nl.set_up(socket.if_nametoindex("lo"), "lo")


def create(path: str) -> None:
    """A new network namespace with ``lo`` up, pinned at ``path`` (its directory is made)."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    except FileExistsError:
        raise NetworkError(f"network namespace {path} already exists") from None
    os.close(fd)

    def make() -> None:
        unshare(CLONE_NEWNET)
        mount("/proc/thread-self/ns/net", path, None, MS_BIND)
        _set_lo_up()

    try:
        _in_thread("netns-create", make)
    except BaseException as e:
        remove(path)
        raise NetworkError(f"create network namespace {path}: {e}") from e


def remove(path: str) -> None:
    """Unmount and unlink ``path``; what is already gone (not mounted, no file) is fine."""
    try:
        umount(path, MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise NetworkError(f"unmount network namespace {path}: {e}") from e
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run_in(path: str, fn: Callable[[], T]) -> T:
    """``fn()`` run in a thread that joined the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        def joined() -> T:
            setns(fd, CLONE_NEWNET, f"setns into {path}")
            return fn()
        return _in_thread("netns-run", joined)
    finally:
        os.close(fd)
