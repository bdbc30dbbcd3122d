"""sampan-supervisor --root R --exec-root E: serve the containers of one engine root."""
from __future__ import annotations

import os
import sys


def entry(argv: list[str] | None = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(prog="sampan-supervisor", description=__doc__)
    from .. import paths
    parser.add_argument("--root", default=paths.engine_root())
    parser.add_argument("--exec-root", default=paths.exec_root())
    args = parser.parse_args(argv)
    from .client import lock_exclusive
    lock = lock_exclusive(args.exec_root)
    if lock is None:
        print("sampan-supervisor: another supervisor serves " + args.exec_root, file=sys.stderr)
        sys.exit(0)
    # The inits forked from us hold our fds until their execve (a created container waits for
    # its start): none of them may keep the lock, or no supervisor could follow this one.
    # (once: a child that forks again must not close whatever reuses the number)
    held = [lock]

    def drop_lock() -> None:
        while held:
            os.close(held.pop())

    os.register_at_fork(after_in_child=drop_lock)
    from .server import main
    sys.exit(main(args.root, args.exec_root))


if __name__ == "__main__":
    entry()
