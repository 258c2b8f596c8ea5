# bench/_gateway.sh: sourced by bench scripts that need `sandgate serve --provider local` with
# one sandbox (relay.sh, fanout-sandgate.sh). Not a benchmark itself.
#
#   gw_start DIR PIN... starts the gateway (data in DIR/data, log DIR/serve.log) on a free
#                       loopback port, run by PIN... (e.g. taskset -c 1, or nothing); extra
#                       serve flags from $GW_FLAGS. Sets GW_PID, GW_URL. Bounded: 10 s.
#   gw_sandbox BODY     POST /v1/sandboxes with BODY (JSON), waits for Running (bounded: 60 s),
#                       prints the sandbox id.
#   gw_pin_sandbox CPUS moves every process under the gateway (its sandboxes: bwrap, the init,
#                       execd) to CPUS; commands started later inherit execd's affinity.
#   gw_stop             deletes the sandboxes it created, stops the gateway, kills any sandbox
#                       init left behind (so nothing outlives the bench).
#   gw_save NAME        puts the current gateway aside under NAME (the globals are cleared, so
#                       gw_start can start another one); gw_use NAME makes it current again.
#                       relay.sh keeps a durable and an in-memory gateway side by side this way.
#   gw_metric NAME      one sample of the current gateway's /metrics (empty if absent).
#   gw_disk_json        {"durable_files": ..., "logs_du_bytes": ..., "log_disk_bytes": ...,
#                       "segments_deleted": ..., "write_errors": ..., "bytes_in": ...}: what the
#                       current gateway holds on disk now (du of <data>/logs and the store files)
#                       and its log counters, for the results (proof the durable run wrote its log).
GW_PID= GW_URL= GW_DIR= GW_SANDBOXES=()
declare -gA _GW_SAVED=()

gw_start() {
  GW_DIR=$1; shift
  local port; port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  mkdir -p "$GW_DIR"
  # shellcheck disable=SC2086
  "$@" "$bin/sandgate" serve --provider local --listen "127.0.0.1:$port" --data "$GW_DIR/data" \
    --image ubuntu:22.04=host --log-level warn --health-interval 0 ${GW_FLAGS:-} 2>"$GW_DIR/serve.log" &
  GW_PID=$!
  GW_URL=http://127.0.0.1:$port
  for _ in $(seq 200); do curl -sf -m 2 -o /dev/null "$GW_URL/health" && return 0; sleep 0.05; done
  echo "sandgate serve did not start:" >&2; cat "$GW_DIR/serve.log" >&2; return 1
}

gw_sandbox() {
  local body=$1 id state
  id=$(curl -sf -m 10 -H 'content-type: application/json' --data-binary "$body" "$GW_URL/v1/sandboxes" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).id))') ||
    { echo "sandbox create failed" >&2; return 1; }
  GW_SANDBOXES+=("$id")
  for _ in $(seq 600); do
    state=$(curl -sf -m 5 "$GW_URL/v1/sandboxes/$id" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).status.state)}catch{console.log("?")}})')
    [ "$state" = Running ] && { echo "$id"; return 0; }
    [ "$state" = Failed ] && break
    sleep 0.1
  done
  echo "sandbox $id did not become Running (state $state)" >&2; cat "$GW_DIR/serve.log" >&2; return 1
}

_gw_descendants() { # pid -> every descendant pid, one per line
  local c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do echo "$c"; _gw_descendants "$c"; done
}

gw_pin_sandbox() {
  command -v taskset >/dev/null || return 0
  local p
  for p in $(_gw_descendants "$GW_PID"); do taskset -a -p -c "$1" "$p" >/dev/null 2>&1 || true; done
}

gw_stop() {
  local id st ipid left
  if [ -n "$GW_PID" ]; then
    left=$(_gw_descendants "$GW_PID") # sandboxes are detached: remember them before the gateway goes
    for id in "${GW_SANDBOXES[@]}"; do curl -s -m 10 -o /dev/null -X DELETE "$GW_URL/v1/sandboxes/$id" || true; done
    kill "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=
    for ipid in $left; do kill -9 "$ipid" 2>/dev/null || true; done
  fi
  [ -n "$GW_DIR" ] || return 0
  for st in "$GW_DIR"/data/sandboxes/*/state.json; do
    [ -f "$st" ] || continue
    ipid=$(node -e 'try{const s=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));if(s.init_pid)console.log(s.init_pid)}catch{}' "$st")
    [ -n "$ipid" ] && kill -9 "$ipid" 2>/dev/null || true
  done
  GW_SANDBOXES=()
}

gw_save() {
  _GW_SAVED[$1]="$GW_PID|$GW_URL|$GW_DIR|${GW_SANDBOXES[*]}"
  GW_PID= GW_URL= GW_DIR= GW_SANDBOXES=()
}

gw_use() {
  local sbs
  IFS='|' read -r GW_PID GW_URL GW_DIR sbs <<<"${_GW_SAVED[$1]}"
  read -ra GW_SANDBOXES <<<"$sbs"
}

gw_metric() {
  { curl -s -m 5 "$GW_URL/metrics" || true; } | awk -v n="$1" '$1 == n { print $2; exit }'
}

gw_disk_json() {
  local m du files
  m=$(curl -s -m 5 "$GW_URL/metrics") || true
  du=$(du -sb "$GW_DIR/data/logs" 2>/dev/null | cut -f1) || true
  files=$(cd "$GW_DIR/data" 2>/dev/null && ls -d sandgate.db* logs 2>/dev/null | tr '\n' ' ') || true
  M="$m" node -e '
    const m = {}; for (const l of process.env.M.split("\n")) { const [k, v] = l.split(" "); if (k && !k.startsWith("#")) m[k] = +v; }
    console.log(JSON.stringify({ durable_files: process.argv[1].trim(), logs_du_bytes: process.argv[2] === "" ? null : +process.argv[2],
      log_disk_bytes: m.sandgate_log_disk_bytes ?? null, segments_deleted: m.sandgate_log_segments_deleted_total ?? null,
      write_errors: m.sandgate_log_write_errors_total ?? null, bytes_in: m.sandgate_stream_bytes_in_total ?? null }))' "$files" "${du:-}"
}
