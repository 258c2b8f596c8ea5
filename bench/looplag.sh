#!/usr/bin/env bash
# looplag.sh: the event loop's worst stall while 100 processes stream (issue 7: "the loop's
# worst stall stays under a few milliseconds while 100 processes stream (measure it)"), with
# the durable store on and off, side by side (alternating rounds, medians).
#
# Per run: a fresh `sandgate serve` (local provider, one sandbox), then 100 background commands
# at once, each printing --lines lines of ~100 bytes at --rate lines/s; the gateway captures
# them all (one upstream stream per process). When every process has finished, GET /metrics
# gives the loop's lag (a 100 ms probe timer: how late it fired) and busy time (the longest
# single loop iteration spent running callbacks) over the last minute, and the events captured.
#
#   bench/looplag.sh [--quick] [--rounds N] [--procs N] [--lines N] [--rate R] [--out FILE]
# Writes bench/results/looplag.json. Uses $SG_BIN_DIR (default build-rel). Loopback only;
# bounded: every wait has a deadline.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build-rel}
rounds=3 procs=100 lines=400 rate=100
out=$root/bench/results/looplag.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=1 lines=200 ;;
    --rounds) rounds=$2; shift ;;
    --procs) procs=$2; shift ;;
    --lines) lines=$2; shift ;;
    --rate) rate=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--procs N] [--lines N] [--rate R] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin/sandgate" ] || { echo "no $bin/sandgate: build first" >&2; exit 1; }
tmp=$(mktemp -d)
source "$root/bench/_gateway.sh"
cleanup() { gw_stop 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
pin0=() pin1=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0=(taskset -c 0) pin1=(taskset -c 1); fi

metric() { # text name -> value
  awk -v n="$2" '$1 == n { print $2; exit }' <<<"$1"
}

sleep_s=$(awk -v r="$rate" 'BEGIN { printf "%.4f", 1 / r }')
cmd="i=0; while [ \$i -lt $lines ]; do i=\$((i+1)); echo \"line \$i of a streaming process, padded to about one hundred bytes ........................\"; sleep $sleep_s; done"
mkdir -p "$tmp/runs"
for r in $(seq "$rounds"); do
  for mode in on off; do
    echo "== durable=$mode r$r ($procs processes x $lines lines at $rate/s)" >&2
    GW_FLAGS="--durable $mode" gw_start "$tmp/gw-$mode-$r" "${pin1[@]}"
    sid=$(gw_sandbox '{"image":{"uri":"ubuntu:22.04"},"entrypoint":["sleep","infinity"],"timeout":3600,"resourceLimits":{"cpu":"2","memory":"4Gi"}}')
    gw_pin_sandbox 0
    body=$(node -e 'console.log(JSON.stringify({command: process.argv[1], background: true}))' "$cmd")
    t0=$(date +%s%N)
    cpids=()
    for _ in $(seq "$procs"); do
      curl -s -m 10 -o /dev/null -H 'content-type: application/json' --data-binary "$body" \
        "$GW_URL/v1/sandboxes/$sid/proxy/44772/command" &
      cpids+=($!)
    done
    wait "${cpids[@]}" # not the gateway, also a child of this shell
    deadline=$(( $(date +%s) + 120 ))
    while :; do
      m=$(curl -s -m 5 "$GW_URL/metrics")
      running=$(metric "$m" 'sandgate_processes{state="running"}')
      done_n=$(metric "$m" 'sandgate_processes{state="exited"}')
      [ "${running:-1}" = 0 ] && [ "${done_n:-0}" -ge "$procs" ] && break
      [ "$(date +%s)" -gt "$deadline" ] && { echo "   processes did not finish" >&2; break; }
      sleep 0.2
    done
    t1=$(date +%s%N)
    m=$(curl -s -m 5 "$GW_URL/metrics")
    printf '{"mode":"%s","round":%d,"seconds":%s,"events":%s,"lag_p50":%s,"lag_p99":%s,"lag_max":%s,"busy_max":%s,"rss":%s,"exited":%s}\n' \
      "$mode" "$r" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')" \
      "$(metric "$m" sandgate_stream_events_in_total)" \
      "$(metric "$m" 'sandgate_loop_lag_seconds{quantile="0.5"}')" \
      "$(metric "$m" 'sandgate_loop_lag_seconds{quantile="0.99"}')" \
      "$(metric "$m" sandgate_loop_lag_recent_max_seconds)" \
      "$(metric "$m" sandgate_loop_busy_recent_max_seconds)" \
      "$(metric "$m" process_resident_memory_bytes)" \
      "$(metric "$m" 'sandgate_processes{state="exited"}')" >"$tmp/runs/$mode-$r.json"
    cat "$tmp/runs/$mode-$r.json" >&2
    gw_stop
    GW_SANDBOXES=()
  done
done

mkdir -p "$(dirname "$out")"
node - "$tmp/runs" "$out" "$procs" "$lines" "$rate" <<'JS'
const fs = require('fs'), path = require('path'), os = require('os');
const [dir, out, procs, lines, rate] = process.argv.slice(2);
const runs = fs.readdirSync(dir).sort().map((f) => JSON.parse(fs.readFileSync(path.join(dir, f))));
const med = (xs) => { xs = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b); return xs.length ? xs[(xs.length - 1) >> 1] : null; };
const summary = {};
for (const mode of ['on', 'off']) {
  const rs = runs.filter((r) => r.mode === mode);
  summary[mode] = {};
  for (const k of ['seconds', 'events', 'lag_p50', 'lag_p99', 'lag_max', 'busy_max', 'rss', 'exited'])
    summary[mode][k] = med(rs.map((r) => r[k]));
  summary[mode].events_per_s = summary[mode].events && summary[mode].seconds ? summary[mode].events / summary[mode].seconds : null;
}
const doc = { scenario: 'looplag', when: new Date().toISOString(), machine: { cpus: os.cpus().length, model: os.cpus()[0].model },
  params: { processes: +procs, lines: +lines, rate: +rate }, target: "loop's worst stall under a few milliseconds while 100 processes stream",
  summary, runs };
fs.writeFileSync(out, JSON.stringify(doc, null, 1) + '\n');
const ms = (s) => (s == null ? 'n/a' : (s * 1000).toFixed(2) + ' ms');
for (const mode of ['on', 'off']) {
  const s = summary[mode];
  console.log(`durable ${mode}: ${s.events} events in ${s.seconds} s; loop lag p50 ${ms(s.lag_p50)} p99 ${ms(s.lag_p99)} max ${ms(s.lag_max)}; longest busy iteration ${ms(s.busy_max)}`);
}
console.log(`wrote ${out}`);
JS
