#!/usr/bin/env bash
# Installs everything juicefs-csi needs on a fresh Debian machine (run as root):
# FUSE, the test services, a virtualenv with the package and its pinned juicefs client.
# Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

packages=(fuse3 util-linux)
((dev)) && packages+=(redis-server postgresql)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Test services are started by the tests themselves, never as system daemons.
if ((dev)); then
  for svc in redis-server postgresql; do
    service "$svc" stop >/dev/null 2>&1 || true
  done
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
extra=""
((dev)) && extra="[dev]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 \
  | { grep -v -e "^WARNING: Location" -e "is ignored: it is neither" || true; }
