#!/usr/bin/env bash
# fanout-nchan.sh: sandgate-bench fanout (1, 100, 1000 subscribers at a fixed publish rate),
# idle (1000 and 10000 subscribers) and slow (1000 subscribers, 10 % stop reading, 1 KiB
# events) against nginx + Nchan, several rounds each, medians quoted.
#
# nginx runs one worker (bench/nchan.conf.in documents every Nchan setting) pinned to core 0,
# sandgate-bench to core 1 when there are two cores, so the figures compare with a
# single-threaded sandgate and the bench's own CPU time can be read next to the server's.
#
#   bench/fanout-nchan.sh [--quick] [--rounds N] [--rate R] [--events E] [--out FILE]
#
# Writes one JSON document (default bench/results/fanout-nchan.json): every run's full
# sandgate-bench document under "runs", and per configuration the median over rounds of the
# headline figures under "summary". Uses $SG_BIN_DIR (default build-rel, else build): build
# without sanitizers for figures (cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-}
if [ -z "$bin" ]; then if [ -x "$root/build-rel/sandgate-bench" ]; then bin=$root/build-rel; else bin=$root/build; fi; fi
rounds=3 rate=100 events=1000 hold=2s
subs_list="1 100 1000" idle_list="1000 10000" slow_subs=1000
out=$root/bench/results/fanout-nchan.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=1 events=400 hold=1s idle_list="1000" ;;
    --rounds) rounds=$2; shift ;;
    --rate) rate=$2; shift ;;
    --events) events=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--rate R] [--events E] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin/sandgate-bench" ] || { echo "no $bin/sandgate-bench: build first" >&2; exit 1; }
mod=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$mod" ] || { echo "Nchan module $mod missing: install libnginx-mod-nchan" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)

tmp=$(mktemp -d)
ngpid=
cleanup() { [ -n "$ngpid" ] && kill "$ngpid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
pin0=() pin1=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0=(taskset -c 0) pin1=(taskset -c 1); fi

# A fresh nginx per run: a warmed worker reuses memory freed by earlier runs, which would
# hide the per-subscriber RSS that `idle` measures.
start_nginx() {
  port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  rm -rf "$tmp/nginx" && mkdir -p "$tmp/nginx"
  sed -e "s#@PREFIX@#$tmp/nginx#g" -e "s#@PORT@#$port#g" -e "s#@MODULE@#$mod#g" -e "s#@NOFILE@#$nofile#g" \
    "$root/bench/nchan.conf.in" >"$tmp/nginx/nginx.conf"
  "${pin0[@]}" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
  ngpid=$!
  for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.05; done
  curl -sf -o /dev/null "http://127.0.0.1:$port/health" || { cat "$tmp/nginx/error.log" >&2; exit 1; }
  U=http://127.0.0.1:$port
}
stop_nginx() { kill "$ngpid" 2>/dev/null || true; wait "$ngpid" 2>/dev/null || true; ngpid=; }
mkdir -p "$tmp/runs"

run() { # name scenario args...
  local name=$1; shift
  echo "== $name" >&2
  start_nginx
  local args=("$@")
  args=("${args[@]//@U@/$U}")
  "${pin1[@]}" "$bin/sandgate-bench" "${args[@]}" --server-pid "$ngpid" --out "$tmp/runs/$name.json" || echo "   (run not ok)" >&2
  stop_nginx
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
steal_start=$(awk '/^cpu /{print $9}' /proc/stat) # clock ticks the hypervisor gave to others
for r in $(seq "$rounds"); do
  # Rounds interleave the sizes so drift on a shared machine hits all alike.
  for n in $subs_list; do
    run "fanout-$n-r$r" fanout --sub-url "@U@/sub?id=f$n-r$r-{run}" --pub-url "@U@/pub?id=f$n-r$r-{run}" \
      --subscribers "$n" --events "$events" --rate "$rate"
  done
  run "slow-$slow_subs-r$r" slow --sub-url "@U@/sub?id=s-r$r-{run}" --pub-url "@U@/pub?id=s-r$r-{run}" \
    --subscribers "$slow_subs" --slow-fraction 0.1 --size 1024 --events "$events" --rate "$rate"
  for n in $idle_list; do
    run "idle-$n-r$r" idle --sub-url "@U@/sub?id=i$n-r$r-{run}" --pub-url "@U@/pub?id=i$n-r$r-{run}" \
      --subscribers "$n" --hold "$hold"
  done
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
steal_ticks=$(( $(awk '/^cpu /{print $9}' /proc/stat) - steal_start ))
mkdir -p "$(dirname "$out")"
STEAL=$steal_ticks LOAD_START=$load_start LOAD_END=$load_end node - "$tmp/runs" "$out" "$rounds" "$rate" "$events" "$(nginx -v 2>&1)" \
  "$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo unknown)" <<'JS'
const fs = require('fs'), path = require('path'), os = require('os');
const [dir, out, rounds, rate, events, ngv, nchv] = process.argv.slice(2);
const runs = fs.readdirSync(dir).sort().map((f) => ({ name: f.replace(/\.json$/, ''), ...JSON.parse(fs.readFileSync(path.join(dir, f))) }));
const med = (xs) => { xs = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b); return xs.length ? xs[(xs.length - 1) >> 1] : null; };
const groups = {};
for (const r of runs) (groups[r.name.replace(/-r\d+$/, '')] ||= []).push(r);
const summary = {};
for (const [g, rs] of Object.entries(groups)) {
  const m = (f) => med(rs.map(f));
  const s = { rounds: rs.length, all_ok: rs.every((r) => r.ok), subscribers: rs[0].params.subscribers };
  if (rs[0].scenario === 'fanout' || rs[0].scenario === 'slow') {
    Object.assign(s, {
      rate: rs[0].params.rate, events: rs[0].params.events,
      deliveries_per_s: m((r) => r.throughput.deliveries_per_s),
      delivery_ms: { p50: m((r) => r.latency_ms.delivery.p50), p90: m((r) => r.latency_ms.delivery.p90),
        p99: m((r) => r.latency_ms.delivery.p99), p99_9: m((r) => r.latency_ms.delivery.p99_9), max: m((r) => r.latency_ms.delivery.max) },
      delivery_from_schedule_p99_ms: m((r) => r.latency_ms.delivery_from_schedule.p99),
      events_late: m((r) => r.counts.events_late),
      cpu_util: { bench: m((r) => r.cpu.bench && r.cpu.bench.util), server: m((r) => r.cpu.server && r.cpu.server.util) },
    });
    if (rs[0].scenario === 'slow') Object.assign(s, {
      slow_subscribers: rs[0].params.slow_subscribers, size: rs[0].params.size,
      server_rss_kb_growth_max: m((r) => r.memory.server_rss_kb_max - r.memory.server_rss_kb_held),
      slow_received_max: m((r) => r.counts.slow_received_max),
      subscribers_closed_early: m((r) => r.counts.subscribers_closed_early),
    });
  } else {
    Object.assign(s, {
      server_rss_bytes_per_subscriber: m((r) => r.memory.server_rss_bytes_per_subscriber),
      bench_rss_bytes_per_subscriber: m((r) => r.memory.bench_rss_bytes_per_subscriber),
      tcp_mem_bytes_per_subscriber_both_ends: m((r) => r.memory.tcp_mem_bytes_per_subscriber_both_ends),
      socket_slab_bytes_per_subscriber_both_ends: m((r) => r.memory.socket_slab_bytes_per_subscriber_both_ends),
      server_cpu_s: m((r) => r.cpu.server && r.cpu.server.total_s),
      subscribe_ms: { p50: m((r) => r.latency_ms.subscribe.p50), p99: m((r) => r.latency_ms.subscribe.p99) },
      probe_delivery_ms: { p50: m((r) => r.latency_ms.delivery.p50), max: m((r) => r.latency_ms.delivery.max) },
    });
  }
  summary[g] = s;
}
const doc = {
  peer: 'nchan', nginx: ngv.replace(/^nginx version: /, ''), nchan_package: nchv,
  machine: { cpus: os.cpus().length, model: os.cpus()[0].model, kernel: os.release(), pinned: os.cpus().length >= 2 ? 'nginx core 0, bench core 1' : 'no',
    loadavg_start: process.env.LOAD_START, loadavg_end: process.env.LOAD_END, steal_ticks: +process.env.STEAL,
    note: 'shared machine: other sessions run builds and tests concurrently; quote medians' },
  config: 'bench/nchan.conf.in (worker_processes 1, message buffer 1000 / 5m, first message newest, no pings)',
  rounds: +rounds, rate: +rate, events: +events, generated_at: new Date().toISOString(),
  summary, runs,
};
fs.writeFileSync(out, JSON.stringify(doc, null, 2) + '\n');
for (const [g, s] of Object.entries(summary)) {
  if (s.delivery_ms) console.log(`${g.padEnd(14)} ok=${s.all_ok}${s.slow_subscribers ? ` (${s.slow_subscribers} stalled; server rss +${s.server_rss_kb_growth_max} KiB)` : ''} ${s.deliveries_per_s?.toFixed(0)} deliveries/s  delivery ms p50 ${s.delivery_ms.p50?.toFixed(3)} p99 ${s.delivery_ms.p99?.toFixed(3)} p99.9 ${s.delivery_ms.p99_9?.toFixed(3)} max ${s.delivery_ms.max?.toFixed(3)}  cpu bench ${s.cpu_util.bench?.toFixed(3)} server ${s.cpu_util.server?.toFixed(3)}`);
  else console.log(`${g.padEnd(14)} ok=${s.all_ok} server ${s.server_rss_bytes_per_subscriber?.toFixed(0)} B/sub, bench ${s.bench_rss_bytes_per_subscriber?.toFixed(0)} B/sub, kernel (both ends): tcp mem ${s.tcp_mem_bytes_per_subscriber_both_ends?.toFixed(0)} B/sub, socket slab ${s.socket_slab_bytes_per_subscriber_both_ends?.toFixed(0)} B/sub`);
}
console.log(`wrote ${out}`);
JS
