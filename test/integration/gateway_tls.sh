#!/usr/bin/env bash
# sandgate serve over HTTPS: curl verifies it against a throwaway CA; the wrong CA, the wrong
# host name and plaintext HTTP are all refused; the gateway keeps serving afterwards.
source "$(dirname "$0")/_lib.sh"
cd "$T"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
  -out ca.crt -days 2 -subj "/CN=sandgate test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other.key \
  -out other.crt -days 2 -subj "/CN=other CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key \
  -out srv.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > srv.ext
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 \
  -extfile srv.ext 2>/dev/null

port=$(free_port)
"$SG_BIN_DIR/sandgate" serve --listen "127.0.0.1:$port" --data "$T/data" \
  --tls-cert srv.crt --tls-key srv.key 2>"$T/log" &
pid=$!; _pids+=($pid)
for _ in $(seq 200); do curl -s --cacert ca.crt -o /dev/null "https://127.0.0.1:$port/health" && break; sleep 0.05; done

body=$(curl -fsS --cacert ca.crt "https://127.0.0.1:$port/health")
[ "$body" = '{"status":"healthy"}' ] || fail "HTTPS /health said '$body'"
pass "HTTPS with the right CA (IP SAN)"

body=$(curl -fsS --cacert ca.crt --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/health")
[ "$body" = '{"status":"healthy"}' ] || fail "HTTPS by name said '$body'"
pass "HTTPS with the right CA (DNS SAN)"

n=$(curl -fsS --cacert ca.crt "https://127.0.0.1:$port/health" "https://127.0.0.1:$port/health" -w '%{num_connects}\n' -o /dev/null -o /dev/null | paste -sd' ')
[ "$n" = "1 0" ] || fail "second HTTPS request did not reuse the connection (connects: $n)"
pass "HTTPS keep-alive"

if curl -fsS --cacert other.crt -o /dev/null "https://127.0.0.1:$port/health" 2>/dev/null; then fail "wrong CA accepted"; fi
pass "wrong CA refused by the client"

if curl -fsS --cacert ca.crt --resolve "wrong.example:$port:127.0.0.1" -o /dev/null "https://wrong.example:$port/health" 2>/dev/null; then
  fail "wrong host name accepted"
fi
pass "wrong host name refused by the client"

if curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then fail "plaintext HTTP answered on the TLS port"; fi
pass "plaintext HTTP on the TLS port gets no answer"

body=$(curl -fsS --cacert ca.crt "https://127.0.0.1:$port/health")
[ "$body" = '{"status":"healthy"}' ] || fail "gateway stopped serving after the bad clients"
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] || fail "exit status $rc after SIGTERM"
pass "still serving after bad clients; exit 0 on SIGTERM"
