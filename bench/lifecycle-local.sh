#!/usr/bin/env bash
# lifecycle-local.sh: sandbox lifecycle cost of `sandgate serve --provider local` (bubblewrap
# sandboxes running sandgate-execd, image ubuntu:22.04=host), measured by
# `sandgate-bench lifecycle`: each sandbox is created, its execd endpoint looked up
# (use_server_proxy, so every execd call goes through /sandboxes/{id}/proxy/44772), /ping polled
# until 200, `true` run through POST /command, then deleted.
#
#   bench/lifecycle-local.sh [--sandboxes N] [--concurrency C] [--out FILE]
#       defaults: 40 sandboxes, 4 at a time, bench/results/lifecycle-local.json
#       SG_BIN_DIR: build dir (default build-rel; use a Release build, ASan is ~3x slower:
#       cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && make -C build-rel -j)
#
# Prints create->ready p50/p99 (create request sent -> first 200 from /ping through the proxy;
# /ping is polled every 5 ms, so that is the figure's resolution)
# and the create+exec+delete throughput (sandboxes fully cycled per second of wall time).
# Loopback only; bounded: the server's startup wait, each request (--timeout), /ping polling
# (--ready-timeout) and the whole bench run (timeout 600) have limits; the server and any
# sandbox left behind are killed on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build-rel}
n=40 c=4
out=$root/bench/results/lifecycle-local.json
while [ $# -gt 0 ]; do
  case "$1" in
    --sandboxes) n=$2; shift ;;
    --concurrency) c=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--sandboxes N] [--concurrency C] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
for b in sandgate sandgate-bench sandgate-execd; do
  [ -x "$bin/$b" ] || { echo "no $bin/$b (set SG_BIN_DIR or build build-rel)" >&2; exit 1; }
done
asan=no
if nm -an "$bin/sandgate" 2>/dev/null | grep -q __asan_init; then asan=yes; echo "warning: $bin/sandgate is an ASan build" >&2; fi

tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  # A sandbox the server could not delete: kill its init so nothing outlives the bench.
  for st in "$tmp"/data/sandboxes/*/state.json; do
    [ -f "$st" ] || continue
    ipid=$(node -e 'try{const s=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));if(s.init_pid)console.log(s.init_pid)}catch{}' "$st")
    [ -n "$ipid" ] && kill -9 "$ipid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
key=bench-$$
"$bin/sandgate" serve --provider local --listen "127.0.0.1:$port" --data "$tmp/data" --api-key "$key" \
  --image ubuntu:22.04=host --log-level warn 2>"$tmp/serve.log" &
pid=$!
up=no
for _ in $(seq 200); do
  if curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" | grep -q 200; then up=yes; break; fi
  sleep 0.05
done
[ "$up" = yes ] || { echo "sandgate serve did not start:" >&2; cat "$tmp/serve.log" >&2; exit 1; }

echo "lifecycle: $n sandboxes, $c at a time, against sandgate serve --provider local (pid $pid)" >&2
mkdir -p "$(dirname "$out")"
timeout 600 "$bin/sandgate-bench" lifecycle --url "http://127.0.0.1:$port" --api-key "$key" \
  --sandboxes "$n" --concurrency "$c" --image ubuntu:22.04 --server-pid "$pid" \
  --poll-interval 5ms --ready-timeout 60s --timeout 60s --out "$tmp/bench.json"
node -e '
const fs = require("fs");
const [src, out, asan] = process.argv.slice(1);
const d = JSON.parse(fs.readFileSync(src, "utf8"));
d.setup = { server: "sandgate serve --provider local --image ubuntu:22.04=host", asan_build: asan, host_cpus: require("os").cpus().length };
fs.writeFileSync(out, JSON.stringify(d, null, 2) + "\n");
const r = d.latency_ms.create_to_ready, t = d.throughput;
console.log(`create->ready (n=${r.count}): p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms max ${r.max.toFixed(1)} ms`);
console.log(`create+exec+delete: ${t.sandboxes_per_s.toFixed(1)} sandboxes/s (${d.counts.completed}/${d.params.sandboxes} in ${t.duration_s.toFixed(2)} s, concurrency ${d.params.concurrency})`);
const cpu = d.cpu.server; if (cpu) console.log(`sandgate serve CPU (its process and the descendants alive when sampled; not the sandboxes that came and went): ${cpu.total_s.toFixed(2)} s`);
console.log(`written ${out}`);
if (!d.ok) { console.error("bench NOT ok: " + JSON.stringify(d.errors)); process.exit(1); }
' "$tmp/bench.json" "$out" "$asan"
