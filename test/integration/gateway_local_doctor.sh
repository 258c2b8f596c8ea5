#!/usr/bin/env bash
# sandgate doctor: reports that bubblewrap works here (it really runs trial sandboxes), says how
# each limit would be enforced, gives advice for what is missing, and speaks JSON with --json.
# A broken bwrap (a path that does not exist) is reported as MISSING with exit status 1.
source "$(dirname "$0")/_lib.sh"

"$SG_BIN_DIR/sandgate" doctor >"$T/human" 2>&1 || fail "doctor exited $?: $(cat "$T/human")"
grep -Eq '^  OK +bubblewrap .*trial sandbox ran' "$T/human" || fail "bubblewrap not OK: $(cat "$T/human")"
grep -Eq '^  OK +namespace pid' "$T/human" || fail "pid namespace not OK"
grep -Eq 'limit memory +(cgroup-v[12]|rlimit fallback)' "$T/human" || fail "no memory line: $(cat "$T/human")"
pass "human report: bubblewrap OK"

"$SG_BIN_DIR/sandgate" doctor --json >"$T/json" || fail "doctor --json failed"
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1]));
const b = r.checks.find(c => c.name === "bubblewrap");
if (r.ok !== true || !b || b.ok !== true) process.exit(1);
for (const k of ["cpu", "memory", "pids", "freeze"]) if (typeof r.local_provider[k] !== "string") process.exit(2);
for (const c of r.checks) if (!c.ok && !c.advice && c.name !== "rlimits") { console.error("no advice for", c.name); process.exit(3); }
' "$T/json" || fail "JSON report wrong: $(cat "$T/json")"
pass "json report"

rc=0; "$SG_BIN_DIR/sandgate" doctor --bwrap /nonexistent/bwrap >"$T/bad" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "missing bwrap gave exit $rc"
grep -Eq '^  MISSING +bubblewrap' "$T/bad" || fail "missing bwrap not reported: $(cat "$T/bad")"
grep -q 'install bubblewrap' "$T/bad" || fail "no advice for missing bwrap"
pass "missing bubblewrap reported with advice"

rc=0; "$SG_BIN_DIR/sandgate" doctor --bogus >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "bad option gave exit $rc"
pass "bad option"
