#!/usr/bin/env bash
# fanout-sandgate.sh: one sandgate process fanned out to many subscribers, against nginx + Nchan
# doing the same fan-out, side by side in one run (alternating, medians). Issue 6's targets:
# fan-out >= 2x Nchan's delivered events/s at equal or better p99; < 2 KiB of gateway memory
# per idle subscriber.
#
#   nchan     sandgate-bench fanout publishes itself (POST /pub, one event per request,
#             pipelined) to nginx + Nchan (bench/nchan.conf.in), subscribers GET /sub.
#   sandgate  a fresh `sandgate serve --provider local` and one sandbox per run; the publisher is
#             `sandgate-bench stamp` started in the sandbox as a background command through
#             POST /v1/sandboxes/{id}/proxy/44772/command (the binary comes in through a
#             read-only host volume, /bench); its process id is the `init` event's text; the
#             subscribers GET /v1/sandboxes/{id}/processes/{pid}/stream and read the stamped
#             events inside stdout events (fanout --pub-url none --clock realtime). The stamp
#             waits for fanout's --ready-file, so it starts once every subscriber is in. The
#             gateway is durable (the default: SQLite store, and every event of the process is
#             also appended to segment files under <data>/logs).
#   sandgate-mem  the same with `sandgate serve --durable off` (nothing on disk): the fanout
#             scenario only (not size, generators, slow, idle), so the cost of durability
#             shows side by side, alternating with the durable gateway and Nchan.
# Same event body and size (--size, default 128 B) and the same open-loop schedule for both;
# latency is publish-to-receive per delivery (stamp: written to the pipe -> received; Nchan:
# POST written -> received), so sandgate's figure also carries the pipe, the sandbox's execd
# and its relay to the gateway.
#
# Scenarios, per round (rounds interleave everything so drift hits both servers alike):
#   fanout  for N in --subscribers (1000 10000) and R in --rates (100 1000 5000 events/s):
#           events = min(R * duration, deliveries cap / N) (bounded runs), every server of
#           --servers (default "nchan sandgate sandgate-mem")
#   size    throughput vs payload size: --size-config (1000x1000) with --sizes (128 1024
#           8192 B; quick: 1024), events capped so one run moves at most 2 GB of bodies; keys
#           fanout-N-R-sS; the stamp writes events of the run's size
#   idle    N in (1000 10000) subscribers held --hold, then one probe event: RSS per subscriber
#   slow    1000 subscribers, 10 % stop reading, 1 KiB events at 1000/s: the others' p99 and
#           the server's memory growth
#   generators (the load generator is not the bottleneck) for N x R in --generator-check
#           ("1000x1000 10000x100"; quick: "1000x1000"), both servers, the same fan-out measured
#           by one sandgate-bench process and by two (run2 below: half the subscribers each,
#           one publisher as in a one-generator run, documents merged by
#           bench/merge-generators.js); keys fanout-N-R-g2. --generators 2 makes every fanout
#           run a two-generator run. idle and slow always use one generator (per-subscriber
#           memory and the stalled fraction are one process's view).
# Pinning (2 cores): the server (nginx worker / the gateway) on core 0; the bench on core 1
# (both generators of a two-generator run share it), with the publisher (the bench itself for
# Nchan; the sandbox's stamp and execd for sandgate).
# Server CPU and RSS are nginx master + worker, or the gateway process alone (its sandbox is
# the publisher, --no-server-descendants). After every gateway run the document records what
# the gateway holds on disk (gateway_disk: du of <data>/logs, the store files, and
# sandgate_log_disk_bytes and the log counters from /metrics): proof that the durable run wrote
# its log and the in-memory one wrote nothing. Rounds reverse the server order every other
# round, so sandgate and sandgate-mem take turns going first.
#
#   bench/fanout-sandgate.sh [--quick] [--rounds N] [--subscribers "1000 10000"]
#                            [--rates "100 1000 5000"] [--duration-ms MS] [--servers LIST]
#                            (LIST: any of nchan sandgate sandgate-mem)
#                            [--generators 1|2] [--generator-check "NxR ..."] [--no-slow]
#                            [--no-idle] [--sizes "128 1024 8192"] [--size-config NxR] [--out FILE]
# Writes bench/results/fanout-sandgate.json: every run's sandgate-bench document and medians
# per server and configuration. Uses $SG_BIN_DIR (default build-rel); the results
# name $SG_BIN_COMMIT as the commit (the binaries' source when they are a snapshot), else git HEAD. Loopback only; every
# run is bounded (connect 60 s, drain 90 s, the stamp's start wait 120 s, timeout 300 per
# bench process); all servers and sandboxes are stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build-rel}
rounds=3 dur_ms=2000 max_deliv=3000000 size=128 no_slow=
subs_list="1000 10000" rates="100 1000 5000" idle_list="1000 10000" slow_subs=1000 slow_rate=1000 hold=2s
size_cfg=1000x1000 sizes="128 1024 8192" max_bytes=2000000000
servers="nchan sandgate sandgate-mem" generators=1 gen_check="1000x1000 10000x100"
out=$root/bench/results/fanout-sandgate.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=1 dur_ms=1000 max_deliv=2000000 subs_list="1000" rates="100 1000 5000" idle_list="1000" hold=1s gen_check="1000x1000" sizes="1024" ;;
    --generators) generators=$2; shift; [ "$generators" = 1 ] || [ "$generators" = 2 ] || { echo "--generators: 1 or 2" >&2; exit 2; } ;;
    --generator-check) gen_check=$2; shift ;;
    --no-slow) no_slow=1 ;;
    --no-idle) idle_list= ;;
    --sizes) sizes=$2; shift ;;
    --size-config) size_cfg=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --subscribers) subs_list=$2; shift ;;
    --rates) rates=$2; shift ;;
    --duration-ms) dur_ms=$2; shift ;;
    --servers) servers=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--subscribers LIST] [--rates LIST] [--duration-ms MS] [--servers \"nchan sandgate sandgate-mem\"] [--generators 1|2] [--generator-check \"NxR ...\"] [--no-slow] [--no-idle] [--sizes LIST] [--size-config NxR] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
for b in sandgate sandgate-execd sandgate-bench; do
  [ -x "$bin/$b" ] || { echo "no $bin/$b (set SG_BIN_DIR or build build-rel)" >&2; exit 1; }
done
mod=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$mod" ] || { echo "Nchan module $mod missing: install libnginx-mod-nchan" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
source "$root/bench/_gateway.sh"

tmp=$(mktemp -d)
vol=$tmp/vol # the sandbox sees it read-only as /bench: the stamp binary and the ready files
mkdir -p "$vol" "$tmp/runs"
cp "$bin/sandgate-bench" "$vol/"
ngpid=
cleanup() {
  gw_stop
  [ -n "$ngpid" ] && kill "$ngpid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
pin0=() pin1=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0=(taskset -c 0) pin1=(taskset -c 1); fi
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# A fresh server per run: a warmed process reuses memory freed by earlier runs, which would
# hide the per-subscriber RSS that `idle` measures.
start_nginx() {
  local port; port=$(free_port)
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

SB_BODY='{"image":{"uri":"ubuntu:22.04"},"entrypoint":["sleep","infinity"],"timeout":3600,"resourceLimits":{"cpu":"1","memory":"2Gi"},"volumes":[{"name":"bench","host":{"path":"'"$vol"'"},"mountPath":"/bench","readOnly":true}]}'
start_sandgate() { # [on|off]: --durable
  rm -rf "$tmp/gw"
  GW_FLAGS="--durable ${1:-on} --allow-host-volumes $vol --max-connections $((nofile - 64))" gw_start "$tmp/gw" "${pin0[@]}"
  SID=$(gw_sandbox "$SB_BODY")
  gw_pin_sandbox 1
}
# start_stamp NAME STAMP-ARGS...: the publisher as a background command; prints its process id.
start_stamp() {
  local name=$1; shift
  local cmd="/bench/sandgate-bench stamp $* --start-file /bench/ready-$name --start-timeout 120s"
  curl -sf -m 10 -H 'content-type: application/json' \
    --data-binary "$(node -e 'process.stdout.write(JSON.stringify({command:process.argv[1],background:true}))' "$cmd")" \
    "$GW_URL/v1/sandboxes/$SID/proxy/44772/command" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l.trim())continue;const e=JSON.parse(l);if(e.type==="init"){console.log(e.text);return}}process.exit(1)})'
}

bench_common=(--connect-timeout 60s --drain-timeout 90s --size "$size")
run() { # server name scenario subscribers events rate [extra bench args...]
  local server=$1 name=$2 scen=$3 n=$4 ev=$5 rate=$6; shift 6
  local f="$tmp/runs/$server-$name.json"
  echo "== $server $name ($scen: $n subscribers, $ev events at $rate/s)" >&2
  if [ "$server" = nchan ]; then
    start_nginx
    timeout 300 "${pin1[@]}" "$bin/sandgate-bench" "$scen" --sub-url "$U/sub?id=$name-{run}" --pub-url "$U/pub?id=$name-{run}" \
      --subscribers "$n" --events "$ev" --rate "$rate" "${bench_common[@]}" "$@" --server-pid "$ngpid" --quiet --out "$f" ||
      echo "   (run not ok)" >&2
    stop_nginx
  else
    local mode=on; [ "$server" = sandgate-mem ] && mode=off
    start_sandgate $mode
    # the stamp's start file is per server and run: sandgate and sandgate-mem run the same
    # configurations, and a file left by one would start the other's stamp before its subscribers
    local pid sev=$ev ssize=$size a prev= rn=$server-$name
    [ "$scen" = idle ] && sev=1
    # the stamp writes the events, so it takes the run's event size (a later --size wins, as
    # in the bench's flags: slow and the size sweep pass their own)
    for a in "$@"; do [ "$prev" = --size ] && ssize=$a; prev=$a; done
    pid=$(start_stamp "$rn" --events "$sev" --rate "$rate" --size "$ssize") ||
      { echo "   (stamp did not start)" >&2; gw_stop; return 0; }
    timeout 300 "${pin1[@]}" "$bin/sandgate-bench" "$scen" --sub-url "$GW_URL/v1/sandboxes/$SID/processes/$pid/stream" \
      --pub-url none --clock realtime --ready-file "$vol/ready-$rn" \
      --subscribers "$n" --events "$ev" --rate "$rate" "${bench_common[@]}" "$@" \
      --server-pid "$GW_PID" --no-server-descendants --quiet --out "$f" || echo "   (run not ok)" >&2
    [ -f "$vol/ready-$rn" ] || touch "$vol/ready-$rn" # release a stamp still waiting
    # the process as the gateway saw it, and what the gateway holds on disk, for the record
    # (sandgate_log_disk_bytes is refreshed every second)
    if [ -f "$f" ]; then
      curl -s -m 5 "$GW_URL/v1/sandboxes/$SID/processes/$pid" >"$tmp/proc.json" || true
      sleep 1.1; gw_disk_json >"$tmp/disk.json" || echo '{}' >"$tmp/disk.json"
      echo "   --durable $mode, disk: $(cat "$tmp/disk.json")" >&2
      node -e 'const fs=require("fs");const [f,p,k,mode]=process.argv.slice(1);const d=JSON.parse(fs.readFileSync(f));try{d.gateway_process=JSON.parse(fs.readFileSync(p,"utf8"))}catch{d.gateway_process=null}try{d.gateway_disk={durable:mode,...JSON.parse(fs.readFileSync(k,"utf8"))}}catch{d.gateway_disk=null}fs.writeFileSync(f,JSON.stringify(d,null,2)+"\n")' "$f" "$tmp/proc.json" "$tmp/disk.json" "$mode"
    fi
    gw_stop
  fi
  [ -f "$f" ] && node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1]));const l=d.latency_ms.delivery,c=d.counts;console.error(`   ok=${d.ok} ${c.deliveries}/${c.deliveries_expected} deliveries, ${Math.round(d.throughput.deliveries_per_s)}/s, p50 ${l.p50?.toFixed(2)} p99 ${l.p99?.toFixed(2)} max ${l.max?.toFixed(2)} ms, gaps ${c.gaps}, errors ${d.errors.total}, cpu bench ${d.cpu.bench?.util?.toFixed(2)} server ${d.cpu.server?.util?.toFixed(2)}`)' "$f" || true
}

# run2 server name subscribers events rate: the same fan-out as `run ... fanout`, measured by
# two sandgate-bench processes holding half the subscribers each (both on core 1, both
# measuring every delivery with --latency-buckets), merged by bench/merge-generators.js into
# one document (deliveries summed over the union window, latency from the merged histograms).
# The publisher stays one: sandgate's stamp in the sandbox starts once both generators have
# written their ready files; for Nchan generator 2 subscribes first (--pub-url none, it only
# reads) and generator 1, which publishes as in `run`, starts when generator 2 is ready.
run2() {
  local server=$1 name=$2 n=$3 ev=$4 rate=$5
  local f="$tmp/runs/$server-$name.json" g1="$tmp/g1-$name.json" g2="$tmp/g2-$name.json" n1=$(( (n + 1) / 2 )) n2=$(( n / 2 ))
  local common=(--events "$ev" --rate "$rate" "${bench_common[@]}" --latency-buckets --quiet)
  echo "== $server $name (fanout, 2 generators: $n1 + $n2 subscribers, $ev events at $rate/s)" >&2
  rm -f "$g1" "$g2"
  if [ "$server" = nchan ]; then
    start_nginx
    local ch="$name-$$"
    timeout 300 "${pin1[@]}" "$bin/sandgate-bench" fanout --sub-url "$U/sub?id=$ch" --pub-url none --clock monotonic \
      --ready-file "$tmp/ready2-$name" --subscribers "$n2" "${common[@]}" --server-pid "$ngpid" --out "$g2" &
    local p2=$!
    for _ in $(seq 1200); do [ -f "$tmp/ready2-$name" ] || ! kill -0 "$p2" 2>/dev/null && break; sleep 0.05; done
    timeout 300 "${pin1[@]}" "$bin/sandgate-bench" fanout --sub-url "$U/sub?id=$ch" --pub-url "$U/pub?id=$ch" \
      --subscribers "$n1" "${common[@]}" --server-pid "$ngpid" --out "$g1" || echo "   (generator 1 not ok)" >&2
    wait "$p2" || echo "   (generator 2 not ok)" >&2
    stop_nginx
  else
    start_sandgate
    local pid
    local rn=$server-$name # the stamp's start files, per server as in run
    pid=$(start_stamp "$rn" --events "$ev" --rate "$rate" --size "$size") ||
      { echo "   (stamp did not start)" >&2; gw_stop; return 0; }
    local url="$GW_URL/v1/sandboxes/$SID/processes/$pid/stream" gen=()
    for i in 1 2; do
      local ni=$n1; [ $i = 2 ] && ni=$n2
      timeout 300 "${pin1[@]}" "$bin/sandgate-bench" fanout --sub-url "$url" --pub-url none --clock realtime \
        --ready-file "$vol/ready-$rn.g$i" --subscribers "$ni" "${common[@]}" \
        --server-pid "$GW_PID" --no-server-descendants --out "$tmp/g$i-$name.json" &
      gen+=($!)
    done
    # the stamp starts when both are in (bounded like the stamp's own wait)
    for _ in $(seq 2400); do
      [ -f "$vol/ready-$rn.g1" ] && [ -f "$vol/ready-$rn.g2" ] && break
      kill -0 "${gen[0]}" 2>/dev/null || kill -0 "${gen[1]}" 2>/dev/null || break
      sleep 0.05
    done
    touch "$vol/ready-$rn"
    wait "${gen[0]}" || echo "   (generator 1 not ok)" >&2
    wait "${gen[1]}" || echo "   (generator 2 not ok)" >&2
    gw_stop
  fi
  if [ -f "$g1" ] && [ -f "$g2" ]; then
    node "$root/bench/merge-generators.js" "$f" "$g1" "$g2" || echo "   (merge failed)" >&2
  else
    echo "   (a generator wrote no document)" >&2
  fi
  [ -f "$f" ] && node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1]));const l=d.latency_ms.delivery,c=d.counts;console.error(`   ok=${d.ok} ${c.deliveries}/${c.deliveries_expected} deliveries, ${Math.round(d.throughput.deliveries_per_s)}/s, p50 ${l.p50?.toFixed(2)} p99 ${l.p99?.toFixed(2)} max ${l.max?.toFixed(2)} ms, cpu bench ${d.cpu.bench.util?.toFixed(2)} (2 processes) server ${d.cpu.server.util?.toFixed(2)}; per generator: ${d.generators.map((g)=>`${Math.round(g.deliveries_per_s)}/s p99 ${g.delivery_ms.p99?.toFixed(2)}`).join(", ")}`)' "$f" || true
}

t_start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
steal_start=$(awk '/^cpu /{print $9}' /proc/stat)
for r in $(seq "$rounds"); do
  # alternate which server goes first, round by round
  order=($servers); [ $((r % 2)) = 0 ] && order=($(printf '%s\n' $servers | tac))
  # sandgate-mem only takes part in the fanout scenario; every other scenario runs the rest
  others=(); for s in "${order[@]}"; do [ "$s" = sandgate-mem ] || others+=("$s"); done
  for n in $subs_list; do
    for rate in $rates; do
      ev=$(( rate * dur_ms / 1000 )); cap=$(( max_deliv / n )); [ "$ev" -gt "$cap" ] && ev=$cap; [ "$ev" -lt 50 ] && ev=50
      for s in "${order[@]}"; do
        if [ "$generators" = 2 ]; then run2 "$s" "fanout-$n-$rate-g2-r$r" "$n" "$ev" "$rate"; else run "$s" "fanout-$n-$rate-r$r" fanout "$n" "$ev" "$rate"; fi
      done
    done
  done
  # the load generator is not the bottleneck: the same configurations measured by two generators
  for nr in $gen_check; do
    n=${nr%x*} rate=${nr#*x}
    ev=$(( rate * dur_ms / 1000 )); cap=$(( max_deliv / n )); [ "$ev" -gt "$cap" ] && ev=$cap; [ "$ev" -lt 50 ] && ev=50
    have=no # the one-generator figure of this configuration, unless the main loop made it
    case " $subs_list " in *" $n "*) case " $rates " in *" $rate "*) [ "$generators" = 1 ] && have=yes ;; esac ;; esac
    [ $have = yes ] || for s in "${others[@]}"; do run "$s" "fanout-$n-$rate-r$r" fanout "$n" "$ev" "$rate"; done
    for s in "${others[@]}"; do run2 "$s" "fanout-$n-$rate-g2-r$r" "$n" "$ev" "$rate"; done
  done
  # throughput vs payload size: one configuration, event sizes --sizes (the run at the default
  # size is the main loop's when it made it); events also capped so a run moves at most
  # max_bytes of event bodies to the subscribers
  n=${size_cfg%x*} rate=${size_cfg#*x}
  for sz in $sizes; do
    if [ "$sz" = "$size" ] && [ "$generators" = 1 ]; then
      case " $subs_list " in *" $n "*) case " $rates " in *" $rate "*) continue ;; esac ;; esac
    fi
    ev=$(( rate * dur_ms / 1000 )); cap=$(( max_deliv / n )); [ "$ev" -gt "$cap" ] && ev=$cap
    cap=$(( max_bytes / (n * sz) )); [ "$ev" -gt "$cap" ] && ev=$cap; [ "$ev" -lt 50 ] && ev=50
    for s in "${others[@]}"; do run "$s" "fanout-$n-$rate-s$sz-r$r" fanout "$n" "$ev" "$rate" --size "$sz"; done
  done
  sev=$(( slow_rate * dur_ms / 1000 ))
  [ -z "$no_slow" ] && for s in "${others[@]}"; do run "$s" "slow-$slow_subs-r$r" slow "$slow_subs" "$sev" "$slow_rate" --slow-fraction 0.1 --size 1024; done
  for n in $idle_list; do
    for s in "${others[@]}"; do run "$s" "idle-$n-r$r" idle "$n" 1 100 --hold "$hold"; done
  done
done
echo "runs took $(( $(date +%s) - t_start )) s" >&2

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
steal_ticks=$(( $(awk '/^cpu /{print $9}' /proc/stat) - steal_start ))
mkdir -p "$(dirname "$out")"
GENERATORS=$generators GEN_CHECK=$gen_check SIZES=$sizes SIZE_CFG=$size_cfg STEAL=$steal_ticks LOAD_START=$load_start LOAD_END=$load_end node - "$tmp/runs" "$out" "$rounds" "$dur_ms" "$max_deliv" "$size" \
  "$(nginx -v 2>&1)" "$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo unknown)" \
  "${SG_BIN_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}" <<'JS'
const fs = require('fs'), path = require('path'), os = require('os');
const [dir, out, rounds, durMs, maxDeliv, size, ngv, nchv, commit] = process.argv.slice(2);
const runs = fs.readdirSync(dir).sort().map((f) => ({ name: f.replace(/\.json$/, ''), ...JSON.parse(fs.readFileSync(path.join(dir, f))) }));
const med = (xs) => { xs = xs.filter((x) => typeof x === 'number' && isFinite(x)).sort((a, b) => a - b); return xs.length ? xs[(xs.length - 1) >> 1] : null; };
const groups = {};
for (const r of runs) {
  const [, server, rest] = /^(nchan|sandgate-mem|sandgate)-(.*)$/.exec(r.name);
  const g = rest.replace(/-r\d+$/, '');
  ((groups[server] ||= {})[g] ||= []).push(r);
}
const summarize = (rs) => {
  const m = (f) => med(rs.map((r) => { try { return f(r); } catch { return null; } }));
  const s = { scenario: rs[0].scenario, rounds: rs.length, ok_runs: rs.filter((r) => r.ok).length, subscribers: rs[0].params.subscribers,
    generators: rs[0].generators_merged || 1 };
  if (s.scenario !== 'idle') {
    Object.assign(s, {
      rate: rs[0].params.rate, events: rs[0].params.events, size: rs[0].params.size,
      deliveries_per_s: m((r) => r.throughput.deliveries_per_s),
      offered_deliveries_per_s: rs[0].params.rate * (rs[0].params.subscribers - (rs[0].params.slow_subscribers || 0)),
      delivery_ms: { p50: m((r) => r.latency_ms.delivery.p50), p99: m((r) => r.latency_ms.delivery.p99),
        p99_9: m((r) => r.latency_ms.delivery.p99_9), max: m((r) => r.latency_ms.delivery.max) },
      delivery_from_schedule_p99_ms: m((r) => r.latency_ms.delivery_from_schedule.p99),
      deliveries: m((r) => r.counts.deliveries), deliveries_expected: m((r) => r.counts.deliveries_expected),
      gaps: m((r) => r.counts.gaps), errors: m((r) => r.errors.total), drain_timeouts: rs.filter((r) => r.errors.drain_timeout).length,
      deliveries_before_ready: m((r) => r.counts.deliveries_before_ready ?? 0),
      cpu_util: { bench: m((r) => r.cpu.bench.util), server: m((r) => r.cpu.server.util) },
      server_cpu_us_per_delivery: m((r) => r.cpu.server.total_s / (r.counts.deliveries + r.counts.deliveries_to_slow) * 1e6),
      server_rss_kb_max: m((r) => r.memory.server_rss_kb_max),
    });
    const dk = rs.map((r) => r.gateway_disk).filter(Boolean);
    if (dk.length) s.disk = { runs: dk.length, durable: dk[0].durable, logs_du_bytes_median: med(dk.map((d) => d.logs_du_bytes)),
      log_disk_bytes_median: med(dk.map((d) => d.log_disk_bytes)), write_errors_max: Math.max(...dk.map((d) => d.write_errors || 0)),
      files: dk[dk.length - 1].durable_files };
    if (s.scenario === 'slow') Object.assign(s, {
      slow_subscribers: rs[0].params.slow_subscribers,
      server_rss_kb_growth_max: m((r) => r.memory.server_rss_kb_max - r.memory.server_rss_kb_held),
      slow_received_max: m((r) => r.counts.slow_received_max),
      subscribers_closed_early: m((r) => r.counts.subscribers_closed_early),
    });
  } else {
    Object.assign(s, {
      server_rss_bytes_per_subscriber: m((r) => r.memory.server_rss_bytes_per_subscriber),
      bench_rss_bytes_per_subscriber: m((r) => r.memory.bench_rss_bytes_per_subscriber),
      socket_slab_bytes_per_subscriber_both_ends: m((r) => r.memory.socket_slab_bytes_per_subscriber_both_ends),
      subscribe_ms: { p50: m((r) => r.latency_ms.subscribe.p50), p99: m((r) => r.latency_ms.subscribe.p99) },
      probe_delivery_ms_max: m((r) => r.latency_ms.delivery.max),
    });
  }
  return s;
};
const summary = {};
for (const [server, gs] of Object.entries(groups)) { summary[server] = {}; for (const [g, rs] of Object.entries(gs)) summary[server][g] = summarize(rs); }
const ratios = {};
const S = summary.sandgate || {}, N = summary.nchan || {};
for (const g of Object.keys(S)) {
  if (!N[g]) continue;
  const a = S[g], b = N[g], q = (x, y) => (typeof x === 'number' && typeof y === 'number' && y ? x / y : null);
  ratios[g] = a.scenario === 'idle'
    ? { server_rss_per_subscriber: q(a.server_rss_bytes_per_subscriber, b.server_rss_bytes_per_subscriber) }
    : { deliveries_per_s: q(a.deliveries_per_s, b.deliveries_per_s), p50: q(a.delivery_ms.p50, b.delivery_ms.p50), p99: q(a.delivery_ms.p99, b.delivery_ms.p99),
        server_cpu_per_delivery: q(a.server_cpu_us_per_delivery, b.server_cpu_us_per_delivery) };
}
// the cost of durability: the durable gateway over the in-memory one, same configuration
const durable = {};
const M = summary['sandgate-mem'] || {};
for (const g of Object.keys(M)) {
  if (!S[g] || S[g].scenario === 'idle') continue;
  const a = S[g], b = M[g], q = (x, y) => (typeof x === 'number' && typeof y === 'number' && y ? x / y : null);
  durable[g] = { deliveries_per_s: q(a.deliveries_per_s, b.deliveries_per_s), p50: q(a.delivery_ms.p50, b.delivery_ms.p50),
    p99: q(a.delivery_ms.p99, b.delivery_ms.p99), server_cpu_per_delivery: q(a.server_cpu_us_per_delivery, b.server_cpu_us_per_delivery) };
}
const doc = {
  bench: 'fanout-sandgate', generated_at: new Date().toISOString(), commit,
  nginx: ngv.replace(/^nginx version: /, ''), nchan_package: nchv,
  machine: { cpus: os.cpus().length, model: os.cpus()[0].model, kernel: os.release(),
    pinned: os.cpus().length >= 2 ? 'server core 0; bench and publisher (sandgate: the sandbox) core 1' : 'no',
    loadavg_start: process.env.LOAD_START, loadavg_end: process.env.LOAD_END, steal_ticks: +process.env.STEAL,
    note: 'shared machine: other sessions run builds and tests concurrently; quote medians' },
  params: { rounds: +rounds, duration_ms: +durMs, max_deliveries_per_run: +maxDeliv, size: +size,
    generators: +process.env.GENERATORS, generator_check: process.env.GEN_CHECK, sizes: process.env.SIZES, size_config: process.env.SIZE_CFG },
  targets: { fanout: 'sandgate deliveries/s >= 2x Nchan at equal or better p99', idle: '< 2048 B of gateway RSS per idle subscriber' },
  summary, ratios, durable_over_mem: durable, runs,
};
fs.writeFileSync(out, JSON.stringify(doc, null, 2) + '\n');
const f = (x, d = 0) => (x === null || x === undefined ? 'n/a' : x.toFixed(d));
for (const g of Object.keys({ ...N, ...S, ...M })) {
  for (const [srv, v] of [['nchan', N[g]], ['sandgate', S[g]], ['sandgate-mem', M[g]]]) {
    if (!v) continue;
    if (v.scenario === 'idle') console.log(`${g.padEnd(18)} ${srv.padEnd(12)} ok ${v.ok_runs}/${v.rounds} server ${f(v.server_rss_bytes_per_subscriber)} B/sub`);
    else console.log(`${g.padEnd(18)} ${srv.padEnd(12)} ok ${v.ok_runs}/${v.rounds} ${f(v.deliveries_per_s)} deliveries/s (offered ${v.offered_deliveries_per_s}) p50 ${f(v.delivery_ms.p50, 2)} p99 ${f(v.delivery_ms.p99, 2)} max ${f(v.delivery_ms.max, 2)} ms cpu bench ${f(v.cpu_util.bench, 2)} server ${f(v.cpu_util.server, 2)}${v.scenario === 'slow' ? ` rss +${v.server_rss_kb_growth_max} KiB, closed early ${v.subscribers_closed_early}` : ''}`);
  }
  if (durable[g]) console.log(`${g.padEnd(18)} durable/mem  delivered/s ${f(durable[g].deliveries_per_s, 2)} p99 ${f(durable[g].p99, 2)} cpu/delivery ${f(durable[g].server_cpu_per_delivery, 2)}`);
}
console.log(`wrote ${out}`);
JS
