#!/usr/bin/env bash
# bench_nchan.sh: sandgate-bench fanout / idle / slow against a real nginx + Nchan started in a
# temp dir on a free loopback port (bench/nchan.conf.in). Asserts counts and fields, never
# figures: every subscriber got every event in order, the idle probe reached every held
# subscriber, the reading subscribers of `slow` got everything while the stalled ones did
# not stop the run, and a run against a dead port reports its errors and exits 1.
source "$(dirname "$0")/_lib.sh"
SRC=${SG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BENCH=$SG_BIN_DIR/sandgate-bench
[ -x "$BENCH" ] || fail "no $BENCH"
command -v nginx >/dev/null || fail "nginx is not installed (scripts/setup.sh installs nginx + libnginx-mod-nchan)"
MOD=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$MOD" ] || fail "Nchan module $MOD missing: install libnginx-mod-nchan"

port=$(free_port)
mkdir -p "$T/nginx"
sed -e "s#@PREFIX@#$T/nginx#g" -e "s#@PORT@#$port#g" -e "s#@MODULE@#$MOD#g" -e "s#@NOFILE@#4096#g" \
  "$SRC/bench/nchan.conf.in" >"$T/nginx/nginx.conf"
# nginx's output goes to a file: an orphaned worker must never hold ctest's pipes open. On
# exit the master and its workers get SIGTERM (nginx's fast shutdown) before _lib's cleanup.
bg nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" >"$T/nginx/stdout.log" 2>&1
ngpid=${_pids[-1]}
stop_nginx() {
  [ -n "${ngpid:-}" ] || return 0
  local kids
  kids=$(cat "/proc/$ngpid/task/$ngpid/children" 2>/dev/null || true)
  kill -TERM "$ngpid" $kids 2>/dev/null || true
  wait "$ngpid" 2>/dev/null || true
  ngpid=
}
trap 'stop_nginx; cleanup' EXIT
for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.05; done
curl -sf -o /dev/null "http://127.0.0.1:$port/health" || { cat "$T/nginx/error.log" >&2; fail "nginx + Nchan did not start"; }
U=http://127.0.0.1:$port

# check FILE JS-EXPRESSION...: every expression must be true of the document `d`.
check() {
  local f=$1; shift
  node -e '
    const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    for (const e of process.argv.slice(2)) {
      let v; try { v = eval(e); } catch (x) { v = x.message; }
      if (v !== true) { console.error(`FAIL: ${e} (got ${v})`); console.error(JSON.stringify(d.counts), JSON.stringify(d.errors)); process.exit(1); }
    }' "$f" "$@" || fail "assertions on $f"
}
hist_ok='(h) => ["min","mean","p50","p90","p99","p99_9","max"].every((k) => typeof h[k] === "number") && h.p50 <= h.p99 && h.p99 <= h.max'

# fanout: 50 subscribers x 200 events
"$BENCH" fanout --sub-url "$U/sub?id=f{run}" --pub-url "$U/pub?id=f{run}" --subscribers 50 --events 200 \
  --rate 500 --server-pid "$ngpid" --out "$T/fanout.json" --quiet || fail "fanout exit $?"
check "$T/fanout.json" 'd.scenario === "fanout"' 'd.ok === true' \
  'd.counts.subscribers === 50' 'd.counts.subscribers_ready === 50' 'd.counts.subscribers_complete === 50' \
  'd.counts.events_published === 200' 'd.counts.events_acked === 200' \
  'd.counts.deliveries_expected === 10000' 'd.counts.deliveries === 10000' \
  'd.counts.gaps === 0' 'd.counts.duplicates === 0' 'd.errors.total === 0' \
  "($hist_ok)(d.latency_ms.delivery)" 'd.latency_ms.delivery.count === 10000' \
  'd.latency_ms.delivery_from_schedule.count === 10000' 'd.latency_ms.publish_lag.count === 200' \
  'd.latency_ms.publish_ack.count === 200' 'd.latency_ms.subscribe.count === 50' \
  'typeof d.cpu.bench.total_s === "number"' 'typeof d.cpu.server.total_s === "number"' \
  'd.cpu.server.processes >= 2' 'typeof d.throughput.deliveries_per_s === "number"' \
  'typeof d.params.rate === "number"' 'typeof d.started_at === "string"'
pass "fanout: 50 subscribers got all 200 events in order"

# idle: 300 subscribers held, then one probe event must reach all of them
"$BENCH" idle --sub-url "$U/sub?id=i{run}" --pub-url "$U/pub?id=i{run}" --subscribers 300 --hold 500ms \
  --server-pid "$ngpid" --out "$T/idle.json" --quiet || fail "idle exit $?"
check "$T/idle.json" 'd.scenario === "idle"' 'd.ok === true' 'd.counts.subscribers_ready === 300' \
  'd.counts.deliveries === 300' 'd.counts.events_published === 1' 'd.errors.total === 0' \
  'typeof d.memory.server_rss_kb_before === "number"' 'typeof d.memory.server_rss_kb_held === "number"' \
  'typeof d.memory.server_rss_bytes_per_subscriber === "number"' \
  'typeof d.memory.bench_rss_bytes_per_subscriber === "number"' \
  'd.memory.sockstat_held.tcp_inuse >= d.memory.sockstat_before.tcp_inuse' \
  'typeof d.memory.tcp_mem_bytes_per_subscriber_both_ends === "number"' 'd.params.hold_ms === 500'
pass "idle: 300 subscribers held and alive"

# slow: 40 subscribers, a quarter stop reading; 2 KiB events so their buffers fill
"$BENCH" slow --sub-url "$U/sub?id=s{run}" --pub-url "$U/pub?id=s{run}" --subscribers 40 --slow-fraction 0.25 \
  --events 300 --rate 1000 --size 2048 --server-pid "$ngpid" --out "$T/slow.json" --quiet || fail "slow exit $?"
check "$T/slow.json" 'd.scenario === "slow"' 'd.ok === true' 'd.counts.slow_subscribers === 10' \
  'd.counts.subscribers_reading === 30' 'd.counts.subscribers_complete === 30' \
  'd.counts.deliveries === 30 * 300' 'd.counts.deliveries_expected === 9000' \
  'd.counts.slow_received_max < 300' 'd.latency_ms.delivery.count === 9000' \
  'typeof d.memory.server_rss_kb_max === "number"' 'd.memory.server_rss_kb_max >= d.memory.server_rss_kb_before' \
  'd.params.slow_subscribers === 10'
pass "slow: 30 reading subscribers complete while 10 stall"

# --pub-url none: events published by someone else (curl here), stamped with the wall clock
chan=ext$$
"$BENCH" fanout --sub-url "$U/sub?id=$chan" --pub-url none --clock realtime --subscribers 20 --events 10 \
  --drain-timeout 60s --out "$T/ext.json" --quiet &
bpid=$!
n=0
for _ in $(seq 400); do # until Nchan counts the 20 subscribers on the channel (bounded: 20 s)
  n=$(curl -s "$U/pub?id=$chan" | sed -n 's/^active subscribers: *//p' | tr -d '\r')
  [ "${n:-0}" -ge 20 ] && break
  sleep 0.05
done
[ "${n:-0}" -ge 20 ] || fail "external-publisher subscribers never registered ($n)"
for i in $(seq 0 9); do
  t=$(date +%s%N)
  curl -sf -o /dev/null -X POST --data "{\"seq\":$i,\"sched\":$t,\"sent\":$t}" "$U/pub?id=$chan" || fail "publish $i"
done
wait "$bpid" || fail "fanout --pub-url none exit $?"
check "$T/ext.json" 'd.ok === true' 'd.params.pub_url === "none"' 'd.params.clock === "realtime"' \
  'd.counts.subscribers_complete === 20' 'd.counts.deliveries === 200' 'd.counts.deliveries_expected === 200' \
  'd.counts.events_published === 0' 'd.latency_ms.delivery.count === 200' 'd.counts.gaps === 0'
pass "external publisher (--pub-url none, --clock realtime): 20 subscribers got all 10 events"

# nobody listening: errors are counted, the document is still whole, exit 1
dead=$(free_port)
set +e
"$BENCH" fanout --sub-url "http://127.0.0.1:$dead/sub" --pub-url "http://127.0.0.1:$dead/pub" --subscribers 5 \
  --events 3 --out "$T/dead.json" --quiet 2>/dev/null
rc=$?
set -e
[ "$rc" = 1 ] || fail "dead port: exit $rc, want 1"
check "$T/dead.json" 'd.ok === false' 'd.errors.connect === 5' 'd.counts.subscribers_ready === 0' \
  'd.counts.deliveries === 0'
pass "dead port reported as errors"

if grep -E '\[(alert|crit|emerg)\]' "$T/nginx/error.log"; then fail "nginx logged errors"; fi
