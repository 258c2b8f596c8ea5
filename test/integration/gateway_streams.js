// Processes and their streams through the gateway (issue 6), against real bubblewrap
// sandboxes running sandgate-execd:
//   - POST .../proxy/44772/command answers in ExecD framing and becomes a listed process;
//     /command/status and /command/{id}/logs come from the gateway's log, for foreground and
//     background commands alike;
//   - the native stream replays from the start, resumes after Last-Event-ID (header and
//     query), joins live with from=end, answers 204 once everything was delivered;
//   - 1,000 subscribers of one busy process all receive byte-identical streams;
//   - a raw subscriber cut at 100 random points and resumed each time with Last-Event-ID
//     reassembles output whose SHA-256 equals the command's own;
//   - a client that disconnects from POST /command re-attaches and sees the command finish;
//   - /output?offset=N returns the exact bytes from N.
'use strict';
const crypto = require('node:crypto');
const L = require('./_lib.js');
const { assert, ok } = L;

L.main(async () => {
  const g = await L.startGateway('streams', ['--process-log-bytes', '256M', '--sse-heartbeat', '1h']);
  const sb = await L.createRunning(g);
  const P = `/v1/sandboxes/${sb}`;
  const X = `${g.base}${P}/proxy/44772`;

  // --- foreground command: ExecD framing, process record, status, logs, output
  let r = L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: "printf 'a\\nb\\n'; printf 'err\\n' >&2; printf 'tail'" } });
  let res = await r.done;
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /text\/event-stream/);
  let evs = L.parseExecd(res.body.toString());
  assert.equal(evs[0].type, 'init');
  assert.equal(evs[1].type, 'ping', 'ping right after init, as execd');
  const pid = evs[0].text;
  assert.equal(evs[evs.length - 1].type, 'execution_complete');
  assert.ok(!evs.some((e) => e.type === 'sandgate.raw'), 'raw events only when asked for');
  assert.deepEqual(evs.filter((e) => e.type === 'stdout').map((e) => e.text), ['a', 'b', 'tail']);
  let p = await g.call('GET', `${P}/processes/${pid}`);
  assert.equal(p.status, 200);
  assert.equal(p.json.state, 'exited');
  assert.equal(p.json.exit_code, 0);
  assert.equal(p.json.output_bytes, 12);
  let st = await g.call('GET', `${P}/proxy/44772/command/status/${pid}`);
  assert.equal(st.status, 200);
  assert.equal(st.json.running, false);
  assert.equal(st.json.exit_code, 0);
  let logs = await g.call('GET', `${P}/proxy/44772/command/${pid}/logs?cursor=0`);
  assert.equal(logs.status, 200);
  assert.equal(logs.headers.get('execd-commands-tail-cursor'), '12');
  assert.equal(logs.text.length, 12);
  assert.ok(logs.text.startsWith('a\nb\n'), JSON.stringify(logs.text));
  let out = await g.call('GET', `${P}/processes/${pid}/output?offset=2`);
  assert.equal(out.status, 200);
  assert.equal(out.headers.get('x-sandgate-next-offset'), '12');
  assert.equal(out.headers.get('x-sandgate-running'), '0');
  assert.equal(out.buf.toString(), logs.text.slice(2));
  let list = await g.call('GET', `${P}/processes?state=exited`);
  assert.ok(list.json.items.some((x) => x.id === pid));
  list = await g.call('GET', `${P}/processes?state=running`);
  assert.ok(!list.json.items.some((x) => x.id === pid));
  assert.equal((await g.call('GET', `${P}/processes?state=nope`)).status, 400);
  assert.equal((await g.call('GET', `${P}/processes/nope`)).status, 404);
  assert.equal((await g.call('GET', `${P}/processes/${pid}/output?offset=x`)).status, 400);
  ok('foreground command: execd framing, process record, status, logs, output');

  // --- replay, resume by header and query, 204 when complete
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream`).done;
  assert.equal(res.status, 200);
  assert.ok(res.body.toString().startsWith('retry: 2000\n\n'));
  const all = L.parseSse(res.body.toString());
  assert.equal(all.length, 6);
  assert.equal(all[0].event, 'init');
  assert.equal(all[all.length - 1].event, 'execution_complete');
  for (const e of all) assert.deepEqual(JSON.parse(e.data).type, e.event);
  const ids = all.map((e) => Number(e.id));
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], 'ids increase');
  const mid = all[2].id;
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream`, { headers: { 'Last-Event-ID': mid } }).done;
  assert.deepEqual(L.parseSse(res.body.toString()), all.slice(3));
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream?last_event_id=${mid}`).done;
  assert.deepEqual(L.parseSse(res.body.toString()), all.slice(3));
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream?last_event_id=${all[all.length - 1].id}`).done;
  assert.equal(res.status, 204);
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream`, { method: 'HEAD' }).done;
  assert.equal(res.status, 200);
  assert.equal(res.body.length, 0);
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream?last_event_id=abc`).done;
  assert.equal(res.status, 400);
  res = await L.stream(`${g.base}${P}/processes/${pid}/stream?raw=1`).done;
  const rawEvs = L.parseSse(res.body.toString()).filter((e) => e.event === 'sandgate.raw');
  assert.equal(Buffer.concat(rawEvs.map((e) => Buffer.from(JSON.parse(e.data).data_b64, 'base64'))).toString(), logs.text);
  ok('native stream: replay, Last-Event-ID header and query, 204 when complete, raw events');

  // --- background command: init/ping/execution_complete at once, output captured anyway
  r = L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: 'sleep 0.5; echo bg-done', background: true } });
  res = await r.done;
  evs = L.parseExecd(res.body.toString());
  assert.deepEqual(evs.map((e) => e.type), ['init', 'ping', 'execution_complete']);
  const bg = evs[0].text;
  for (let i = 0; i < 200; i++) {
    st = await g.call('GET', `${P}/proxy/44772/command/status/${bg}`);
    if (!st.json.running) break;
    await L.sleep(50);
  }
  assert.equal(st.json.running, false);
  logs = await g.call('GET', `${P}/proxy/44772/command/${bg}/logs?cursor=0`);
  assert.equal(logs.text, 'bg-done\n');
  p = await g.call('GET', `${P}/processes/${bg}`);
  assert.equal(p.json.background, true);
  assert.equal(p.json.state, 'exited');
  ok('background command: execd answer, output captured by the gateway');

  // --- a failing command: exited with its code
  res = await L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: 'exit 3' } }).done;
  evs = L.parseExecd(res.body.toString());
  p = await g.call('GET', `${P}/processes/${evs[0].text}`);
  assert.equal(p.json.state, 'exited');
  assert.equal(p.json.exit_code, 3);
  ok('exit 3: state exited, exit_code 3');

  // --- live join with from=end sees only later events
  r = L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: 'echo early; sleep 1; echo late' } });
  let livePid;
  for (let i = 0; i < 100 && !livePid; i++) {
    await L.sleep(50);
    const l2 = await g.call('GET', `${P}/processes?state=running`);
    if (l2.json.items.length) livePid = l2.json.items[0].id;
  }
  assert.ok(livePid, 'the running process is listed');
  for (let i = 0; i < 100; i++) {
    out = await g.call('GET', `${P}/processes/${livePid}/output?offset=0`);
    if (out.text === 'early\n') break;
    await L.sleep(20);
  }
  res = await L.stream(`${g.base}${P}/processes/${livePid}/stream?from=end`).done;
  const late = L.parseSse(res.body.toString());
  assert.deepEqual(late.map((e) => e.event), ['stdout', 'execution_complete']);
  assert.equal(JSON.parse(late[0].data).text, 'late');
  await r.done;
  ok('from=end joins live');

  // --- re-attach after leaving POST /command
  let initSeen;
  r = L.stream(`${X}/command`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: 'sleep 1; echo reattached' },
    onData: (d, c) => { if (!initSeen && d.toString().includes('"init"')) { initSeen = L.parseExecd(d.toString())[0].text; c.abort(); } },
  });
  res = await r.done;
  assert.ok(initSeen && res.aborted, 'client left after init');
  res = await L.stream(`${g.base}${P}/processes/${initSeen}/stream?last_event_id=1`).done;
  const rest = L.parseSse(res.body.toString());
  assert.equal(JSON.parse(rest.find((e) => e.event === 'stdout').data).text, 'reattached');
  assert.equal(rest[rest.length - 1].event, 'execution_complete');
  ok('a client that left POST /command re-attaches and sees the command finish');

  // --- the command's own client paces the command: paused for 2 s, it loses nothing
  r = L.stream(`${X}/command`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: 'seq 1 1000000' },
    onResponse: (rs) => { rs.pause(); setTimeout(() => rs.resume(), 2000); },
  });
  res = await r.done;
  assert.equal(res.aborted, false);
  evs = L.parseExecd(res.body.toString());
  const nums = evs.filter((e) => e.type === 'stdout').map((e) => e.text);
  assert.equal(nums.length, 1000000);
  assert.equal(nums[0], '1');
  assert.equal(nums[999999], '1000000');
  assert.equal(evs[evs.length - 1].type, 'execution_complete');
  assert.ok(!evs.some((e) => e.type === 'sandgate.gap'));
  assert.doesNotMatch(g.log, /slow subscriber disconnected/);
  ok('a paused POST /command client gets all 1,000,000 lines: it paces the command, is never cut');

  // --- signal: forwarded to execd's extension; the process ends killed
  res = await L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: 'sleep 30', background: true } }).done;
  const sleeper = L.parseExecd(res.body.toString())[0].text;
  let sig = await g.call('POST', `${P}/processes/${sleeper}/signal`, { signal: 'nope' });
  assert.equal(sig.status, 400, sig.text);
  sig = await g.call('POST', `${P}/processes/${sleeper}/signal`, 'not json');
  assert.equal(sig.status, 400, sig.text);
  assert.equal((await g.call('POST', `${P}/processes/nope/signal`, { signal: 'TERM' })).status, 404);
  assert.equal((await g.call('GET', `${P}/processes/${sleeper}/signal`)).status, 405);
  sig = await g.call('POST', `${P}/processes/${sleeper}/signal`, { signal: 'SIGTERM' });
  assert.equal(sig.status, 202, sig.text);
  for (let i = 0; i < 200; i++) {
    p = await g.call('GET', `${P}/processes/${sleeper}`);
    if (p.json.state !== 'running') break;
    await L.sleep(50);
  }
  assert.equal(p.json.state, 'killed');
  assert.match(p.json.error, /signal: terminated/);
  assert.equal((await g.call('POST', `${P}/processes/${sleeper}/signal`, { signal: 'TERM' })).status, 409);
  ok('signal: SIGTERM forwarded, process killed; 400/404/405/409');

  // --- 1,000 subscribers of one busy process receive byte-identical streams
  const N = 1000;
  const busy = "for i in $(seq 1 40); do seq -f \"line-$i-%g\" 1 250; sleep 0.05; done";
  res = await L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: busy, background: true } }).done;
  const busyPid = L.parseExecd(res.body.toString())[0].text;
  const subs = [];
  for (let i = 0; i < N; i++) subs.push(L.stream(`${g.base}${P}/processes/${busyPid}/stream`).done);
  const bodies = await Promise.all(subs);
  const strip = (b) => b.toString().split('\n\n').filter((x) => !x.startsWith(':')).join('\n\n');
  const ref = strip(bodies[0].body);
  const refEvents = L.parseSse(ref);
  assert.equal(refEvents.filter((e) => e.event === 'stdout').length, 10000);
  assert.equal(refEvents[refEvents.length - 1].event, 'execution_complete');
  const h0 = crypto.createHash('sha256').update(ref).digest('hex');
  let same = 0;
  for (const b of bodies) {
    assert.equal(b.status, 200);
    if (crypto.createHash('sha256').update(strip(b.body)).digest('hex') === h0) same++;
  }
  assert.equal(same, N, `${same}/${N} identical`);
  ok(`${N} subscribers of one busy process: byte-identical (${ref.length} bytes each)`);

  // --- resume at 100 random cut points: the reassembled bytes hash like the command's output
  const cmd = 'for i in $(seq 1 60); do head -c 20000 /dev/urandom; sleep 0.03; done > /tmp/out.bin; sha256sum /tmp/out.bin | cut -c1-64 >/tmp/out.sha; cat /tmp/out.bin';
  res = await L.stream(`${X}/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { command: cmd, background: true } }).done;
  const rpid = L.parseExecd(res.body.toString())[0].text;
  const parts = [];
  let last = '';
  let cuts = 0;
  let finished = false;
  for (let round = 0; round < 1000 && !finished; round++) {
    const budget = cuts < 100 ? 1 + Math.floor(Math.random() * 60000) : Infinity;
    let got = 0;
    const h = last ? { 'Last-Event-ID': last } : {};
    const c = L.stream(`${g.base}${P}/processes/${rpid}/stream?raw=1`, {
      headers: h, onData: (d, ctl) => { got += d.length; if (got >= budget) ctl.abort(); },
    });
    const rr = await c.done;
    if (rr.status === 204) { finished = true; break; }
    assert.equal(rr.status, 200);
    for (const e of L.parseSse(rr.body.toString())) {
      if (e.event === 'sandgate.raw') {
        const o = JSON.parse(e.data);
        if (o.stream === 'stdout') parts.push(Buffer.from(o.data_b64, 'base64'));
      }
      assert.notEqual(e.event, 'gap');
      if (e.id) last = e.id;
      if (e.event === 'execution_complete') finished = true;
    }
    if (rr.aborted) cuts++;
  }
  assert.ok(finished, 'reached the end');
  assert.ok(cuts >= 100, `cut ${cuts} times`);
  const data = Buffer.concat(parts);
  assert.equal(data.length, 60 * 20000);
  const sha = await g.call('POST', `${P}/proxy/44772/command`, { command: 'cat /tmp/out.sha' });
  const want = L.parseExecd(sha.text).find((e) => e.type === 'stdout').text;
  assert.equal(crypto.createHash('sha256').update(data).digest('hex'), want);
  out = await g.call('GET', `${P}/processes/${rpid}/output?offset=0`);
  assert.equal(crypto.createHash('sha256').update(out.buf).digest('hex'), want);
  ok(`resumed after ${cuts} random cuts: SHA-256 of the reassembled output equals the command's`);
});
