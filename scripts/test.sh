#!/usr/bin/env bash
# The second command: makes sure the machine is set up (scripts/setup.sh is idempotent and
# quick when nothing is missing), then runs the whole test suite. Arguments go to pytest.
#
# The suite runs on SAMPAN_TEST_WORKERS pytest-xdist workers (default 4: the container tests
# wait on processes and I/O more than they compute, so they overlap well even on 2 cores).
# --dist loadscope hands out whole test modules (a module-wide daemon starts once), and the
# modules sharing a fixed host resource as one unit (tests/conftest.py, SHARED_HOST_RESOURCES).
# SAMPAN_TEST_WORKERS=0 runs them all in this process, one after the other.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
./scripts/setup.sh
workers=${SAMPAN_TEST_WORKERS:-4}
if [ "$workers" = 0 ]; then
  exec .venv/bin/pytest "$@"
fi
exec .venv/bin/pytest -n "$workers" --dist loadscope "$@"
