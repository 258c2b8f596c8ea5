#!/usr/bin/env bash
# setup.sh: install everything sandgate's build, tests and benchmarks need, then build.
#
#   scripts/setup.sh            install what is missing (Debian 12 packages), build ./build
#   scripts/setup.sh --serve    the same, then run `sandgate serve` on its embedded defaults
#                               (127.0.0.1:8080, local provider, ./sandgate-data, the image
#                               name ubuntu:22.04 mapped to the built-in host image)
#   scripts/setup.sh --deps     install only, do not build
#
# Idempotent: packages already present are not touched, the build is incremental. Uses sudo for
# apt-get when not run as root.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=build
case "${1:-}" in
  --serve) mode=serve ;;
  --deps) mode=deps ;;
  "") ;;
  *) echo "usage: $0 [--serve|--deps]" >&2; exit 2 ;;
esac

# Everything comes from Debian 12's archive and the npm registry.
packages=(
  build-essential cmake pkg-config git ca-certificates curl openssl procps iproute2
  clang libclang-rt-14-dev
  libuv1-dev libmbedtls-dev libjansson-dev libsqlite3-dev libcmocka-dev
  bubblewrap
  nodejs
  nginx libnginx-mod-nchan wrk gnuplot-nox
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian nginx package starts a system nginx on port 80; the benchmarks run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
fi

# npm packages the tests drive (the OpenSandbox SDK), pinned by test/sdk/package-lock.json.
if [ ! -d "$root/test/sdk/node_modules/@alibaba-group/opensandbox" ] ||
   [ "$root/test/sdk/package-lock.json" -nt "$root/test/sdk/node_modules/.package-lock.json" ]; then
  command -v npm >/dev/null || { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
  (cd "$root/test/sdk" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

[ "$mode" = deps ] && exit 0

cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j "$(nproc)" >/dev/null

if [ "$mode" = serve ]; then
  cd "$root"
  # The SDK's default image name maps to the built-in `host` image: an explicit operator choice
  # (unregistered images are refused, never substituted).
  exec ./build/sandgate serve --listen "${SANDGATE_LISTEN:-127.0.0.1:8080}" \
    --data "${SANDGATE_DATA:-sandgate-data}" --image ubuntu:22.04=host
fi
echo "setup: built $root/build (sandgate, sandgate-execd, sandgate-bench)" >&2
