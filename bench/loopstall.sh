#!/usr/bin/env bash
# loopstall.sh: where the loop's worst stall comes from while 100 processes stream (looplag.sh's
# scenario: a fresh gateway with one sandbox, then 100 background commands at once), traced from
# outside the gateway, one run per mode and pass. Not part of bench/run: it needs root, perf and
# strace, and tracing slows the gateway (read the causes, not the sizes).
#
#   perf pass    `perf record -e sched:sched_switch` for the loop thread (switches out of it and
#                back in, DWARF call chains), system-wide, from just before the burst until
#                --hold seconds after it. Every stretch the loop thread spends off its CPU
#                outside epoll_wait is a stall inside a loop iteration: grouped by the state it
#                left in (R = preempted while runnable, S/D = blocked) and the call chain it left
#                from; plus its longest on-CPU slice (the longest it ran without a break).
#   strace pass  `strace -y -T` of the loop thread alone (not the pool or SQLite threads) from
#                before the sandbox is created until the end: every system call that touches a
#                file (a path argument, or an fd that names a file: -y) is disk work on the loop
#                thread; counted per phase (create: gateway start and sandbox create; stream: the
#                burst and the streaming) with the slowest ones.
# The gateway's own since-start maxima (sandgate_loop_busy_max_seconds, ..._lag_max_seconds)
# are read at the end of each pass.
#
# Pinning as in looplag.sh: the gateway on core 1, its sandbox and this script's clients on
# core 0 (--clients unpinned: the clients go where the scheduler puts them).
#
#   bench/loopstall.sh [--modes "on off"] [--procs N] [--lines N] [--hold S]
#                      [--clients core0|unpinned] [--out FILE]
# Writes bench/results/loopstall.json. Uses $SG_BIN_DIR (default build-rel); the results
# name $SG_BIN_COMMIT as the commit (the binaries' source when they are a snapshot), else git HEAD. Loopback only;
# bounded (the tracers run for the burst + --hold seconds; every wait has a deadline).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SG_BIN_DIR:-$root/build-rel}
modes="on off" procs=100 lines=200 hold=4 clients=core0
out=$root/bench/results/loopstall.json
while [ $# -gt 0 ]; do
  case "$1" in
    --modes) modes=$2; shift ;;
    --procs) procs=$2; shift ;;
    --lines) lines=$2; shift ;;
    --hold) hold=$2; shift ;;
    --clients) clients=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--modes \"on off\"] [--procs N] [--lines N] [--hold S] [--clients core0|unpinned] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin/sandgate" ] || { echo "no $bin/sandgate: build first" >&2; exit 1; }
for t in perf strace taskset; do command -v $t >/dev/null || { echo "$t is not installed" >&2; exit 1; }; done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores" >&2; exit 1; }
tmp=$(mktemp -d)
source "$root/bench/_gateway.sh"
tracer=
cleanup() {
  [ -n "$tracer" ] && kill -INT "$tracer" 2>/dev/null && wait "$tracer" 2>/dev/null
  gw_stop 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
[ "$clients" = core0 ] && taskset -p -c 0 $$ >/dev/null

metric() { awk -v n="$2" '$1 == n { print $2; exit }' <<<"$1"; }
cmd="i=0; while [ \$i -lt $lines ]; do i=\$((i+1)); echo \"line \$i of a streaming process, padded to about one hundred bytes ........................\"; sleep 0.0100; done"
body=$(node -e 'console.log(JSON.stringify({command: process.argv[1], background: true}))' "$cmd")
SB='{"image":{"uri":"ubuntu:22.04"},"entrypoint":["sleep","infinity"],"timeout":3600,"resourceLimits":{"cpu":"2","memory":"4Gi"}}'

burst() { # the 100 commands at once; then --hold seconds of streaming
  local cpids=() _
  for _ in $(seq "$procs"); do
    curl -s -m 10 -o /dev/null -H 'content-type: application/json' --data-binary "$body" \
      "$GW_URL/v1/sandboxes/$1/proxy/44772/command" &
    cpids+=($!)
  done
  wait "${cpids[@]}"
  sleep "$hold"
}
maxima() { # gateway's since-start loop maxima -> JSON
  local m; m=$(curl -s -m 5 "$GW_URL/metrics") || true
  printf '{"busy_max_s":%s,"lag_max_s":%s,"events_in":%s}' "$(metric "$m" sandgate_loop_busy_max_seconds)" \
    "$(metric "$m" sandgate_loop_lag_max_seconds)" "$(metric "$m" sandgate_stream_events_in_total)"
}

mkdir -p "$tmp/res"
for mode in $modes; do
  # perf pass
  echo "== durable=$mode: perf pass" >&2
  GW_FLAGS="--durable $mode" gw_start "$tmp/gw-p-$mode" taskset -c 1
  sid=$(gw_sandbox "$SB"); gw_pin_sandbox 0
  # switches out of the loop thread with their call chains, switches back in without (less to
  # write: a lost record would pair the wrong ins and outs; the count of lost ones is kept)
  perf record -q -a -m 8M -e sched:sched_switch --filter "prev_pid == $GW_PID" --call-graph dwarf,8192 \
    -e sched:sched_switch/call-graph=no/ --filter "next_pid == $GW_PID" -o "$tmp/perf-$mode.data" 2>"$tmp/perf-$mode.err" &
  tracer=$!
  sleep 1
  burst "$sid"
  kill -INT "$tracer"; wait "$tracer" || true; tracer=
  maxima >"$tmp/res/perf-metrics-$mode.json"
  echo "$GW_PID" >"$tmp/res/perf-tid-$mode"
  gw_stop
  perf script -i "$tmp/perf-$mode.data" -F tid,time,event,trace,ip,sym 2>/dev/null >"$tmp/res/perf-$mode.txt" || true
  perf report -i "$tmp/perf-$mode.data" --stats 2>/dev/null | awk '/LOST events/ { if (match($0, /: *[0-9]+/)) n += substr($0, RSTART + 1, RLENGTH - 1) } END { print n + 0 }' >"$tmp/res/perf-lost-$mode" || echo 0 >"$tmp/res/perf-lost-$mode"
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$tmp/res/perf-$mode.txt" "$KEEP/" # KEEP=DIR keeps the raw traces
  rm -f "$tmp/perf-$mode.data"
  # strace pass: from before the sandbox exists
  echo "== durable=$mode: strace pass" >&2
  GW_FLAGS="--durable $mode" gw_start "$tmp/gw-s-$mode" taskset -c 1
  strace -y -tt -T -p "$GW_PID" -o "$tmp/res/strace-$mode.txt" 2>/dev/null &
  tracer=$!
  sleep 0.5
  sid=$(gw_sandbox "$SB"); gw_pin_sandbox 0
  date +%H:%M:%S.%N | cut -c1-15 >"$tmp/res/strace-burst-$mode"
  burst "$sid"
  kill -INT "$tracer"; wait "$tracer" || true; tracer=
  maxima >"$tmp/res/strace-metrics-$mode.json"
  echo "$GW_PID" >"$tmp/res/strace-tid-$mode"
  [ -n "${KEEP:-}" ] && cp "$tmp/res/strace-$mode.txt" "$KEEP/"
  gw_stop
done

mkdir -p "$(dirname "$out")"
CLIENTS=$clients node - "$tmp/res" "$out" "$modes" "$procs" "$lines" "$hold" \
  "${SG_BIN_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}" <<'JS'
const fs = require('fs'), path = require('path'), os = require('os');
const [dir, out, modes, procs, lines, hold, commit] = process.argv.slice(2);
const rd = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
const ms = (s) => +(s * 1000).toFixed(3);
// frames that say nothing about who asked for the switch
const noise = /^(\[unknown\]|__schedule|schedule|preempt_schedule\w*|exit_to_user_mode\w*|irqentry_\w+|asm_\w+|do_syscall_64|entry_SYSCALL\w*|__x64_sys_\w+|syscall_exit\w*|futex\w*|do_futex|__futex\w*|_raw_\w+|__cond_resched|__wake_up\w*|try_to_wake_up|wake_up_q|lll_mutex_unlock_optimized|__GI___pthread_mutex_unlock_usercnt|__libc_start\w*|_start|main)$/;

function perfPass(text, tid) {
  // one header line per switch; a switch out of the loop thread is followed by its call chain
  // (indented frames), a switch in has none (perf prints its ip on the header line)
  const recs = [];
  let cur = null;
  for (const l of text.split('\n')) {
    const m = /^\s*(\d+)\s+([\d.]+):\s+sched:sched_switch:\s+(.*)$/.exec(l);
    if (m) {
      const pm = /prev_pid=(\d+) .*prev_state=(\S+) ==> .*next_pid=(\d+)/.exec(m[3]);
      cur = pm ? { t: +m[2], prev: +pm[1], state: pm[2], next: +pm[3], frames: [] } : null;
      if (cur) recs.push(cur);
    } else if (cur && /^\s+[0-9a-f]+ /.test(l)) {
      cur.frames.push((l.trim().split(/\s+/)[1] || '').replace(/\+0x[0-9a-f]+$/, ''));
    }
  }
  recs.sort((a, b) => a.t - b.t);
  const groups = {}, stretches = [];
  let out = null, inAt = null, maxRun = 0, run = 0, n = 0;
  // a lost record leaves two outs or two ins in a row: the stretch across it is unknown, dropped
  let unpaired = 0;
  for (const r of recs) {
    if (r.prev === tid) {
      if (inAt !== null) { maxRun = Math.max(maxRun, r.t - inAt); run += r.t - inAt; inAt = null; }
      else if (out) unpaired++;
      out = r;
    } else if (r.next === tid) {
      if (inAt !== null) unpaired++;
      inAt = r.t;
      if (!out) continue;
      const d = r.t - out.t;
      out.frames.some((f) => /epoll_wait|ep_poll/.test(f)) || (() => {
        const chain = out.frames.filter((f) => f && !noise.test(f)).slice(0, 6).join(' < ');
        const k = `${out.state[0] === 'R' ? 'R' : out.state} ${chain}`;
        const g = (groups[k] ||= { state: out.state[0] === 'R' ? 'preempted' : 'blocked', chain, count: 0, total_ms: 0, max_ms: 0 });
        g.count++; g.total_ms += d * 1000; g.max_ms = Math.max(g.max_ms, d * 1000);
        stretches.push(d); n++;
      })();
      out = null;
    }
  }
  const top = Object.values(groups).sort((a, b) => b.total_ms - a.total_ms).slice(0, 8)
    .map((g) => ({ ...g, total_ms: +g.total_ms.toFixed(2), max_ms: +g.max_ms.toFixed(2) }));
  const pre = Object.values(groups).filter((g) => g.state === 'preempted');
  return {
    switches: recs.length, unpaired, off_cpu_outside_poll: n,
    preempted: { count: pre.reduce((a, g) => a + g.count, 0), total_ms: +pre.reduce((a, g) => a + g.total_ms, 0).toFixed(2),
      max_ms: +Math.max(0, ...pre.map((g) => g.max_ms)).toFixed(2) },
    longest_off_cpu_outside_poll_ms: stretches.length ? ms(Math.max(...stretches)) : 0,
    longest_on_cpu_slice_ms: ms(maxRun), on_cpu_total_ms: ms(run), top,
  };
}

function stracePass(text, burstAt) {
  const t = (s) => { const [h, m, x] = s.split(':'); return +h * 3600 + +m * 60 + +x; };
  const b = t(burstAt);
  const pathCalls = /^(open|openat|openat2|mkdir|mkdirat|rmdir|unlink|unlinkat|rename|renameat2?|stat|lstat|newfstatat|statx|access|faccessat2?|readlink|readlinkat|truncate|chmod|fchmodat|symlink|link|linkat|mknod|creat|utimensat)$/;
  const fdCalls = /^(read|write|pread64|pwrite64|readv|writev|preadv2?|pwritev2?|fsync|fdatasync|ftruncate|fallocate|sync_file_range|getdents64|fstat|lseek)$/;
  const phases = { create: { file_syscalls: 0, total_ms: 0, by: {}, slowest: [] }, stream: { file_syscalls: 0, total_ms: 0, by: {}, slowest: [] } };
  let all = 0;
  for (const l of text.split('\n')) {
    const m = /^(\S+) (\w+)\((.*)\) += (.*?) <([\d.]+)>$/.exec(l);
    if (!m) continue;
    all++;
    const [, ts, name, args] = m, dur = +m[5];
    let file = null;
    if (pathCalls.test(name)) file = (/"([^"]*)"/.exec(args) || [])[1] || '?';
    else if (fdCalls.test(name)) { const fm = /^\d+<(\/[^>]*)>/.exec(args); if (fm && !/^\/dev\//.test(fm[1])) file = fm[1]; }
    if (!file) continue;
    const p = phases[t(ts) < b ? 'create' : 'stream'];
    p.file_syscalls++; p.total_ms += dur * 1000;
    const kind = file.startsWith('/sys/fs/cgroup') ? 'cgroupfs' : file.startsWith('/proc') ? 'procfs' : 'files';
    const k = `${name} (${kind})`;
    p.by[k] = (p.by[k] || 0) + 1;
    p.slowest.push({ ms: +(dur * 1000).toFixed(3), call: `${name} ${file.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<id>')}` });
  }
  for (const p of Object.values(phases)) { p.total_ms = +p.total_ms.toFixed(3); p.slowest = p.slowest.sort((a, b) => b.ms - a.ms).slice(0, 5); }
  return { syscalls: all, ...phases };
}

const res = {};
for (const mode of modes.split(/\s+/).filter(Boolean)) {
  res[mode] = {
    perf: { gateway: JSON.parse(rd(`perf-metrics-${mode}.json`)), lost_records: +rd(`perf-lost-${mode}`).trim(), ...perfPass(rd(`perf-${mode}.txt`), +rd(`perf-tid-${mode}`)) },
    strace: { gateway: JSON.parse(rd(`strace-metrics-${mode}.json`)), ...stracePass(rd(`strace-${mode}.txt`), rd(`strace-burst-${mode}`).trim()) },
  };
}
const doc = { scenario: 'loopstall', when: new Date().toISOString(), commit,
  machine: { cpus: os.cpus().length, model: os.cpus()[0].model, kernel: os.release() },
  params: { processes: +procs, lines: +lines, hold_s: +hold, clients: process.env.CLIENTS,
    pinned: `gateway core 1; sandbox core 0; clients ${process.env.CLIENTS === 'core0' ? 'core 0' : 'unpinned'}` },
  modes: res };
fs.writeFileSync(out, JSON.stringify(doc, null, 1) + '\n');
for (const [mode, r] of Object.entries(res)) {
  const p = r.perf, s = r.strace;
  console.log(`durable ${mode}: perf pass (${p.switches} switches, ${p.lost_records} lost records, ${p.unpaired} unpaired): gateway busy max ${ms(p.gateway.busy_max_s)} ms, lag max ${ms(p.gateway.lag_max_s)} ms; loop thread off CPU outside epoll_wait ${p.off_cpu_outside_poll} times, preempted ${p.preempted.count} times (${p.preempted.total_ms} ms, longest ${p.preempted.max_ms} ms); longest on-CPU slice ${p.longest_on_cpu_slice_ms} ms`);
  for (const g of p.top.slice(0, 5)) console.log(`   ${String(g.count).padStart(5)} x ${g.state} ${g.total_ms} ms (max ${g.max_ms}): ${g.chain.slice(0, 160)}`);
  for (const ph of ['create', 'stream'])
    console.log(`  strace pass, ${ph}: ${s[ph].file_syscalls} file syscalls on the loop thread (${s[ph].total_ms} ms) ${JSON.stringify(s[ph].by)}; slowest ${s[ph].slowest.slice(0, 2).map((x) => `${x.call} ${x.ms} ms`).join('; ')}`);
}
console.log(`wrote ${out}`);
JS
