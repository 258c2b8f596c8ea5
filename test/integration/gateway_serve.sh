#!/usr/bin/env bash
# sandgate serve: starts on its defaults' shape, answers /health, gives JSON errors for what
# does not exist, echoes X-Request-ID, and exits 0 on SIGTERM.
source "$(dirname "$0")/_lib.sh"
port=$(free_port)
"$SG_BIN_DIR/sandgate" serve --listen "127.0.0.1:$port" --data "$T/data" 2>"$T/log" &
pid=$!; _pids+=($pid)
wait_http "http://127.0.0.1:$port/health"

body=$(curl -s "http://127.0.0.1:$port/health")
[ "$body" = '{"status":"healthy"}' ] || fail "/health said $body"
pass "/health"

code=$(curl -s -o "$T/out" -w '%{http_code}' "http://127.0.0.1:$port/no/such/route")
[ "$code" = 404 ] || fail "unknown route gave $code"
node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1]));if(typeof b.code!=="string"||typeof b.message!=="string")process.exit(1)' "$T/out" \
  || fail "404 body is not {code,message}: $(cat "$T/out")"
pass "404 JSON error"

rid=$(curl -s -D - -o /dev/null -H 'X-Request-ID: test-rid-42' "http://127.0.0.1:$port/health" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-request-id" {print $2}')
[ "$rid" = test-rid-42 ] || fail "X-Request-ID not echoed: '$rid'"
pass "X-Request-ID echoed"

[ -d "$T/data" ] || fail "data directory not created"
pass "data directory created"

kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
kill -0 $pid 2>/dev/null && fail "still running 5 s after SIGTERM"
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] || fail "exit status $rc after SIGTERM"
grep -q "status=200" "$T/log" || fail "no access log line: $(cat "$T/log")"
grep -q "handles open" "$T/log" && fail "the loop closed with handles open: $(cat "$T/log")"
pass "graceful exit 0 on SIGTERM, access log written"
