#!/usr/bin/env bash
# relay.sh: one bulk-output command streamed to the client through the gateway, against the
# same command read straight from sandgate-execd and through nginx as an SSE reverse proxy in
# front of that execd. The issue's target: relay at least 0.9x direct. The gateway runs twice,
# durable (the default: SQLite store + every process's output appended to segment files under
# <data>/logs) and in memory (--durable off), side by side: the cost of durability.
#
#   direct       sandgate-bench relay -> sandgate-execd (TCP)
#   nginx        sandgate-bench relay -> nginx (bench/relay-nginx.conf.in: proxy_buffering off,
#                HTTP/1.1, one worker) -> the same execd
#   gateway      sandgate-bench relay -> sandgate serve (local provider, --durable on) POST
#                /v1/sandboxes/{id}/proxy/44772/command -> the sandbox's execd (unix socket);
#                the gateway captures the command, so its output also goes to <data>/logs
#   gateway-mem  the same through a second gateway with --durable off (nothing on disk)
# Commands: `bulk` = head -c N /dev/zero | tr '\0' a (no newline: 64 KiB stdout events),
# `lines` = seq 1 N (one event per line). One stream at a time; every run checks that all the
# output arrived (bytes, and lines for seq). Rounds alternate the four paths (order rotated
# per round); medians. MB/s is command output (event text) per second of wall time from
# request to the final event (1 MB = 1e6 bytes); lines/s is stdout events per second.
#
# Pinning (2 cores): execd and its commands (and the sandbox's execd and its commands, moved
# there after the sandbox starts) on core 0; the proxies (nginx, both gateways) and the bench
# on core 1; the gateways' data directories on the same file system as $TMPDIR. Both execds run with --max-stream-buffer 256M (the sandbox's through
# EXECD_MAX_STREAM_BUFFER), so neither drops a reader that falls behind; the sandbox gets
# cpu "2" so its cgroup quota is not the limit. CPU columns: execd alone for direct, nginx
# (master + worker) or the gateway alone (not its sandbox) for the proxies. After every gateway
# run the results record what that gateway holds on disk (du of <data>/logs, its store files,
# sandgate_log_disk_bytes and the retention counters from /metrics): the proof that the
# durable run wrote its log and the in-memory one wrote none. Retention stays at its defaults
# (--log-process-bytes 64M: a 256 MiB bulk run keeps its last 64 MiB, older segments deleted).
#
# --profile: after the rounds, one more bulk run through the durable gateway under
# `perf record --call-graph dwarf` (the gateway's threads): where its CPU goes, per thread (the
# loop is the main thread) and function, with the call chain of the top function; in the results
# as "profile". Needs perf; skipped with a note without it.
#
#   bench/relay.sh [--quick] [--rounds N] [--bulk-mb M] [--lines N] [--profile] [--out FILE]
# Writes bench/results/relay.json (every run's sandgate-bench document + medians; the commit is
# $SG_BIN_COMMIT if set, else git HEAD). Uses
# $SG_BIN_DIR (default build-rel). Loopback only; every request and the whole bench run are
# time-bounded; everything started here is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build-rel}
rounds=5 bulk_mb=256 seq_n=2000000 profile=
out=$root/bench/results/relay.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=3 bulk_mb=64 seq_n=500000 ;;
    --rounds) rounds=$2; shift ;;
    --bulk-mb) bulk_mb=$2; shift ;;
    --lines) seq_n=$2; shift ;;
    --profile) profile=1 ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--bulk-mb M] [--lines N] [--profile] [--out FILE]" >&2; exit 2 ;;
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
  gw_stop # the current gateway (one whose start failed before gw_save), then both saved ones
  local p
  for p in gateway gateway-mem; do [ -n "${_GW_SAVED[$p]:-}" ] && gw_use $p && gw_stop; done
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

# the two gateways (core 1), each with one sandbox (its processes on core 0)
SB='{"image":{"uri":"ubuntu:22.04"},"entrypoint":["sleep","infinity"],"timeout":3600,"resourceLimits":{"cpu":"2","memory":"4Gi"},"env":{"EXECD_MAX_STREAM_BUFFER":"256M"}}'
declare -A url=([direct]=$E [nginx]=$N) spid=([direct]=$epid [nginx]=$ngpid)
for p in gateway gateway-mem; do
  mode=on; [ $p = gateway-mem ] && mode=off
  GW_FLAGS="--durable $mode" gw_start "$tmp/$p" "${pin1[@]}"
  sid=$(gw_sandbox "$SB")
  gw_pin_sandbox 0
  url[$p]=$GW_URL/v1/sandboxes/$sid/proxy/44772 spid[$p]=$GW_PID
  curl -sf -m 10 -o /dev/null "${url[$p]}/ping" || { echo "$p -> sandbox execd /ping failed" >&2; exit 1; }
  echo "$p (--durable $mode) $GW_URL sandbox $sid (pid $GW_PID)" >&2
  gw_save $p
done
echo "execd $E (pid $epid), nginx $N (pid $ngpid)" >&2

bulk_cmd="head -c ${bulk_mb}M /dev/zero | tr '\\0' a"
bulk_bytes=$((bulk_mb * 1048576))
seq_cmd="seq 1 $seq_n"
seq_bytes=$(seq 1 "$seq_n" | wc -c)
mkdir -p "$tmp/runs" "$tmp/disk"
declare -A sdesc=([direct]=--no-server-descendants [nginx]=--server-descendants [gateway]=--no-server-descendants [gateway-mem]=--no-server-descendants)
paths=(direct nginx gateway gateway-mem)
fs_type=$(df -PT "$tmp" | awk 'NR == 2 { print $2 }')
t_start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$rounds"); do
  # rotate the order each round so drift and warm-up hit every path alike
  k=$(( (r - 1) % ${#paths[@]} ))
  order=("${paths[@]:$k}" "${paths[@]:0:$k}")
  for cmd in bulk lines; do
    c=$bulk_cmd; [ "$cmd" = lines ] && c=$seq_cmd
    for p in "${order[@]}"; do
      echo "== $cmd $p r$r" >&2
      timeout 400 "${pin1[@]}" "$bin/sandgate-bench" relay --url "${url[$p]}" --command "$c" --timeout 300s \
        --server-pid "${spid[$p]}" "${sdesc[$p]}" --quiet --out "$tmp/runs/$cmd-$p-r$r.json" ||
        echo "   (run not ok)" >&2
      case $p in
        gateway*) # what this gateway holds on disk now (sandgate_log_disk_bytes is refreshed every second)
          sleep 1.1; gw_use "$p"; gw_disk_json >"$tmp/disk/$cmd-$p-r$r.json"; echo "   disk: $(cat "$tmp/disk/$cmd-$p-r$r.json")" >&2 ;;
      esac
    done
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "runs took $(( $(date +%s) - t_start )) s" >&2

if [ -n "$profile" ] && ! command -v perf >/dev/null; then echo "--profile: perf is not installed, skipped" >&2; profile=; fi
if [ -n "$profile" ]; then
  echo "== profile: bulk through the durable gateway under perf" >&2
  gw_use gateway
  perf record -q -F 999 --call-graph dwarf,16384 -p "$GW_PID" -o "$tmp/prof.data" 2>"$tmp/prof.err" &
  ppid=$!
  sleep 0.5
  timeout 400 "${pin1[@]}" "$bin/sandgate-bench" relay --url "${url[gateway]}" --command "$bulk_cmd" --timeout 300s \
    --server-pid "$GW_PID" --no-server-descendants --quiet --out "$tmp/prof-run.json" || echo "   (run not ok)" >&2
  kill -INT "$ppid"; wait "$ppid" || true
  echo "$GW_PID" >"$tmp/prof-loop-tid"
  # samples per thread ("pid" is the thread id here) and function; the top function's call chains
  perf report -i "$tmp/prof.data" --no-children --sort pid,sym --stdio -g none 2>/dev/null | grep '%' >"$tmp/prof-top.txt" || true
  perf report -i "$tmp/prof.data" --no-children --sort sym --stdio -G --percent-limit 5 2>/dev/null >"$tmp/prof-chains.txt" || true
fi

mkdir -p "$(dirname "$out")"
COMMIT=${SG_BIN_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)} FS_TYPE=$fs_type LOAD_START=$load_start LOAD_END=$load_end node - "$tmp/runs" "$out" "$rounds" "$bulk_cmd" "$bulk_bytes" "$seq_cmd" "$seq_bytes" "$seq_n" \
  "$(nginx -v 2>&1)" "$asan" <<'JS'
const fs = require('fs'), path = require('path'), os = require('os');
const [dir, out, rounds, bulkCmd, bulkBytes, seqCmd, seqBytes, seqN, ngv, asan] = process.argv.slice(2);
const diskDir = path.join(dir, '..', 'disk');
const runs = fs.readdirSync(dir).sort().map((f) => {
  const r = { name: f.replace(/\.json$/, ''), ...JSON.parse(fs.readFileSync(path.join(dir, f))) };
  const d = path.join(diskDir, f); // the gateway's disk after the run (gateway paths only)
  if (fs.existsSync(d)) r.gateway_disk = JSON.parse(fs.readFileSync(d, 'utf8'));
  return r;
});
const paths = ['direct', 'nginx', 'gateway', 'gateway-mem'];
// --profile: where the durable gateway's CPU went in one more bulk run
let profile = null;
const pf = (f) => path.join(dir, '..', f);
if (fs.existsSync(pf('prof-top.txt')) && fs.existsSync(pf('prof-run.json'))) {
  const loop = fs.readFileSync(pf('prof-loop-tid'), 'utf8').trim();
  const run = JSON.parse(fs.readFileSync(pf('prof-run.json'), 'utf8'));
  const top = [];
  const byThread = { loop: 0, other: 0 };
  for (const l of fs.readFileSync(pf('prof-top.txt'), 'utf8').split('\n')) {
    const m = /^\s*([\d.]+)%\s+(\d+):\S+\s+\[(.)\]\s+(.*?)\s*$/.exec(l);
    if (!m) continue;
    const th = m[2] === loop ? 'loop' : 'other';
    byThread[th] += +m[1];
    if (top.length < 12) top.push({ pct: +m[1], thread: th, kernel: m[3] === 'k', sym: m[4] });
  }
  // the first chain printed under the top function (caller-first with -G): its frames in order
  const ch = fs.readFileSync(pf('prof-chains.txt'), 'utf8').split('\n');
  const i0 = ch.findIndex((l) => top.length && l.includes(top[0].sym) && /%/.test(l));
  const chain = [];
  for (let i = i0 + 1; i0 >= 0 && i < ch.length && ch[i].trim() !== ''; i++) {
    const f = ch[i].replace(/[|\-]/g, ' ').trim();
    if (f && !/^0x[0-9a-f]+$/.test(f) && !/%/.test(f)) chain.push(f);
  }
  profile = { command: bulkCmd, MBps: run.ok ? +bulkBytes / run.throughput.duration_s / 1e6 : null, gateway_cpu: run.cpu.server && run.cpu.server.util,
    samples_pct_by_thread: { loop: +byThread.loop.toFixed(2), other: +byThread.other.toFixed(2) }, top, top_chain: chain.slice(0, 24) };
}
const med = (xs) => { xs = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b); return xs.length ? xs[(xs.length - 1) >> 1] : null; };
const want = { bulk: { bytes: +bulkBytes, lines: null }, lines: { bytes: +seqBytes, lines: +seqN } };
const summary = {};
for (const cmd of ['bulk', 'lines']) {
  const s = { command: cmd === 'bulk' ? bulkCmd : seqCmd, output_bytes: want[cmd].bytes };
  for (const p of paths) {
    const rs = runs.filter((r) => new RegExp(`^${cmd}-${p}-r\\d+$`).test(r.name));
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
    if (p.startsWith('gateway')) {
      // the disk after each run: the durable gateway's logs grow (or retention deletes
      // segments), the in-memory one has neither logs nor a store
      const d = rs.map((r) => r.gateway_disk).filter(Boolean);
      s[p].disk = { after_runs: d.length, logs_du_bytes_max: d.reduce((a, x) => Math.max(a, x.logs_du_bytes || 0), 0),
        log_disk_bytes_max: d.reduce((a, x) => Math.max(a, x.log_disk_bytes || 0), 0),
        segments_deleted_last: d.length ? d[d.length - 1].segments_deleted : null,
        write_errors_last: d.length ? d[d.length - 1].write_errors : null,
        files: d.length ? d[d.length - 1].durable_files : null };
    }
  }
  const ratio = (a, b) => (a !== null && b ? a / b : null);
  s.ratio = { gateway_over_direct: ratio(s.gateway.MBps, s.direct.MBps), nginx_over_direct: ratio(s.nginx.MBps, s.direct.MBps),
    gateway_over_nginx: ratio(s.gateway.MBps, s.nginx.MBps), gateway_mem_over_direct: ratio(s['gateway-mem'].MBps, s.direct.MBps),
    durable_over_mem: ratio(s.gateway.MBps, s['gateway-mem'].MBps),
    durable_over_mem_lines: ratio(s.gateway.lines_per_s, s['gateway-mem'].lines_per_s) };
  summary[cmd] = s;
}
const doc = {
  bench: 'relay', generated_at: new Date().toISOString(), commit: process.env.COMMIT, asan_build: asan, nginx: ngv.replace(/^nginx version: /, ''),
  machine: { cpus: os.cpus().length, model: os.cpus()[0].model, kernel: os.release(), data_fs: process.env.FS_TYPE,
    pinned: os.cpus().length >= 2 ? 'execds + commands core 0; proxy + bench core 1' : 'no',
    loadavg_start: process.env.LOAD_START, loadavg_end: process.env.LOAD_END,
    note: 'shared machine: other sessions run builds and tests concurrently; quote medians' },
  config: 'bench/relay-nginx.conf.in (one worker, proxy_buffering off, HTTP/1.1 upstream); gateway: sandgate serve --provider local (--durable on: store + output logs on disk; gateway-mem: --durable off), POST /v1/sandboxes/{id}/proxy/44772/command',
  target: 'gateway relay >= 0.9x direct',
  rounds: +rounds, summary, profile, runs,
};
fs.writeFileSync(out, JSON.stringify(doc, null, 2) + '\n');
const f = (x, d = 1) => (x === null || x === undefined ? 'n/a' : x.toFixed(d));
for (const [cmd, s] of Object.entries(summary)) {
  console.log(`${cmd}: ${s.command}`);
  for (const p of paths)
    console.log(`  ${p.padEnd(11)} ${f(s[p].MBps)} MB/s ${f(s[p].lines_per_s, 0)} lines/s (${s[p].complete_runs}/${s[p].rounds} complete; relay cpu ${f(s[p].server_cpu_util, 2)}, bench cpu ${f(s[p].bench_cpu_util, 2)})`);
  console.log(`  ratios: gateway/direct ${f(s.ratio.gateway_over_direct, 2)}, gateway-mem/direct ${f(s.ratio.gateway_mem_over_direct, 2)}, durable/mem ${f(s.ratio.durable_over_mem, 2)}, nginx/direct ${f(s.ratio.nginx_over_direct, 2)}, gateway/nginx ${f(s.ratio.gateway_over_nginx, 2)}`);
  console.log(`  disk: gateway logs du max ${s.gateway.disk.logs_du_bytes_max} B (segments deleted ${s.gateway.disk.segments_deleted_last}, write errors ${s.gateway.disk.write_errors_last}; files: ${s.gateway.disk.files}); gateway-mem files: '${s['gateway-mem'].disk.files}'`);
}
if (profile) {
  console.log(`profile (durable gateway, bulk at ${f(profile.MBps)} MB/s, gateway cpu ${f(profile.gateway_cpu, 2)}): loop thread ${f(profile.samples_pct_by_thread.loop)} % of samples, other threads ${f(profile.samples_pct_by_thread.other)} %`);
  for (const t of profile.top.slice(0, 6)) console.log(`  ${f(t.pct, 2).padStart(6)} % ${t.thread.padEnd(5)} ${t.sym}`);
  console.log(`  top function's chain: ${profile.top_chain.join(' > ')}`);
}
console.log(`wrote ${out}`);
JS
