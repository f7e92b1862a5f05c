#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries the given binaries load (ldd, then
# dpkg -S), one per line: the Docker image's runtime stage installs exactly these.
#   deploy/docker/runtime-packages.sh /out/bin/* > runtime-packages.txt
set -euo pipefail
for binary in "$@"; do
  ldd "$binary" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  # Debian 12 registers some libraries under /lib, others under /usr/lib (merged /usr).
  found=""
  for path in "$lib" "/usr$lib" "${lib#/usr}" "$(readlink -f "$lib")"; do
    if owner=$(dpkg -S "$path" 2>/dev/null); then
      found="${owner%%:*}"
      break
    fi
  done
  if [ -z "$found" ]; then
    echo "runtime-packages: no Debian package holds $lib" >&2
    exit 1
  fi
  echo "$found"
done | sed 's/:amd64$//; s/:arm64$//' | sort -u
