// Integration tests for re-attaching to a command's output on sandgate-execd
// (docs/execd.md, "Re-attach"): a foreground POST /command with X-Sandgate-Keep-Log: 1 also
// writes the command's log, and GET /command/{id}/stream?offset=N replays the log from N as
// sandgate.raw events, follows the live output, and ends with the command's final event. This
// is what the gateway needs when it was killed mid-command: drop the connection, come back with
// the last combined_offset + length received, and get exactly the missing bytes. Also: binary
// output (sha256), re-attach after completion, 404 / 409 / 400, two readers at once, a slow
// reader (backpressure from the file), and the truncated event at --max-log-bytes.
// Starts the real binary; no timing assertions. Run by ctest (SG_BIN_DIR).
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const assert = require('node:assert/strict');

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-ra-'));

const { sleep, withTimeout, startExecd, stopExecd, json, status, agent } = require('./_execd.js');
require('./_execd.js').use(TMP);
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

// An SSE request. Events are parsed as they come; `stop(ev, s)` returning true drops the
// connection (as a gateway killed -9 would). `pauseAfterInit` ms: stop reading the socket for
// that long after init (a slow reader). Resolves with { status, headers, events, ended }
// (ended: the response completed, i.e. was not dropped by us).
function sse(port, method, p, { body, headers = {}, stop, pauseAfterInit = 0 } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, method, path: p, agent,
      headers: { ...(data !== undefined ? { 'content-type': 'application/json' } : {}), ...headers } });
    const out = { status: 0, headers: null, events: [], ended: false, raw: [] };
    req.on('response', (r) => {
      out.status = r.statusCode;
      out.headers = r.headers;
      if (r.statusCode !== 200) {
        const chunks = [];
        r.on('data', (d) => chunks.push(d));
        r.on('end', () => { out.json = JSON.parse(Buffer.concat(chunks).toString('utf8')); resolve(out); });
        return;
      }
      let buf = '';
      let dropped = false;
      r.setEncoding('utf8');
      r.on('data', (d) => {
        if (dropped) return;
        buf += d;
        let i = 0; let k;
        while ((k = buf.indexOf('\n\n', i)) >= 0) {
          const ev = JSON.parse(buf.slice(i, k));
          i = k + 2;
          out.events.push(ev);
          if (ev.type === 'init' && pauseAfterInit) {
            r.pause();
            setTimeout(() => r.resume(), pauseAfterInit);
          }
          if (stop && stop(ev, out)) {
            dropped = true;
            req.destroy();
            resolve(out);
            return;
          }
        }
        buf = buf.slice(i);
      });
      r.on('end', () => { if (!dropped) { assert.equal(buf, ''); out.ended = true; resolve(out); } });
      r.on('error', (e) => { if (!dropped) reject(e); });
      r.on('aborted', () => { if (!dropped) reject(new Error('response aborted')); });
    });
    req.on('error', (e) => { if (!out.ended && !out.status) reject(e); });
    req.end(data);
  }), 120000, `${method} ${p}`);
}

// The raw events' bytes, checking that they are contiguous from `from` (combined_offset) and
// that each stream's offsets are contiguous too.
function rawBytes(events, from, what = '') {
  const parts = [];
  let at = from;
  const soff = {};
  for (const ev of events) {
    if (ev.type !== 'sandgate.raw') continue;
    assert.equal(ev.combined_offset, at, `${what} combined_offset`);
    const b = Buffer.from(ev.data_b64, 'base64');
    assert.ok(b.length > 0);
    if (ev.stream !== 'unknown') {
      if (soff[ev.stream] !== undefined) assert.equal(ev.offset, soff[ev.stream], `${what} ${ev.stream} offset`);
      soff[ev.stream] = ev.offset + b.length;
    }
    parts.push(b);
    at += b.length;
  }
  return Buffer.concat(parts);
}
const streamBytes = (events, stream) => Buffer.concat(events.filter((e) => e.type === 'sandgate.raw' && e.stream === stream)
  .map((e) => Buffer.from(e.data_b64, 'base64')));
const last = (events) => events[events.length - 1];
const FG = { 'X-Sandgate-Raw': '1', 'X-Sandgate-Keep-Log': '1' };

const tests = [];
function test(name, fn) { tests.push({ name, fn }); }
let A; let B; // B: --max-log-bytes 1000

const SEQ200 = 'for i in $(seq 1 200); do echo line-$i; sleep 0.01; done';
const want200 = Array.from({ length: 200 }, (_, i) => `line-${i + 1}\n`).join('');

test('drop a keep-log foreground stream half way, re-attach from the last offset: exactly the rest, then the final event', async () => {
  const first = await sse(A.port, 'POST', '/command', { body: { command: SEQ200 }, headers: FG,
    stop: (ev, s) => ev.type === 'sandgate.raw' && rawBytes(s.events, 0).toString().includes('line-100\n') });
  assert.equal(first.status, 200);
  assert.equal(first.ended, false);
  const id = first.events[0].text;
  const got1 = rawBytes(first.events, 0, 'POST');
  const lr = first.events.filter((e) => e.type === 'sandgate.raw').pop();
  const offset = lr.combined_offset + Buffer.from(lr.data_b64, 'base64').length;
  assert.equal(offset, got1.length);
  await sleep(300); // output goes on while nobody listens: only the log has it
  const st = await status(A.port, id);
  assert.equal(st.running, true, 'still running when we come back');

  const second = await sse(A.port, 'GET', `/command/${id}/stream?offset=${offset}`);
  assert.equal(second.status, 200);
  assert.equal(second.headers['content-type'], 'text/event-stream');
  assert.equal(second.headers['x-sandgate-offset'], String(offset));
  assert.equal(second.ended, true);
  assert.deepEqual(second.events.slice(0, 2).map((e) => e.type), ['init', 'ping']);
  assert.equal(second.events[0].text, id);
  const got2 = rawBytes(second.events, offset, 're-attach');
  assert.equal(Buffer.concat([got1, got2]).toString(), want200);
  assert.equal(last(second.events).type, 'execution_complete');
  assert.equal(second.events.filter((e) => e.type === 'execution_complete' || e.type === 'error').length, 1);
  // Line events come too, as on the POST stream (the cut was at a line boundary here).
  const lines = second.events.filter((e) => e.type === 'stdout').map((e) => e.text);
  assert.equal(lines.join('\n') + '\n', got2.toString());
  assert.ok(second.events.every((e) => e.type !== 'sandgate.raw' || e.stream === 'stdout'));
});

test('re-attach after the command finished: replay, then the final event at once; offsets past the end start at the end', async () => {
  const run = await sse(A.port, 'POST', '/command', { body: { command: 'printf "a\\nbb\\n"; echo err >&2; exit 3' }, headers: FG });
  const id = run.events[0].text;
  assert.equal(last(run.events).type, 'error');
  const all = rawBytes(run.events, 0);
  const full = await sse(A.port, 'GET', `/command/${id}/stream?offset=0`);
  assert.equal(full.ended, true);
  assert.deepEqual(rawBytes(full.events, 0), all);
  assert.deepEqual(streamBytes(full.events, 'stderr').toString(), 'err\n');
  assert.deepEqual(streamBytes(full.events, 'stdout').toString(), 'a\nbb\n');
  const fin = last(full.events);
  assert.equal(fin.type, 'error');
  assert.equal(fin.error.evalue, '3');
  assert.deepEqual(fin.error.traceback, ['exit status 3']);
  assert.deepEqual(fin.error, last(run.events).error);

  const mid = await sse(A.port, 'GET', `/command/${id}/stream?offset=2`);
  assert.deepEqual(rawBytes(mid.events, 2), all.subarray(2));
  const past = await sse(A.port, 'GET', `/command/${id}/stream?offset=999999`);
  assert.equal(past.headers['x-sandgate-offset'], String(all.length));
  assert.deepEqual(past.events.map((e) => e.type), ['init', 'ping', 'error']);

  // X-Sandgate-Raw: 0 gives line events only; X-Sandgate-Lines: 0 raw events only.
  const noraw = await sse(A.port, 'GET', `/command/${id}/stream`, { headers: { 'X-Sandgate-Raw': '0' } });
  assert.deepEqual(noraw.events.filter((e) => e.type !== 'ping').map((e) => `${e.type}:${e.text || ''}`),
    [`init:${id}`, 'stdout:a', 'stdout:bb', 'stderr:err', 'error:']);
  const nolines = await sse(A.port, 'GET', `/command/${id}/stream`, { headers: { 'X-Sandgate-Lines': '0' } });
  assert.deepEqual([...new Set(nolines.events.map((e) => e.type))], ['init', 'ping', 'sandgate.raw', 'error']);

  // The log is also served by /raw now (foreground with keep-log).
  const raw = await json(A.port, 'GET', `/command/${id}/raw?offset=0`);
  assert.equal(raw.status, 200);
  assert.deepEqual(raw.body, all);
});

test('binary output: POST raw bytes, log, and re-attached bytes all have the sha256 of the file', async () => {
  const file = path.join(TMP, 'bin.dat');
  const cmd = `head -c 100000 /dev/urandom | tee ${file}`;
  const run = await sse(A.port, 'POST', '/command', { body: { command: cmd }, headers: FG,
    stop: (ev) => ev.type === 'sandgate.raw' }); // drop at the first raw event
  const id = run.events[0].text;
  const got1 = rawBytes(run.events, 0);
  for (let i = 0; i < 200 && (await status(A.port, id)).running; i++) await sleep(25);
  const want = fs.readFileSync(file);
  assert.equal(want.length, 100000);
  const rest = await sse(A.port, 'GET', `/command/${id}/stream?offset=${got1.length}&x=1`);
  assert.equal(sha(Buffer.concat([got1, rawBytes(rest.events, got1.length)])), sha(want));
  assert.equal(last(rest.events).type, 'execution_complete');
  const whole = await sse(A.port, 'GET', `/command/${id}/stream?offset=0`, { headers: { 'X-Sandgate-Lines': '0' } });
  assert.equal(sha(rawBytes(whole.events, 0)), sha(want));
});

test('errors: unknown id 404, a command without a log 409, a bad offset 400, POST 405', async () => {
  const nf = await sse(A.port, 'GET', '/command/0123456789abcdef0123456789abcdef/stream?offset=0');
  assert.equal(nf.status, 404);
  assert.deepEqual(nf.json, { code: 'COMMAND_NOT_FOUND', message: 'command not found: 0123456789abcdef0123456789abcdef' });
  const plain = await sse(A.port, 'POST', '/command', { body: { command: 'echo x' }, headers: { 'X-Sandgate-Raw': '1' } });
  const id = plain.events[0].text;
  const nl = await sse(A.port, 'GET', `/command/${id}/stream`);
  assert.equal(nl.status, 409);
  assert.equal(nl.json.code, 'COMMAND_HAS_NO_LOG');
  assert.match(nl.json.message, new RegExp(`command ${id} has no log`));
  const bad = await json(A.port, 'GET', `/command/${id}/stream?offset=-1`);
  assert.equal(bad.status, 400);
  assert.equal(bad.json.code, 'INVALID_REQUEST_BODY');
  const bad2 = await json(A.port, 'GET', `/command/${id}/stream?offset=12x`);
  assert.equal(bad2.status, 400);
  const post = await json(A.port, 'POST', `/command/${id}/stream`, {});
  assert.equal(post.status, 405);
  // /raw still refuses a foreground command without a log, as before.
  const raw = await json(A.port, 'GET', `/command/${id}/raw?offset=0`);
  assert.equal(raw.status, 400);
});

test('two re-attached readers at once (and a background command) each get every byte with its stream', async () => {
  const cmd = 'for i in $(seq 1 100); do echo r-$i; echo e-$i >&2; sleep 0.01; done';
  const bg = await sse(A.port, 'POST', '/command', { body: { command: cmd, background: true } });
  assert.deepEqual(bg.events.map((e) => e.type), ['init', 'ping', 'execution_complete']);
  const id = bg.events[0].text;
  await sleep(200);
  const [r1, r2] = await Promise.all([
    sse(A.port, 'GET', `/command/${id}/stream?offset=0`),
    sse(A.port, 'GET', `/command/${id}/stream?offset=7`),
  ]);
  const wantOut = Array.from({ length: 100 }, (_, i) => `r-${i + 1}\n`).join('');
  const wantErr = Array.from({ length: 100 }, (_, i) => `e-${i + 1}\n`).join('');
  const b1 = rawBytes(r1.events, 0, 'r1');
  assert.equal(streamBytes(r1.events, 'stdout').toString(), wantOut);
  assert.equal(streamBytes(r1.events, 'stderr').toString(), wantErr);
  assert.deepEqual(rawBytes(r2.events, 7, 'r2'), b1.subarray(7));
  for (const r of [r1, r2]) {
    assert.equal(r.ended, true);
    assert.equal(last(r.events).type, 'execution_complete');
  }
  const lines = r1.events.filter((e) => e.type === 'stderr').map((e) => e.text);
  assert.equal(lines.length, 100);
  assert.equal(lines[99], 'e-100');
});

test('a slow re-attached reader is paced from the file and loses nothing', async () => {
  const N = 400000; // about 2.7 MB, well past the 256 KiB high-water mark
  const bg = await sse(A.port, 'POST', '/command', { body: { command: `seq 1 ${N}`, background: true } });
  const id = bg.events[0].text;
  const r = await sse(A.port, 'GET', `/command/${id}/stream?offset=0`, { headers: { 'X-Sandgate-Lines': '0' }, pauseAfterInit: 1500 });
  const want = Array.from({ length: N }, (_, i) => `${i + 1}\n`).join('');
  assert.equal(rawBytes(r.events, 0).toString(), want);
  assert.equal(last(r.events).type, 'execution_complete');
  assert.ok(r.events.every((e) => e.type !== 'sandgate.raw' || Buffer.from(e.data_b64, 'base64').length <= 65536));
  assert.doesNotMatch(A.log(), /slow client dropped/);
});

test('a log truncated at --max-log-bytes says so with sandgate.truncated', async () => {
  const run = await sse(B.port, 'POST', '/command', { body: { command: 'seq 1 1000' }, headers: FG });
  const id = run.events[0].text;
  const all = rawBytes(run.events, 0);
  assert.ok(all.length > 1000);
  const r = await sse(B.port, 'GET', `/command/${id}/stream?offset=0`);
  assert.deepEqual(rawBytes(r.events, 0), all.subarray(0, 1000));
  const t = r.events.filter((e) => e.type === 'sandgate.truncated');
  assert.equal(t.length, 1);
  assert.equal(t[0].at, 1000);
  assert.equal(t[0].reason, 'cap');
  assert.deepEqual(r.events.slice(-2).map((e) => e.type), ['sandgate.truncated', 'execution_complete']);
  // Re-attaching past the cap (an offset a POST stream did give) starts at the cap.
  const past = await sse(B.port, 'GET', `/command/${id}/stream?offset=${all.length}`);
  assert.equal(past.headers['x-sandgate-offset'], '1000');
  assert.deepEqual(past.events.map((e) => e.type), ['init', 'ping', 'sandgate.truncated', 'execution_complete']);
});

test('re-attached readers that drop, and one still following at shutdown, leave nothing behind', async () => {
  const bg = await sse(B.port, 'POST', '/command', { body: { command: 'for i in $(seq 1 50); do echo $i; sleep 0.02; done; sleep 60', background: true } });
  const id = bg.events[0].text;
  // Dropped at its first raw event (a read or a wait may be under way), several times.
  for (let i = 0; i < 5; i++) {
    const d = await sse(B.port, 'GET', `/command/${id}/stream?offset=0`, { stop: (ev) => ev.type === 'sandgate.raw' });
    assert.equal(d.ended, false);
  }
  // Caught up and waiting for more when the agent shuts down (after this test).
  B.follower = sse(B.port, 'GET', `/command/${id}/stream?offset=0`).catch((e) => e);
  await sleep(1500);
  const st = await status(B.port, id);
  assert.equal(st.running, true);
});

(async () => {
  A = await startExecd('a');
  B = await startExecd('b', ['--max-log-bytes', '1000']);
  let failed = 0;
  const only = process.env.ONLY;
  for (const t of tests) {
    if (only && !t.name.includes(only)) continue;
    try {
      await withTimeout(t.fn(), 240000, t.name);
      console.log(`ok - ${t.name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL - ${t.name}\n${e.stack}\nexecd log:\n${A.log()}${B.log()}`);
    }
  }
  for (const s of [A, B]) {
    try { await stopExecd(s); } catch (e) { failed++; console.log(`FAIL - shutdown\n${e.stack}`); }
  }
  fs.rmSync(TMP, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
})();
