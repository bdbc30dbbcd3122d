#!/usr/bin/env bash
# Installs everything sampan and its tests need on a Debian machine (run as root); idempotent.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

packages=(python3-venv busybox-static libseccomp2 runc containerd docker.io iproute2 iptables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The pyenv shim costs ~150 ms a start; the venv's own interpreter does not.
if [ ! -x .venv/bin/python ]; then
  py=$(command -v python3.11 || command -v python3)
  "$py" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" --config-settings editable_mode=compat
ln -sf "$repo/.venv/bin/sampan-runc" /usr/local/bin/sampan-runc

./scripts/build-images.sh >/dev/null
