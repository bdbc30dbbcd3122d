#!/usr/bin/env bash
# Installs everything sampan and its tests need on a Debian machine (run as root); idempotent.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

packages=(python3-venv busybox-static libseccomp2 runc containerd docker.io iproute2 iptables
  docker-registry skopeo apache2-utils openssl util-linux  # registry tests: a real registry, a third-party client, htpasswd, test CAs, unshare
  umoci debootstrap tini  # tini: --init (docker-init); image tests: a third-party OCI layout reader; Debian base images
  nftables libnftables1  # network/firewall: libnftables in-process; nft for tests and debugging
  wrk  # bench/net_http.py: HTTP requests per second through a published port
  buildah)  # bench/build.py: a second build peer (buildah bud --layers)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's python3 (built with PGO and LTO) starts in half the time of a source build such
# as pyenv's, and the runtime starts an interpreter per container: the venv is made from it.
base=/usr/bin/python3
if [ ! -x .venv/bin/python ] || ! grep -qx "home = $(dirname "$base")" .venv/pyvenv.cfg; then
  rm -rf .venv
  "$base" -m venv .venv
fi

stamp=.venv/.sampan-pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -e .venv/bin/sampan-runc ] || ! .venv/bin/python -c 'import sampan, pytest' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]" --config-settings editable_mode=compat
  echo "$want" > "$stamp"
fi
# The runtime is started for every container: -I -S skips site (and its .pth scanning).
launcher=/usr/local/bin/sampan-runc
rm -f "$launcher"
cat > "$launcher" <<LAUNCHER
#!$repo/.venv/bin/python3 -IS
import sys
sys.path.insert(0, "$repo/src")
from sampan.cli.runc import entry
entry()
LAUNCHER
chmod 755 "$launcher"
# The sampan CLI is on the path of every `sampan run`: -I -S as well. Its container verbs use
# the standard library only; site-packages go last on sys.path (without .pth processing)
# for the image commands, which run the image library in-process.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib")); print(sysconfig.get_path("platlib"))' | sort -u | sed 's/.*/"&"/' | paste -sd, -)
launcher=/usr/local/bin/sampan
rm -f "$launcher"
cat > "$launcher" <<LAUNCHER
#!$repo/.venv/bin/python3 -IS
import sys
sys.path.insert(0, "$repo/src")
sys.path.extend([$site])
from sampan.cli.main import entry
entry()
LAUNCHER
chmod 755 "$launcher"
.venv/bin/python -m compileall -q src >/dev/null

./scripts/build-images.sh >/dev/null
