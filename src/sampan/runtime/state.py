"""The runtime's on-disk state: one directory per container under the state root."""
from __future__ import annotations

import os

from .. import fastjson, paths
from .errors import ContainerExists, ContainerNotFound, RuntimeError_
from .fsutil import atomic_write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = paths.RUNTIME_ROOT
STATE_FILE = "state.json"
EXEC_SOCKET = "exec.sock"
_ID_PUNCTUATION = set("_+-.")


def check_id(container_id: str) -> None:
    if not container_id:
        raise RuntimeError_("container id cannot be empty")
    if not all(ch.isalnum() or ch in _ID_PUNCTUATION for ch in container_id) or not container_id.isascii() or container_id in (".", "..") or len(container_id) > 1024:
        raise RuntimeError_(f"invalid container id format: {container_id}")


def container_dir(root: str, container_id: str) -> str:
    check_id(container_id)
    return os.path.join(root, container_id)


def reserve(root: str, container_id: str) -> str:
    """Create the container's state directory; fails if the id is taken."""
    os.makedirs(root, mode=0o711, exist_ok=True)
    path = container_dir(root, container_id)
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        raise ContainerExists(f"container with id exists: {container_id}") from None
    return path


def save(root: str, state: dict[str, Any]) -> None:
    # (as runc: the state of live processes, under /run; a host crash takes both away)
    atomic_write(os.path.join(container_dir(root, state["id"]), STATE_FILE), fastjson.dumps(state).encode(),
                 durable=False)


def load(root: str, container_id: str) -> dict[str, Any]:
    path = os.path.join(container_dir(root, container_id), STATE_FILE)
    try:
        with open(path, "rb") as f:
            return fastjson.loads(f.read())  # type: ignore[return-value]
    except FileNotFoundError:
        if os.path.isdir(os.path.dirname(path)):
            # A create that died before writing state: report it so delete can clean it.
            return {"id": container_id, "pid": 0, "incomplete": True}
        raise ContainerNotFound(f"container does not exist: {container_id}") from None
    except (ValueError, UnicodeDecodeError):
        return {"id": container_id, "pid": 0, "incomplete": True}


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    except FileNotFoundError:
        return []


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks from /proc/<pid>/stat; None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def is_alive(state: dict[str, Any]) -> bool:
    pid = state.get("pid") or 0
    return pid > 0 and state.get("pid_start") is not None and process_start_time(pid) == state["pid_start"]


def status(root: str, state: dict[str, Any]) -> str:
    if state.get("incomplete"):
        return "creating"
    if not is_alive(state):
        return "stopped"
    if state.get("cgroup"):
        from .cgroups import manager_from_state
        try:
            if manager_from_state(state["cgroup"]).state() == "frozen":
                return "paused"
        except OSError:
            pass
    if os.path.exists(os.path.join(container_dir(root, state["id"]), EXEC_SOCKET)):
        return "created"
    return "running"


def oci_state(root: str, state: dict[str, Any]) -> dict[str, Any]:
    """The state object of the OCI runtime spec (plus runc's extra fields)."""
    st = status(root, state)
    return {
        "ociVersion": state.get("ociVersion", "1.0.2-dev"),
        "id": state["id"],
        "pid": state.get("pid", 0) if st != "stopped" else 0,
        "status": st,
        "bundle": state.get("bundle", ""),
        "rootfs": state.get("rootfs", ""),
        "created": state.get("created", ""),
        "owner": "",
        **({"annotations": state["annotations"]} if state.get("annotations") else {}),
    }

