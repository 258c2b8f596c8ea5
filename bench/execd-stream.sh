#!/usr/bin/env bash
# execd-stream.sh: how fast sandgate-execd turns command output into OpenSandbox SSE events,
# against the same command's output read straight from a pipe.
#
#   latency     request sent -> first stdout event received, for `echo x` (node client, one
#               keep-alive connection, sequential); baseline: spawn `bash -c 'echo x'` -> first
#               byte on its stdout pipe (node). p50 / p99 over N runs. Also: execution_complete
#               received -> end of the response (Go sleeps ~1 s there).
#   bulk        `head -c 200M /dev/zero | tr '\0' a` (no newline: 64 KiB line pieces)
#   lines       `seq 1 2000000` (2M line events)
#               execd: POST /command read by curl into /dev/null (wall time to end of stream);
#               baseline: `bash -c CMD | cat >/dev/null`. MB/s of command output and lines/s.
#               The median of R rounds is reported; one extra run checks the event count.
#
#   bench/execd-stream.sh [--quick] [--out FILE]      (SG_BIN_DIR: build dir, use a Release
#                                                      build: ASan makes everything ~3x slower)
# Writes JSON (default bench/results/execd-stream.json) and prints a summary. Bounded: every
# request has a curl/node timeout, loops have fixed counts.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build}
n_lat=300 rounds=5 bulk_mb=200 seq_n=2000000
out=$root/bench/results/execd-stream.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n_lat=100 rounds=3 bulk_mb=50 seq_n=500000 ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin/sandgate-execd" ] || { echo "no $bin/sandgate-execd (set SG_BIN_DIR)" >&2; exit 1; }
asan=no
if nm -an "$bin/sandgate-execd" 2>/dev/null | grep -q __asan_init; then asan=yes; echo "warning: $bin/sandgate-execd is an ASan build" >&2; fi

tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

"$bin/sandgate-execd" --listen 127.0.0.1:0 --port-file "$tmp/port" --log-dir "$tmp" --log-level warn \
  --max-stream-buffer 256M 2>"$tmp/execd.log" &
pid=$!
for _ in $(seq 200); do [ -s "$tmp/port" ] && break; sleep 0.05; done
port=$(cat "$tmp/port")

now_ns() { date +%s%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# --- latency (node)
cat >"$tmp/lat.js" <<'JS'
const http = require('http'); const { spawn } = require('child_process');
const [port, n] = [+process.argv[2], +process.argv[3]];
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]; };
function execd() {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ command: 'echo x' });
    const t0 = process.hrtime.bigint(); let t1 = null; let tc = null; let buf = '';
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/command', agent,
      headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        if (t1 === null && buf.includes('"type":"stdout"')) t1 = process.hrtime.bigint();
        if (tc === null && buf.includes('"type":"execution_complete"')) tc = process.hrtime.bigint();
      });
      res.on('end', () => t1 === null || tc === null ? reject(new Error('no stdout / complete'))
        : resolve([Number(t1 - t0) / 1e6, Number(process.hrtime.bigint() - tc) / 1e6]));
    });
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    req.on('error', reject); req.end(body);
  });
}
function pipe() {
  return new Promise((resolve, reject) => {
    // Timed to the first byte; resolved once the child is fully reaped, so its cleanup does
    // not land in the next measurement.
    const t0 = process.hrtime.bigint(); let t1 = null;
    const c = spawn('bash', ['-c', 'echo x'], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.once('data', () => { t1 = process.hrtime.bigint(); });
    c.on('error', reject);
    c.on('close', () => t1 === null ? reject(new Error('no output')) : resolve(Number(t1 - t0) / 1e6));
  });
}
(async () => {
  const e = [], b = [], t = [];
  for (let i = 0; i < 10; i++) { await execd(); await pipe(); }
  for (let i = 0; i < n; i++) { const [f, end] = await execd(); e.push(f); t.push(end); }
  for (let i = 0; i < n; i++) b.push(await pipe());
  console.log(JSON.stringify({ execd_p50_ms: pct(e, 50), execd_p99_ms: pct(e, 99), pipe_p50_ms: pct(b, 50), pipe_p99_ms: pct(b, 99),
    end_after_complete_p50_ms: pct(t, 50), end_after_complete_p99_ms: pct(t, 99), n }));
})().catch((err) => { console.error(err); process.exit(1); });
JS
echo "latency: $n_lat runs of 'echo x'..." >&2
lat=$(timeout 300 node "$tmp/lat.js" "$port" "$n_lat")

# --- throughput
run_execd() { # $1 = command; prints seconds and body bytes
  local body; body=$(node -e 'process.stdout.write(JSON.stringify({command:process.argv[1]}))' "$1")
  curl -s -m 300 -o /dev/null -w '%{time_total} %{size_download}\n' -H 'content-type: application/json' \
    --data-binary "$body" "http://127.0.0.1:$port/command"
}
run_pipe() { # $1 = command; prints seconds
  local t0 t1; t0=$(now_ns); timeout 300 bash -c "$1" | cat >/dev/null; t1=$(now_ns)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.6f\n", (b-a)/1e9}'
}
declare -A res
bench_one() { # name cmd out_bytes out_lines
  local name=$1 cmd=$2 bytes=$3 lines=$4 e=() p=() wire=0
  echo "$name: $rounds rounds of: $cmd" >&2
  for _ in $(seq "$rounds"); do
    read -r t w < <(run_execd "$cmd"); e+=("$t"); wire=$w
    p+=("$(run_pipe "$cmd")")
  done
  local te tp; te=$(printf '%s\n' "${e[@]}" | median); tp=$(printf '%s\n' "${p[@]}" | median)
  res[$name]=$(awk -v te="$te" -v tp="$tp" -v b="$bytes" -v l="$lines" -v w="$wire" -v n="$name" 'BEGIN{
    printf "{\"name\":\"%s\",\"output_bytes\":%d,\"line_events\":%d,\"wire_bytes\":%d,\"execd_s\":%.4f,\"pipe_s\":%.4f,\"execd_MBps\":%.1f,\"pipe_MBps\":%.1f,\"execd_lines_per_s\":%.0f,\"pipe_lines_per_s\":%.0f,\"ratio\":%.2f}",
      n, b, l, w, te, tp, b/1048576/te, b/1048576/tp, l/te, l/tp, te/tp }')
}
bulk_cmd="head -c ${bulk_mb}M /dev/zero | tr '\\0' a"
bulk_bytes=$((bulk_mb * 1048576))
bench_one bulk "$bulk_cmd" "$bulk_bytes" $(( (bulk_bytes + 65535) / 65536 ))
seq_cmd="seq 1 $seq_n"
seq_bytes=$(seq 1 "$seq_n" | wc -c)
bench_one lines "$seq_cmd" "$seq_bytes" "$seq_n"

# one checked run: every line arrived as an event
body=$(node -e 'process.stdout.write(JSON.stringify({command:process.argv[1]}))' "$seq_cmd")
got=$(curl -s -m 300 -H 'content-type: application/json' --data-binary "$body" "http://127.0.0.1:$port/command" | grep -c '"type":"stdout"' || true)
[ "$got" = "$seq_n" ] || { echo "check failed: $got stdout events, expected $seq_n" >&2; exit 1; }

rss_kb=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
mkdir -p "$(dirname "$out")"
cat >"$out" <<JSON
{"bench":"execd-stream","date":"$(date -u +%FT%TZ)","host_cpus":$(nproc),"asan_build":"$asan",
 "latency":$lat,
 "throughput":[${res[bulk]},${res[lines]}],
 "execd_peak_rss_kb":$rss_kb}
JSON
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const l = r.latency;
console.log(`first stdout byte (echo x, n=${l.n}): execd p50 ${l.execd_p50_ms.toFixed(2)} ms p99 ${l.execd_p99_ms.toFixed(2)} ms | pipe p50 ${l.pipe_p50_ms.toFixed(2)} ms p99 ${l.pipe_p99_ms.toFixed(2)} ms`);
console.log(`end of response after execution_complete: p50 ${l.end_after_complete_p50_ms.toFixed(3)} ms p99 ${l.end_after_complete_p99_ms.toFixed(3)} ms (Go: ~1000 ms)`);
for (const t of r.throughput)
  console.log(`${t.name.padEnd(5)} ${(t.output_bytes/1048576).toFixed(0)} MiB, ${t.line_events} events: execd ${t.execd_MBps} MB/s ${t.execd_lines_per_s} lines/s (${t.execd_s}s) | pipe ${t.pipe_MBps} MB/s ${t.pipe_lines_per_s} lines/s (${t.pipe_s}s) | execd/pipe time x${t.ratio}`);
console.log(`execd peak RSS ${r.execd_peak_rss_kb} KiB; written ${process.argv[1]}`);
' "$out"
