// Integration tests for sandgate-execd's pull-based backpressure on foreground command streams
// (POST /command, POST /session/{id}/run): a client that reads slower than the command writes
// slows the command down (its pipes are not read while the connection is past the high-water
// mark) instead of being dropped, and nothing is lost. Starts the real binary with a small
// --max-stream-buffer (4M, so the old drop-at-the-bound behaviour would decide within a second)
// and reads with node's http client, pausing the response (res.pause() stops reading the
// socket) for a few seconds. Also: a client that disconnects while held (the command still
// finishes), and interrupt / timeout / signal while held. No timing assertions: pauses only
// make the hold happen, every wait is a generous safety bound. Run by ctest (SG_BIN_DIR).
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-bp-'));

const { sleep, withTimeout, startExecd, stopExecd, json, status, agent } = require('./_execd.js');
require('./_execd.js').use(TMP);

// A streamed POST read by a slow client: it stops reading (res.pause()) right after the init
// event and goes on when the test calls resume(). Events are handed to onEvent as they are
// parsed (a 2,000,000-line stream is never held in memory). `paused` resolves with the id.
function slowStream(port, p, body, onEvent, headers = {}) {
  let res; let resolvePaused;
  const paused = new Promise((r) => { resolvePaused = r; });
  const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: p, agent,
    headers: { 'content-type': 'application/json', ...headers } });
  const done = new Promise((resolve, reject) => {
    req.on('response', (r) => {
      res = r;
      assert.equal(r.statusCode, 200);
      assert.equal(r.headers['content-type'], 'text/event-stream');
      let buf = ''; let n = 0;
      r.setEncoding('utf8');
      r.on('data', (d) => {
        buf += d;
        let i = 0; let k;
        while ((k = buf.indexOf('\n\n', i)) >= 0) {
          const ev = JSON.parse(buf.slice(i, k));
          i = k + 2;
          if (n++ === 0) {
            assert.equal(ev.type, 'init');
            r.pause();
            resolvePaused(ev.text);
          }
          onEvent(ev);
        }
        buf = buf.slice(i);
      });
      r.on('end', () => { assert.equal(buf, ''); resolve(); });
      r.on('error', reject);
      r.on('aborted', () => reject(new Error('response aborted')));
    });
    req.on('error', reject);
  });
  req.end(JSON.stringify(body));
  return { paused: withTimeout(paused, 30000, 'init'), done, resume: () => res.resume(), destroy: () => req.destroy() };
}

// Checks a `seq 1 N` stream's stdout events as they come.
function seqChecker() {
  const c = { next: 1, bad: 0, firstBad: null, types: [], pings: 0, last: null };
  c.onEvent = (ev) => {
    c.last = ev;
    if (ev.type === 'ping') c.pings++;
    if (ev.type === 'stdout') {
      if (ev.text !== String(c.next)) { c.bad++; if (!c.firstBad) c.firstBad = `${c.next}: ${ev.text}`; }
      c.next++;
    } else if (ev.type !== 'ping') {
      c.types.push(ev.type);
    }
  };
  return c;
}

const tests = [];
function test(name, fn) { tests.push({ name, fn }); }
let A; // --max-stream-buffer 4M

test('a slow client gets all of `seq 1 2000000` in order; the command waited for it', async () => {
  const N = 2000000;
  const c = seqChecker();
  const s = slowStream(A.port, '/command', { command: `seq 1 ${N}` }, c.onEvent);
  const id = await s.paused;
  await sleep(3500); // past one 3 s ping
  // Unheld, seq and execd finish this in well under a second (or drop us at 4M).
  const st = await status(A.port, id);
  assert.equal(st.running, true, JSON.stringify(st));
  s.resume();
  await withTimeout(s.done, 120000, 'stream end');
  assert.equal(c.bad, 0, `first out of order: ${c.firstBad}`);
  assert.equal(c.next, N + 1);
  assert.deepEqual(c.types, ['init', 'execution_complete']);
  assert.equal(c.last.type, 'execution_complete');
  assert.ok(c.pings >= 2, `pings while held: ${c.pings}`); // the first, then the 3 s timer's
  const fin = await status(A.port, id);
  assert.equal(fin.running, false);
  assert.equal(fin.exit_code, 0);
  assert.doesNotMatch(A.log(), /slow client dropped/);
});

test('raw mode: a slow client gets every byte (sandgate.raw) and every line', async () => {
  const N = 300000;
  const c = seqChecker();
  const raw = []; let off = 0; let offOk = true;
  const s = slowStream(A.port, '/command', { command: `seq 1 ${N}` }, (ev) => {
    if (ev.type === 'sandgate.raw') {
      const b = Buffer.from(ev.data_b64, 'base64');
      if (ev.stream !== 'stdout' || ev.offset !== off || ev.combined_offset !== off) offOk = false;
      off += b.length;
      raw.push(b);
      return;
    }
    c.onEvent(ev);
  }, { 'x-sandgate-raw': '1' });
  await s.paused;
  await sleep(2000);
  s.resume();
  await withTimeout(s.done, 120000, 'raw stream end');
  let want = '';
  for (let i = 1; i <= N; i++) want += `${i}\n`;
  assert.ok(Buffer.concat(raw).equals(Buffer.from(want)), 'raw bytes differ from `seq` output');
  assert.ok(offOk, 'raw offsets not contiguous');
  assert.equal(c.bad, 0, `first out of order: ${c.firstBad}`);
  assert.equal(c.next, N + 1);
  assert.deepEqual(c.types, ['init', 'execution_complete']);
  assert.doesNotMatch(A.log(), /slow client dropped/);
});

test('session run: a slow client gets all of `seq 1 1000000`', async () => {
  const N = 1000000;
  const sid = (await json(A.port, 'POST', '/session', {})).json.session_id;
  const c = seqChecker();
  const s = slowStream(A.port, `/session/${sid}/run`, { command: `seq 1 ${N}` }, c.onEvent);
  assert.equal(await s.paused, sid);
  await sleep(2000);
  s.resume();
  await withTimeout(s.done, 120000, 'session stream end');
  assert.equal(c.bad, 0, `first out of order: ${c.firstBad}`);
  assert.equal(c.next, N + 1);
  assert.deepEqual(c.types, ['init', 'execution_complete']);
  // The session is free again (the run completed).
  const again = seqChecker();
  const s2 = slowStream(A.port, `/session/${sid}/run`, { command: 'seq 1 3' }, again.onEvent);
  await s2.paused;
  s2.resume();
  await withTimeout(s2.done, 30000, 'second run');
  assert.equal(again.next, 4);
  assert.doesNotMatch(A.log(), /slow client dropped/);
});

test('a client that disconnects while held: the command is released and finishes', async () => {
  const s = slowStream(A.port, '/command', { command: 'seq 1 5000000' }, () => {});
  s.done.catch(() => {});
  const id = await s.paused;
  await sleep(1000);
  assert.equal((await status(A.port, id)).running, true);
  s.destroy();
  let st;
  for (let i = 0; i < 1200; i++) { st = await status(A.port, id); if (!st.running) break; await sleep(50); }
  assert.equal(st.running, false, 'the command never finished after its client left');
  assert.equal(st.exit_code, 0);
  assert.doesNotMatch(A.log(), /slow client dropped/);
});

test('while held: DELETE /command answers, a timeout fires, a signal ends the command', async () => {
  // Interrupt: the DELETE waits for completion, which must not wait for the stalled reader.
  const ci = seqChecker();
  const si = slowStream(A.port, '/command', { command: 'seq 1 1000000000' }, ci.onEvent);
  const idi = await si.paused;
  await sleep(500);
  const d = await json(A.port, 'DELETE', `/command?id=${idi}`);
  assert.equal(d.status, 200);
  const sti = await status(A.port, idi);
  assert.equal(sti.running, false);
  assert.equal(sti.error, 'signal: terminated');
  si.resume();
  await withTimeout(si.done, 60000, 'interrupted stream end');
  assert.ok(ci.bad <= 1, `first out of order: ${ci.firstBad}`); // the kill may cut the last line
  assert.equal(ci.last.type, 'error');
  assert.deepEqual(ci.last.error.traceback, ['signal: terminated']);

  // Timeout: completes without the reader.
  const ct = seqChecker();
  const stm = slowStream(A.port, '/command', { command: 'seq 1 1000000000', timeout: 1000 }, ct.onEvent);
  const idt = await stm.paused;
  let st;
  for (let i = 0; i < 1200; i++) { st = await status(A.port, idt); if (!st.running) break; await sleep(50); }
  assert.equal(st.running, false);
  assert.equal(st.error, 'signal: killed');
  stm.resume();
  await withTimeout(stm.done, 60000, 'timed-out stream end');
  assert.equal(ct.last.type, 'error');
  assert.deepEqual(ct.last.error.traceback, ['signal: killed']);

  // Signal: reaches the held command; the error event follows once the reader drained.
  const cs = seqChecker();
  const ss = slowStream(A.port, '/command', { command: 'seq 1 1000000000' }, cs.onEvent);
  const ids = await ss.paused;
  await sleep(500);
  const sg = await json(A.port, 'POST', `/command/${ids}/signal`, { signal: 'TERM' });
  assert.equal(sg.status, 202);
  ss.resume();
  await withTimeout(ss.done, 60000, 'signalled stream end');
  assert.ok(cs.bad <= 1, `first out of order: ${cs.firstBad}`);
  assert.equal(cs.last.type, 'error');
  assert.deepEqual(cs.last.error.traceback, ['signal: terminated']);
  const fin = await status(A.port, ids);
  assert.equal(fin.running, false);
  assert.equal(fin.signal, 15);
  assert.doesNotMatch(A.log(), /slow client dropped/);
});

(async () => {
  A = await startExecd('a', ['--max-stream-buffer', '4M']);
  let failed = 0;
  const only = process.env.ONLY;
  for (const t of tests) {
    if (only && !t.name.includes(only)) continue;
    try {
      await withTimeout(t.fn(), 240000, t.name);
      console.log(`ok - ${t.name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL - ${t.name}\n${e.stack}\nexecd log:\n${A.log()}`);
    }
  }
  try { await stopExecd(A); } catch (e) { failed++; console.log(`FAIL - shutdown\n${e.stack}`); }
  fs.rmSync(TMP, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
})();
