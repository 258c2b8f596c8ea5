#!/usr/bin/env bash
# The local provider as a non-root gateway: the same provider tests (test_gateway_local) run as
# uid 65534, where bubblewrap needs a user namespace and no cgroup is writable, so every limit
# takes the rlimit path (RLIMIT_AS, RLIMIT_NPROC per uid: the fork bomb is contained) and pause
# uses SIGSTOP/SIGCONT. As root this is how CI machines without cgroups behave; when the suite
# already runs unprivileged, unit_test_gateway_local covers this path itself.
source "$(dirname "$0")/_lib.sh"
if [ "$(id -u)" != 0 ]; then
  pass "already unprivileged: unit_test_gateway_local runs this path"
  exit 0
fi
command -v setpriv >/dev/null || fail "setpriv (util-linux) is needed to drop to uid 65534"
# The build tree may sit where uid 65534 cannot reach (a 0700 home or temp dir): run copies.
chmod 755 "$T"
mkdir -m 755 "$T/bin"
cp "$SG_BIN_DIR/test_gateway_local" "$SG_BIN_DIR/sandgate-execd" "$T/bin/"
chmod 755 "$T/bin"/*
rc=0
setpriv --reuid=65534 --regid=65534 --clear-groups env SG_BIN_DIR="$T/bin" HOME=/tmp TMPDIR=/tmp \
  "$T/bin/test_gateway_local" >"$T/out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { grep -v '^    #' "$T/out" | tail -40 >&2; fail "provider tests as uid 65534 exited $rc"; }
grep -q 'pids=rlimit-nproc-per-uid(32)' "$T/out" || fail "pids not enforced by RLIMIT_NPROC: $(grep enforced "$T/out")"
grep -q 'enforced: freeze=signals' "$T/out" || fail "pause did not fall back to signals"
pass "provider tests pass as uid 65534 (user namespace, rlimit and signal fallbacks)"
