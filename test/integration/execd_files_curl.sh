#!/usr/bin/env bash
# sandgate-execd's file API and proxy driven by curl, whose multipart layout differs from the
# JS SDK's (metadata without filename= and without Content-Type, `Expect: 100-continue` on large
# bodies, chunked with -H 'Transfer-Encoding: chunked'): uploads land byte-exact, downloads and
# -r ranges match, the proxy carries both, and execd exits 0 (ASan clean) on SIGTERM.
source "$(dirname "$0")/_lib.sh"
port=$(free_port)
B="http://127.0.0.1:$port"
ASAN_OPTIONS=quarantine_size_mb=4:detect_leaks=1 "$SG_BIN_DIR/sandgate-execd" --listen "127.0.0.1:$port" --log-level warn 2>"$T/log" &
pid=$!; _pids+=($pid)
wait_http "$B/files/info"

head -c 3000000 /dev/urandom >"$T/src.bin"
sum() { sha256sum "$1" | cut -d' ' -f1; }

# curl -F: metadata is a plain field (no filename=), file has filename=; > 1 MiB -> Expect.
code=$(curl -s -o "$T/out" -w '%{http_code}' -F "metadata={\"path\":\"$T/up/a.bin\",\"mode\":640}" -F "file=@$T/src.bin" "$B/files/upload")
[ "$code" = 200 ] || fail "upload gave $code: $(cat "$T/out")"
[ "$(sum "$T/up/a.bin")" = "$(sum "$T/src.bin")" ] || fail "uploaded bytes differ"
[ "$(stat -c %a "$T/up/a.bin")" = 640 ] || fail "mode $(stat -c %a "$T/up/a.bin")"
pass "curl -F upload (metadata without filename=, Expect: 100-continue)"

code=$(curl -s -o "$T/out" -w '%{http_code}' -H 'Transfer-Encoding: chunked' -F "metadata=@-;type=application/json" -F "file=@$T/src.bin" "$B/files/upload" <<<"{\"path\":\"$T/up/b.bin\"}")
[ "$code" = 200 ] || fail "chunked upload gave $code: $(cat "$T/out")"
[ "$(sum "$T/up/b.bin")" = "$(sum "$T/src.bin")" ] || fail "chunked upload bytes differ"
pass "chunked upload, metadata as a file part"

curl -s -o "$T/dl.bin" "$B/files/download?path=$T/up/a.bin"
[ "$(sum "$T/dl.bin")" = "$(sum "$T/src.bin")" ] || fail "download differs"
curl -s -o "$T/r.bin" -r 1000-1999 "$B/files/download?path=$T/up/a.bin"
cmp -s "$T/r.bin" <(tail -c +1001 "$T/src.bin" | head -c 1000) || fail "range 1000-1999 differs"
code=$(curl -s -o /dev/null -w '%{http_code}' -r 5000000- "$B/files/download?path=$T/up/a.bin")
[ "$code" = 416 ] || fail "range past the end gave $code"
pass "download, -r range, 416"

curl -s -o "$T/p.bin" "$B/proxy/$port/files/download?path=$T/up/a.bin"
[ "$(sum "$T/p.bin")" = "$(sum "$T/src.bin")" ] || fail "proxied download differs"
code=$(curl -s -o "$T/out" -w '%{http_code}' -F "metadata={\"path\":\"$T/up/c.bin\"}" -F "file=@$T/src.bin" "$B/proxy/$port/files/upload")
[ "$code" = 200 ] || fail "proxied upload gave $code: $(cat "$T/out")"
[ "$(sum "$T/up/c.bin")" = "$(sum "$T/src.bin")" ] || fail "proxied upload bytes differ"
closed=$(free_port)
code=$(curl -s -o "$T/out" -w '%{http_code}' "$B/proxy/$closed/")
[ "$code" = 502 ] || fail "closed port gave $code"
grep -q '"code":"RUNTIME_ERROR"' "$T/out" || fail "502 body: $(cat "$T/out")"
pass "proxy: download, upload, 502"

ls -a "$T/up" | grep -q sgupload && fail "temp files left: $(ls -a "$T/up")"
kill -TERM $pid
for _ in $(seq 200); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
rc=0; wait $pid || rc=$?
[ $rc -eq 0 ] || fail "exit status $rc after SIGTERM: $(cat "$T/log")"
grep -qE 'Sanitizer|runtime error' "$T/log" && fail "sanitizer: $(cat "$T/log")"
pass "exit 0 on SIGTERM, no temp files, sanitizer clean"
