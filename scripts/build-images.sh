#!/usr/bin/env bash
# Builds the offline test images: a busybox root filesystem from Debian's busybox-static.
# Output: ${SAMPAN_TEST_IMAGES:-<repo>/.cache/images}/busybox (a rootfs directory).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${SAMPAN_TEST_IMAGES:-$repo/.cache/images}
mkdir -p "$out"

if [ ! -x "$out/busybox/bin/busybox" ]; then
  tmp=$(mktemp -d "$out/.busybox.XXXXXX")
  chmod 755 "$tmp"  # mktemp makes it 0700: non-root users in a container could not reach /bin
  mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,root,home,var,run}
  chmod 1777 "$tmp/tmp"
  cp /bin/busybox "$tmp/bin/busybox"
  for applet in $("$tmp/bin/busybox" --list-full); do
    [ "$applet" = bin/busybox ] && continue
    ln -sf /bin/busybox "$tmp/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$tmp/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$tmp/etc/group"
  rm -rf "$out/busybox"
  mv "$tmp" "$out/busybox"
fi
echo "$out/busybox"
