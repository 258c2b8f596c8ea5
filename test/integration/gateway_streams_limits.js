// The stream bounds (issue 6), with small limits so they trigger quickly:
//   - a process keeps at most --process-log-bytes in memory; a reader behind that window is
//     served from the process's log files (issue 7), ids contiguous, no gap;
//   - the files keep at most --log-process-bytes: a reader asking for history older than that
//     gets an explicit `gap` event naming the first id still kept, and /output below the first
//     byte held in memory answers 410 with that offset (never silently skipped);
//   - a subscriber that stops reading is cut at the hard lag limit while ten others receive
//     the complete stream, and the gateway's memory stays bounded while it happens;
//   - the soft limit (lag held past its duration) and the send timeout (a write that makes no
//     progress) each cut a stalled subscriber, named in the log;
//   - a cut subscriber resumes with the last id it received.
'use strict';
const L = require('./_lib.js');
const { assert, ok } = L;

L.main(async () => {
  const g = await L.startGateway('limits', ['--process-log-bytes', '1M', '--log-segment-bytes', '256K',
    '--log-process-bytes', '2M', '--sub-lag-hard', '4M', '--sub-lag-soft', '1M',
    '--sub-lag-soft-time', '1s', '--sub-send-timeout', '3s', '--sub-sndbuf', '16K', '--sse-heartbeat', '1h']);
  const sb = await L.createRunning(g);
  const P = `/v1/sandboxes/${sb}`;
  const X = `${g.base}${P}/proxy/44772`;
  const start = async (command) => {
    const res = await L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command, background: true } }).done;
    return L.parseExecd(res.body.toString())[0].text;
  };
  const waitDone = async (pid) => {
    for (let i = 0; i < 600; i++) {
      const p = await g.call('GET', `${P}/processes/${pid}`);
      if (p.json.state !== 'running') return p.json;
      await L.sleep(50);
    }
    throw new Error('process never finished');
  };

  // --- behind the memory window, within the files: everything, from disk
  // (exact output: each line is also in a raw event, so the log is about twice the output)
  const mid = await start("head -c 600000 /dev/zero | tr '\\0' m | fold -w 100");
  let p = await waitDone(mid);
  // Memory keeps what is not yet written to the files; once written it holds only the bound.
  for (let i = 0; i < 100 && p.first_event_id === 1; i++) {
    await L.sleep(50);
    p = (await g.call('GET', `${P}/processes/${mid}`)).json;
  }
  assert.ok(p.first_event_id > 1, `memory evicted (first id ${p.first_event_id})`);
  let res = await L.stream(`${g.base}${P}/processes/${mid}/stream?raw=1`).done;
  let evs = L.parseSse(res.body.toString());
  assert.ok(!evs.some((x) => x.event === 'gap'), 'no gap: the files hold it');
  evs.forEach((e, i) => assert.equal(Number(e.id), i + 1));
  assert.equal(evs[0].event, 'init');
  assert.equal(evs.filter((x) => x.event === 'stdout').length, 6000);
  const raw = Buffer.concat(evs.filter((x) => x.event === 'sandgate.raw').map((x) => Buffer.from(JSON.parse(x.data).data_b64, 'base64')));
  assert.equal(raw.length, 605999);
  assert.equal(evs[evs.length - 1].event, 'execution_complete');
  // resuming inside the file-only part gives the rest, contiguous
  const from = Math.floor(p.first_event_id / 2);
  res = await L.stream(`${g.base}${P}/processes/${mid}/stream?raw=1`, { headers: { 'last-event-id': String(from) } }).done;
  const rest = L.parseSse(res.body.toString());
  rest.forEach((e, i) => assert.equal(Number(e.id), from + 1 + i));
  assert.equal(rest.length, evs.length - from);
  ok(`behind memory (first id ${p.first_event_id}): ${evs.length} events from the files, resume at ${from}`);

  // --- past the files' bound: gap event and 410
  const big = await start("head -c 3000000 /dev/zero | tr '\\0' a | fold -w 100");
  p = await waitDone(big);
  assert.equal(p.state, 'exited');
  assert.equal(p.output_bytes, 3029999);
  res = await L.stream(`${g.base}${P}/processes/${big}/stream?raw=1`).done;
  evs = L.parseSse(res.body.toString());
  // The files' bound took the oldest: a gap first. While the writer still trims the files
  // after the process finished (its last segments are being sealed) a reader at the oldest
  // end can be overtaken once more: another explicit gap. Between gaps every id, in order.
  let want = 1;
  const gaps = [];
  for (const e of evs) {
    if (e.event === 'gap') {
      const g1 = JSON.parse(e.data);
      assert.equal(g1.requested_id, want, 'a gap names the id the reader needed');
      assert.ok(g1.first_id > want);
      gaps.push(g1);
      want = g1.first_id;
      continue;
    }
    assert.equal(Number(e.id), want, `event ${e.event} after ${JSON.stringify(gaps)}`);
    want++;
  }
  assert.ok(gaps.length >= 1, 'the oldest history is gone: a gap');
  assert.equal(evs[evs.length - 1].event, 'execution_complete');
  // Once the writer closed, the files stand still: a read from the start is one gap and then
  // every id to the end.
  let settled = 0;
  for (let i = 0; i < 40 && !settled; i++) {
    const r2 = L.parseSse((await L.stream(`${g.base}${P}/processes/${big}/stream?raw=1`).done).body.toString());
    const ng = r2.filter((e) => e.event === 'gap').length;
    if (ng === 1 && r2[0].event === 'gap') {
      settled = JSON.parse(r2[0].data).first_id;
      r2.slice(1).forEach((e, j) => assert.equal(Number(e.id), settled + j));
      assert.equal(r2[r2.length - 1].event, 'execution_complete');
    } else await L.sleep(100);
  }
  assert.ok(settled, 'a read after the writer closed has a single gap');
  p = (await g.call('GET', `${P}/processes/${big}`)).json;
  assert.ok(p.first_event_id > 1 && p.first_output_offset > 0, 'memory holds only the end');
  assert.ok(settled < p.first_event_id, `the files reach further back (${settled}) than memory (${p.first_event_id})`);
  // /output: below what the files hold, 410 naming the first byte they hold; from there, the
  // files' bytes and then memory's, to the end.
  let out = await g.call('GET', `${P}/processes/${big}/output?offset=0`);
  assert.equal(out.status, 410);
  assert.equal(out.json.code, 'PROCESS::OUTPUT_EVICTED');
  const firstOnDisk = out.json.first_offset;
  assert.ok(firstOnDisk > 0 && firstOnDisk < p.first_output_offset, `the files start at byte ${firstOnDisk}, memory at ${p.first_output_offset}`);
  assert.equal(out.headers.get('x-sandgate-first-offset'), String(firstOnDisk));
  out = await g.call('GET', `${P}/processes/${big}/output?offset=${firstOnDisk - 1}`);
  assert.equal(out.status, 410);
  for (const from of [firstOnDisk, firstOnDisk + 12345, p.first_output_offset - 7, p.first_output_offset]) {
    out = await g.call('GET', `${P}/processes/${big}/output?offset=${from}`);
    assert.equal(out.status, 200);
    assert.equal(out.headers.get('x-sandgate-next-offset'), '3029999');
    assert.equal(out.buf.length, 3029999 - from, `from ${from}`);
    // byte k of the output is '\n' exactly when k % 101 == 100 (fold -w 100)
    const b = out.buf;
    for (let k = 0; k < b.length; k++) {
      const want = (from + k) % 101 === 100 ? 10 : 97;
      if (b[k] !== want) assert.fail(`output byte ${from + k}: ${b[k]}, wanted ${want}`);
    }
  }
  ok(`eviction: gap event (first id ${settled} once settled, ${gaps.length} while the writer trimmed); /output from the files at byte ${firstOnDisk}, 410 below`);

  // --- a stalled subscriber is cut at the hard limit; ten others get everything
  const lines = 4000;
  const slowCmd = `sleep 1; for i in $(seq 1 40); do head -c 100000 /dev/zero | tr '\\0' b | fold -w 1000; echo; sleep 0.05; done`;
  const pid = await start(slowCmd);
  const fast = [];
  for (let i = 0; i < 10; i++) fast.push(L.stream(`${g.base}${P}/processes/${pid}/stream`).done);
  const slow = L.stream(`${g.base}${P}/processes/${pid}/stream`, { onResponse: (r) => r.pause() });
  const rss0 = L.rssKiB(g.child.pid);
  let peak = rss0;
  let sampling = true;
  const sampler = (async () => { while (sampling) { peak = Math.max(peak, L.rssKiB(g.child.pid)); await L.sleep(20); } })();
  const fastRes = await Promise.all(fast);
  await waitDone(pid);
  sampling = false;
  await sampler;
  for (const f of fastRes) {
    const e = L.parseSse(f.body.toString());
    assert.equal(e.filter((x) => x.event === 'stdout').length, lines);
    assert.equal(e[e.length - 1].event, 'execution_complete');
    assert.ok(!e.some((x) => x.event === 'gap'));
  }
  slow.res.resume();
  const slowRes = await slow.done;
  assert.ok(slowRes.aborted, 'the stalled subscriber was disconnected');
  const slowEvs = L.parseSse(slowRes.body.toString());
  assert.ok(slowEvs.length < 100 + lines, `it got only part (${slowEvs.length} events)`);
  assert.match(g.log, /slow subscriber disconnected.*lag past the hard limit/);
  // Log bound (1 MiB) + per-connection high-water marks + allocator slack: far below the
  // ~10 MB of events the stalled subscriber did not read.
  assert.ok(peak - rss0 < 16 * 1024, `gateway RSS grew ${peak - rss0} KiB`);
  // It resumes from the last id it received: a gap (history evicted meanwhile), then the end.
  const lastId = slowEvs.filter((e) => e.id).pop().id;
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream`, { headers: { 'Last-Event-ID': lastId } }).done;
  evs = L.parseSse(res.body.toString());
  assert.equal(evs[0].event, 'gap');
  assert.equal(evs[evs.length - 1].event, 'execution_complete');
  ok(`stalled subscriber cut at the hard limit; 10 others complete; RSS +${peak - rss0} KiB; resume gives gap + rest`);

  // --- send timeout, on a gateway whose lag limits sit far above the output: a stalled
  // reader's write must block (more than loopback's socket buffers can absorb, however the
  // kernel sized them), and only the send timeout may cut it
  const g3 = await L.startGateway('limits3', ['--sub-lag-soft', '256M', '--sub-lag-soft-time', '1h',
    '--sub-lag-hard', '1G', '--sub-send-timeout', '3s', '--sub-sndbuf', '16K', '--sse-heartbeat', '1h']);
  const sb3 = await L.createRunning(g3);
  const r3 = await g3.call('POST', `/v1/sandboxes/${sb3}/proxy/44772/command`,
    { command: "sleep 1; head -c 8000000 /dev/zero | tr '\\0' d | fold -w 1000; sleep 20", background: true });
  const small = L.parseExecd(r3.text)[0].text;
  const s3 = L.stream(`${g3.base}/v1/sandboxes/${sb3}/processes/${small}/stream?raw=1`, { onResponse: (r) => r.pause() });
  for (let i = 0; i < 400 && !/write blocked past the send timeout/.test(g3.log); i++) await L.sleep(50);
  assert.match(g3.log, /write blocked past the send timeout/);
  assert.doesNotMatch(g3.log, /lag past/);
  s3.res.resume();
  assert.ok((await s3.done).aborted);
  ok('send timeout: a subscriber whose write makes no progress for 3 s is cut');

  // --- soft limit, on a gateway whose soft limit sits far below its hard one (how much the
  // kernel absorbs for a stalled reader varies, so the lag must clear the soft limit by far)
  const g2 = await L.startGateway('limits2', ['--sub-lag-soft', '256K', '--sub-lag-soft-time', '1s', '--sub-lag-hard', '1G',
    '--sub-send-timeout', '60s', '--sub-sndbuf', '16K', '--sse-heartbeat', '1h']);
  const sb2 = await L.createRunning(g2);
  const P2 = `/v1/sandboxes/${sb2}`;
  const start2 = async (command) => {
    const res = await L.stream(`${g2.base}${P2}/proxy/44772/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command, background: true } }).done;
    return L.parseExecd(res.body.toString())[0].text;
  };
  // --- soft limit: past 256K of lag for more than 1 s
  const soft = await start2("sleep 1; head -c 1500000 /dev/zero | tr '\\0' c | fold -w 1000; sleep 8");
  const s2 = L.stream(`${g2.base}${P2}/processes/${soft}/stream?from=start&raw=1`, { onResponse: (r) => r.pause() });
  for (let i = 0; i < 200 && !/lag past the soft limit/.test(g2.log); i++) await L.sleep(50);
  assert.match(g2.log, /lag past the soft limit/);
  s2.res.resume();
  assert.ok((await s2.done).aborted);
  ok('soft limit: a subscriber past 256K of lag for 1 s is cut');


  // --- the cuts, gaps and evictions show in /metrics
  const metric = (text, name) => {
    const m = new RegExp('^' + name.replace(/[{}"=]/g, (c) => '\\' + c) + ' (\\S+)$', 'm').exec(text);
    return m ? Number(m[1]) : NaN;
  };
  const m1 = (await g.call('GET', '/metrics')).text;
  const m2 = (await g2.call('GET', '/metrics')).text;
  const m3 = (await g3.call('GET', '/metrics')).text;
  assert.ok(metric(m1, 'sandgate_slow_subscribers_disconnected_total{reason="hard"}') >= 1, m1);
  assert.equal(metric(m3, 'sandgate_slow_subscribers_disconnected_total{reason="timeout"}'), 1);
  assert.ok(metric(m2, 'sandgate_slow_subscribers_disconnected_total{reason="soft"}') >= 1);
  assert.ok(metric(m1, 'sandgate_stream_gaps_total') >= 2);
  assert.ok(metric(m1, 'sandgate_stream_evicted_events_total') > 0);
  assert.ok(metric(m1, 'sandgate_process_log_bytes') <= 4 * 1024 * 1024, 'three processes of at most 1M each');
  assert.equal(metric(m1, 'sandgate_subscribers'), 0);
  ok('/metrics counts the cuts, gaps and evictions');
});
