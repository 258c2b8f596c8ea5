#!/usr/bin/env bash
# The lifecycle API over HTTP without a provider: routes under /v1 and the root, 422 vs 400
# bodies, list shape, 404s, API key (not on /health or the proxy), the proxy's 502, metrics
# events, and a clean SIGTERM exit.
source "$(dirname "$0")/_lib.sh"
port=$(free_port)
B="http://127.0.0.1:$port"
"$SG_BIN_DIR/sandgate" serve --listen "127.0.0.1:$port" --data "$T/data" --api-key sekrit --provider none \
  --allow-host-volumes /srv 2>"$T/log" &
pid=$!; _pids+=($pid)
wait_http "$B/health"
K=(-H 'OPEN-SANDBOX-API-KEY: sekrit')

# req METHOD PATH [curl args...] -> sets $code and $body
req() { local m=$1 p=$2; shift 2; code=$(curl -s -o "$T/out" -w '%{http_code}' -X "$m" "$@" "$B$p"); body=$(cat "$T/out"); }
jq_() { node -e 'const b=JSON.parse(require("fs").readFileSync(0));const v=('"$1"');process.stdout.write(typeof v==="string"?v:JSON.stringify(v))' <<<"$body"; }

req GET /v1/sandboxes
[ "$code" = 401 ] && [ "$(jq_ b.code)" = MISSING_API_KEY ] || fail "no key: $code $body"
req GET /v1/sandboxes -H 'OPEN-SANDBOX-API-KEY: nope'
[ "$code" = 401 ] && [ "$(jq_ b.code)" = INVALID_API_KEY ] || fail "bad key: $code $body"
req GET /health
[ "$code" = 200 ] || fail "/health needs no key: $code"
pass "API key required on the lifecycle API only"

for prefix in /v1 ""; do
  req GET "$prefix/sandboxes" "${K[@]}"
  [ "$code" = 200 ] || fail "list $prefix: $code $body"
  [ "$body" = '{"items":[],"pagination":{"page":1,"pageSize":20,"totalItems":0,"totalPages":0,"hasNextPage":false}}' ] \
    || fail "empty list body: $body"
done
pass "empty list at /v1 and the root"

req GET '/v1/sandboxes?pageSize=201' "${K[@]}"
[ "$code" = 422 ] && [ "$(jq_ 'b.detail[0].loc.join(".")')" = query.pageSize ] || fail "pageSize 201: $code $body"
req GET '/v1/sandboxes?metadata=novalue' "${K[@]}"
[ "$code" = 400 ] && [ "$(jq_ b.code)" = INVALID_METADATA_FORMAT ] || fail "bad metadata filter: $code $body"
req GET '/v1/sandboxes?state=running&state=Paused&metadata=project%3Ddemo%26team%3Dml&page=3&pageSize=5' "${K[@]}"
[ "$code" = 200 ] && [ "$(jq_ 'b.pagination.page+","+b.pagination.pageSize')" = 3,5 ] || fail "filters: $code $body"
pass "list query validation"

req POST /v1/sandboxes "${K[@]}" -H 'Content-Type: application/json' --data '{"timeout":10}'
[ "$code" = 422 ] || fail "schema error: $code $body"
[ "$(jq_ 'b.detail.map(d=>d.type).sort().join(",")')" = greater_than_equal,missing,value_error ] || fail "422 detail: $body"
req POST /v1/sandboxes "${K[@]}" --data '{not json'
[ "$code" = 422 ] && [ "$(jq_ 'b.detail[0].type')" = json_invalid ] || fail "bad JSON: $code $body"
req POST /v1/sandboxes "${K[@]}" --data '{"image":{"uri":"ubuntu:22.04"},"entrypoint":[],"resourceLimits":{}}'
[ "$code" = 400 ] && [ "$(jq_ b.code)" = SANDBOX::INVALID_ENTRYPOINT ] || fail "empty entrypoint: $code $body"
req POST /v1/sandboxes "${K[@]}" --data '{"image":{"uri":"u"},"entrypoint":["sh"],"resourceLimits":{},"volumes":[{"name":"v","mountPath":"/d","host":{"path":"/etc"}}]}'
[ "$code" = 400 ] && [ "$(jq_ b.code)" = VOLUME::HOST_PATH_NOT_ALLOWED ] || fail "host volume: $code $body"
req POST /v1/sandboxes "${K[@]}" --data '{"image":{"uri":"ubuntu:22.04"},"entrypoint":["tail","-f","/dev/null"],"resourceLimits":{"cpu":"1","memory":"2Gi"},"secureAccess":false,"env":{},"metadata":{},"extensions":{},"timeout":600}'
[ "$code" = 503 ] && [ "$(jq_ b.code)" = SANDBOX::NO_PROVIDER ] || fail "no provider: $code $body"
pass "create validation: 422 schema, 400 semantics, 503 without a provider"

id=7c9e6679-7425-40de-944b-e07fc1f90ae7
for p in "/v1/sandboxes/$id" "/sandboxes/$id" "/v1/sandboxes/$id/endpoints/44772"; do
  req GET "$p" "${K[@]}"
  [ "$code" = 404 ] && [ "$(jq_ b.code)" = SANDBOX::SANDBOX_NOT_FOUND ] || fail "GET $p: $code $body"
done
req DELETE "/v1/sandboxes/$id" "${K[@]}"
[ "$code" = 404 ] || fail "DELETE unknown: $code"
req POST "/v1/sandboxes/$id/pause" "${K[@]}"
[ "$code" = 404 ] || fail "pause unknown: $code"
req PATCH "/v1/sandboxes/$id/metadata" "${K[@]}" --data '{}'
[ "$code" = 404 ] || fail "patch unknown: $code"
req PUT "/v1/sandboxes/$id" "${K[@]}"
[ "$code" = 405 ] || fail "PUT: $code"
pass "unknown sandbox: 404 with a code; wrong method 405"

req GET "/sandboxes/$id/proxy/44772/ping"
[ "$code" = 502 ] && [ -n "$(jq_ b.message)" ] || fail "proxy to nothing (no key needed): $code $body"
req GET "/v1/sandboxes/$id/proxy/0/x"
[ "$code" = 400 ] || fail "proxy port 0: $code $body"
pass "proxy: 502 JSON for an unknown sandbox, no API key needed"

code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "${K[@]}" -H 'Content-Type: application/json' \
  --data '{"eventType":"sandbox.create","sandboxId":"x","success":true}' "$B/v1/metrics/events")
[ "$code" = 204 ] || fail "metrics events: $code"
pass "POST /v1/metrics/events -> 204"

req GET /v1/nothing "${K[@]}"
[ "$code" = 404 ] || fail "unknown route: $code"

kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] || fail "exit status $rc after SIGTERM: $(cat "$T/log")"
grep -q "handles open" "$T/log" && fail "the loop closed with handles open: $(cat "$T/log")"
pass "clean exit"
