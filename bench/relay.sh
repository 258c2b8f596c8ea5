#!/usr/bin/env bash
# relay.sh: one bulk-output command streamed to the client through the gateway, against the
# same command read straight from sandgate-execd and through nginx as an SSE reverse proxy in
# front of that execd. The issue's target: relay at least 0.9x direct.
#
#   direct    sandgate-bench relay -> sandgate-execd (TCP)
#   nginx     sandgate-bench relay -> nginx (bench/relay-nginx.conf.in: proxy_buffering off,
#             HTTP/1.1, one worker) -> the same execd
#   gateway   sandgate-bench relay -> sandgate serve (local provider) POST
#             /v1/sandboxes/{id}/proxy/44772/command -> the sandbox's execd (unix socket)
# Commands: `bulk` = head -c N /dev/zero | tr '\0' a (no newline: 64 KiB stdout events),
# `lines` = seq 1 N (one event per line). One stream at a time; every run checks that all the
# output arrived (bytes, and lines for seq). Rounds alternate the three paths (order rotated
# per round); medians. MB/s is command output (event text) per second of wall time from
# request to the final event (1 MB = 1e6 bytes); lines/s is stdout events per second.
#
# Pinning (2 cores): execd and its commands (and the sandbox's execd and its commands, moved
# there after the sandbox starts) on core 0; the proxy (nginx or the gateway) and the bench
# on core 1. Both execds run with --max-stream-buffer 256M (the sandbox's through
# EXECD_MAX_STREAM_BUFFER), so neither drops a reader that falls behind; the sandbox gets
# cpu "2" so its cgroup quota is not the limit. CPU columns: execd alone for direct, nginx
# (master + worker) or the gateway alone (not its sandbox) for the proxies.
#
#   bench/relay.sh [--quick] [--rounds N] [--bulk-mb M] [--lines N] [--out FILE]
# Writes bench/results/relay.json (every run's sandgate-bench document + medians). Uses
# $SG_BIN_DIR (default build-rel). Loopback only; every request and the whole bench run are
# time-bounded; everything started here is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build-rel}
rounds=5 bulk_mb=256 seq_n=2000000
out=$root/bench/results/relay.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=3 bulk_mb=64 seq_n=500000 ;;
    --rounds) rounds=$2; shift ;;
    --bulk-mb) bulk_mb=$2; shift ;;
    --lines) seq_n=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--bulk-mb M] [--lines N] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
for b in sandgate sandgate-execd sandgate-bench; do
  [ -x "$bin/$b" ] || { echo "no $bin/$b (set SG_BIN_DIR or build build-rel)" >&2; exit 1; }
done
command -v nginx >/dev/null || { echo "nginx is not installed" >&2; exit 1; }
asan=no
if nm -an "$bin/sandgate" 2>/dev/null | grep -q __asan_init; then asan=yes; echo "warning: $bin/sandgate is an ASan build" >&2; fi
source "$root/bench/_gateway.sh"

tmp=$(mktemp -d)
epid= ngpid=
cleanup() {
  gw_stop
  [ -n "$ngpid" ] && kill "$ngpid" 2>/dev/null
  [ -n "$epid" ] && kill "$epid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
pin0=() pin1=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0=(taskset -c 0) pin1=(taskset -c 1); fi
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# execd (core 0)
"${pin0[@]}" "$bin/sandgate-execd" --listen 127.0.0.1:0 --port-file "$tmp/eport" --log-dir "$tmp" \
  --log-level warn --max-stream-buffer 256M 2>"$tmp/execd.log" &
epid=$!
for _ in $(seq 200); do [ -s "$tmp/eport" ] && break; sleep 0.05; done
[ -s "$tmp/eport" ] || { echo "execd did not start" >&2; cat "$tmp/execd.log" >&2; exit 1; }
E=http://127.0.0.1:$(cat "$tmp/eport")

# nginx (core 1)
nport=$(free_port)
mkdir -p "$tmp/nginx"
sed -e "s#@PREFIX@#$tmp/nginx#g" -e "s#@PORT@#$nport#g" -e "s#@UPSTREAM@#127.0.0.1:$(cat "$tmp/eport")#g" \
  "$root/bench/relay-nginx.conf.in" >"$tmp/nginx/nginx.conf"
"${pin1[@]}" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
ngpid=$!
N=http://127.0.0.1:$nport
for _ in $(seq 200); do curl -sf -o /dev/null "$N/health" && break; sleep 0.05; done
curl -sf -o /dev/null "$N/health" || { cat "$tmp/nginx/error.log" >&2; exit 1; }
curl -sf -o /dev/null "$N/ping" || { echo "nginx -> execd /ping failed" >&2; exit 1; }

# gateway (core 1) with one sandbox (its processes on core 0)
gw_start "$tmp/gw" "${pin1[@]}"
sid=$(gw_sandbox '{"image":{"uri":"ubuntu:22.04"},"entrypoint":["sleep","infinity"],"timeout":3600,"resourceLimits":{"cpu":"2","memory":"4Gi"},"env":{"EXECD_MAX_STREAM_BUFFER":"256M"}}')
gw_pin_sandbox 0
G=$GW_URL/v1/sandboxes/$sid/proxy/44772
curl -sf -m 10 -o /dev/null "$G/ping" || { echo "gateway -> sandbox execd /ping failed" >&2; exit 1; }
echo "execd $E (pid $epid), nginx $N (pid $ngpid), gateway $GW_URL sandbox $sid (pid $GW_PID)" >&2

bulk_cmd="head -c ${bulk_mb}M /dev/zero | tr '\\0' a"
bulk_bytes=$((bulk_mb * 1048576))
seq_cmd="seq 1 $seq_n"
seq_bytes=$(seq 1 "$seq_n" | wc -c)
mkdir -p "$tmp/runs"
declare -A url=([direct]=$E [nginx]=$N [gateway]=$G)
declare -A spid=([direct]=$epid [nginx]=$ngpid [gateway]=$GW_PID)
declare -A sdesc=([direct]=--no-server-descendants [nginx]=--server-descendants [gateway]=--no-server-descendants)
paths=(direct nginx gateway)
t_start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$rounds"); do
  # rotate the order each round so drift and warm-up hit every path alike
  k=$(( (r - 1) % 3 ))
  order=("${paths[@]:$k}" "${paths[@]:0:$k}")
  for cmd in bulk lines; do
    c=$bulk_cmd; [ "$cmd" = lines ] && c=$seq_cmd
    for p in "${order[@]}"; do
      echo "== $cmd $p r$r" >&2
      timeout 400 "${pin1[@]}" "$bin/sandgate-bench" relay --url "${url[$p]}" --command "$c" --timeout 300s \
        --server-pid "${spid[$p]}" "${sdesc[$p]}" --quiet --out "$tmp/runs/$cmd-$p-r$r.json" ||
        echo "   (run not ok)" >&2
    done
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "runs took $(( $(date +%s) - t_start )) s" >&2

mkdir -p "$(dirname "$out")"
LOAD_START=$load_start LOAD_END=$load_end node - "$tmp/runs" "$out" "$rounds" "$bulk_cmd" "$bulk_bytes" "$seq_cmd" "$seq_bytes" "$seq_n" \
  "$(nginx -v 2>&1)" "$asan" <<'JS'
const fs = require('fs'), path = require('path'), os = require('os');
const [dir, out, rounds, bulkCmd, bulkBytes, seqCmd, seqBytes, seqN, ngv, asan] = process.argv.slice(2);
const runs = fs.readdirSync(dir).sort().map((f) => ({ name: f.replace(/\.json$/, ''), ...JSON.parse(fs.readFileSync(path.join(dir, f))) }));
const med = (xs) => { xs = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b); return xs.length ? xs[(xs.length - 1) >> 1] : null; };
const want = { bulk: { bytes: +bulkBytes, lines: null }, lines: { bytes: +seqBytes, lines: +seqN } };
const summary = {};
for (const cmd of ['bulk', 'lines']) {
  const s = { command: cmd === 'bulk' ? bulkCmd : seqCmd, output_bytes: want[cmd].bytes };
  for (const p of ['direct', 'nginx', 'gateway']) {
    const rs = runs.filter((r) => r.name.startsWith(`${cmd}-${p}-`));
    // A run counts only when the output arrived: seq's every line as one event; for bulk at
    // least the output's bytes in stdout event data (the bench counts event JSON, not text).
    const complete = (r) => r.ok && r.counts.output_event_bytes >= want[cmd].bytes && (want[cmd].lines === null || r.counts.stdout_lines === want[cmd].lines);
    const good = rs.filter(complete);
    s[p] = {
      rounds: rs.length, complete_runs: good.length,
      MBps: med(good.map((r) => want[cmd].bytes / r.throughput.duration_s / 1e6)),
      lines_per_s: med(good.map((r) => r.throughput.lines_per_s)),
      duration_s: med(good.map((r) => r.throughput.duration_s)),
      first_event_ms: med(good.map((r) => r.latency_ms.first_event.p50)),
      server_cpu_util: med(good.map((r) => r.cpu.server && r.cpu.server.util)),
      bench_cpu_util: med(good.map((r) => r.cpu.bench && r.cpu.bench.util)),
      events: med(good.map((r) => r.counts.events)),
      MBps_all: rs.map((r) => complete(r) ? want[cmd].bytes / r.throughput.duration_s / 1e6 : null),
    };
  }
  const ratio = (a, b) => (a !== null && b ? a / b : null);
  s.ratio = { gateway_over_direct: ratio(s.gateway.MBps, s.direct.MBps), nginx_over_direct: ratio(s.nginx.MBps, s.direct.MBps),
    gateway_over_nginx: ratio(s.gateway.MBps, s.nginx.MBps) };
  summary[cmd] = s;
}
const doc = {
  bench: 'relay', generated_at: new Date().toISOString(), asan_build: asan, nginx: ngv.replace(/^nginx version: /, ''),
  machine: { cpus: os.cpus().length, model: os.cpus()[0].model, kernel: os.release(),
    pinned: os.cpus().length >= 2 ? 'execds + commands core 0; proxy + bench core 1' : 'no',
    loadavg_start: process.env.LOAD_START, loadavg_end: process.env.LOAD_END,
    note: 'shared machine: other sessions run builds and tests concurrently; quote medians' },
  config: 'bench/relay-nginx.conf.in (one worker, proxy_buffering off, HTTP/1.1 upstream); gateway: sandgate serve --provider local, POST /v1/sandboxes/{id}/proxy/44772/command',
  target: 'gateway relay >= 0.9x direct',
  rounds: +rounds, summary, runs,
};
fs.writeFileSync(out, JSON.stringify(doc, null, 2) + '\n');
const f = (x, d = 1) => (x === null || x === undefined ? 'n/a' : x.toFixed(d));
for (const [cmd, s] of Object.entries(summary)) {
  console.log(`${cmd}: ${s.command}`);
  for (const p of ['direct', 'nginx', 'gateway'])
    console.log(`  ${p.padEnd(8)} ${f(s[p].MBps)} MB/s ${f(s[p].lines_per_s, 0)} lines/s (${s[p].complete_runs}/${s[p].rounds} complete; relay cpu ${f(s[p].server_cpu_util, 2)}, bench cpu ${f(s[p].bench_cpu_util, 2)})`);
  console.log(`  ratios: gateway/direct ${f(s.ratio.gateway_over_direct, 2)}, nginx/direct ${f(s.ratio.nginx_over_direct, 2)}, gateway/nginx ${f(s.ratio.gateway_over_nginx, 2)}`);
}
console.log(`wrote ${out}`);
JS
