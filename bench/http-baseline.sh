#!/usr/bin/env bash
# http-baseline.sh: requests/s and latency for a trivial route, sandgate vs nginx, one run.
#
# Both servers answer GET /health with the same 20-byte JSON body and keep-alive. Each server
# is pinned to core 0 and wrk to core 1 (2-core machines), servers run one worker / one
# thread, access logs are off on both. Rounds alternate sandgate / nginx so drift on a shared
# machine hits both alike; the report quotes the median round of each and their ratio. CPU
# (cores used over a run, medians) is recorded for the server (nginx: master + worker) and wrk.
#
#   bench/http-baseline.sh [--quick] [--out FILE]
#
# Writes a JSON document (default bench/results/http-baseline.json) and prints a summary.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build}
rounds=5 dur=10 conns=64
out=$root/bench/results/http-baseline.json
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=3 dur=4 ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk >/dev/null || { echo "wrk missing: run scripts/setup.sh" >&2; exit 1; }
[ -x "$bin/sandgate" ] || { echo "no $bin/sandgate: run scripts/setup.sh" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

sg_port=18181 ng_port=18182
pin0=() pin1=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0=(taskset -c 0) pin1=(taskset -c 1); fi

"${pin0[@]}" "$bin/sandgate" serve --listen "127.0.0.1:$sg_port" --data "$tmp/data" --log-level warn 2>"$tmp/sandgate.log" &
pids+=($!)

mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$ng_port;
    location = /health { default_type application/json; return 200 '{"status":"healthy"}'; }
  }
}
NGX
"${pin0[@]}" nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" &
pids+=($!)

for port in $sg_port $ng_port; do
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null
done

# wrk --latency prints "50%  123.00us" lines; normalise to microseconds.
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} }'; }
# CPU ticks (user + system) of a process and its children processes (nginx: master + worker).
hz=$(getconf CLK_TCK)
ticks() {
  local p t=0
  for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    t=$(( t + $(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0) ))
  done
  echo "$t"
}
# run_wrk PORT FILE SERVER-PID -> "rps p50_us p99_us server_cores wrk_cores errors"; CPU is
# cores used over the run (the load generator must not be the bottleneck: wrk's next to the
# server's). wrk's own CPU comes from the subshell's `times` (its only child).
run_wrk() {
  local port=$1 f=$2 spid=$3 t0 t1
  t0=$(ticks "$spid")
  ( "${pin1[@]}" wrk -t1 -c"$conns" -d"${dur}s" --latency "http://127.0.0.1:$port/health" >"$f"; times >"$f.times" )
  t1=$(ticks "$spid")
  local rps p50 p99 errs scpu wcpu
  rps=$(awk '/Requests\/sec/ {print $2}' "$f")
  p50=$(awk '$1=="50%" {print $2}' "$f" | to_us)
  p99=$(awk '$1=="99%" {print $2}' "$f" | to_us)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$f" | tr '\n' ' ')
  scpu=$(awk -v d=$(( t1 - t0 )) -v hz="$hz" -v s="$dur" 'BEGIN {printf "%.2f", d / hz / s}')
  # `times` line 2: children's user and system time, e.g. "0m1.234s 0m2.345s"
  wcpu=$(awk -v s="$dur" 'NR==2 {t=0; for (i=1;i<=2;i++) {split($i,a,/[ms]/); t+=a[1]*60+a[2]} printf "%.2f", t / s}' "$f.times")
  echo "$rps $p50 $p99 $scpu $wcpu ${errs:-none}"
}

declare -a sg_rps sg_p50 sg_p99 ng_rps ng_p50 ng_p99 sg_cpu sg_wrk ng_cpu ng_wrk
for r in $(seq "$rounds"); do
  read -r a b c x y e < <(run_wrk $sg_port "$tmp/sg.$r" "${pids[0]}"); sg_rps+=("$a"); sg_p50+=("$b"); sg_p99+=("$c"); sg_cpu+=("$x"); sg_wrk+=("$y")
  [ "$e" = none ] || echo "round $r sandgate: $e" >&2
  read -r a b c x y e < <(run_wrk $ng_port "$tmp/ng.$r" "${pids[1]}"); ng_rps+=("$a"); ng_p50+=("$b"); ng_p99+=("$c"); ng_cpu+=("$x"); ng_wrk+=("$y")
  [ "$e" = none ] || echo "round $r nginx: $e" >&2
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
list() { local IFS=,; echo "$*"; }
m_sg_rps=$(median "${sg_rps[@]}") m_ng_rps=$(median "${ng_rps[@]}")
m_sg_p50=$(median "${sg_p50[@]}") m_ng_p50=$(median "${ng_p50[@]}")
m_sg_p99=$(median "${sg_p99[@]}") m_ng_p99=$(median "${ng_p99[@]}")
m_sg_cpu=$(median "${sg_cpu[@]}") m_ng_cpu=$(median "${ng_cpu[@]}")
m_sg_wrk=$(median "${sg_wrk[@]}") m_ng_wrk=$(median "${ng_wrk[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "null" }'; }

mkdir -p "$(dirname "$out")"
cat >"$out" <<JSON
{
  "scenario": "http-baseline",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": {"cpus": $(nproc), "kernel": "$(uname -r)", "cpu": "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"},
  "params": {"rounds": $rounds, "seconds": $dur, "connections": $conns, "wrk_threads": 1, "route": "GET /health"},
  "sandgate": {"rps": [$(list "${sg_rps[@]}")], "p50_us": [$(list "${sg_p50[@]}")], "p99_us": [$(list "${sg_p99[@]}")],
               "server_cpu": [$(list "${sg_cpu[@]}")], "wrk_cpu": [$(list "${sg_wrk[@]}")],
               "median": {"rps": $m_sg_rps, "p50_us": $m_sg_p50, "p99_us": $m_sg_p99, "server_cpu": $m_sg_cpu, "wrk_cpu": $m_sg_wrk}},
  "nginx": {"rps": [$(list "${ng_rps[@]}")], "p50_us": [$(list "${ng_p50[@]}")], "p99_us": [$(list "${ng_p99[@]}")],
            "server_cpu": [$(list "${ng_cpu[@]}")], "wrk_cpu": [$(list "${ng_wrk[@]}")],
            "median": {"rps": $m_ng_rps, "p50_us": $m_ng_p50, "p99_us": $m_ng_p99, "server_cpu": $m_ng_cpu, "wrk_cpu": $m_ng_wrk}},
  "ratio_sandgate_over_nginx": {"rps": $(ratio "$m_sg_rps" "$m_ng_rps"), "p50": $(ratio "$m_sg_p50" "$m_ng_p50"), "p99": $(ratio "$m_sg_p99" "$m_ng_p99")}
}
JSON
printf 'http-baseline (%s rounds x %ss, %s conns; medians)\n' "$rounds" "$dur" "$conns"
printf '  sandgate: %10s req/s  p50 %8s us  p99 %8s us  cpu server %s wrk %s\n' "$m_sg_rps" "$m_sg_p50" "$m_sg_p99" "$m_sg_cpu" "$m_sg_wrk"
printf '  nginx:    %10s req/s  p50 %8s us  p99 %8s us  cpu server %s wrk %s\n' "$m_ng_rps" "$m_ng_p50" "$m_ng_p99" "$m_ng_cpu" "$m_ng_wrk"
printf '  ratio sandgate/nginx: req/s %s, p50 %s, p99 %s\n' "$(ratio "$m_sg_rps" "$m_ng_rps")" "$(ratio "$m_sg_p50" "$m_ng_p50")" "$(ratio "$m_sg_p99" "$m_ng_p99")"
echo "wrote $out"
