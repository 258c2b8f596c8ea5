#!/usr/bin/env bash
# GET /metrics on the real gateway (--provider none): content type, a strict check of the text
# format, every metric family with HELP and TYPE, zero sandboxes, a connection gauge that counts
# the scraper, finite loop lag figures, HEAD, 405 for other methods, the API key rule, and a
# clean SIGTERM exit.
source "$(dirname "$0")/_lib.sh"
port=$(free_port)
B="http://127.0.0.1:$port"
"$SG_BIN_DIR/sandgate" serve --listen "127.0.0.1:$port" --data "$T/data" --provider none 2>"$T/log" &
pid=$!; _pids+=($pid)
wait_http "$B/health"

# scrape -> $T/m (body), $T/h (head), $code
scrape() { code=$(curl -s -D "$T/h" -o "$T/m" -w '%{http_code}' "$@" "$B/metrics"); }
# val NAME_WITH_LABELS -> the sample's value ("" when absent)
val() { awk -v k="$1" '$1 == k {print $2}' "$T/m"; }

# The lag summary needs a timer sample (every 100 ms) before its quantiles are numbers.
for _ in $(seq 100); do
  scrape
  [ "$code" = 200 ] || fail "GET /metrics: $code $(cat "$T/m")"
  c=$(val sandgate_loop_lag_seconds_count)
  [ -n "$c" ] && [ "$c" -ge 2 ] && break
  sleep 0.05
done
[ "$c" -ge 2 ] || fail "no loop lag samples after 5 s: $(cat "$T/m")"

ct=$(tr -d '\r' <"$T/h" | awk -F': ' 'tolower($1)=="content-type" {print $2}')
[ "$ct" = "text/plain; version=0.0.4; charset=utf-8" ] || fail "Content-Type: '$ct'"
pass "200 with the 0.0.4 content type"

# Strict format: comments are exactly HELP or TYPE, once per family and before its samples;
# every other line is name{label="value",...} value with a value Go's ParseFloat accepts; the
# text ends with a newline and has no empty line.
[ "$(tail -c1 "$T/m" | od -An -c | tr -d ' ')" = '\n' ] || fail "does not end with a newline"
awk '
  function die(msg) { print "line " NR ": " msg ": " $0 > "/dev/stderr"; bad = 1; exit 1 }
  BEGIN { name = "^[a-zA-Z_:][a-zA-Z0-9_:]*"
          lv = "[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\[\\\\\"n])*\""
          sample = name "(\\{" lv "(," lv ")*\\})? [^ ]+$"
          num = "^[-+]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?$" }
  /^$/ { die("empty line") }
  /^#/ {
    if ($2 != "HELP" && $2 != "TYPE") die("comment that is not HELP or TYPE")
    if ($3 !~ (name "$")) die("bad metric name")
    if (($2, $3) in seen) die("second " $2)
    if ($3 in sampled) die($2 " after samples")
    seen[$2, $3] = 1
    if ($2 == "TYPE") {
      if (NF != 4 || $4 !~ /^(counter|gauge|summary|histogram|untyped)$/) die("bad TYPE")
      type[$3] = $4
    }
    next
  }
  {
    if ($0 !~ sample) die("not name{labels} value")
    v = $NF
    if (v !~ num && v != "NaN" && v != "+Inf" && v != "-Inf") die("value does not parse")
    n = $0; sub(/[{ ].*/, "", n)
    fam = n
    if (!(fam in type)) { f2 = n; sub(/_(sum|count)$/, "", f2); if (type[f2] == "summary") fam = f2 }
    if (!(fam in type) || !(("HELP", fam) in seen)) die("sample before its HELP and TYPE")
    sampled[fam] = 1
  }
  END { if (bad) exit 1; for (k in type) if (!(k in sampled)) { print "family without samples: " k > "/dev/stderr"; exit 1 } }
' "$T/m" || fail "text format"
pass "strict text format"

families="sandgate_build_info:gauge process_start_time_seconds:gauge sandgate_uptime_seconds:gauge
process_resident_memory_bytes:gauge process_virtual_memory_bytes:gauge sandgate_http_connections:gauge
sandgate_sandboxes:gauge sandgate_processes:gauge sandgate_processes_started_total:counter
sandgate_process_log_bytes:gauge sandgate_subscribers:gauge sandgate_subscribers_total:counter
sandgate_stream_events_in_total:counter sandgate_stream_bytes_in_total:counter
sandgate_stream_events_out_total:counter sandgate_stream_bytes_out_total:counter
sandgate_stream_events_in_per_second:gauge sandgate_stream_events_out_per_second:gauge
sandgate_stream_gaps_total:counter sandgate_stream_evicted_events_total:counter
sandgate_log_disk_bytes:gauge sandgate_log_disk_reads_total:counter
sandgate_log_segments_deleted_total:counter sandgate_log_outputs_evicted_total:counter
sandgate_log_write_errors_total:counter
sandgate_slow_subscribers_disconnected_total:counter sandgate_loop_lag_seconds:summary
sandgate_loop_lag_max_seconds:gauge sandgate_loop_lag_recent_max_seconds:gauge
sandgate_loop_busy_max_seconds:gauge sandgate_loop_busy_recent_max_seconds:gauge
sandgate_loop_iterations_total:counter sandgate_loop_idle_seconds_total:counter"
for f in $families; do
  n=${f%%:*} t=${f##*:}
  grep -q "^# HELP $n [^ ]" "$T/m" || fail "no HELP for $n"
  grep -qx "# TYPE $n $t" "$T/m" || fail "no '# TYPE $n $t'"
  grep -Eq "^$n(\{| )" "$T/m" || fail "no sample of $n"
done
got=$(grep -c '^# TYPE ' "$T/m")
[ "$got" -eq "$(wc -w <<<"$families")" ] || fail "$got families, the test knows $(wc -w <<<"$families"): update it and docs/operations.md"
pass "every family present with HELP and TYPE ($got)"

for s in Pending Running Pausing Paused Resuming Stopping Terminated Failed; do
  [ "$(val "sandgate_sandboxes{state=\"$s\"}")" = 0 ] || fail "sandboxes $s: $(val "sandgate_sandboxes{state=\"$s\"}")"
done
for s in running exited failed killed lost; do
  [ "$(val "sandgate_processes{state=\"$s\"}")" = 0 ] || fail "processes $s"
done
for r in hard soft timeout; do
  [ "$(val "sandgate_slow_subscribers_disconnected_total{reason=\"$r\"}")" = 0 ] || fail "cut $r"
done
[ "$(val sandgate_stream_events_in_total)" = 0 ] && [ "$(val sandgate_stream_events_in_per_second)" = 0 ] \
  || fail "stream counters not zero"
pass "no provider: every sandbox and process count is 0"

conns=$(val sandgate_http_connections)
[ "$conns" -ge 1 ] || fail "connections gauge $conns (the scrape itself is one)"
[ "$(val 'sandgate_build_info{version="0.1.0"}')" = 1 ] || grep -q '^sandgate_build_info{version="[^"]*"} 1$' "$T/m" \
  || fail "build info"
rss=$(val process_resident_memory_bytes)
[ "$rss" -gt 100000 ] || fail "RSS $rss"
pass "connections $conns, RSS $rss bytes"

# Loop lag: every figure a finite number >= 0, quantiles ordered, max since start >= them.
finite() { awk -v v="$1" 'BEGIN { exit !(v ~ /^[0-9.e+-]+$/ && v + 0 >= 0 && v + 0 < 3600) }'; }
q50=$(val 'sandgate_loop_lag_seconds{quantile="0.5"}')
q99=$(val 'sandgate_loop_lag_seconds{quantile="0.99"}')
q1=$(val 'sandgate_loop_lag_seconds{quantile="1"}')
mx=$(val sandgate_loop_lag_max_seconds)
for v in "$q50" "$q99" "$q1" "$mx" "$(val sandgate_loop_lag_seconds_sum)" "$(val sandgate_loop_busy_max_seconds)" \
  "$(val sandgate_loop_idle_seconds_total)" "$(val sandgate_uptime_seconds)"; do
  finite "$v" || fail "not a finite figure: '$v'"
done
awk -v a="$q50" -v b="$q99" -v c="$q1" -v m="$mx" 'BEGIN { exit !(a <= b && b <= c && c <= m) }' \
  || fail "lag figures out of order: p50 $q50 p99 $q99 max(window) $q1 max $mx"
[ "$(val sandgate_loop_iterations_total)" -ge 1 ] || fail "no loop iterations counted"
pass "loop lag p50 ${q50}s p99 ${q99}s max ${mx}s"

up1=$(val sandgate_uptime_seconds)
sleep 0.2
r=$(curl -s -I -o "$T/h" -w '%{http_code} %{size_download}' "$B/metrics")
[ "$r" = "200 0" ] || fail "HEAD: $r (status, body bytes)"
grep -qi '^content-type: text/plain; version=0.0.4' "$T/h" || fail "HEAD content type"
scrape
up2=$(val sandgate_uptime_seconds)
awk -v a="$up1" -v b="$up2" 'BEGIN { exit !(b > a) }' || fail "uptime did not grow: $up1 -> $up2"
pass "HEAD answered without a body; uptime grows"

for m in POST PUT DELETE; do
  code=$(curl -s -o "$T/out" -w '%{http_code}' -X "$m" "$B/metrics")
  [ "$code" = 405 ] && grep -q '"code":"METHOD_NOT_ALLOWED"' "$T/out" || fail "$m /metrics: $code $(cat "$T/out")"
done
pass "405 JSON for POST, PUT, DELETE"

kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] || fail "exit status $rc after SIGTERM"
grep -q "handles open" "$T/log" && fail "the loop closed with handles open: $(cat "$T/log")"
pass "clean exit (the metrics timers closed)"

# With --api-key, /metrics needs the key like the lifecycle routes (loopback included).
port=$(free_port)
B="http://127.0.0.1:$port"
"$SG_BIN_DIR/sandgate" serve --listen "127.0.0.1:$port" --data "$T/data2" --provider none --api-key sekrit 2>"$T/log2" &
pid=$!; _pids+=($pid)
wait_http "$B/health"
scrape
[ "$code" = 401 ] && grep -q '"code":"MISSING_API_KEY"' "$T/m" || fail "no key: $code $(cat "$T/m")"
scrape -H 'OPEN-SANDBOX-API-KEY: nope'
[ "$code" = 401 ] && grep -q '"code":"INVALID_API_KEY"' "$T/m" || fail "bad key: $code $(cat "$T/m")"
scrape -H 'OPEN-SANDBOX-API-KEY: sekrit'
[ "$code" = 200 ] && grep -q '^sandgate_http_connections ' "$T/m" || fail "with the key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$B/health")
[ "$code" = 200 ] || fail "/health needs no key: $code"
pass "--api-key: 401 MISSING_API_KEY / INVALID_API_KEY, 200 with the key"
