"""Default paths of the engine, the runtime and the API socket, in one place (a later
rootless mode puts them under $XDG_DATA_HOME / $XDG_RUNTIME_DIR here)."""
from __future__ import annotations

import os

ENGINE_ROOT = "/var/lib/sampan"    # state.db, blobs, snapshots, containers, volumes
EXEC_ROOT = "/run/sampan"          # sockets, pids, the runtime's state
RUNTIME_ROOT = "/run/sampan-runc"  # sampan-runc's --root when used on its own, as runc's /run/runc


def engine_root() -> str:
    return os.environ.get("SAMPAN_ROOT") or ENGINE_ROOT


def exec_root() -> str:
    return os.environ.get("SAMPAN_EXEC_ROOT") or EXEC_ROOT


def api_socket(exec_root_dir: str | None = None) -> str:
    return os.path.join(exec_root_dir or exec_root(), "sampan.sock")


def supervisor_socket(exec_root_dir: str) -> str:
    return os.path.join(exec_root_dir, "supervisor.sock")
