#!/usr/bin/env bash
# The first command on a fresh Debian 12 machine, as root: installs sampan and everything
# it needs (scripts/setup.sh), then runs a busybox container through `sampan-runc run`, and
# one through the engine (`sampan run`, which starts sampand, the Docker API daemon).
# RUNTIME=runc ./scripts/install.sh runs the first container with runc.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it installs packages and runs containers)" >&2
  exit 1
fi

./scripts/setup.sh
rootfs=$(./scripts/build-images.sh)

runtime=${RUNTIME:-sampan-runc}
if ! runtime_bin=$(command -v "$runtime"); then
  echo "install.sh: runtime '$runtime' not found" >&2
  exit 1
fi
name=$(basename "$runtime_bin")

# A bundle: a copy of the busybox rootfs and the runtime's default config.json (runc's
# `spec` format), running a script that shows what the container sees instead of `sh`.
work=$(mktemp -d /tmp/sampan-install.XXXXXX)
id=sampan-install-$$
cleanup() {
  "$runtime_bin" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bundle" "$work/state"
cp -a "$rootfs" "$work/bundle/rootfs"
(cd "$work/bundle" && "$runtime_bin" spec)

cat > "$work/bundle/rootfs/hello.sh" <<SCRIPT
echo "Hello from a busybox container started by '$name run'."
echo "  hostname:  \$(hostname)  (the host is $(hostname))"
echo "  identity:  \$(id)"
echo "  my PID:    \$\$  (PID 1 of its own PID namespace)"
echo "  network:   \$(ls /sys/class/net | paste -sd ' ' -)  (its own network namespace)"
echo "  root fs:   \$(grep ' / ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
echo "  the processes it can see:"
ps -o pid,user,comm
SCRIPT

.venv/bin/python -I - "$work/bundle/config.json" <<'PY'
import json, sys

with open(sys.argv[1]) as f:
    config = json.load(f)
config["process"]["terminal"] = False  # works without a tty too (CI)
config["process"]["args"] = ["sh", "/hello.sh"]
config["hostname"] = "sampan-demo"
with open(sys.argv[1], "w") as f:
    json.dump(config, f, indent=2)
PY

echo "==> $runtime_bin run --bundle $work/bundle $id"
status=0
"$runtime_bin" --root "$work/state" run --bundle "$work/bundle" "$id" || status=$?
if [ "$status" != 0 ]; then
  echo "install.sh: the container failed (exit $status)" >&2
  exit "$status"
fi

echo "==> sampan image bootstrap busybox; sampan run --rm busybox ..."
sampan image bootstrap busybox >/dev/null
sampan run --rm --name sampan-hello busybox sh -c 'echo "Hello from the engine: $(hostname), $(id -un), $(ls /sys/class/net)"'
echo "==> sampan is set up (sampand answers on unix:///run/sampan/sampan.sock;"
echo "    DOCKER_HOST=unix:///run/sampan/sampan.sock docker ps works too). Next: ./scripts/test.sh"
