#!/usr/bin/env bash
# bench_sandgate_fanout.sh: the sandgate side of bench/fanout-sandgate.sh at small scale.
# `sandgate serve --provider local`, one sandbox with the bench binary in a read-only host
# volume; `sandgate-bench stamp` started as a background command; `sandgate-bench fanout
# --pub-url none --clock realtime --ready-file` subscribed to the process's stream. Asserts
# counts, never figures: every subscriber got every stamped event in order (found inside the
# stdout events' JSON-escaped text), none arrived before the subscribers were in (the stamp
# waited for the ready file), the stream ending with the process is not an error, and the
# gateway reports the process exited 0.
source "$(dirname "$0")/_lib.sh"
SRC=${SG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=$SG_BIN_DIR
for b in sandgate sandgate-execd sandgate-bench; do [ -x "$bin/$b" ] || fail "no $bin/$b"; done
command -v bwrap >/dev/null || fail "bubblewrap is not installed"
source "$SRC/bench/_gateway.sh"
trap 'gw_stop; cleanup' EXIT

vol=$T/vol
mkdir -p "$vol"
cp "$bin/sandgate-bench" "$vol/"
GW_FLAGS="--allow-host-volumes $vol" gw_start "$T/gw"
sid=$(gw_sandbox '{"image":{"uri":"ubuntu:22.04"},"entrypoint":["sleep","infinity"],"timeout":600,"resourceLimits":{"cpu":"1","memory":"1Gi"},"volumes":[{"name":"bench","host":{"path":"'"$vol"'"},"mountPath":"/bench","readOnly":true}]}') ||
  fail "sandbox did not start"

cmd='/bench/sandgate-bench stamp --events 100 --rate 500 --size 128 --start-file /bench/ready --start-timeout 60s'
body=$(node -e 'process.stdout.write(JSON.stringify({command:process.argv[1],background:true}))' "$cmd")
pid=$(curl -sf -m 10 -H 'content-type: application/json' --data-binary "$body" "$GW_URL/v1/sandboxes/$sid/proxy/44772/command" |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l.trim())continue;const e=JSON.parse(l);if(e.type==="init"){console.log(e.text);return}}process.exit(1)})') ||
  fail "no init event from the background command"
timeout 120 "$bin/sandgate-bench" fanout --sub-url "$GW_URL/v1/sandboxes/$sid/processes/$pid/stream" --pub-url none \
  --clock realtime --ready-file "$vol/ready" --subscribers 20 --events 100 --rate 500 --size 128 --drain-timeout 30s \
  --server-pid "$GW_PID" --no-server-descendants --quiet --out "$T/fanout.json" || fail "fanout exit $?"
node -e '
const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const checks = ["d.ok === true", "d.counts.subscribers_ready === 20", "d.counts.subscribers_complete === 20",
  "d.counts.deliveries === 2000", "d.counts.deliveries_expected === 2000", "d.counts.gaps === 0",
  "d.counts.duplicates === 0", "d.counts.deliveries_before_ready === 0", "d.counts.sse_gap_events === 0",
  "d.errors.total === 0", "d.latency_ms.delivery.count === 2000", "d.params.server_descendants === false",
  "d.cpu.server.processes === 1", "d.counts.foreign_events >= 20"];
for (const e of checks) if (eval(e) !== true) { console.error(`FAIL: ${e}`, JSON.stringify(d.counts), JSON.stringify(d.errors)); process.exit(1); }
' "$T/fanout.json" || fail "fanout result"
pass "fanout through the gateway: 20 subscribers got the stamp's 100 events in order"

for _ in $(seq 100); do
  st=$(curl -sf -m 5 "$GW_URL/v1/sandboxes/$sid/processes/$pid" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const p=JSON.parse(s);console.log(p.state+" "+p.exit_code)})')
  [ "$st" = "exited 0" ] && break
  sleep 0.1
done
[ "$st" = "exited 0" ] || fail "the stamp process is '$st', expected 'exited 0'"
pass "the gateway reports the stamp exited 0"

# A publisher that started before the subscribers (no --start-file): they replay its events
# late. The rate window starts when the first event was sent, not when it arrived, so the
# delivered rate cannot exceed what was offered, and the tool says what happened.
cmd='/bench/sandgate-bench stamp --events 100 --rate 500 --size 128'
body=$(node -e 'process.stdout.write(JSON.stringify({command:process.argv[1],background:true}))' "$cmd")
pid2=$(curl -sf -m 10 -H 'content-type: application/json' --data-binary "$body" "$GW_URL/v1/sandboxes/$sid/proxy/44772/command" |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l.trim())continue;const e=JSON.parse(l);if(e.type==="init"){console.log(e.text);return}}process.exit(1)})') ||
  fail "no init event from the early stamp"
sleep 1.5
timeout 120 "$bin/sandgate-bench" fanout --sub-url "$GW_URL/v1/sandboxes/$sid/processes/$pid2/stream" --pub-url none \
  --clock realtime --subscribers 20 --events 100 --rate 500 --size 128 --drain-timeout 30s \
  --server-pid "$GW_PID" --no-server-descendants --quiet --out "$T/early.json" 2>"$T/early.err" || fail "fanout exit $?"
grep -q 'the publisher started before the subscribers' "$T/early.err" || fail "no warning: $(cat "$T/early.err")"
node -e '
const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const rate = d.throughput.deliveries_per_s;
if (d.counts.deliveries !== 2000) { console.error("FAIL: deliveries", d.counts.deliveries); process.exit(1); }
// offered: 20 subscribers x 500 events/s; the window spans at least the 1.5 s the events waited
if (!(rate > 0 && rate <= 20 * 500)) { console.error(`FAIL: ${rate} deliveries/s for 10000/s offered`); process.exit(1); }
' "$T/early.json" || fail "early publisher result"
pass "a publisher that started early: the rate window starts at its first send (no inflated rate), with a warning"
