"""What the builder needs from the engine for its step containers (build cannot import
engine/): a RUN step's container, made from the step's image and run to its end with its
output streamed; a metadata or WORKDIR step's, only created (as dockerd's builder does: the
engine makes the WorkingDir in its rootfs). The builder diffs the container's snapshot into
the step's layer. ``engine/buildsteps.py`` implements it."""
from __future__ import annotations

import threading
from typing import Callable, Protocol

# output(stream, data): stream 1 = stdout, 2 = stderr, as the container wrote it.
Output = Callable[[int, bytes], None]


class StepContainer(Protocol):
    """A step's container: created, or run until its process exited."""

    id: str
    exit_code: int
    rootfs_key: str   # its snapshot in the image store (for snapshots.get / diff)

    def remove(self) -> None:
        """Remove the container with its snapshot and anonymous volumes (idempotent)."""


class StepRunner(Protocol):
    def create(self, image_id: str, config: dict) -> StepContainer:
        """Create (not start) a container from ``image_id`` with ``config``; no network."""

    def run(self, image_id: str, config: dict, *, network: str, extra_hosts: list[str],
            started: Callable[[str], None], output: Output, cancel: threading.Event | None = None,
            resources: dict | None = None) -> StepContainer:
        """Create a container from ``image_id`` with ``config`` (a container.Config: Cmd, Env,
        User, WorkingDir, Entrypoint, Volumes, ...), call ``started(container id)`` before its
        process runs, stream its output and return once it has exited (killed when ``cancel``
        is set meanwhile). ``resources`` are HostConfig fields (Memory, CpuShares, ShmSize,
        Ulimits, CgroupParent, ...). A container it made is removed again when it raises."""
