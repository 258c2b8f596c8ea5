#!/usr/bin/env bash
# bench_stamp.sh: `sandgate-bench stamp`, the in-sandbox publisher. Runs it and parses what it
# writes: exactly --events lines of exactly --size bytes (+ newline), seq 0..N-1 in order,
# sched on the open-loop schedule (t0 + i/rate, after --start-delay), sent never before sched,
# the body the fanout subscriber reads; bad flags exit 2; a closed stdout exits 1, not a hang.
source "$(dirname "$0")/_lib.sh"
BENCH=$SG_BIN_DIR/sandgate-bench
[ -x "$BENCH" ] || fail "no $BENCH"

t_start=$(date +%s%N)
timeout 20 "$BENCH" stamp --rate 2000 --events 500 --size 100 --start-delay 300ms >"$T/out" 2>"$T/err" ||
  fail "stamp exit $? ($(cat "$T/err"))"
[ ! -s "$T/err" ] || fail "stamp wrote to stderr without --summary: $(cat "$T/err")"
node -e '
const [file, tStart] = [process.argv[1], BigInt(process.argv[2])];
const text = require("fs").readFileSync(file, "utf8");
const fail = (m) => { console.error("FAIL: " + m); process.exit(1); };
if (!text.endsWith("\n")) fail("output does not end with a newline");
const lines = text.slice(0, -1).split("\n");
if (lines.length !== 500) fail(`${lines.length} lines, expected 500`);
const period = 1e9 / 2000;
let t0 = null;
lines.forEach((l, i) => {
  if (l.length !== 100) fail(`line ${i} is ${l.length} bytes, expected 100`);
  // Numbers of 19 digits exceed doubles: read them as BigInt from the text.
  const m = /^\{"seq":(\d+),"sched":(\d+),"sent":(\d+),"pad":"x*"\}$/.exec(l);
  if (!m) fail(`line ${i} has the wrong shape: ${l}`);
  JSON.parse(l);
  const [seq, sched, sent] = [Number(m[1]), BigInt(m[2]), BigInt(m[3])];
  if (seq !== i) fail(`line ${i} has seq ${seq}`);
  if (t0 === null) t0 = sched;
  const want = t0 + BigInt(Math.floor(i * period));
  if (sched - want > 1n || want - sched > 1n) fail(`seq ${i}: sched ${sched}, expected ${want}`);
  if (sent < sched) fail(`seq ${i}: sent ${sent} before sched ${sched}`);
});
if (t0 - tStart < 300000000n) fail(`first event ${(t0 - tStart) / 1000000n} ms after start, --start-delay is 300 ms`);
const lastSent = BigInt(/"sent":(\d+)/.exec(lines[499])[1]);
const span = Number(lastSent - t0) / 1e6;
if (span < 249) fail(`500 events at 2000/s took ${span} ms, expected >= 249.5 (open loop, not a burst)`);
' "$T/out" "$t_start" || fail "stamp output"
pass "stamp: 500 events of 100 bytes, in order, on schedule"

# --summary: one line on stderr; the same events on stdout.
"$BENCH" stamp --rate 100000 --events 1000 --size 64 --summary >"$T/out2" 2>"$T/err2" || fail "stamp --summary exit $?"
[ "$(wc -l <"$T/out2")" = 1000 ] || fail "stamp --summary: $(wc -l <"$T/out2") lines"
grep -q '^stamp: 1000/1000 events' "$T/err2" || fail "summary: $(cat "$T/err2")"
pass "stamp --summary"

# Bad usage exits 2; a reader that goes away ends the run with 1 (EPIPE), bounded.
set +e
"$BENCH" stamp --size 10 >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || fail "stamp --size 10: exit $rc, expected 2"
timeout 20 "$BENCH" stamp --rate 1000000 --events 10000000 --size 1000 2>"$T/err3" | head -c 1000 >/dev/null
rc=${PIPESTATUS[0]}
set -e
[ $rc = 1 ] || fail "stamp into a closed pipe: exit $rc, expected 1"
grep -q 'Broken pipe' "$T/err3" || fail "EPIPE not reported: $(cat "$T/err3")"
pass "stamp: usage error 2, closed stdout 1"

# --start-file: nothing is written until the file exists; then the events follow at once.
timeout 20 "$BENCH" stamp --rate 1000 --events 5 --size 64 --start-file "$T/go" >"$T/out4" 2>"$T/err4" &
spid=$!
sleep 0.5
[ ! -s "$T/out4" ] || fail "stamp wrote before --start-file existed"
t_go=$(date +%s%N)
touch "$T/go"
wait "$spid" || fail "stamp --start-file exit $? ($(cat "$T/err4"))"
[ "$(wc -l <"$T/out4")" = 5 ] || fail "stamp --start-file: $(wc -l <"$T/out4") lines"
first=$(head -1 "$T/out4" | sed -E 's/.*"sched":([0-9]+).*/\1/')
[ "$first" -ge "$t_go" ] || fail "first event scheduled before the start file appeared"
[ $(( (first - t_go) / 1000000 )) -lt 200 ] || fail "first event $(( (first - t_go) / 1000000 )) ms after the start file"
set +e
timeout 20 "$BENCH" stamp --events 5 --start-file "$T/never" --start-timeout 200ms >/dev/null 2>"$T/err5"; rc=$?
set -e
[ $rc = 1 ] || fail "stamp --start-timeout: exit $rc, expected 1"
grep -q 'did not appear' "$T/err5" || fail "start timeout not reported: $(cat "$T/err5")"
pass "stamp --start-file waits for the file, bounded by --start-timeout"
