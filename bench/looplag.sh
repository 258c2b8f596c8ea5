#!/usr/bin/env bash
# looplag.sh: the event loop's worst stall while 100 processes stream (issue 7: "the loop's
# worst stall stays under a few milliseconds while 100 processes stream (measure it)"), with
# the durable store on and off, side by side (alternating rounds, medians). "on" is the default
# durable gateway: the SQLite store and every process's output appended to segment files under
# <data>/logs (each run records du of that directory and sandgate_log_disk_bytes: the proof it
# was written); "off" is --durable off, nothing on disk.
#
# Per run: a fresh `sandgate serve` (local provider, one sandbox), then 100 background commands
# at once, each printing --lines lines of ~100 bytes at --rate lines/s; the gateway captures
# them all (one upstream stream per process). When every process has finished, GET /metrics
# gives the loop's lag (a 100 ms probe timer: how late it fired) and busy time (the longest
# single loop iteration not spent waiting in epoll_wait: callbacks, and any time the loop thread
# was preempted or blocked) over the last minute, and the events captured.
# The sandbox is created --settle seconds (default 62) before the burst, so that the gateway's
# one-minute window (the lag quantiles, sandgate_loop_lag_recent_max_seconds and
# sandgate_loop_busy_recent_max_seconds) no longer holds the sandbox's creation when it is read
# at the end: lag p50/p99/max and the longest busy iteration are those of the burst and the
# streaming only (a run that took longer than the window, so that its start fell out of it, is
# flagged: window_covers_run false). --settle 0 measures as before (creation included).
# Where the worst stall happens: the gateway's since-start maxima (sandgate_loop_lag_max_seconds,
# sandgate_loop_busy_max_seconds only grow) are read at three points: once the sandbox is
# Running (phase "create": gateway start + sandbox create), 1 s after the last of the 100
# command requests was answered ("burst": the commands starting), and at the end ("stream":
# the steady streaming). A maximum that grew between two points happened in that phase.
#
# Pinning (2 cores): the gateway alone on core 1; its sandbox (execd and the commands) and this
# script with everything it starts (the 100 curl requests of the burst, the /metrics polls) on
# core 0, so the clients do not compete with the loop for its core. --clients-unpinned leaves
# the script and its clients where the scheduler puts them (as before this option existed: then
# the burst's 100 curl processes run on the gateway's core too and the loop waits behind them).
# The gateway's own threads (the libuv pool doing the log files' I/O, the SQLite worker) share
# its core, as taskset gives every thread of the process the same CPU.
#
#   bench/looplag.sh [--quick] [--rounds N] [--procs N] [--lines N] [--rate R] [--clients-unpinned]
#                    [--settle S] [--out FILE]
# Writes bench/results/looplag.json. Uses $SG_BIN_DIR (default build-rel); the results
# name $SG_BIN_COMMIT as the commit (the binaries' source when they are a snapshot), else git HEAD. Loopback only;
# bounded: every wait has a deadline.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build-rel}
rounds=3 procs=100 lines=400 rate=100 clients=core0 settle=62
out=$root/bench/results/looplag.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=1 lines=200 ;;
    --rounds) rounds=$2; shift ;;
    --procs) procs=$2; shift ;;
    --lines) lines=$2; shift ;;
    --rate) rate=$2; shift ;;
    --clients-unpinned) clients=unpinned ;;
    --settle) settle=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--procs N] [--lines N] [--rate R] [--clients-unpinned] [--settle S] [--out FILE]" >&2; exit 2 ;;
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
# this shell and all it starts from here on (curl, node, awk) on core 0; the gateway goes to core 1
if [ ${#pin0[@]} -gt 0 ] && [ $clients = core0 ]; then taskset -p -c 0 $$ >/dev/null; else clients=unpinned; fi

metric() { # text name -> value
  awk -v n="$2" '$1 == n { print $2; exit }' <<<"$1"
}

sleep_s=$(awk -v r="$rate" 'BEGIN { printf "%.4f", 1 / r }')
cmd="i=0; while [ \$i -lt $lines ]; do i=\$((i+1)); echo \"line \$i of a streaming process, padded to about one hundred bytes ........................\"; sleep $sleep_s; done"
mkdir -p "$tmp/runs"
maxes() { # since-start lag and busy maxima, as a JSON pair
  local m; m=$(curl -s -m 5 "$GW_URL/metrics") || true
  local l b; l=$(metric "$m" sandgate_loop_lag_max_seconds) b=$(metric "$m" sandgate_loop_busy_max_seconds)
  printf '[%s,%s]' "${l:-null}" "${b:-null}"
}
for r in $(seq "$rounds"); do
  for mode in on off; do
    echo "== durable=$mode r$r ($procs processes x $lines lines at $rate/s)" >&2
    GW_FLAGS="--durable $mode" gw_start "$tmp/gw-$mode-$r" "${pin1[@]}"
    sid=$(gw_sandbox '{"image":{"uri":"ubuntu:22.04"},"entrypoint":["sleep","infinity"],"timeout":3600,"resourceLimits":{"cpu":"2","memory":"4Gi"}}')
    gw_pin_sandbox 0
    ph_create=$(maxes)
    sleep "$settle" # the creation leaves the one-minute window before the burst starts
    body=$(node -e 'console.log(JSON.stringify({command: process.argv[1], background: true}))' "$cmd")
    t0=$(date +%s%N)
    cpids=()
    for _ in $(seq "$procs"); do
      curl -s -m 10 -o /dev/null -H 'content-type: application/json' --data-binary "$body" \
        "$GW_URL/v1/sandboxes/$sid/proxy/44772/command" &
      cpids+=($!)
    done
    wait "${cpids[@]}" # not the gateway, also a child of this shell
    sleep 1
    ph_burst=$(maxes)
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
    sleep 1.1 # sandgate_log_disk_bytes is refreshed every second
    m=$(curl -s -m 5 "$GW_URL/metrics")
    ph_end=$(maxes)
    # the window (60 s) must still hold the whole run when it is read
    covers=true; [ $(( ($(date +%s%N) - t0) / 1000000000 )) -ge 58 ] && covers=false
    printf '{"mode":"%s","round":%d,"seconds":%s,"events":%s,"lag_p50":%s,"lag_p99":%s,"lag_max":%s,"busy_max":%s,"rss":%s,"exited":%s,"since_start":{"create":%s,"burst":%s,"end":%s},"disk":%s,"settle_s":%s,"window_covers_run":%s}\n' \
      "$mode" "$r" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')" \
      "$(metric "$m" sandgate_stream_events_in_total)" \
      "$(metric "$m" 'sandgate_loop_lag_seconds{quantile="0.5"}')" \
      "$(metric "$m" 'sandgate_loop_lag_seconds{quantile="0.99"}')" \
      "$(metric "$m" sandgate_loop_lag_recent_max_seconds)" \
      "$(metric "$m" sandgate_loop_busy_recent_max_seconds)" \
      "$(metric "$m" process_resident_memory_bytes)" \
      "$(metric "$m" 'sandgate_processes{state="exited"}')" "$ph_create" "$ph_burst" "$ph_end" "$(gw_disk_json)" "$settle" "$covers" >"$tmp/runs/$mode-$r.json"
    cat "$tmp/runs/$mode-$r.json" >&2
    gw_stop
    GW_SANDBOXES=()
  done
done

mkdir -p "$(dirname "$out")"
COMMIT=${SG_BIN_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)} SETTLE=$settle CLIENTS=$clients node - "$tmp/runs" "$out" "$procs" "$lines" "$rate" <<'JS'
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
  // where the worst stall happened: since-start maxima at the end of each phase; a phase's
  // figure is the maximum reached by its end if it grew in that phase, else 0 (not the worst)
  const phase = (r, i) => { const c = r.since_start.create[i], b = r.since_start.burst[i], e = r.since_start.end[i];
    return { create: c, burst: b > c ? b : 0, stream: e > b ? e : 0 }; };
  const withPh = rs.filter((r) => r.since_start && r.since_start.end[0] !== null);
  summary[mode].worst_phase = withPh.map((r) => { const l = phase(r, 0), b = phase(r, 1);
    const top = (o) => Object.entries(o).sort((x, y) => y[1] - x[1])[0][0];
    return { round: r.round, lag_max_s: l, busy_max_s: b, lag_worst_in: top(l), busy_worst_in: top(b) }; });
  summary[mode].lag_max_since_start = med(withPh.map((r) => r.since_start.end[0]));
  // the sandbox's creation, measured apart: the since-start maxima read once it was Running
  summary[mode].create_lag_max = med(withPh.map((r) => r.since_start.create[0]));
  summary[mode].create_busy_max = med(withPh.map((r) => r.since_start.create[1]));
  summary[mode].window_excludes_create = rs.length > 0 && rs.every((r) => r.settle_s >= 61);
  summary[mode].window_covers_runs = rs.filter((r) => r.window_covers_run !== false).length + '/' + rs.length;
  summary[mode].busy_max_since_start = med(withPh.map((r) => r.since_start.end[1]));
  const dk = rs.map((r) => r.disk).filter(Boolean);
  summary[mode].disk = { logs_du_bytes: med(dk.map((d) => d.logs_du_bytes)), log_disk_bytes: med(dk.map((d) => d.log_disk_bytes)),
    write_errors_max: Math.max(0, ...dk.map((d) => d.write_errors || 0)), files: dk.length ? dk[dk.length - 1].durable_files : null };
}
const doc = { scenario: 'looplag', when: new Date().toISOString(), commit: process.env.COMMIT, machine: { cpus: os.cpus().length, model: os.cpus()[0].model },
  params: { processes: +procs, lines: +lines, rate: +rate, clients: process.env.CLIENTS, settle_s: +process.env.SETTLE,
    pinned: process.env.CLIENTS === 'core0' ? 'gateway core 1; sandbox, curl clients and this script core 0' : 'gateway core 1; sandbox core 0; clients unpinned' }, target: "loop's worst stall under a few milliseconds while 100 processes stream",
  summary, runs };
fs.writeFileSync(out, JSON.stringify(doc, null, 1) + '\n');
const ms = (s) => (s == null ? 'n/a' : (s * 1000).toFixed(2) + ' ms');
for (const mode of ['on', 'off']) {
  const s = summary[mode];
  console.log(`durable ${mode}: ${s.events} events in ${s.seconds} s; loop lag p50 ${ms(s.lag_p50)} p99 ${ms(s.lag_p99)} max ${ms(s.lag_max)}; longest busy iteration ${ms(s.busy_max)}${s.window_excludes_create ? ' (burst + streaming only)' : ' (sandbox creation included)'}; creation: lag max ${ms(s.create_lag_max)}, busy max ${ms(s.create_busy_max)}; window covers ${s.window_covers_runs} runs; logs on disk ${s.disk.logs_du_bytes} B (files: ${s.disk.files})`);
  for (const w of s.worst_phase) console.log(`  r${w.round}: worst lag in ${w.lag_worst_in} (${Object.entries(w.lag_max_s).map(([k, v]) => `${k} ${ms(v)}`).join(', ')}); worst busy in ${w.busy_worst_in} (${Object.entries(w.busy_max_s).map(([k, v]) => `${k} ${ms(v)}`).join(', ')})`);
}
console.log(`wrote ${out}`);
JS
