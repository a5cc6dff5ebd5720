#!/bin/sh
# The base image, built from Debian's mirrors (no registry is reachable here):
# bookworm minbase, merged /usr, without docs, man pages and locales. ~80 MB, 20-50 s.
# Imported as localhost/debian:bookworm-minbase; run as root.
set -eu
cd "$(dirname "$0")/.."
mkdir -p build
# The mirrors this machine's apt already uses (mmdebstrap takes a sources file as the mirror).
SOURCES=$(ls /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1)
mmdebstrap --quiet --variant=minbase --format=tar --skip=output/dev \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"; : > "$1/etc/machine-id"' \
  bookworm build/bookworm-minbase.tar "$SOURCES"
podman import --change 'CMD ["/bin/bash"]' build/bookworm-minbase.tar localhost/debian:bookworm-minbase
rm -f build/bookworm-minbase.tar
