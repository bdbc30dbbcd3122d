"""OCI hooks: each runs with the container state on stdin, its args, env and timeout."""
from __future__ import annotations

from .. import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class HookError(Exception):
    pass


def run(spec: dict[str, Any], name: str, state: dict[str, Any]) -> None:
    """Runs every hook of kind `name`; the first failure raises HookError."""
    hooks = (spec.get("hooks") or {}).get(name) or []
    if not hooks:
        return
    import subprocess  # only paid by containers that have hooks

    payload = fastjson.dumps(state).encode()
    for hook in hooks:
        args = hook.get("args") or [hook["path"]]
        env = dict(e.split("=", 1) for e in hook.get("env") or [] if "=" in e)
        timeout = hook.get("timeout")
        if timeout is not None and timeout <= 0:
            raise HookError(f"{name} hook {hook['path']}: timeout must be greater than zero")
        try:
            proc = subprocess.run(args, executable=hook["path"], input=payload, env=env, timeout=timeout,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
        except subprocess.TimeoutExpired:
            raise HookError(f"{name} hook {hook['path']}: timed out after {timeout}s") from None
        except OSError as e:
            raise HookError(f"{name} hook {hook['path']}: {e.strerror}") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
            raise HookError(f"{name} hook {hook['path']} exited with {proc.returncode}"
                            + (f": {detail[-1]}" if detail else ""))
