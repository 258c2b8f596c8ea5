// Retention of the process output logs on disk (issue 7), with small bounds so they trigger
// quickly, against real bubblewrap sandboxes:
//   - per process (--log-process-bytes): a command writing far more than the bound keeps the
//     files within it (plus one segment) the whole time it runs;
//   - total (--log-total-bytes): finished processes' output goes oldest first, the files stay
//     within the bound, the evicted ones keep their records and a reader asking for their
//     events gets an explicit gap, the kept ones replay whole;
//   - age (--log-max-age): a finished process's output goes once it is older;
//   - /metrics counts it all.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const L = require('./_lib.js');
const { assert, ok } = L;

const K = 1024;

function logBytes(dir) {
  let n = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    try {
      if (e.isDirectory()) n += logBytes(p);
      else n += fs.statSync(p).size;
    } catch (_) { /* removed meanwhile */ }
  }
  return n;
}

function metric(text, name) {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

L.main(async () => {
  const SEG = 64 * K, PER = 512 * K, TOTAL = 1024 * K;
  const g = await L.startGateway('retention', ['--log-segment-bytes', '64K', '--log-process-bytes', '512K',
    '--log-total-bytes', '1M', '--process-log-bytes', '128K', '--sse-heartbeat', '1h']);
  const logs = path.join(g.data, 'logs');
  const sb = await L.createRunning(g);
  const P = `/v1/sandboxes/${sb}`;
  const run = async (command, background) => {
    const r = await g.call('POST', `${P}/proxy/44772/command`, { command, background: !!background });
    assert.equal(r.status, 200, r.text);
    return L.parseExecd(r.text)[0].text;
  };
  const waitDone = async (pid) => {
    for (let i = 0; i < 1200; i++) {
      const p = await g.call('GET', `${P}/processes/${pid}`);
      if (p.json.state !== 'running') return p.json;
      await L.sleep(50);
    }
    throw new Error('process never finished');
  };
  const readAll = async (pid) => L.parseSse((await L.stream(`${g.base}${P}/processes/${pid}/stream?raw=1`).done).body.toString());

  // --- per process: 4 MB of output (about 10 MB of log) against a 512 KiB bound
  const big = await run("for i in $(seq 1 40); do head -c 100000 /dev/zero | tr '\\0' r | fold -w 100; sleep 0.02; done", true);
  let peak = 0, samples = 0;
  for (;;) {
    peak = Math.max(peak, logBytes(logs));
    samples++;
    const p = await g.call('GET', `${P}/processes/${big}`);
    if (p.json.state !== 'running') break;
    await L.sleep(20);
  }
  let p = await waitDone(big);
  assert.equal(p.output_bytes, 40 * 100999);
  assert.ok(samples > 5, `sampled while it ran (${samples})`);
  // The writer holds its files to the bound plus the segment being written (and one batch
  // written before the oldest segment's unlink came back).
  assert.ok(peak <= PER + 2 * SEG, `log files peaked at ${peak} bytes (bound ${PER} + segment)`);
  assert.ok(peak > PER / 2, `the files were really written (${peak})`);
  // A reader from the start: a gap first (the oldest output is gone); while the writer still
  // trims after the end, maybe more gaps; between them every id, in order.
  let evs = await readAll(big);
  assert.equal(evs[0].event, 'gap', 'the oldest output is gone: an explicit gap first');
  const g0 = JSON.parse(evs[0].data);
  assert.equal(g0.requested_id, 1);
  let want = 1;
  for (const e of evs) {
    if (e.event === 'gap') {
      const gp = JSON.parse(e.data);
      assert.equal(gp.requested_id, want);
      assert.ok(gp.first_id > want);
      want = gp.first_id;
    } else {
      assert.equal(Number(e.id), want++);
    }
  }
  assert.equal(evs[evs.length - 1].event, 'execution_complete');
  ok(`per process: 4 MB of output, the files peaked at ${Math.round(peak / K)} KiB (bound ${PER / K} KiB); a reader gets a gap to id ${g0.first_id}, then everything`);

  // --- total: finished processes, oldest output evicted first
  const pids = [];
  for (let i = 0; i < 5; i++) {
    // about 300 KiB of log each: five are more than the 1 MiB bound
    pids.push(await run(`head -c 110000 /dev/zero | tr '\\0' ${'abcde'[i]} | fold -w 100; echo; echo done-${i}`));
    await waitDone(pids[i]);
    await L.sleep(30); // distinct finish times
  }
  let total = 0;
  for (let i = 0; i < 100; i++) { // retention runs every second
    total = logBytes(logs);
    if (total <= TOTAL) break;
    await L.sleep(100);
  }
  assert.ok(total <= TOTAL, `all logs within the bound: ${total} bytes`);
  const kept = [];
  for (const pid of [big, ...pids]) kept.push(fs.existsSync(path.join(logs, sb, pid)));
  // The evicted ones are the oldest: kept is false...false true...true, the newest kept.
  const firstKept = kept.indexOf(true);
  assert.ok(firstKept >= 1, `the oldest went first (${kept})`);
  assert.ok(kept.slice(firstKept).every(Boolean), `only the oldest went (${kept})`);
  for (const [i, pid] of [big, ...pids].entries()) {
    p = (await g.call('GET', `${P}/processes/${pid}`)).json;
    assert.equal(p.state, 'exited', 'the record stays');
    assert.equal(p.exit_code, 0);
    evs = await readAll(pid);
    if (!kept[i]) {
      assert.equal(evs[0].event, 'gap', `evicted ${pid}: gap`);
      assert.ok(!evs.some((e) => e.event === 'stdout'), 'nothing of its output is served');
      const out = await g.call('GET', `${P}/processes/${pid}/output?offset=0`);
      assert.equal(out.status, 410, 'its /output is gone too');
      assert.equal(out.json.code, 'PROCESS::OUTPUT_EVICTED');
    } else {
      assert.ok(!evs.some((e) => e.event === 'gap'), `kept ${pid}: no gap`);
      evs.forEach((e, j) => assert.equal(Number(e.id), j + 1, `process ${i} (${kept}) event ${j}: ${JSON.stringify(e).slice(0, 200)}`));
      const n = i - 1;
      assert.equal(evs.filter((e) => e.event === 'stdout').map((e) => JSON.parse(e.data).text).pop(), `done-${n}`);
      const out = await g.call('GET', `${P}/processes/${pid}/output?offset=0`);
      assert.equal(out.buf.length, 111100 + 7, 'the whole output');
    }
  }
  ok(`total: ${Math.round(total / K)} KiB on disk (bound ${TOTAL / K} KiB); evicted oldest first (${kept.map((k) => (k ? 'kept' : 'gone')).join(' ')}); records stay, readers get gaps`);

  let m = (await g.call('GET', '/metrics')).text;
  assert.ok(metric(m, 'sandgate_log_segments_deleted_total') > 0, 'segments deleted counted');
  assert.ok(metric(m, 'sandgate_log_outputs_evicted_total') >= 1, 'evictions counted');
  assert.equal(metric(m, 'sandgate_log_outputs_evicted_total'), kept.filter((k) => !k).length);
  assert.ok(metric(m, 'sandgate_log_disk_bytes') <= TOTAL);
  assert.ok(metric(m, 'sandgate_log_disk_reads_total') > 0, 'readers behind memory read the files');
  assert.equal(metric(m, 'sandgate_log_write_errors_total'), 0);
  // events leave memory once written: the bound's evictions are counted all the same
  const bigNow = (await g.call('GET', `${P}/processes/${big}`)).json;
  assert.ok(metric(m, 'sandgate_stream_evicted_events_total') >= bigNow.first_event_id - 1,
    `evicted events counted: ${metric(m, 'sandgate_stream_evicted_events_total')} for first id ${bigNow.first_event_id}`);
  ok('/metrics: segments deleted, outputs evicted, disk bytes within the bound, file reads');

  // --- age
  const g2 = await L.startGateway('retention-age', ['--log-max-age', '2s', '--sse-heartbeat', '1h']);
  const sb2 = await L.createRunning(g2);
  let r = await g2.call('POST', `/v1/sandboxes/${sb2}/proxy/44772/command`, { command: 'echo old' });
  const oldPid = L.parseExecd(r.text)[0].text;
  const dir = path.join(g2.data, 'logs', sb2, oldPid);
  let there = false; // the writer creates it on the thread pool
  for (let i = 0; i < 30 && !there; i++) {
    there = fs.existsSync(dir);
    if (!there) await L.sleep(50);
  }
  assert.ok(there, 'it has a log directory');
  let gone = false;
  for (let i = 0; i < 100 && !gone; i++) { // age 2 s, checked every second
    gone = !fs.existsSync(dir);
    if (!gone) await L.sleep(100);
  }
  assert.ok(gone, 'its log is removed after the age bound');
  p = (await g2.call('GET', `/v1/sandboxes/${sb2}/processes/${oldPid}`)).json;
  assert.equal(p.state, 'exited');
  evs = L.parseSse((await L.stream(`${g2.base}/v1/sandboxes/${sb2}/processes/${oldPid}/stream`).done).body.toString());
  assert.equal(evs[0].event, 'gap');
  m = (await g2.call('GET', '/metrics')).text;
  assert.equal(metric(m, 'sandgate_log_outputs_evicted_total'), 1);
  // a running command is never aged out
  r = await g2.call('POST', `/v1/sandboxes/${sb2}/proxy/44772/command`, { command: 'echo a; sleep 3.5; echo b', background: true });
  const runPid = L.parseExecd(r.text)[0].text;
  p = await (async () => {
    for (let i = 0; i < 200; i++) {
      const x = (await g2.call('GET', `/v1/sandboxes/${sb2}/processes/${runPid}`)).json;
      if (x.state !== 'running') return x;
      await L.sleep(50);
    }
    throw new Error('never finished');
  })();
  evs = L.parseSse((await L.stream(`${g2.base}/v1/sandboxes/${sb2}/processes/${runPid}/stream`).done).body.toString());
  assert.deepEqual(evs.filter((e) => e.event === 'stdout').map((e) => JSON.parse(e.data).text), ['a', 'b']);
  ok('age: a finished output older than --log-max-age is removed (record kept, gap); a running one is not');
});
