"""A container's state machine: its states, the transitions between them, and the checks (with
Docker's messages) that an operation makes of the state it finds.

Every change of a container's Status goes through ``check_transition`` (the engine's
``_set_status``); every operation that depends on the state asks ``require``.
"""
from __future__ import annotations

from enum import Enum
from ..errors import Conflict, EngineError, NotModified


class Status(str, Enum):
    """State.Status as Docker reports it."""
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


ALL = tuple(s.value for s in Status)
# Docker's State.Running: the container has (or is about to have again) a process.
ACTIVE = frozenset({Status.RUNNING, Status.PAUSED, Status.RESTARTING})
# A process exists in the supervisor (signals, pids, stats make sense).
LIVE = frozenset({Status.RUNNING, Status.PAUSED})
# No process and none coming: what `wait` (not-running) and the rootfs unmount wait for.
STOPPED = frozenset({Status.CREATED, Status.EXITED, Status.DEAD})

# current -> the states it may go to. A start that fails leaves created or exited as it was.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset({Status.CREATED, Status.RUNNING, Status.REMOVING, Status.DEAD}),
    Status.RUNNING: frozenset({Status.PAUSED, Status.EXITED}),
    Status.PAUSED: frozenset({Status.RUNNING, Status.EXITED}),
    Status.RESTARTING: frozenset({Status.RUNNING, Status.EXITED, Status.REMOVING, Status.DEAD}),
    Status.EXITED: frozenset({Status.EXITED, Status.RUNNING, Status.RESTARTING, Status.REMOVING, Status.DEAD}),
    Status.REMOVING: frozenset({Status.DEAD}),
    Status.DEAD: frozenset({Status.DEAD, Status.REMOVING}),
}


def status_of(state: dict) -> Status:
    return Status(state["Status"])


def check_transition(cid: str, current: Status, target: Status) -> None:
    """Raises Conflict unless `current` may become `target`."""
    if target not in TRANSITIONS[current]:
        raise Conflict(f"container {cid}: cannot go from {current.value} to {target.value}")


# operation -> [(the states it refuses, the error, Docker's message)]; the message may name
# the container as the user gave it ({ref}), its {id}, {name} and {status}.
RULES: dict[str, list[tuple[frozenset[Status], type[EngineError], str]]] = {
    "start": [
        (frozenset({Status.PAUSED}), Conflict, "cannot start a paused container, try unpause instead"),
        (frozenset({Status.RUNNING}), NotModified, "container already started"),
        (frozenset({Status.REMOVING, Status.DEAD}), Conflict,
         "container {id} is marked for removal and cannot be started"),
    ],
    "stop": [
        (STOPPED | {Status.REMOVING}, NotModified, "container already stopped"),
    ],
    "kill": [
        (frozenset(Status) - LIVE, Conflict, "Cannot kill container: {ref}: container {id} is not running"),
    ],
    "pause": [
        (frozenset({Status.PAUSED}), Conflict, "Container {id} is already paused"),
        (frozenset(Status) - {Status.RUNNING}, Conflict, "Container {id} is not running"),
    ],
    "unpause": [
        (frozenset(Status) - {Status.PAUSED}, Conflict, "Container {id} is not paused"),
    ],
    "remove": [  # without force
        (frozenset({Status.PAUSED}), Conflict,
         "cannot remove container \"/{name}\": container is paused and must be unpaused first"),
        (frozenset({Status.RUNNING, Status.RESTARTING}), Conflict,
         "cannot remove container \"/{name}\": container is {status}: stop the container before removing "
         "or force remove"),
    ],
    "exec": [
        (frozenset({Status.PAUSED}), Conflict, "Container {id} is paused, unpause the container before exec"),
        (frozenset(Status) - {Status.RUNNING}, Conflict, "Container {id} is not running"),
    ],
    "attach": [
        (frozenset({Status.PAUSED}), Conflict, "container {ref} is paused, unpause the container before attach"),
        (frozenset({Status.RESTARTING}), Conflict,
         "container {ref} is restarting, wait until the container is running"),
        (frozenset({Status.REMOVING, Status.DEAD}), Conflict, "container {ref} is {status}: it cannot be attached to"),
    ],
    "processes": [  # top: the container must have processes
        (frozenset(Status) - LIVE, Conflict, "Container {id} is not running"),
    ],
}


def require(operation: str, status: Status, ref: str, cid: str, name: str) -> None:
    """Raises the error Docker gives for `operation` on a container in `status`."""
    for refused, error, message in RULES[operation]:
        if status in refused:
            raise error(message.format(ref=ref, id=cid, name=name, status=status.value))
