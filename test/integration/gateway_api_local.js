// `sandgate serve --provider local` driven over HTTP: create (ubuntu:22.04 mapped to the host
// image) -> Pending -> Running, get, list with filters and pagination, metadata merge-patch,
// endpoints shape, the proxy (/ping and a streamed POST /command), pause/resume with 409s,
// renew, delete -> 404, expiry deletes, a sandbox whose execd never answers becomes Failed and
// leaves nothing behind, a sandbox whose processes die becomes Failed via the health check.
// No timing assertions: every wait is a bounded poll. Run by ctest with SG_BIN_DIR set.
'use strict';
const { spawn, execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-api-local-'));
const DATA = path.join(TMP, 'data');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ok = (m) => console.log('ok - ' + m);

let child;
let log = '';
function cleanup() {
  try { if (child && child.exitCode === null) child.kill('SIGKILL'); } catch (_) { /* gone */ }
  // Sandboxes outlive the gateway by design: remove what a failed run left.
  try {
    for (const id of fs.readdirSync(path.join(DATA, 'sandboxes'))) {
      try {
        const st = JSON.parse(fs.readFileSync(path.join(DATA, 'sandboxes', id, 'state.json'), 'utf8'));
        if (st.init_pid) process.kill(st.init_pid, 'SIGKILL');
      } catch (_) { /* no state */ }
    }
  } catch (_) { /* no dir */ }
  try { fs.rmSync(TMP, { recursive: true, force: true }); } catch (_) { /* busy mounts */ }
}

async function freePort() {
  const net = require('node:net');
  return new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}

let BASE;
async function call(method, p, body, headers = {}) {
  const opts = { method, headers: { ...headers } };
  if (body !== undefined) {
    opts.body = typeof body === 'string' ? body : JSON.stringify(body);
    opts.headers['content-type'] = 'application/json';
  }
  const res = await fetch(BASE + p, opts);
  const text = await res.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch (_) { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

const SDK_BODY = { image: { uri: 'ubuntu:22.04' }, entrypoint: ['tail', '-f', '/dev/null'], resourceLimits: { cpu: '1', memory: '2Gi' }, secureAccess: false, env: {}, metadata: {}, extensions: {}, timeout: 600 };

async function create(extra) {
  const r = await call('POST', '/v1/sandboxes', { ...SDK_BODY, ...extra });
  assert.equal(r.status, 202, `create: ${r.status} ${r.text}`);
  return r.json;
}

// Polls GET until pred(sandbox or null) holds: bounded by count, not asserted on time.
async function waitFor(id, pred, what, tries = 600) {
  let last;
  for (let i = 0; i < tries; i++) {
    last = await call('GET', `/v1/sandboxes/${id}`);
    if (pred(last.status === 200 ? last.json : null)) return last.json;
    await sleep(100);
  }
  throw new Error(`waiting for ${what}: last ${last.status} ${last.text}`);
}

async function waitGone(dir, what) {
  for (let i = 0; i < 300 && fs.existsSync(dir); i++) await sleep(100);
  assert.ok(!fs.existsSync(dir), `${what}: ${dir} still exists`);
}

async function sseCommand(epBase, command) {
  const res = await fetch(`http://${epBase}/command`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ command }),
  });
  assert.equal(res.status, 200);
  const events = [];
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) events.push(JSON.parse(line.replace(/^data: ?/, '')));
    }
  }
  return events;
}

(async () => {
  const port = await freePort();
  BASE = `http://127.0.0.1:${port}`;
  child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data', DATA, '--provider', 'local',
    '--image', 'ubuntu:22.04=host', '--ready-timeout', '15s', '--health-interval', '300ms',
    '--max-body-bytes', '2G'],
  // A small ASan quarantine so the gateway's RSS measures the gateway, not freed-chunk holding.
  { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=16:detect_leaks=1' } });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(BASE + '/health')).status === 200) break; } catch (_) { /* not yet */ }
    await sleep(50);
  }

  // A sandbox whose execd never answers (a malformed EXECD_* variable makes it exit at once):
  // started first so its readiness deadline runs while the rest of the test does.
  const bad = await create({ env: { EXECD_LOG_LEVEL: 'nope' }, timeout: null });
  assert.equal(bad.status.state, 'Pending');

  // --- create -> Pending -> Running
  const a = await create({ metadata: { project: 'demo' }, env: { GREETING: 'hello from env' } });
  assert.deepEqual(Object.keys(a), ['id', 'status', 'metadata', 'expiresAt', 'createdAt', 'entrypoint']);
  assert.match(a.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(a.status.state, 'Pending');
  assert.deepEqual(a.metadata, { project: 'demo' });
  assert.ok(!Number.isNaN(Date.parse(a.createdAt)) && a.createdAt.endsWith('Z'));
  assert.equal(Date.parse(a.expiresAt) - Date.parse(a.createdAt), 600000);
  const ar = await waitFor(a.id, (s) => s && s.status.state === 'Running', 'a Running');
  assert.deepEqual(Object.keys(ar), ['id', 'image', 'status', 'metadata', 'entrypoint', 'expiresAt', 'createdAt']);
  assert.deepEqual(ar.image, { uri: 'ubuntu:22.04' });
  assert.deepEqual(ar.entrypoint, ['tail', '-f', '/dev/null']);
  ok('create 202 (CreateSandboxResponse order, Pending) -> Running; GET has the Sandbox order');

  const b = await create({ metadata: { project: 'demo', team: 'ml' }, timeout: null });
  assert.equal(b.expiresAt, undefined);
  await waitFor(b.id, (s) => s && s.status.state === 'Running', 'b Running');

  // --- list: newest first, filters, pagination
  let r = await call('GET', '/v1/sandboxes?state=running&state=RUNNING');
  const running = r.json.items.map((s) => s.id);
  assert.deepEqual(running, [b.id, a.id]);
  r = await call('GET', '/sandboxes?metadata=' + encodeURIComponent('project=demo&team=ml'));
  assert.deepEqual(r.json.items.map((s) => s.id), [b.id]);
  r = await call('GET', '/v1/sandboxes?state=Paused');
  assert.deepEqual(r.json.items, []);
  r = await call('GET', '/v1/sandboxes?state=Running&pageSize=1&page=2');
  assert.deepEqual(r.json.items.map((s) => s.id), [a.id]);
  assert.deepEqual(r.json.pagination, { page: 2, pageSize: 1, totalItems: 2, totalPages: 2, hasNextPage: false });
  r = await call('GET', '/v1/sandboxes?pageSize=0');
  assert.equal(r.status, 422);
  ok('list: newest first, state (repeatable, any case), metadata, pagination');

  // --- metadata merge-patch
  r = await call('PATCH', `/v1/sandboxes/${a.id}/metadata`, { project: null, owner: 'qa' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.metadata, { owner: 'qa' });
  r = await call('PATCH', `/v1/sandboxes/${a.id}/metadata`, {});
  assert.deepEqual(r.json.metadata, { owner: 'qa' });
  r = await call('PATCH', `/v1/sandboxes/${a.id}/metadata`, { 'opensandbox.io/x': 'y' });
  assert.equal(r.status, 400);
  assert.equal(r.json.code, 'INVALID_METADATA_LABEL');
  ok('metadata PATCH is an RFC 7396 merge; reserved keys 400');

  // --- endpoints
  for (const p of [44772, 18080, 8080]) {
    r = await call('GET', `/v1/sandboxes/${a.id}/endpoints/${p}?use_server_proxy=false`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { endpoint: `127.0.0.1:${port}/sandboxes/${a.id}/proxy/${p}` });
  }
  r = await call('GET', `/v1/sandboxes/${a.id}/endpoints/70000`);
  assert.equal(r.status, 400);
  ok('endpoints: {"endpoint":"<host:port>/sandboxes/<id>/proxy/<port>"} for every port');

  // --- proxy: /ping, streamed /command (env from create reaches commands)
  const ep = (await call('GET', `/v1/sandboxes/${a.id}/endpoints/44772`)).json.endpoint;
  r = await fetch(`http://${ep}/ping`);
  assert.equal(r.status, 200);
  const v1 = await fetch(`${BASE}/v1/sandboxes/${a.id}/proxy/44772/ping`);
  assert.equal(v1.status, 200);
  const events = await sseCommand(ep, 'echo "$GREETING"; echo err >&2');
  const types = events.map((e) => e.type);
  assert.equal(types[0], 'init');
  assert.ok(events.some((e) => e.type === 'stdout' && e.text === 'hello from env'), JSON.stringify(events));
  assert.ok(events.some((e) => e.type === 'stderr' && e.text === 'err'));
  assert.equal(types[types.length - 1], 'execution_complete');
  ok('proxy: /ping and a streamed POST /command through /sandboxes/{id}/proxy/44772');

  // --- any other port goes through execd's /proxy/{port}: a server inside the sandbox
  r = await fetch(`http://${ep}/command`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ command: `node -e 'require("http").createServer((q,s)=>s.end("inner "+q.method+" "+q.url)).listen(8000,"127.0.0.1")'`, background: true }),
  });
  assert.equal(r.status, 200);
  await r.text();
  const ep8000 = (await call('GET', `/v1/sandboxes/${a.id}/endpoints/8000`)).json.endpoint;
  let inner;
  for (let i = 0; i < 300; i++) {
    inner = await fetch(`http://${ep8000}/hello?x=1`);
    if (inner.status === 200) break;
    await inner.text();
    await sleep(100);
  }
  assert.equal(inner.status, 200);
  assert.equal(await inner.text(), 'inner GET /hello?x=1');
  ok('proxy: port 8000 reaches a server inside the sandbox through execd /proxy/8000');

  // --- a 1 GiB upload through the proxy into the sandbox, with the gateway's memory flat
  const big = path.join(TMP, 'big.bin');
  fs.closeSync(fs.openSync(big, 'w'));
  fs.truncateSync(big, 1024 * 1024 * 1024);
  const hwm = () => parseInt(/VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1], 10);
  const hwm0 = hwm();
  const up = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-F',
    'metadata={"path":"/workspace/big.bin"};filename=metadata;type=application/json',
    '-F', `file=@${big};type=application/octet-stream`, `http://${ep}/files/upload`],
  { encoding: 'utf8', timeout: 300000 });
  assert.equal(up.stdout, '200', `upload: ${up.stdout} ${up.stderr}`);
  const grownMiB = (hwm() - hwm0) / 1024;
  assert.ok(grownMiB < 128, `gateway peak RSS grew ${grownMiB} MiB during a 1 GiB upload`);
  fs.rmSync(big);
  const sz = await sseCommand(ep, 'stat -c %s /workspace/big.bin; rm /workspace/big.bin');
  assert.ok(sz.some((e) => e.type === 'stdout' && e.text === '1073741824'), JSON.stringify(sz));
  ok(`1 GiB multipart upload through the proxy (gateway peak RSS +${grownMiB.toFixed(1)} MiB)`);

  // --- pause / resume
  r = await call('POST', `/v1/sandboxes/${a.id}/pause`);
  assert.equal(r.status, 202);
  assert.equal(r.headers.get('content-length'), '0');
  assert.equal((await call('GET', `/v1/sandboxes/${a.id}`)).json.status.state, 'Paused');
  r = await call('POST', `/v1/sandboxes/${a.id}/pause`);
  assert.equal(r.status, 409);
  assert.equal(r.json.code, 'SANDBOX::SANDBOX_NOT_RUNNING');
  r = await call('GET', `/sandboxes/${a.id}/proxy/44772/ping`);
  assert.equal(r.status, 502);
  r = await call('POST', `/v1/sandboxes/${a.id}/resume`);
  assert.equal(r.status, 202);
  assert.equal(r.headers.get('content-length'), '0');
  assert.equal((await call('GET', `/v1/sandboxes/${a.id}`)).json.status.state, 'Running');
  // What the provider enforced for resourceLimits {cpu:1, memory:2Gi} is in the status.
  assert.match((await call('GET', `/v1/sandboxes/${a.id}`)).json.status.message,
    /^Sandbox is running\. Enforced: .*cpu=[a-z0-9-]+\(?.*memory=/);
  r = await call('POST', `/v1/sandboxes/${a.id}/resume`);
  assert.equal(r.status, 409);
  assert.equal(r.json.code, 'SANDBOX::SANDBOX_NOT_PAUSED');
  r = await fetch(`http://${ep}/ping`);
  assert.equal(r.status, 200);
  ok('pause/resume: 202 with Content-Length 0, 409 codes, proxy 502 while paused');

  // --- renew
  const later = new Date(Date.now() + 3600 * 1000).toISOString();
  r = await call('POST', `/v1/sandboxes/${a.id}/renew-expiration`, { expiresAt: later });
  assert.equal(r.status, 200, r.text);
  assert.equal(Date.parse(r.json.expiresAt), Date.parse(later));
  assert.equal((await call('GET', `/v1/sandboxes/${a.id}`)).json.expiresAt, r.json.expiresAt);
  r = await call('POST', `/v1/sandboxes/${a.id}/renew-expiration`, { expiresAt: '2000-01-01T00:00:00Z' });
  assert.equal(r.status, 400);
  assert.equal(r.json.code, 'SANDBOX::INVALID_EXPIRATION');
  r = await call('POST', `/v1/sandboxes/${b.id}/renew-expiration`, { expiresAt: later });
  assert.equal(r.status, 409);
  r = await call('POST', `/v1/sandboxes/${a.id}/renew-expiration`, { expiresAt: 'tomorrow' });
  assert.equal(r.status, 422);
  ok('renew-expiration: moves expiresAt; past 400, no expiry 409, bad date 422');

  // --- delete
  r = await call('DELETE', `/v1/sandboxes/${b.id}`);
  assert.equal(r.status, 204);
  r = await call('GET', `/v1/sandboxes/${b.id}`);
  assert.equal(r.status, 404);
  assert.equal(r.json.code, 'SANDBOX::SANDBOX_NOT_FOUND');
  r = await call('DELETE', `/v1/sandboxes/${b.id}`);
  assert.equal(r.status, 404);
  r = await call('GET', `/sandboxes/${b.id}/proxy/44772/ping`);
  assert.equal(r.status, 502);
  assert.equal(typeof r.json.message, 'string');
  await waitGone(path.join(DATA, 'sandboxes', b.id), 'deleted sandbox');
  ok('delete: 204, then 404 and proxy 502; its directory is gone');

  // --- expiry: renew to the near future, then it is deleted by the server
  r = await call('POST', `/v1/sandboxes/${a.id}/renew-expiration`, { expiresAt: new Date(Date.now() + 1000).toISOString() });
  assert.equal(r.status, 200);
  await waitFor(a.id, (s) => s === null, 'a expired');
  await waitGone(path.join(DATA, 'sandboxes', a.id), 'expired sandbox');
  ok('expiry: the sandbox is deleted at expiresAt');

  // --- health: a running sandbox whose processes die becomes Failed
  const d = await create({ timeout: null });
  await waitFor(d.id, (s) => s && s.status.state === 'Running', 'd Running');
  const st = JSON.parse(fs.readFileSync(path.join(DATA, 'sandboxes', d.id, 'state.json'), 'utf8'));
  process.kill(st.init_pid, 'SIGKILL');
  const df = await waitFor(d.id, (s) => s && s.status.state === 'Failed', 'd Failed');
  assert.equal(df.status.reason, 'SANDBOX_EXITED');
  await waitGone(path.join(DATA, 'sandboxes', d.id), 'dead sandbox');
  ok('health check: a sandbox whose processes died is Failed (SANDBOX_EXITED) and cleaned up');

  // --- the execd that never answered
  const bf = await waitFor(bad.id, (s) => s && s.status.state === 'Failed', 'bad Failed', 900);
  assert.equal(bf.status.reason, 'READY_TIMEOUT');
  assert.ok(bf.status.message.length > 0);
  await waitGone(path.join(DATA, 'sandboxes', bad.id), 'never-ready sandbox');
  let procs = '';
  try { procs = execFileSync('pgrep', ['-f', bad.id], { encoding: 'utf8' }); } catch (_) { /* none */ }
  assert.equal(procs.trim(), '', 'processes of the failed sandbox remain');
  r = await call('DELETE', `/v1/sandboxes/${bad.id}`);
  assert.equal(r.status, 204);
  ok('execd never answers: Failed (READY_TIMEOUT), nothing left behind; the record deletes');

  r = await call('DELETE', `/v1/sandboxes/${d.id}`);
  assert.equal(r.status, 204);
  assert.deepEqual((await call('GET', '/v1/sandboxes')).json.items, []);

  child.kill('SIGTERM');
  const ex = await exited;
  assert.equal(ex.code, 0, `exit ${ex.code} ${ex.sig}\n${log}`);
  assert.ok(!/handles open/.test(log), log);
  ok('clean exit on SIGTERM');

  // --- a second gateway with a short --failed-ttl: Failed records are reaped
  const port2 = await freePort();
  BASE = `http://127.0.0.1:${port2}`;
  log = '';
  child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port2}`, '--data', DATA, '--provider', 'local',
    '--image', 'ubuntu:22.04=host', '--ready-timeout', '1s', '--failed-ttl', '1s'],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.on('data', (d) => { log += d; });
  const exited2 = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(BASE + '/health')).status === 200) break; } catch (_) { /* not yet */ }
    await sleep(50);
  }
  const bad2 = await create({ env: { EXECD_LOG_LEVEL: 'nope' }, timeout: null });
  await waitFor(bad2.id, (s) => s && s.status.state === 'Failed', 'bad2 Failed');
  await waitFor(bad2.id, (s) => s === null, 'bad2 reaped');
  await waitGone(path.join(DATA, 'sandboxes', bad2.id), 'reaped sandbox');
  child.kill('SIGTERM');
  assert.equal((await exited2).code, 0, log);
  ok('--failed-ttl: a Failed record is removed after the TTL');
  cleanup();
})().catch((e) => {
  console.error('FAIL -', e && e.stack ? e.stack : e);
  console.error(log.split('\n').slice(-40).join('\n'));
  cleanup();
  process.exit(1);
});
