"""The Engine: containers (create/start/stop/kill/restart/rm/pause/rename/wait/inspect/list/logs/
exec/top), volumes and events, in Docker Engine API shapes (docs/ENGINE.md).

Processes live in the supervisor (``sampan.supervisor``); the engine keeps the model in
state.db and learns of exits through one ``wait`` per running process (and ``exit.json``
for exits that happened while it was down).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal as _signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator

from ..image.store import ImageError, ImageStore
from ..runtime.fsutil import atomic_write, mkdir_all_in, remove_tree, secure_join
from . import names as _names
from . import network as _network
from . import restart as _restart
from . import spec as _spec
from ..timefmt import duration
from .errors import Conflict, EngineError, InvalidParameter, NotFound, NotModified
from .events import Events
from .store import NameTaken, Store
from .volumes import Volumes

ZERO_TIME = "0001-01-01T00:00:00Z"
IDLE_MOUNT_SECONDS = 2.0  # how long the rootfs create mounted waits for the container's start
DEFAULT_STOP_TIMEOUT = 10
API_VERSION = "1.47"
VERSION = "0.1.0"


def _now() -> str:
    from ..supervisor.logs import timestamp
    return timestamp()


def _parse_ts(s: str | None) -> float:
    """RFC 3339 (nanoseconds allowed) -> unix seconds; 0 for empty or zero time."""
    if not s or s.startswith("0001-"):
        return 0.0
    base, _, frac = s.rstrip("Z").partition(".")
    tz = 0.0
    if "+" in frac or "-" in frac:  # offsets (rare here)
        for sep in "+-":
            if sep in frac:
                frac, off = frac.split(sep, 1)
                h, m = off.split(":")
                tz = (int(h) * 3600 + int(m) * 60) * (1 if sep == "+" else -1)
    try:
        t = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return 0.0
    return t + (float("0." + frac) if frac else 0.0) - tz


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _go_errors(msg: str) -> str:
    """errno texts as Go (runc, dockerd) words them, lower case: the docker CLI picks its exit
    code (126 "permission denied"/"is a directory", 127 "no such file or directory") from them."""
    import errno
    for n in (errno.EACCES, errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENOEXEC):
        text = os.strerror(n)
        msg = msg.replace(text, text.lower())
    return msg


def _ended_stream() -> socket.socket:
    """An attach stream that is over already."""
    ours, theirs = socket.socketpair()
    theirs.close()
    return ours


def _parse_time_arg(v: Any) -> float | None:
    """since/until: unix seconds (with fraction) or RFC 3339; None or 0 for unset."""
    if v in (None, "", 0, "0"):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except ValueError:
        t = _parse_ts(str(v))
        return t or None


class Engine:
    def __init__(self, root: str, exec_root: str, images: ImageStore | None = None,
                 start_supervisor: bool = True, reconcile: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.exec_root = os.path.abspath(exec_root)
        self.runtime_root = os.path.join(self.exec_root, "runtime")
        self.containers_dir = os.path.join(self.root, "containers")
        os.makedirs(self.containers_dir, mode=0o711, exist_ok=True)
        self.store = Store(self.root)
        self.events = Events()
        self._own_images = images is None
        self.images = images or ImageStore(self.root, in_use=self._image_in_use)
        if images is not None:
            images.in_use = self._image_in_use
        self.volumes = Volumes(self.root, self.store, self.events)
        self.restarter = _restart.Restarter(self._restart_start)
        self._locks: dict[str, threading.RLock] = {}
        self._locks_lock = threading.Lock()
        self._changed = threading.Condition()
        self._waiters: set[str] = set()
        self._removing: set[str] = set()
        self._final_states: dict[str, dict] = {}  # the state of recently removed containers, for wait
        # Rootfs mounts made by create, kept until (monotonic) for a start; then unmounted.
        self._idle_mounts: dict[str, float] = {}
        self._janitor: threading.Thread | None = None
        self._files_cond = threading.Condition()
        self._files_pending = 0  # auto-removals whose files are still being removed
        # Containers the supervisor has created (init waiting for start) ahead of a start: an
        # attach before start does that, so the attacher sees the output from the first byte.
        self._prepared: dict[str, int] = {}
        self._closed = False
        self._sup_client = None
        self._start_supervisor = start_supervisor
        if reconcile:
            self.reconcile()

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._closed = True
        with self._files_cond:  # auto-removals finishing their files
            self._files_cond.wait_for(lambda: self._files_pending == 0, timeout=10)
        self._unmount_idle(everything=True)
        try:  # our parent cgroup, if no container is left in it
            from ..runtime.cgroups import remove_if_empty
            remove_if_empty(_spec.CGROUP_PARENT)
        except OSError:
            pass
        self.restarter.close()
        if self._sup_client is not None:
            self._sup_client.close()
        self.store.close()
        if self._own_images:
            self.images.close()

    def _sup(self):
        from ..supervisor.client import Client, ensure_running
        if self._sup_client is None:
            if self._start_supervisor:
                ensure_running(self.root, self.exec_root)
            self._sup_client = Client(self.exec_root)
        return self._sup_client

    def _call(self, op: str, **fields: Any) -> dict:
        from ..supervisor.client import SupervisorError
        try:
            return self._sup().call(op, **fields)
        except SupervisorError as e:
            if e.code == "unavailable" and self._start_supervisor:
                from ..supervisor.client import ensure_running
                ensure_running(self.root, self.exec_root)
                return self._sup().call(op, **fields)
            raise

    def _lock(self, cid: str) -> threading.RLock:
        with self._locks_lock:
            lk = self._locks.get(cid)
            if lk is None:
                lk = self._locks[cid] = threading.RLock()
            return lk

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def cdir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def _bundle(self, cid: str) -> str:
        return os.path.join(self.cdir(cid), "bundle")

    def _log_path(self, cid: str) -> str:
        return os.path.join(self.cdir(cid), f"{cid}-json.log")

    def _get(self, ref: str) -> dict:
        found = self.store.find(ref) if ref else []
        if not found:
            raise NotFound(f"No such container: {ref}")
        if len(found) > 1:
            raise InvalidParameter(f"Multiple IDs found with provided prefix: {ref}")
        return found[0]

    def _image_in_use(self, image_id: str) -> list[tuple[str, bool]]:
        return [(r["id"], r["state"].get("Status") in ("running", "paused", "restarting"))
                for r in self.store.all() if r["image_id"] == image_id]

    def _emit(self, rec: dict, action: str, **extra: str) -> None:
        attrs = {"image": rec["config"].get("Image") or rec["image_ref"], "name": rec["name"]}
        attrs.update({k: str(v) for k, v in (rec["config"].get("Labels") or {}).items()})
        attrs.update(extra)
        self.events.emit("container", action, rec["id"], attrs)

    # ------------------------------------------------------------------ create
    def create(self, body: dict, name: str | None = None) -> str:
        self._warm()
        body = dict(body or {})
        hc = dict(body.get("HostConfig") or {})
        if name:
            if not _names.valid(name):
                raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.lstrip("/")
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise InvalidParameter("No image specified" if False else "config cannot be empty in order to create a container")
        try:
            img = self.images.resolve(image_ref)
        except ImageError as e:
            if getattr(e, "status", 500) == 404:
                raise NotFound(f"No such image: {image_ref}") from None
            raise InvalidParameter(str(e)) from None
        cid = secrets.token_hex(32)
        network = hc.get("NetworkMode") or "default"
        if network not in _network.REQUESTABLE:
            raise NotFound(f"network {network} not found")
        if network == "host" and not body.get("Hostname"):
            body["Hostname"] = os.uname().nodename  # Docker: a host-network container has the host's name
        try:
            config = _spec.merge_config(img.config, body, cid)
            hc["RestartPolicy"] = _restart.validate(hc.get("RestartPolicy"), bool(hc.get("AutoRemove")))
            mounts = _spec.parse_mounts(hc)
            _spec.capabilities(hc)
            _spec.security_options(hc)
            _spec.resources(hc)
            _spec.rlimits(hc)
            _spec.parse_signal(config.get("StopSignal"))
        except _spec.SpecInputError as e:
            raise InvalidParameter(str(e)) from None
        hc.setdefault("NetworkMode", network)
        hc.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
        # Image VOLUMEs not covered by a mount become anonymous volumes.
        covered = {m["Destination"] for m in mounts}
        for dest in sorted((config.get("Volumes") or {}).keys()):
            d = os.path.normpath(dest)
            if d not in covered:
                mounts.append({"Type": "volume", "Name": "", "Source": "", "Destination": d, "RW": True,
                               "Mode": "", "Propagation": "", "Anonymous": True})
        taken_name = name or _names.generate(self.store.names_taken())
        cdir = self.cdir(cid)
        undo: list[Any] = []
        made_volumes: list[str] = []
        try:
            os.makedirs(cdir, mode=0o711)
            undo.append(lambda: shutil.rmtree(cdir, ignore_errors=True))
            try:
                ms = self.images.prepare_rootfs(cid, img.id)
            except Exception as e:
                raise EngineError(f"failed to prepare the rootfs: {e}") from None
            undo.append(lambda: self.images.snapshots.remove(cid))
            rootfs = ms.rootfs
            for m in mounts:
                if m["Type"] == "volume":
                    existed = bool(m.get("Name")) and self.store.volume(m["Name"]) is not None
                    v = self.volumes.create(m.get("Name") or "", labels=m.get("Labels"),
                                            anonymous=not m.get("Name"))
                    if not existed:
                        made_volumes.append(v["Name"])
                    m["Name"], m["Source"], m["Driver"] = v["Name"], v["Mountpoint"], "local"
                    if not m.get("NoCopy"):
                        self.volumes.copy_up(rootfs, m["Destination"], v["Mountpoint"])
                elif m["Type"] == "bind":
                    if not os.path.exists(m["Source"]):
                        if m.get("CreateSource"):
                            os.makedirs(m["Source"], exist_ok=True)
                        else:
                            raise InvalidParameter(f"invalid mount config for type \"bind\": bind source path "
                                                   f"does not exist: {m['Source']}")
            if config.get("WorkingDir"):
                mkdir_all_in(rootfs, secure_join(rootfs, config["WorkingDir"]))
            host_net = network == "host"
            hostname = config["Hostname"]
            with open(os.path.join(cdir, "hostname"), "w") as f:
                f.write((os.uname().nodename if host_net else hostname) + "\n")
            with open(os.path.join(cdir, "hosts"), "w") as f:
                f.write(_spec.hosts_file(hostname, host_net))
            with open(os.path.join(cdir, "resolv.conf"), "w") as f:
                f.write(_spec.resolv_conf(host_net, hc.get("Dns"), hc.get("DnsSearch"), hc.get("DnsOptions")))
            try:
                oci = _spec.build(container_id=cid, config=config, host_config=hc, rootfs=rootfs,
                                  container_dir=cdir, mounts=mounts)
            except _spec.SpecInputError as e:
                raise InvalidParameter(str(e)) from None
            os.makedirs(self._bundle(cid), mode=0o711)
            atomic_write(os.path.join(self._bundle(cid), "config.json"), json.dumps(oci).encode(), 0o600)
            path, args = _spec.path_and_args(config)
            rec = {"id": cid, "name": taken_name, "image_id": img.id, "image_ref": image_ref,
                   "created": time.time(), "config": config, "host_config": hc,
                   "mounts": mounts,
                   "state": {"Status": "created", "Pid": 0, "ExitCode": 0, "Error": "", "StartedAt": ZERO_TIME,
                             "FinishedAt": ZERO_TIME, "OOMKilled": False, "RestartCount": 0,
                             "ManuallyStopped": False, "Path": path, "Args": args, "Paused": False}}
            try:
                self.store.add_container(rec)
            except NameTaken as e:
                raise Conflict(f"Conflict. The container name \"/{e.name}\" is already in use by container "
                               f"\"{e.owner}\". You have to remove (or rename) that container to be able to "
                               "reuse that name.") from None
            # Stopped containers keep no mount: start mounts the rootfs again (this one stays a
            # few seconds for the start that usually follows).
            self._unmount_later(cid)
        except BaseException:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    pass
            for v in made_volumes:
                try:
                    self.volumes.remove(v, force=True)
                except Exception:  # noqa: BLE001
                    pass
            raise
        self._emit(rec, "create")
        return cid

    def _unmount_later(self, cid: str) -> None:
        with self._locks_lock:
            self._idle_mounts[cid] = time.monotonic() + IDLE_MOUNT_SECONDS
            if self._janitor is None and not self._closed:
                self._janitor = threading.Thread(target=self._janitor_loop, name="unmount-idle", daemon=True)
                self._janitor.start()

    def _janitor_loop(self) -> None:
        while True:
            with self._locks_lock:
                if not self._idle_mounts or self._closed:
                    self._janitor = None
                    return
                first = min(self._idle_mounts.values())
            time.sleep(max(0.05, first - time.monotonic() + 0.01))
            self._unmount_idle()

    def _unmount_idle(self, everything: bool = False) -> None:
        """Unmounts the rootfs create left mounted once their time is up, unless a start or
        an attach has taken them over."""
        now = time.monotonic()
        with self._locks_lock:
            due = [cid for cid, t in self._idle_mounts.items() if everything or t <= now]
            for cid in due:
                del self._idle_mounts[cid]
        for cid in due:
            try:
                if self.store.get(cid) is None:
                    continue
                with self._lock(cid):
                    rec = self.store.get(cid)
                    if rec is not None and cid not in self._prepared and cid not in self._removing and \
                            rec["state"]["Status"] in ("created", "exited", "dead"):
                        self._unmount(cid)
            except Exception:  # noqa: BLE001 - the store may be closing
                pass

    def _warm(self) -> None:
        """A start is likely to follow: the supervisor starts paying the kernel's cgroup
        migration grace period now rather than when the init joins its cgroups."""
        from ..supervisor.client import SupervisorError
        try:
            self._call("warm")
        except (SupervisorError, OSError):
            pass

    def _unmount(self, cid: str) -> None:
        try:
            if self.images.snapshots.mounted(cid):
                self.images.snapshots.unmount(cid)
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ start
    def start(self, ref: str) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            rec = self._get(cid)
            st = rec["state"]
            if st["Status"] == "paused":
                raise Conflict("cannot start a paused container, try unpause instead")
            if st["Status"] == "running":
                raise NotModified("container already started")
            if cid in self._removing:
                raise Conflict(f"container {cid} is marked for removal and cannot be started")
            self.restarter.cancel(cid)
            failure: EngineError | None = None
            try:
                self._start_locked(rec)
            except EngineError as e:
                if not rec["host_config"].get("AutoRemove"):
                    raise
                failure = e
        if failure is not None:
            # Like dockerd: a container that was to be removed when it exits goes when its
            # start fails too (`docker run --rm` waits for that removal).
            try:
                self.remove(cid, force=True, volumes=True)
            except EngineError:
                pass
            raise failure
        self._emit(rec, "start")

    def _restart_start(self, cid: str) -> None:
        rec = self.store.get(cid)
        if rec is None or self._closed:
            return
        with self._lock(cid):
            rec = self.store.get(cid)
            if rec is None or rec["state"]["Status"] != "restarting" or cid in self._removing:
                return
            self.store.update_state(cid, RestartCount=int(rec["state"].get("RestartCount") or 0) + 1)
            rec = self.store.get(cid)
            try:
                self._start_locked(rec)
            except EngineError:
                return
        self._emit(rec, "start")

    def _prepare_locked(self, rec: dict) -> int:
        """Has the supervisor create the container (its init set up and waiting for start),
        unless that is done already; returns the init's pid. Raises SupervisorError, or
        EngineError when the rootfs cannot be mounted."""
        from ..supervisor.client import SupervisorError
        cid = rec["id"]
        pid = self._prepared.get(cid)
        if pid:
            return pid
        self._idle_mounts.pop(cid, None)
        cfg, hc = rec["config"], rec["host_config"]
        try:
            self.images.snapshots.mount(cid)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"failed to mount the rootfs: {e}") from None
        log_cfg = (hc.get("LogConfig") or {}).get("Config") or {}
        fields: dict[str, Any] = {
            "container": cid, "bundle": self._bundle(cid), "tty": bool(cfg.get("Tty")),
            "stdin": bool(cfg.get("OpenStdin")),
            "log": {"path": self._log_path(cid), "max_size": log_cfg.get("max-size") or None,
                    "max_file": int(log_cfg.get("max-file") or 0) or None}}
        size = hc.get("ConsoleSize")
        if cfg.get("Tty") and isinstance(size, list) and len(size) == 2 and all(size):
            fields["console_size"] = size
        try:
            try:
                created = self._call("create", **fields)
            except SupervisorError as e:
                if e.code != "conflict":
                    raise
                # A leftover of an earlier run: the supervisor's, or (after a supervisor
                # restart) one only the runtime still knows.
                self._discard_leftover(cid)
                created = self._call("create", **fields)
        except SupervisorError:
            self._unmount(cid)
            raise
        pid = int(created.get("pid") or 0)
        self._prepared[cid] = pid
        if _network.mode(hc) == "none":
            try:
                _network.loopback_up(pid)
            except OSError as e:
                self._prepared.pop(cid, None)
                self._discard_leftover(cid)
                self._unmount(cid)
                raise EngineError(f"failed to set up the container's network: {e}") from None
        return pid

    def _discard_leftover(self, cid: str) -> None:
        from ..supervisor.client import SupervisorError
        self._prepared.pop(cid, None)
        try:
            self._call("delete", container=cid)
        except SupervisorError:
            pass
        try:
            self._runtime().delete(cid, force=True)
        except Exception:  # noqa: BLE001 - nothing there
            pass

    def _start_locked(self, rec: dict) -> None:
        from ..supervisor.client import SupervisorError
        cid = rec["id"]
        try:
            reused = cid in self._prepared
            pid = self._prepare_locked(rec)
            try:
                reply = self._call("start", container=cid)
            except SupervisorError as e:
                if not reused or e.code not in ("not_found", "conflict"):
                    raise
                # What an attach prepared is gone (the supervisor restarted, the init was
                # killed): create it again.
                self._discard_leftover(cid)
                pid = self._prepare_locked(rec)
                reply = self._call("start", container=cid)
        except EngineError:
            self._prepared.pop(cid, None)
            raise
        except SupervisorError as e:
            self._prepared.pop(cid, None)
            try:
                self._call("delete", container=cid)
            except SupervisorError:
                pass
            self._unmount(cid)
            msg = _go_errors(str(e))
            low = msg.lower()
            code = 127 if ("no such file" in low or "not found" in low) else 126 if "permission denied" in low else 128
            self.store.update_state(cid, Status="exited" if rec["state"].get("StartedAt") != ZERO_TIME else "created",
                                    ExitCode=code, Error=msg, Pid=0)
            self._notify()
            raise EngineError(f"failed to create task for container: {msg}") from None
        self._prepared.pop(cid, None)
        self.store.update_state(cid, Status="running", Pid=pid, ExitCode=0, Error="", OOMKilled=False,
                                StartedAt=reply.get("started_at") or _now(), FinishedAt=ZERO_TIME,
                                ManuallyStopped=False, Paused=False)
        self._notify()
        self._watch(cid)

    def _watch(self, cid: str) -> None:
        """One thread per running container, blocked in the supervisor's ``wait``."""
        with self._locks_lock:
            if cid in self._waiters:
                return
            self._waiters.add(cid)
        threading.Thread(target=self._waiter, args=(cid,), name=f"wait-{cid[:12]}", daemon=True).start()

    def _waiter(self, cid: str) -> None:
        from ..supervisor.client import Client, SupervisorError
        try:
            while not self._closed:
                try:
                    reply = Client(self.exec_root).call("wait", container=cid)
                except SupervisorError as e:
                    if e.code == "not_found":
                        reply = self._exit_record(cid) or {"exit_code": 255, "oom_killed": False,
                                                            "finished_at": _now()}
                    else:
                        time.sleep(0.5)
                        continue
                break
            else:
                return
        finally:
            with self._locks_lock:
                self._waiters.discard(cid)
        self._on_exit(cid, reply)

    def _exit_record(self, cid: str) -> dict | None:
        try:
            with open(os.path.join(self.cdir(cid), "exit.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _on_exit(self, cid: str, reply: dict) -> None:
        from ..supervisor.client import SupervisorError
        with self._lock(cid):
            rec = self.store.get(cid)
            if rec is None or rec["state"]["Status"] not in ("running", "paused"):
                return
            code = int(reply.get("exit_code") or 0)
            oom = bool(reply.get("oom_killed"))
            finished = reply.get("finished_at") or _now()
            auto_remove = bool(rec["host_config"].get("AutoRemove")) and not self._closed
            if not auto_remove:  # (the removal below deletes it in the supervisor and unmounts)
                try:
                    self._call("delete", container=cid)
                except (SupervisorError, OSError):
                    pass
                self._unmount(cid)
            st = self.store.update_state(cid, Status="exited", Pid=0, ExitCode=code, OOMKilled=oom,
                                         FinishedAt=finished, Paused=False)
            rec["state"] = st
            self._notify()
        if oom:
            self._emit(rec, "oom")
        self._emit(rec, "die", exitCode=str(code))
        if rec["host_config"].get("AutoRemove") and not self._closed:
            try:
                self.remove(cid, force=True, volumes=True, _files_after=True)
            except EngineError:
                pass
            return
        policy = rec["host_config"].get("RestartPolicy") or {}
        if cid not in self._removing and not self._closed and _restart.should_restart(policy, st, code):
            ran = max(0.0, _parse_ts(finished) - _parse_ts(st.get("StartedAt")))
            self.store.update_state(cid, Status="restarting")
            self._notify()
            self.restarter.schedule(cid, ran)

    # ------------------------------------------------------------------ stop / kill / restart
    def _signal(self, cid: str, sig: int, all_procs: bool = False) -> None:
        from ..supervisor.client import SupervisorError
        try:
            self._call("kill", container=cid, signal=int(sig), all=all_procs)
        except SupervisorError as e:
            if e.code not in ("conflict", "not_found"):
                raise EngineError(str(e)) from None

    def _wait_status(self, cid: str, statuses: tuple[str, ...], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                rec = self.store.get(cid)
                if rec is None or rec["state"]["Status"] in statuses:
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(0.2 if left is None else min(0.2, left))

    def stop(self, ref: str, timeout: int | None = None, signal: str | int | None = None) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        self.store.update_state(cid, ManuallyStopped=True)
        if self.restarter.cancel(cid) or rec["state"]["Status"] == "restarting":
            self.store.update_state(cid, Status="exited")
            self._notify()
            return
        if rec["state"]["Status"] not in ("running", "paused"):
            raise NotModified("container already stopped")
        sig = _spec.parse_signal(signal if signal is not None else rec["config"].get("StopSignal"))
        if timeout is None or timeout == "":
            timeout = rec["config"].get("StopTimeout", DEFAULT_STOP_TIMEOUT)
        timeout = int(timeout)
        if rec["state"]["Status"] == "paused":
            self._thaw(cid)
        self._signal(cid, sig)
        if timeout < 0 or not self._wait_status(cid, ("exited", "created", "dead"), float(timeout)):
            if timeout >= 0:
                pass
            self._signal(cid, _signal.SIGKILL, all_procs=True)
            if not self._wait_status(cid, ("exited", "created", "dead"), 30.0):
                raise EngineError(f"container {cid} did not stop after SIGKILL")
        self._emit(rec, "stop")

    def kill(self, ref: str, signal: str | int | None = None) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        try:
            sig = _spec.parse_signal(signal or "SIGKILL")
        except _spec.SpecInputError as e:
            raise InvalidParameter(str(e)) from None
        if rec["state"]["Status"] not in ("running", "paused"):
            raise Conflict(f"Cannot kill container: {ref}: container {cid} is not running")
        if rec["state"]["Status"] == "paused" and sig == _signal.SIGKILL:
            self._signal(cid, sig)
            self._thaw(cid)
        else:
            self._signal(cid, sig)
        self._emit(rec, "kill", signal=str(sig))
        if sig == _signal.SIGKILL:
            self._wait_status(cid, ("exited", "created", "dead", "restarting"), 10.0)

    def restart(self, ref: str, timeout: int | None = None, signal: str | int | None = None) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        try:
            self.stop(cid, timeout, signal)
        except NotModified:
            pass
        self.start(cid)
        self._emit(self._get(cid), "restart")

    # ------------------------------------------------------------------ pause
    def _runtime(self):
        from ..runtime.container import Runtime
        return Runtime(root=self.runtime_root)

    def _thaw(self, cid: str) -> None:
        try:
            self._runtime().resume(cid)
        except Exception:  # noqa: BLE001
            pass
        self.store.update_state(cid, Status="running", Paused=False)

    def pause(self, ref: str) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            st = self._get(cid)["state"]
            if st["Status"] == "paused":
                raise Conflict(f"Container {cid} is already paused")
            if st["Status"] != "running":
                raise Conflict(f"Container {cid} is not running")
            try:
                self._runtime().pause(cid)
            except Exception as e:  # noqa: BLE001
                raise EngineError(f"cannot pause container {cid}: {e}") from None
            self.store.update_state(cid, Status="paused", Paused=True)
        self._emit(rec, "pause")

    def unpause(self, ref: str) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            if self._get(cid)["state"]["Status"] != "paused":
                raise Conflict(f"Container {cid} is not paused")
            try:
                self._runtime().resume(cid)
            except Exception as e:  # noqa: BLE001
                raise EngineError(f"cannot unpause container {cid}: {e}") from None
            self.store.update_state(cid, Status="running", Paused=False)
        self._emit(rec, "unpause")

    # ------------------------------------------------------------------ remove / rename
    def remove(self, ref: str, force: bool = False, volumes: bool = False, _files_after: bool = False) -> None:
        """Removes the container. With _files_after (an auto-remove), the record goes first and
        its files (rootfs mount, upper dir, logs) right after the waiters have been told: what
        `docker run --rm` waits for is the container's removal, the unmount and rm -rf need not
        hold it up; a daemon killed in between leaves files that reconcile() sweeps."""
        from ..supervisor.client import SupervisorError
        rec = self._get(ref)
        cid = rec["id"]
        status = rec["state"]["Status"]
        if status in ("running", "paused", "restarting") and not force:
            if status == "paused":
                raise Conflict(f"cannot remove container \"/{rec['name']}\": container is paused and must be "
                               "unpaused first")
            raise Conflict(f"cannot remove container \"/{rec['name']}\": container is {status}: stop the "
                           "container before removing or force remove")
        with self._locks_lock:
            if cid in self._removing:
                raise Conflict(f"removal of container {cid} is already in progress")
            self._removing.add(cid)
        try:
            self.restarter.cancel(cid, forget=True)
            if status in ("running", "paused"):
                self.store.update_state(cid, ManuallyStopped=True)
                if status == "paused":
                    self._signal(cid, _signal.SIGKILL, all_procs=True)
                    self._thaw(cid)
                self._signal(cid, _signal.SIGKILL, all_procs=True)
                self._wait_status(cid, ("exited", "created", "dead", "restarting"), 10.0)
            with self._lock(cid):
                self._prepared.pop(cid, None)
                if not _files_after:
                    try:
                        self._call("delete", container=cid)
                    except SupervisorError:
                        pass
                    try:
                        self.images.snapshots.remove(cid)
                    except Exception as e:  # noqa: BLE001
                        self.store.update_state(cid, Status="dead", Error=str(e))
                        raise EngineError(f"unable to remove filesystem for {cid}: {e}") from None
                    remove_tree(self.cdir(cid))
                for eid in self.store.execs_of(cid):
                    pass
                final = self.store.get(cid)
                if final is not None:
                    self._final_states[cid] = final["state"]
                    while len(self._final_states) > 256:
                        self._final_states.pop(next(iter(self._final_states)))
                if _files_after:
                    with self._files_cond:
                        self._files_pending += 1
                self.store.delete_container(cid)
            for m in rec["mounts"]:
                if m.get("Type") == "volume" and volumes:
                    v = self.store.volume(m.get("Name") or "")
                    if v is not None and v["anonymous"]:
                        try:
                            self.volumes.remove(v["name"])
                        except EngineError:
                            pass
        finally:
            with self._locks_lock:
                self._removing.discard(cid)
                self._locks.pop(cid, None)
        self._notify()
        self._emit(rec, "destroy")
        if _files_after:
            try:
                self._remove_files(cid)
            finally:
                with self._files_cond:
                    self._files_pending -= 1
                    self._files_cond.notify_all()

    def _remove_files(self, cid: str) -> None:
        """What is left of a container whose record is gone: its exited init in the supervisor
        (runtime state, cgroups), the rootfs (unmounted), upper and work dirs, the container
        directory."""
        from ..supervisor.client import SupervisorError
        try:
            self._call("delete", container=cid)
        except (SupervisorError, OSError):
            pass
        try:
            self.images.snapshots.remove(cid)
        except Exception:  # noqa: BLE001 - reconcile() tries again
            return
        remove_tree(self.cdir(cid))

    def _sweep_files(self) -> None:
        """Files of containers that have no record (a daemon killed during a removal)."""
        known = {r["id"] for r in self.store.all()}
        try:
            names = os.listdir(self.containers_dir)
        except OSError:
            return
        for name in names:
            if len(name) == 64 and name not in known and all(ch in "0123456789abcdef" for ch in name):
                self._remove_files(name)
                try:  # (what only the runtime still knows, after a supervisor restart)
                    self._runtime().delete(name, force=True)
                except Exception:  # noqa: BLE001 - nothing there
                    pass

    def rename(self, ref: str, new_name: str) -> None:
        rec = self._get(ref)
        new = (new_name or "").lstrip("/")
        if not new or not _names.valid(new):
            raise InvalidParameter(f"Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if new == rec["name"]:
            raise Conflict(f"Renaming a container with the same name as its current name")
        try:
            self.store.rename(rec["id"], new)
        except NameTaken as e:
            raise Conflict(f"Conflict. The container name \"/{e.name}\" is already in use by container "
                           f"\"{e.owner}\". You have to remove (or rename) that container to be able to reuse "
                           "that name.") from None
        self._emit(self._get(rec["id"]), "rename", oldName="/" + rec["name"])

    # ------------------------------------------------------------------ wait
    def wait(self, ref: str, condition: str = "not-running", timeout: float | None = None) -> dict:
        return self.wait_prepare(ref, condition, timeout)()

    def wait_prepare(self, ref: str, condition: str = "not-running", timeout: float | None = None):
        """Checks the container and the condition now (NotFound, InvalidParameter) and returns
        the blocking wait, which counts exits from this moment (the API answers a wait's headers
        before the client starts the container)."""
        rec = self._get(ref)
        condition = condition or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidParameter(f"invalid condition: \"{condition}\"")
        return lambda: self._wait(rec, condition, timeout)

    def _wait(self, rec: dict, condition: str, timeout: float | None) -> dict:
        cid = rec["id"]
        deadline = None if timeout is None else time.monotonic() + timeout
        started = rec["state"].get("StartedAt")
        with self._changed:
            while True:
                cur = self.store.get(cid)
                if cur is None:
                    # removed: its last state (an auto-remove follows the exit at once)
                    st = self._final_states.get(cid) or rec["state"]
                    return {"StatusCode": int(st.get("ExitCode") or 0), "Error": None}
                st = cur["state"]
                rec = cur
                if condition == "not-running" and st["Status"] in ("created", "exited", "dead"):
                    break
                if condition == "next-exit" and st["Status"] in ("exited", "dead", "restarting") and \
                        (st.get("StartedAt") != started or rec["state"]["Status"] != "running") and \
                        st.get("FinishedAt", ZERO_TIME) != ZERO_TIME and \
                        _parse_ts(st["FinishedAt"]) >= _parse_ts(started):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise EngineError("timed out waiting for the container")
                self._changed.wait(0.2 if left is None else min(0.2, left))
        err = {"Message": st["Error"]} if st.get("Error") else None
        return {"StatusCode": int(st.get("ExitCode") or 0), "Error": err}

    # ------------------------------------------------------------------ inspect / list
    def _state_shape(self, st: dict) -> dict:
        status = st["Status"]
        return {"Status": status, "Running": status in ("running", "paused", "restarting"), "Paused": status == "paused", "Restarting": status == "restarting",
                "OOMKilled": bool(st.get("OOMKilled")), "Dead": status == "dead", "Pid": int(st.get("Pid") or 0),
                "ExitCode": int(st.get("ExitCode") or 0), "Error": st.get("Error") or "",
                "StartedAt": st.get("StartedAt") or ZERO_TIME, "FinishedAt": st.get("FinishedAt") or ZERO_TIME}

    @staticmethod
    def _mount_shape(m: dict) -> dict:
        out = {"Type": m["Type"], "Source": m.get("Source") or "", "Destination": m["Destination"],
               "Mode": m.get("Mode") or "", "RW": bool(m.get("RW")), "Propagation": m.get("Propagation") or ""}
        if m["Type"] == "volume":
            out = {"Type": "volume", "Name": m.get("Name"), "Source": m.get("Source") or "",
                   "Destination": m["Destination"], "Driver": m.get("Driver") or "local", "Mode": m.get("Mode") or "",
                   "RW": bool(m.get("RW")), "Propagation": ""}
        return out

    def inspect(self, ref: str, size: bool = False) -> dict:
        rec = self._get(ref)
        cid, st, cfg = rec["id"], rec["state"], rec["config"]
        hc = dict(rec["host_config"])
        for k, v in (("Binds", None), ("NetworkMode", "none"), ("PortBindings", {}), ("AutoRemove", False),
                     ("VolumeDriver", ""), ("VolumesFrom", None), ("CapAdd", None), ("CapDrop", None),
                     ("Dns", []), ("DnsOptions", []), ("DnsSearch", []), ("ExtraHosts", None),
                     ("IpcMode", "private"), ("Privileged", False), ("PublishAllPorts", False),
                     ("ReadonlyRootfs", False), ("SecurityOpt", None), ("ShmSize", _spec.DEFAULT_SHM),
                     ("Memory", 0), ("MemorySwap", 0), ("NanoCpus", 0), ("CpuShares", 0), ("CpuPeriod", 0),
                     ("CpuQuota", 0), ("CpusetCpus", ""), ("CpusetMems", ""), ("PidsLimit", None),
                     ("Ulimits", None), ("Devices", []), ("Init", None), ("Tmpfs", None), ("Sysctls", None),
                     ("Mounts", None), ("OomKillDisable", False), ("GroupAdd", None), ("ConsoleSize", [0, 0])):
            hc.setdefault(k, v)
        # What the container has (the default is "none" until there is a bridge), everywhere.
        hc["NetworkMode"] = _network.mode(hc)
        out = {
            "Id": cid,
            "Created": _iso(rec["created"]),
            "Path": st.get("Path", ""),
            "Args": st.get("Args", []),
            "State": self._state_shape(st),
            "Image": rec["image_id"],
            "ResolvConfPath": os.path.join(self.cdir(cid), "resolv.conf"),
            "HostnamePath": os.path.join(self.cdir(cid), "hostname"),
            "HostsPath": os.path.join(self.cdir(cid), "hosts"),
            "LogPath": self._log_path(cid),
            "Name": "/" + rec["name"],
            "RestartCount": int(st.get("RestartCount") or 0),
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": self.store.execs_of(cid) or None,
            "HostConfig": hc,
            "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": os.path.join(self.cdir(cid), "rootfs"),
                                                         "UpperDir": os.path.join(self.cdir(cid), "upper"),
                                                         "WorkDir": os.path.join(self.cdir(cid), "work")}},
            "Mounts": [self._mount_shape(m) for m in rec["mounts"]],
            "Config": {k: v for k, v in cfg.items()},
            "NetworkSettings": _network.settings(cid, hc, int(st.get("Pid") or 0)
                                                 if st["Status"] in ("running", "paused") else 0),
        }
        out["Config"]["Image"] = cfg.get("Image") or rec["image_ref"]
        return out

    def _status_text(self, st: dict) -> str:
        s = st["Status"]
        now = time.time()
        if s in ("running", "paused"):
            text = "Up " + duration(now - _parse_ts(st.get("StartedAt")))
            return text + " (Paused)" if s == "paused" else text
        if s == "restarting":
            return f"Restarting ({int(st.get('ExitCode') or 0)}) " + \
                duration(now - _parse_ts(st.get("FinishedAt"))) + " ago"
        if s == "exited":
            return f"Exited ({int(st.get('ExitCode') or 0)}) " + duration(now - _parse_ts(st.get("FinishedAt"))) + " ago"
        if s == "dead":
            return "Dead"
        if s == "removing":
            return "Removal In Progress"
        return "Created"

    def list(self, all: bool = False, filters: dict[str, list[str]] | None = None, limit: int = -1,
             size: bool = False) -> list[dict]:
        filters = {k: (v if isinstance(v, list) else [v]) for k, v in (filters or {}).items()}
        out = []
        for rec in self.store.all():
            st = rec["state"]
            if not all and st["Status"] not in ("running", "paused", "restarting") and not filters.get("status"):
                continue
            if not self._filter(rec, filters):
                continue
            path, args = st.get("Path", ""), st.get("Args", [])
            cmd = " ".join([path, *args]) if path else ""
            net_hc, net_settings = _network.summary(rec["id"], rec["host_config"], int(st.get("Pid") or 0)
                                                    if st["Status"] in ("running", "paused") else 0)
            out.append({
                "Id": rec["id"], "Names": ["/" + rec["name"]], "Image": rec["config"].get("Image") or rec["image_ref"],
                "ImageID": rec["image_id"], "Command": cmd, "Created": int(rec["created"]), "Ports": [],
                "Labels": rec["config"].get("Labels") or {}, "State": st["Status"], "Status": self._status_text(st),
                "HostConfig": net_hc, "NetworkSettings": net_settings,
                "Mounts": [self._mount_shape(m) for m in rec["mounts"]],
            })
            if 0 < limit <= len(out):
                break
        return out

    def _filter(self, rec: dict, filters: dict[str, list[str]]) -> bool:
        st = rec["state"]
        for key, values in filters.items():
            if not values:
                continue
            if key == "status":
                for v in values:
                    if v not in ("created", "restarting", "running", "removing", "paused", "exited", "dead"):
                        raise InvalidParameter(f"invalid filter 'status={v}'")
                if st["Status"] not in values:
                    return False
            elif key == "name":
                import re
                if not any(re.search(v.lstrip("/") if v.startswith("/") and False else v, "/" + rec["name"])
                           for v in values):
                    return False
            elif key == "id":
                if not any(rec["id"].startswith(v) for v in values):
                    return False
            elif key == "label":
                labels = rec["config"].get("Labels") or {}
                for v in values:
                    k, sep, want = v.partition("=")
                    if k not in labels or (sep and labels[k] != want):
                        return False
            elif key == "exited":
                if st["Status"] != "exited" or str(st.get("ExitCode")) not in values:
                    return False
            elif key == "ancestor":
                if not any(v in (rec["image_ref"], rec["image_id"], rec["config"].get("Image"))
                           or rec["image_id"].split(":")[-1].startswith(v) for v in values):
                    return False
            elif key == "volume":
                if not any(m.get("Name") == v or m["Destination"] == v for m in rec["mounts"] for v in values):
                    return False
            elif key in ("before", "since", "network", "health", "publish", "expose", "is-task"):
                continue
            else:
                raise InvalidParameter(f"invalid filter '{key}'")
        return True

    # ------------------------------------------------------------------ logs
    def logs(self, ref: str, stdout: bool = True, stderr: bool = True, follow: bool = False,
             since: Any = None, until: Any = None, tail: Any = "all", timestamps: bool = False,
             stop: threading.Event | None = None) -> Iterator[tuple[str, bytes]]:
        rec = self._get(ref)
        cid = rec["id"]
        since_t, until_t = _parse_time_arg(since), _parse_time_arg(until)
        n = None if tail in (None, "", "all") or int(tail) < 0 else int(tail)
        path = self._log_path(cid)
        want = {"stdout": stdout, "stderr": stderr}

        def emit(line: bytes) -> tuple[str, bytes] | None:
            try:
                e = json.loads(line)
            except ValueError:
                return None
            s = e.get("stream", "stdout")
            if not want.get(s, False):
                return None
            t = e.get("time", "")
            if since_t is not None or until_t is not None:
                ts = _parse_ts(t)
                if since_t is not None and ts < since_t:
                    return None
                if until_t is not None and ts > until_t:
                    return None
            data = e.get("log", "").encode("utf-8", "surrogateescape")
            if timestamps:
                data = t.encode() + b" " + data
            return s, data

        files = [f"{path}.{i}" for i in range(9, 0, -1)] + [path]
        lines: list[bytes] = []
        for p in files:
            try:
                with open(p, "rb") as f:
                    lines += f.read().splitlines()
            except OSError:
                pass
        pos_inode = None
        pos = 0
        try:
            st = os.stat(path)
            pos_inode, pos = st.st_ino, st.st_size
        except OSError:
            pass
        if n is not None:
            selected = [x for x in (emit(l) for l in lines) if x]
            selected = selected[-n:] if n else []
            yield from selected
        else:
            for l in lines:
                x = emit(l)
                if x:
                    yield x
        if not follow:
            return
        buf = b""
        f = None
        try:
            while stop is None or not stop.is_set():
                if f is None:
                    try:
                        f = open(path, "rb")
                        st = os.fstat(f.fileno())
                        if st.st_ino == pos_inode:
                            f.seek(pos)
                        pos_inode = st.st_ino
                    except OSError:
                        f = None
                chunk = f.read() if f is not None else b""
                if chunk:
                    buf += chunk
                    *complete, buf = buf.split(b"\n")
                    for l in complete:
                        x = emit(l)
                        if x:
                            yield x
                    continue
                # rotated? reopen the new file
                try:
                    if f is not None and os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                        f.close()
                        f, pos_inode, pos = None, None, 0
                        continue
                except OSError:
                    pass
                cur = self.store.get(cid)
                if cur is None or cur["state"]["Status"] not in ("running", "paused", "restarting"):
                    # drain what the supervisor flushed at exit, then stop
                    time.sleep(0.05)
                    chunk = f.read() if f is not None else b""
                    if chunk:
                        buf += chunk
                        continue
                    return
                if until_t is not None and time.time() > until_t:
                    return
                with self._changed:
                    self._changed.wait(0.1)
        finally:
            if f is not None:
                f.close()

    # ------------------------------------------------------------------ attach
    def attach(self, ref: str, stdin: bool = False, stdout: bool = True, stderr: bool = True):
        """A socket with the container's stdio (see supervisor.client.Client.attach).

        A container that is not running (created, or exited: `docker start -a`) is created
        in the supervisor first, its init waiting for the start, so the stream carries its
        output from the first byte and its stdin from the start. When that fails (the start
        will fail the same way and report it), the stream is an empty one."""
        from ..supervisor.client import SupervisorError
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            rec = self._get(cid)
            status = rec["state"]["Status"]
            if status == "paused":
                raise Conflict(f"container {ref} is paused, unpause the container before attach")
            if status == "restarting":
                raise Conflict(f"container {ref} is restarting, wait until the container is running")
            if status not in ("running", "created", "exited") or cid in self._removing:
                raise Conflict(f"container {ref} is {status}: it cannot be attached to")
            if status != "running":
                try:
                    self._prepare_locked(rec)
                except (SupervisorError, EngineError):
                    return _ended_stream()
            try:
                self._sup()
                return self._sup_client.attach(container=cid, stdin=stdin, stdout=stdout, stderr=stderr)
            except SupervisorError as e:
                if e.code == "not_found":  # it has just exited (and been deleted)
                    return _ended_stream()
                raise EngineError(str(e)) from None

    def resize(self, ref: str, height: int, width: int, exec_id: str | None = None) -> None:
        from ..supervisor.client import SupervisorError
        fields = {"exec_id": exec_id} if exec_id else {"container": self._get(ref)["id"]}
        try:
            self._call("resize", height=int(height), width=int(width), **fields)
        except SupervisorError as e:
            if e.code == "not_found":
                raise NotFound(str(e)) from None
            raise Conflict(str(e)) from None

    # ------------------------------------------------------------------ exec
    def exec_create(self, ref: str, body: dict) -> str:
        rec = self._get(ref)
        if rec["state"]["Status"] == "paused":
            raise Conflict(f"Container {rec['id']} is paused, unpause the container before exec")
        if rec["state"]["Status"] != "running":
            raise Conflict(f"Container {rec['id']} is not running")
        cmd = _spec._strslice(body.get("Cmd"))
        if not cmd:
            raise InvalidParameter("No exec command specified")
        eid = secrets.token_hex(32)
        config = {"Cmd": cmd, "Env": body.get("Env") or [], "User": body.get("User") or "",
                  "WorkingDir": body.get("WorkingDir") or "", "Tty": bool(body.get("Tty")),
                  "AttachStdin": bool(body.get("AttachStdin")), "AttachStdout": bool(body.get("AttachStdout")),
                  "AttachStderr": bool(body.get("AttachStderr")), "Privileged": bool(body.get("Privileged")),
                  "ConsoleSize": body.get("ConsoleSize")}
        self.store.add_exec(eid, rec["id"], config, {"Running": False, "ExitCode": None, "Pid": 0})
        self._emit(rec, "exec_create: " + " ".join(cmd), execID=eid)
        return eid

    def _exec_process(self, rec: dict, config: dict) -> dict:
        with open(os.path.join(self._bundle(rec["id"]), "config.json")) as f:
            oci = json.load(f)
        proc = dict(oci["process"])
        proc["args"] = list(config["Cmd"])
        proc["env"] = _spec.merge_env(proc.get("env") or [], config.get("Env") or [])
        if config.get("Tty") and not any(e.startswith("TERM=") for e in proc["env"]):
            proc["env"].append("TERM=xterm")
        if config.get("WorkingDir"):
            proc["cwd"] = config["WorkingDir"]
        if config.get("User"):
            rootfs = os.path.join(self.cdir(rec["id"]), "rootfs")
            try:
                proc["user"] = _spec.resolve_user(rootfs, config["User"])
            except _spec.SpecInputError as e:
                raise InvalidParameter(str(e)) from None
            if proc["user"]["uid"] != 0:
                caps = proc.get("capabilities") or {}
                proc["capabilities"] = {**caps, "effective": [], "permitted": []}
        if config.get("Privileged"):
            caps = _spec.host_capabilities()
            proc["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
        proc["terminal"] = bool(config.get("Tty"))
        proc.pop("consoleSize", None)
        return proc

    def exec_start(self, exec_id: str, detach: bool = False, tty: bool | None = None,
                   console_size: list[int] | None = None):
        """Starts the exec; returns the attached socket (multiplexed frames without a tty)
        or None when detached. Its exit is recorded by a waiter thread."""
        from ..supervisor.client import SupervisorError
        ex = self.store.exec(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        if ex["state"].get("Running") or ex["state"].get("ExitCode") is not None:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        rec = self._get(ex["container_id"])
        if rec["state"]["Status"] != "running":
            raise Conflict(f"Container {rec['id']} is not running")
        config = ex["config"]
        if tty is not None:
            config = dict(config, Tty=bool(tty))
        process = self._exec_process(rec, config)
        size = console_size or config.get("ConsoleSize")
        try:
            self._sup()
            if detach:
                fields: dict[str, Any] = {"container": rec["id"], "exec_id": exec_id, "process": process,
                                          "tty": bool(config["Tty"]), "stdin": False, "detach": True}
                pid = int(self._call("exec", **fields)["pid"])
                sock = None
            else:
                pid, sock = self._sup_client.exec_attached(rec["id"], exec_id, process, tty=bool(config["Tty"]),
                                                           stdin=bool(config.get("AttachStdin")),
                                                           console_size=size if size and any(size) else None)
        except SupervisorError as e:
            msg = str(e)
            low = msg.lower()
            code = 127 if ("no such file" in low or "not found" in low) else 126
            self.store.update_exec(exec_id, Running=False, ExitCode=code, Error=msg)
            if e.code == "conflict":
                raise Conflict(msg) from None
            raise EngineError(f"OCI runtime exec failed: {msg}") from None
        self.store.update_exec(exec_id, Running=True, Pid=pid)
        self._emit(rec, "exec_start: " + " ".join(config["Cmd"]), execID=exec_id)
        threading.Thread(target=self._exec_waiter, args=(exec_id, rec), daemon=True).start()
        return sock

    def _exec_waiter(self, exec_id: str, rec: dict) -> None:
        from ..supervisor.client import Client, SupervisorError
        try:
            reply = Client(self.exec_root).call("wait", exec_id=exec_id)
            code = int(reply.get("exit_code") or 0)
        except SupervisorError:
            code = 137
        try:
            self.store.update_exec(exec_id, Running=False, ExitCode=code, Pid=0)
        except Exception:  # noqa: BLE001 - the container (and its execs) may be gone
            return
        self._notify()
        self._emit(rec, "exec_die", execID=exec_id, exitCode=str(code))

    def exec_inspect(self, exec_id: str) -> dict:
        ex = self.store.exec(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        c, s = ex["config"], ex["state"]
        return {"ID": exec_id, "Running": bool(s.get("Running")), "ExitCode": s.get("ExitCode"),
                "ProcessConfig": {"tty": c["Tty"], "entrypoint": c["Cmd"][0], "arguments": c["Cmd"][1:],
                                  "privileged": c["Privileged"], "user": c["User"]},
                "OpenStdin": c["AttachStdin"], "OpenStderr": c["AttachStderr"], "OpenStdout": c["AttachStdout"],
                "CanRemove": False, "ContainerID": ex["container_id"], "DetachKeys": "",
                "Pid": int(s.get("Pid") or 0)}

    def exec_wait(self, exec_id: str, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                ex = self.store.exec(exec_id)
                if ex is None:
                    raise NotFound(f"No such exec instance: {exec_id}")
                if not ex["state"].get("Running") and ex["state"].get("ExitCode") is not None:
                    return int(ex["state"]["ExitCode"])
                if time.monotonic() > deadline:
                    raise EngineError("timed out waiting for the exec")
                self._changed.wait(0.1)

    # ------------------------------------------------------------------ export
    def export(self, ref: str, out: Any) -> None:
        """Writes the container's filesystem (the merged view its process sees) as a tar."""
        import tarfile
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            mounted_here = not self.images.snapshots.mounted(cid)
            if mounted_here:
                try:
                    self.images.snapshots.mount(cid)
                except Exception as e:  # noqa: BLE001
                    raise EngineError(f"failed to mount the rootfs: {e}") from None
        try:
            rootfs = self.images.snapshots.get(cid).rootfs
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(os.listdir(rootfs)):
                    tar.add(os.path.join(rootfs, name), arcname=name, recursive=True)
        finally:
            if mounted_here:
                with self._lock(cid):
                    current = self.store.get(cid)
                    if current is not None and cid not in self._prepared and \
                            current["state"]["Status"] in ("created", "exited", "dead"):
                        self._unmount(cid)

    # ------------------------------------------------------------------ top / stats
    def top(self, ref: str, ps_args: str = "-ef") -> dict:
        rec = self._get(ref)
        if rec["state"]["Status"] not in ("running", "paused"):
            raise Conflict(f"Container {rec['id']} is not running")
        try:
            pids = set(self._runtime().pids(rec["id"]))
        except Exception as e:  # noqa: BLE001
            raise EngineError(str(e)) from None
        args = (ps_args or "-ef").split()
        out = subprocess.run(["ps", *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise EngineError(f"Error running ps: {out.stderr.strip()}")
        lines = out.stdout.splitlines()
        titles = lines[0].split()
        try:
            pidx = titles.index("PID")
        except ValueError:
            raise EngineError("Couldn't find PID field in ps output") from None
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pidx and fields[pidx].isdigit() and int(fields[pidx]) in pids:
                procs.append(fields)
        return {"Titles": titles, "Processes": procs}

    def stats(self, ref: str) -> dict:
        rec = self._get(ref)
        out: dict[str, Any] = {"id": rec["id"], "name": "/" + rec["name"], "read": _now(),
                               "pids_stats": {}, "memory_stats": {}, "cpu_stats": {}}
        if rec["state"]["Status"] not in ("running", "paused"):
            return out
        try:
            pids = self._runtime().pids(rec["id"])
            out["pids_stats"] = {"current": len(pids)}
        except Exception:  # noqa: BLE001
            pass
        return out

    # ------------------------------------------------------------------ volumes
    def volume_create(self, body: dict | None = None) -> dict:
        body = body or {}
        return self.volumes.create(body.get("Name") or "", body.get("Driver") or "local", body.get("Labels"),
                                   body.get("DriverOpts"))

    def volume_list(self, filters: dict | None = None) -> dict:
        return self.volumes.list(filters)

    def volume_inspect(self, name: str) -> dict:
        return self.volumes.inspect(name)

    def volume_remove(self, name: str, force: bool = False) -> None:
        self.volumes.remove(name, force)

    def volume_prune(self, filters: dict | None = None) -> dict:
        return self.volumes.prune(filters)

    # ------------------------------------------------------------------ system
    def info(self) -> dict:
        recs = self.store.all()
        count = lambda *s: sum(1 for r in recs if r["state"]["Status"] in s)  # noqa: E731
        return {"ID": "", "Containers": len(recs), "ContainersRunning": count("running", "restarting"),
                "ContainersPaused": count("paused"), "ContainersStopped": count("exited", "created", "dead"),
                "Images": len(self.images.list()), "Driver": "overlay2", "DockerRootDir": self.root,
                "Name": os.uname().nodename, "OperatingSystem": "linux", "OSType": "linux",
                "Architecture": os.uname().machine, "NCPU": os.cpu_count() or 1,
                "KernelVersion": os.uname().release, "ServerVersion": VERSION, "LoggingDriver": "json-file",
                "CgroupDriver": "cgroupfs", "DefaultRuntime": "sampan", "SecurityOptions": ["name=seccomp,profile=builtin"],
                "Runtimes": {"sampan": {"path": "sampan-runc"}}, "Warnings": []}

    def version(self) -> dict:
        return {"Version": VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": "1.24", "Os": "linux",
                "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
                "KernelVersion": os.uname().release, "Components": [{"Name": "Engine", "Version": VERSION}]}

    def events_stream(self, since: Any = None, until: Any = None, filters: dict | None = None,
                      stop: threading.Event | None = None) -> Iterator[dict]:
        return self.events.subscribe(_parse_time_arg(since), _parse_time_arg(until), filters, stop)

    events_ = events_stream

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> None:
        """After a (re)start of the engine: match state.db with the supervisor and apply
        restart policies."""
        self._sweep_files()
        recs = [r for r in self.store.all() if r["state"]["Status"] in ("running", "paused", "restarting")]
        if not recs and not any(r["host_config"].get("RestartPolicy", {}).get("Name") in ("always", "unless-stopped")
                                for r in self.store.all()):
            return
        try:
            live = {c["container"]: c for c in self._call("list")["containers"]}
        except Exception:  # noqa: BLE001
            live = {}
        for rec in recs:
            cid = rec["id"]
            c = live.get(cid)
            if c is not None and c["status"] == "running":
                self._watch(cid)
                continue
            if c is not None and c["status"] == "exited":
                self._watch(cid)  # wait answers at once
                continue
            ex = self._exit_record(cid) or {"exit_code": 255, "oom_killed": False, "finished_at": _now()}
            if rec["state"]["Status"] == "restarting":
                self.store.update_state(cid, Status="running")
            self._on_exit(cid, ex)
        for rec in self.store.all():
            if rec["state"]["Status"] in ("exited", "created") and rec["state"].get("StartedAt") != ZERO_TIME and \
                    _restart.restart_at_daemon_start(rec["host_config"].get("RestartPolicy") or {}, rec["state"]):
                if rec["state"]["Status"] == "exited" and not self.restarter.pending(rec["id"]):
                    try:
                        self.start(rec["id"])
                    except EngineError:
                        pass
