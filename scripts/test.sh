#!/usr/bin/env bash
# The second command: makes sure the machine is set up (scripts/setup.sh is idempotent and
# quick when nothing is missing), then runs the whole test suite. Arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
./scripts/setup.sh
exec .venv/bin/pytest "$@"
