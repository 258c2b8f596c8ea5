// Durability of the sandbox records (issue 7, first part), against real bubblewrap sandboxes:
// kill -9 of the gateway, then a restart on the same data directory:
//   - every acknowledged sandbox is back with its state and metadata, and still runs commands;
//   - a paused sandbox is still Paused (and resumes);
//   - a sandbox deleted before the crash stays deleted;
//   - one that expired while the gateway was down is deleted, its processes gone;
//   - one whose processes died while the gateway was down is Failed (SANDBOX_LOST);
//   - a sandbox on disk with no record (an orphan) is reaped;
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

L.main(async () => {
  let g = await L.startGateway('restart');
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
  g.child.kill('SIGKILL');
  await L.sleep(200);
  fs.renameSync(path.join(other.data, 'sandboxes', orphan), path.join(data, 'sandboxes', orphan));
  process.kill(dyingPid, 'SIGKILL');
  await L.sleep(1700); // past the renewed expiry, with the gateway down
  ok('state before kill -9: 5 sandboxes, one paused, one deleted, one expiring, one orphan on disk');

  g = await L.startGateway('restart', [], { data, port });
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

  s = await waitState(g, paused, 'Paused');
  assert.equal((await g.call('POST', `/v1/sandboxes/${paused}/resume`)).status, 202);
  await waitState(g, paused, 'Running');
  ok('a paused sandbox is still paused after the restart, and resumes');

  assert.equal((await g.call('GET', `/v1/sandboxes/${deleted}`)).status, 404);
  ok('a sandbox deleted before the crash stays deleted');

  for (let i = 0; i < 100 && (await g.call('GET', `/v1/sandboxes/${expiring}`)).status !== 404; i++) await L.sleep(50);
  assert.equal((await g.call('GET', `/v1/sandboxes/${expiring}`)).status, 404);
  await waitDead(expPid, 'expired sandbox');
  ok('a sandbox that expired while the gateway was down is deleted, its processes gone');

  s = await waitState(g, dying, 'Failed');
  assert.equal(s.status.reason, 'SANDBOX_LOST');
  ok('a sandbox whose processes died meanwhile is Failed (SANDBOX_LOST)');

  await waitDead(orphanPid, 'orphan');
  for (let i = 0; i < 100 && fs.existsSync(path.join(data, 'sandboxes', orphan)); i++) await L.sleep(50);
  assert.ok(!fs.existsSync(path.join(data, 'sandboxes', orphan)), 'orphan directory removed');
  assert.equal((await g.call('GET', `/v1/sandboxes/${orphan}`)).status, 404);
  ok('a sandbox on disk without a record is reaped');

  const list = await g.call('GET', '/v1/sandboxes');
  const ids = list.json.items.map((x) => x.id).sort();
  assert.deepEqual(ids, [keep, paused, dying].sort());
  ok('the list is exactly what survived');

  // A graceful stop keeps running commands running; the next start re-attaches them.
  r = await g.call('POST', `/v1/sandboxes/${keep}/proxy/44772/command`, { command: 'for i in $(seq 1 20); do echo tock-$i; sleep 0.1; done', background: true });
  const tockPid = L.parseExecd(r.text)[0].text;
  g.child.kill('SIGTERM');
  for (let i = 0; i < 100 && g.child.exitCode === null; i++) await L.sleep(50);
  g = await L.startGateway('restart', [], { data, port });
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
