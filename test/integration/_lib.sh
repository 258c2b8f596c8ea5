# _lib.sh: shared helpers for the shell integration tests (sourced, not a test itself).
# Every test gets its own temp dir, its own free loopback port, and cleans up its processes.
set -euo pipefail
SG_BIN_DIR=${SG_BIN_DIR:?SG_BIN_DIR must point at the build directory}
T=$(mktemp -d)
_pids=()
cleanup() {
  for p in "${_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }
# A port nobody listens on right now (the kernel picks; tiny race accepted in tests).
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
# wait_http URL: poll until it answers (bounded: 10 s).
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; fail "no answer from $1"; }
bg() { "$@" & _pids+=($!); }
