"""The events bus: Docker-shaped events to subscribers, and a bounded history for ``since``."""
from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any, Iterator

_HISTORY = 1024


class Events:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._history: collections.deque[dict] = collections.deque(maxlen=_HISTORY)
        self._subs: list[queue.Queue] = []

    def emit(self, typ: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> dict:
        now = time.time_ns()
        ev = {"Type": typ, "Action": action, "Actor": {"ID": actor_id, "Attributes": dict(attributes or {})},
              "scope": "local", "time": now // 10 ** 9, "timeNano": now}
        if typ == "container":  # the legacy fields docker's CLI still reads
            ev.update({"status": action, "id": actor_id, "from": ev["Actor"]["Attributes"].get("image", "")})
        with self._lock:
            self._history.append(ev)
            subs = list(self._subs)
        for q in subs:
            q.put(ev)
        return ev

    def subscribe(self, since: float | None = None, until: float | None = None,
                  filters: dict[str, list[str]] | None = None,
                  stop: threading.Event | None = None) -> Iterator[dict]:
        """Past events since ``since`` then live ones, until ``until`` (or forever, or ``stop``)."""
        q: queue.Queue = queue.Queue()
        with self._lock:
            past = [e for e in self._history if since is not None and e["timeNano"] >= since * 1e9]
            if until is None or until > time.time():
                self._subs.append(q)
        try:
            for e in past:
                if until is not None and e["timeNano"] > until * 1e9:
                    return
                if match(e, filters):
                    yield e
            if until is not None and until <= time.time():
                return
            while stop is None or not stop.is_set():
                timeout = 0.5 if until is None else max(0.0, min(0.5, until - time.time()))
                try:
                    e = q.get(timeout=timeout)
                except queue.Empty:
                    if until is not None and time.time() >= until:
                        return
                    continue
                if until is not None and e["timeNano"] > until * 1e9:
                    return
                if match(e, filters):
                    yield e
        finally:
            with self._lock:
                if q in self._subs:
                    self._subs.remove(q)


def match(ev: dict, filters: dict[str, list[str]] | None) -> bool:
    if not filters:
        return True
    attrs = ev["Actor"]["Attributes"]
    for key, values in filters.items():
        if not values:
            continue
        if key == "type" and ev["Type"] not in values:
            return False
        if key in ("event", "action") and ev["Action"].split(":")[0] not in values and ev["Action"] not in values:
            return False
        if key in ("container", "volume") and not (ev["Type"] == key and any(
                v == ev["Actor"]["ID"] or ev["Actor"]["ID"].startswith(v) or v == attrs.get("name") for v in values)):
            return False
        if key == "image" and attrs.get("image") not in values:
            return False
        if key == "label":
            for v in values:
                k, sep, val = v.partition("=")
                if k not in attrs or (sep and attrs[k] != val):
                    return False
    return True
