"""Restart policies: no, on-failure[:N], always, unless-stopped, with Docker's backoff.

The delay starts at 100 ms and doubles with each restart in a row, up to a minute; a
container that ran for 10 s or more starts again from 100 ms.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .errors import InvalidParameter

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0
POLICIES = ("", "no", "always", "unless-stopped", "on-failure")


def parse(value: str) -> dict:
    """``--restart`` text -> HostConfig.RestartPolicy."""
    name, _, count = (value or "no").partition(":")
    if name not in POLICIES:
        raise InvalidParameter(f"invalid restart policy: {value}")
    if count and name != "on-failure":
        raise InvalidParameter(f"invalid restart policy: maximum retry count cannot be used with restart policy '{name}'")
    try:
        n = int(count) if count else 0
    except ValueError:
        raise InvalidParameter(f"invalid restart policy: maximum retry count must be an integer: {value}") from None
    return {"Name": name or "no", "MaximumRetryCount": n}


def validate(policy: dict | None, auto_remove: bool) -> dict:
    policy = dict(policy or {})
    name = policy.get("Name") or "no"
    if name not in POLICIES:
        raise InvalidParameter(f"invalid restart policy '{name}'")
    count = int(policy.get("MaximumRetryCount") or 0)
    if count < 0:
        raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")
    if count and name != "on-failure":
        raise InvalidParameter(f"invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if auto_remove and name not in ("no", ""):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    return {"Name": name, "MaximumRetryCount": count}


def should_restart(policy: dict, state: dict, exit_code: int) -> bool:
    """After an exit the engine did not ask for (a stop sets ManuallyStopped)."""
    name = policy.get("Name") or "no"
    if state.get("ManuallyStopped") or name == "no":
        return False
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return exit_code != 0 and (limit == 0 or int(state.get("RestartCount") or 0) < limit)
    return False


def restart_at_daemon_start(policy: dict, state: dict) -> bool:
    name = policy.get("Name") or "no"
    if name == "always":
        return True
    if name == "unless-stopped":
        return not state.get("ManuallyStopped")
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return (not state.get("ManuallyStopped") and int(state.get("ExitCode") or 0) != 0
                and (limit == 0 or int(state.get("RestartCount") or 0) < limit))
    return False


class Restarter:
    """Schedules restarts with backoff; ``cancel(id)`` when the user stops or removes."""

    def __init__(self, start: Callable[[str], Any]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}
        self._delay: dict[str, float] = {}

    def delay_for(self, cid: str, ran_for: float) -> float:
        with self._lock:
            prev = self._delay.get(cid)
            d = FIRST_DELAY if prev is None or ran_for >= RESET_AFTER else min(prev * 2, MAX_DELAY)
            self._delay[cid] = d
            return d

    def schedule(self, cid: str, ran_for: float) -> float:
        d = self.delay_for(cid, ran_for)
        t = threading.Timer(d, self._fire, (cid,))
        t.daemon = True
        with self._lock:
            old = self._timers.pop(cid, None)
            self._timers[cid] = t
        if old is not None:
            old.cancel()
        t.start()
        return d

    def _fire(self, cid: str) -> None:
        with self._lock:
            if self._timers.get(cid) is None:
                return
            self._timers.pop(cid, None)
        try:
            self._start(cid)
        except Exception:  # noqa: BLE001 - a failed restart is recorded by start itself
            pass

    def pending(self, cid: str) -> bool:
        with self._lock:
            return cid in self._timers

    def cancel(self, cid: str, forget: bool = False) -> bool:
        with self._lock:
            t = self._timers.pop(cid, None)
            if forget:
                self._delay.pop(cid, None)
        if t is not None:
            t.cancel()
        return t is not None

    def close(self) -> None:
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for t in timers:
            t.cancel()

    @staticmethod
    def now() -> float:
        return time.time()
