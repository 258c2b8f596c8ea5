// Durability of the sandbox records (issue 7, first part), against real bubblewrap sandboxes:
// kill -9 of the gateway, then a restart on the same data directory:
//   - every acknowledged sandbox is back with its state and metadata, and still runs commands;
//   - a paused sandbox is still Paused (and resumes);
//   - a sandbox deleted before the crash stays deleted;
//   - one that expired while the gateway was down is deleted, its processes gone;
//   - one whose processes died while the gateway was down is Failed (SANDBOX_LOST);
//   - a sandbox on disk with no record (an orphan) is reaped;
//   - process output logs: a completed process replays byte-identically (from memory and
//     from its segment files); a subscriber cut by the crash resumes with Last-Event-ID and
//     gets the rest of a re-attached command, nothing lost or repeated; a command whose
//     sandbox died meanwhile is `lost` with its output so far; an expired sandbox and an
//     orphan log directory leave no files;
//   - a foreign sandgate.db is refused with a clear message and left byte-identical.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const L = require('./_lib.js');
const { assert, ok } = L;

async function waitState(g, id, want) {
  let last;
  for (let i = 0; i < 300; i++) {
    last = await g.call('GET', `/v1/sandboxes/${id}`);
    if (last.json && last.json.status.state === want) return last.json;
    await L.sleep(50);
  }
  throw new Error(`${id}: wanted ${want}, last ${last.status} ${last.text}`);
}

async function waitDead(pid, what) {
  for (let i = 0; i < 200 && L.pidAlive(pid); i++) await L.sleep(50);
  assert.ok(!L.pidAlive(pid), `${what}: pid ${pid} still alive`);
}

// Small segments and a small memory window: completed logs span several files and most of
// a big one is read back from the files, not from memory.
const FLAGS = ['--log-segment-bytes', '64K', '--process-log-bytes', '128K', '--sse-heartbeat', '1h'];

const rawStream = async (g, sb, pid, headers = {}) =>
  (await L.stream(`${g.base}/v1/sandboxes/${sb}/processes/${pid}/stream?raw=1`, { headers }).done).body;

const ticks = (name, a, b) => Array.from({ length: b - a + 1 }, (_, i) => `${name}-${a + i}`);

L.main(async () => {
  let g = await L.startGateway('restart', FLAGS);
  const data = g.data;
  const port = g.port;
  const keep = await L.createRunning(g, { metadata: { team: 'blue', run: '7' } });
  const paused = await L.createRunning(g);
  const expiring = await L.createRunning(g);
  const deleted = await L.createRunning(g);
  const dying = await L.createRunning(g);
  let r = await g.call('POST', `/v1/sandboxes/${keep}/proxy/44772/command`, { command: 'echo before > /workspace/mark; echo done-before' });
  assert.equal(r.status, 200);
  const donePid = L.parseExecd(r.text)[0].text;
  r = await g.call('POST', `/v1/sandboxes/${keep}/proxy/44772/command`, { command: 'for i in $(seq 1 40); do echo tick-$i; sleep 0.1; done', background: true });
  const tickPid = L.parseExecd(r.text)[0].text;
  // A completed process with a log of several segments, most of it outside the memory window.
  r = await g.call('POST', `/v1/sandboxes/${keep}/proxy/44772/command`, { command: "head -c 400000 /dev/zero | tr '\\0' z | fold -w 80; echo; echo err >&2; exit 3" });
  assert.equal(r.status, 200);
  const bigPid = L.parseExecd(r.text)[0].text;
  let bp = await g.call('GET', `/v1/sandboxes/${keep}/processes/${bigPid}`);
  assert.equal(bp.json.exit_code, 3);
  assert.ok(bp.json.first_event_id > 1, 'memory holds only the end of it');
  const doneBefore = await rawStream(g, keep, donePid);
  const bigBefore = await rawStream(g, keep, bigPid);
  assert.ok(!bigBefore.includes('sandgate.gap'), `read from the files, no gap: ${bigBefore.toString().split('\n\n').filter((x) => x.includes('gap')).join(' / ').slice(0, 600)} (first id in memory ${bp.json.first_event_id})`);
  // A live subscriber on the running one: the crash cuts it mid-stream.
  const seen = [];
  const tickSub = L.stream(`${g.base}/v1/sandboxes/${keep}/processes/${tickPid}/stream?raw=1`);
  // A running command in the sandbox that dies while the gateway is down: lost.
  r = await g.call('POST', `/v1/sandboxes/${dying}/proxy/44772/command`, { command: 'for i in $(seq 1 400); do echo beat-$i; sleep 0.05; done', background: true });
  const beatPid = L.parseExecd(r.text)[0].text;
  // And one in the sandbox that expires meanwhile: its log directory must go with it.
  r = await g.call('POST', `/v1/sandboxes/${expiring}/proxy/44772/command`, { command: 'echo bye' });
  assert.equal(r.status, 200);
  const logDir = (sb) => path.join(data, 'logs', sb);
  assert.ok(fs.existsSync(logDir(expiring)), 'the expiring sandbox has a log directory');
  for (let i = 0; i < 100; i++) {
    const t = await g.call('GET', `/v1/sandboxes/${keep}/processes/${tickPid}`);
    if (t.json.last_event_id > 12) break;
    await L.sleep(50);
  }
  assert.equal((await g.call('POST', `/v1/sandboxes/${paused}/pause`)).status, 202);
  await waitState(g, paused, 'Paused');
  const soon = new Date(Date.now() + 1500).toISOString();
  r = await g.call('POST', `/v1/sandboxes/${expiring}/renew-expiration`, { expiresAt: soon });
  assert.equal(r.status, 200, r.text);
  assert.equal((await g.call('DELETE', `/v1/sandboxes/${deleted}`)).status, 204);
  const expPid = L.initPid(data, expiring);
  const dyingPid = L.initPid(data, dying);
  assert.ok(expPid && dyingPid);

  // An orphan: a sandbox made by another gateway whose record never reached this one's store.
  const other = await L.startGateway('restart-orphan');
  const orphan = await L.createRunning(other);
  const orphanPid = L.initPid(other.data, orphan);
  other.child.kill('SIGKILL');
  // What the subscriber and the beat command showed at least 150 ms before the crash is on
  // disk (the writer runs within milliseconds).
  const beatsSeen = await g.call('GET', `/v1/sandboxes/${dying}/processes/${beatPid}/output?offset=0`);
  await L.sleep(150);
  g.child.kill('SIGKILL');
  const cut = await tickSub.done;
  assert.ok(cut.aborted, 'the crash cut the subscriber');
  const cutEvs = L.parseSse(cut.body.toString());
  for (const e of cutEvs) if (e.event === 'stdout') seen.push(JSON.parse(e.data).text);
  const lastSeen = cutEvs.filter((e) => e.id).pop().id;
  assert.ok(seen.length >= 3, `the subscriber saw ticks before the crash (${seen.length})`);
  // An orphan log directory: files with no process record.
  const orphanLog = path.join(data, 'logs', 'sbx-nobody', 'proc-nobody');
  fs.mkdirSync(orphanLog, { recursive: true });
  fs.writeFileSync(path.join(orphanLog, '0000000000000001.log'), 'stale');
  await L.sleep(200);
  fs.renameSync(path.join(other.data, 'sandboxes', orphan), path.join(data, 'sandboxes', orphan));
  process.kill(dyingPid, 'SIGKILL');
  await L.sleep(1700); // past the renewed expiry, with the gateway down
  ok('state before kill -9: 5 sandboxes, one paused, one deleted, one expiring, one orphan on disk');

  g = await L.startGateway('restart', FLAGS, { data, port });
  let s = await waitState(g, keep, 'Running');
  assert.deepEqual(s.metadata, { team: 'blue', run: '7' });
  r = await g.call('POST', `/v1/sandboxes/${keep}/proxy/44772/command`, { command: 'cat /workspace/mark' });
  assert.ok(L.parseExecd(r.text).some((e) => e.type === 'stdout' && e.text === 'before'), r.text);
  ok('a running sandbox is back with its metadata and its files, and runs commands');

  let p = await g.call('GET', `/v1/sandboxes/${keep}/processes/${donePid}`);
  assert.equal(p.status, 200, p.text);
  assert.equal(p.json.state, 'exited');
  assert.equal(p.json.exit_code, 0);
  for (let i = 0; i < 200; i++) {
    p = await g.call('GET', `/v1/sandboxes/${keep}/processes/${tickPid}`);
    if (p.json && p.json.state !== 'running') break;
    await L.sleep(50);
  }
  assert.equal(p.json.state, 'exited', p.text);
  let out = await g.call('GET', `/v1/sandboxes/${keep}/processes/${tickPid}/output?offset=0`);
  const want = Array.from({ length: 40 }, (_, i) => `tick-${i + 1}\n`).join('');
  assert.equal(out.buf.toString(), want);
  ok('processes: a finished one is listed as it ended; a running one is re-attached and finishes with its full output');

  assert.ok(Buffer.compare(await rawStream(g, keep, donePid), doneBefore) === 0, 'small log replays byte-identically');
  const bigAfter = await rawStream(g, keep, bigPid);
  assert.equal(bigAfter.length, bigBefore.length);
  assert.ok(Buffer.compare(bigAfter, bigBefore) === 0, 'big log replays byte-identically');
  bp = await g.call('GET', `/v1/sandboxes/${keep}/processes/${bigPid}`);
  assert.equal(bp.json.state, 'exited');
  assert.equal(bp.json.exit_code, 3);
  ok(`completed logs replay byte-identically (${doneBefore.length} and ${bigAfter.length} bytes of SSE, ${bigAfter.length > 256 * 1024 ? 'most of it' : 'part'} from the files)`);

  // The cut subscriber resumes with the last id it got: the rest, in order, nothing twice.
  const resumed = await L.stream(`${g.base}/v1/sandboxes/${keep}/processes/${tickPid}/stream?raw=1`, { headers: { 'last-event-id': lastSeen } }).done;
  const resEvs = L.parseSse(resumed.body.toString());
  assert.ok(!resEvs.some((e) => e.event === 'gap'), 'no gap');
  resEvs.forEach((e, i) => assert.equal(Number(e.id), Number(lastSeen) + 1 + i, 'ids continue'));
  const all = seen.concat(resEvs.filter((e) => e.event === 'stdout').map((e) => JSON.parse(e.data).text));
  assert.deepEqual(all, ticks('tick', 1, 40));
  assert.equal(resEvs[resEvs.length - 1].event, 'execution_complete');
  ok(`a subscriber cut by the crash at id ${lastSeen} resumes after the restart: ticks ${seen.length + 1}..40, ids contiguous`);

  s = await waitState(g, paused, 'Paused');
  assert.equal((await g.call('POST', `/v1/sandboxes/${paused}/resume`)).status, 202);
  await waitState(g, paused, 'Running');
  ok('a paused sandbox is still paused after the restart, and resumes');

  assert.equal((await g.call('GET', `/v1/sandboxes/${deleted}`)).status, 404);
  ok('a sandbox deleted before the crash stays deleted');

  for (let i = 0; i < 100 && (await g.call('GET', `/v1/sandboxes/${expiring}`)).status !== 404; i++) await L.sleep(50);
  assert.equal((await g.call('GET', `/v1/sandboxes/${expiring}`)).status, 404);
  await waitDead(expPid, 'expired sandbox');
  for (let i = 0; i < 100 && fs.existsSync(logDir(expiring)); i++) await L.sleep(50);
  assert.ok(!fs.existsSync(logDir(expiring)), 'its log directory is gone');
  ok('a sandbox that expired while the gateway was down is deleted, its processes and their logs gone');

  s = await waitState(g, dying, 'Failed');
  assert.equal(s.status.reason, 'SANDBOX_LOST');
  let bt;
  for (let i = 0; i < 200; i++) {
    bt = await g.call('GET', `/v1/sandboxes/${dying}/processes/${beatPid}`);
    if (bt.json && bt.json.state !== 'running') break;
    await L.sleep(50);
  }
  assert.equal(bt.json.state, 'lost', bt.text);
  assert.ok(bt.json.error && bt.json.error.length > 10, `a reason: ${bt.json.error}`);
  const beatsAfter = (await g.call('GET', `/v1/sandboxes/${dying}/processes/${beatPid}/output?offset=0`)).buf.toString();
  assert.ok(beatsAfter.startsWith(beatsSeen.buf.toString()) && beatsSeen.buf.length > 0, 'its output so far is kept');
  const nb = beatsAfter.split('\n').filter(Boolean);
  assert.deepEqual(nb, ticks('beat', 1, nb.length));
  ok(`a command whose sandbox died meanwhile is lost ("${bt.json.error}") with its output so far (${nb.length} lines)`);
  ok('a sandbox whose processes died meanwhile is Failed (SANDBOX_LOST)');

  await waitDead(orphanPid, 'orphan');
  for (let i = 0; i < 100 && fs.existsSync(path.join(data, 'sandboxes', orphan)); i++) await L.sleep(50);
  assert.ok(!fs.existsSync(path.join(data, 'sandboxes', orphan)), 'orphan directory removed');
  assert.equal((await g.call('GET', `/v1/sandboxes/${orphan}`)).status, 404);
  for (let i = 0; i < 100 && fs.existsSync(path.dirname(orphanLog)); i++) await L.sleep(50);
  assert.ok(!fs.existsSync(path.dirname(orphanLog)), 'orphan log directory removed');
  assert.ok(fs.existsSync(logDir(keep)), 'the kept sandbox keeps its logs');
  ok('a sandbox on disk without a record is reaped, and so is a log directory without one');

  const list = await g.call('GET', '/v1/sandboxes');
  const ids = list.json.items.map((x) => x.id).sort();
  assert.deepEqual(ids, [keep, paused, dying].sort());
  ok('the list is exactly what survived');

  // A graceful stop keeps running commands running; the next start re-attaches them.
  r = await g.call('POST', `/v1/sandboxes/${keep}/proxy/44772/command`, { command: 'for i in $(seq 1 20); do echo tock-$i; sleep 0.1; done', background: true });
  const tockPid = L.parseExecd(r.text)[0].text;
  g.child.kill('SIGTERM');
  for (let i = 0; i < 100 && g.child.exitCode === null; i++) await L.sleep(50);
  g = await L.startGateway('restart', FLAGS, { data, port });
  for (let i = 0; i < 200; i++) {
    p = await g.call('GET', `/v1/sandboxes/${keep}/processes/${tockPid}`);
    if (p.json && p.json.state !== 'running') break;
    await L.sleep(50);
  }
  assert.equal(p.json.state, 'exited', p.text);
  out = await g.call('GET', `/v1/sandboxes/${keep}/processes/${tockPid}/output?offset=0`);
  assert.equal(out.buf.toString(), Array.from({ length: 20 }, (_, i) => `tock-${i + 1}\n`).join(''));
  ok('after a graceful stop, a running command is re-attached at the next start');
  g.child.kill('SIGTERM');
  await L.sleep(300);

  // A foreign file is refused, not overwritten.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-foreign-'));
  const junk = Buffer.from('this is not a database, it is somebody else\'s file\n'.repeat(40));
  fs.writeFileSync(path.join(dir, 'sandgate.db'), junk);
  const res = spawnSync(path.join(process.env.SG_BIN_DIR || 'build', 'sandgate'),
    ['serve', '--listen', '127.0.0.1:0', '--data', dir, '--provider', 'none'], { encoding: 'utf8', timeout: 20000 });
  assert.notEqual(res.status, 0);
  assert.match(res.stderr, /sandgate\.db/);
  assert.ok(Buffer.compare(fs.readFileSync(path.join(dir, 'sandgate.db')), junk) === 0, 'file unchanged');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['sandgate.db']);
  fs.rmSync(dir, { recursive: true, force: true });
  ok(`a foreign sandgate.db is refused (${res.stderr.trim().split('\n').pop()}) and left as it was`);
});
