// bench_lifecycle.js: `sandgate-bench lifecycle` and `exec` against a mock OpenSandbox
// lifecycle server (node, this file) whose sandboxes all point at one real sandgate-execd.
// The mock answers create (202 + id), endpoints ({"endpoint":"127.0.0.1:<execd port>"} with a
// header the bench must echo), delete (204); the first /ping of each sandbox is refused with
// 503 through a tiny proxy so the bench's readiness polling is exercised. Asserts the JSON
// document's counts against what the mock and execd saw. No timing assertions.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const BIN_DIR = process.env.SG_BIN_DIR || 'build';
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-bench-lc-'));
const ENV = { ...process.env, ASAN_OPTIONS: 'detect_leaks=1' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];

async function startExecd() {
  const portFile = path.join(TMP, 'execd.port');
  fs.mkdirSync(path.join(TMP, 'logs'));
  const child = spawn(path.join(BIN_DIR, 'sandgate-execd'), ['--listen', '127.0.0.1:0', '--port-file', portFile,
    '--log-dir', path.join(TMP, 'logs'), '--log-level', 'warn'], { env: ENV, stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(child);
  for (let i = 0; i < 400 && !(fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim()); i++) await sleep(25);
  assert.ok(fs.existsSync(portFile), 'execd did not start');
  return parseInt(fs.readFileSync(portFile, 'utf8'), 10);
}

function runBench(args) {
  return new Promise((resolve) => {
    const child = spawn(path.join(BIN_DIR, 'sandgate-bench'), args, { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const t = setTimeout(() => child.kill('SIGKILL'), 120000);
    child.on('exit', (code) => { clearTimeout(t); resolve({ code, out, err }); });
  });
}

async function main() {
  const execdPort = await startExecd();
  const state = { created: 0, deleted: 0, endpoints: 0, live: new Set(), pings: new Map(), badHeader: 0, keyMissing: 0 };
  // A proxy in front of execd per sandbox path prefix: /sb/<id>/... -> execd /...
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (req.url.startsWith('/v1/') && req.headers['open-sandbox-api-key'] !== 'k123') state.keyMissing++;
    let m;
    if (req.method === 'POST' && u.pathname === '/v1/sandboxes') {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        const j = JSON.parse(body);
        assert.equal(j.image.uri, 'bench:latest');
        const id = `sb${++state.created}`;
        state.live.add(id);
        res.writeHead(202, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id, status: { state: 'Pending' } }));
      });
      return;
    }
    if (req.method === 'GET' && (m = u.pathname.match(/^\/v1\/sandboxes\/([^/]+)\/endpoints\/44772$/))) {
      state.endpoints++;
      assert.equal(u.searchParams.get('use_server_proxy'), 'true');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ endpoint: `127.0.0.1:${server.address().port}/sb/${m[1]}`, headers: { 'X-Bench-Route': m[1] } }));
      return;
    }
    if (req.method === 'DELETE' && (m = u.pathname.match(/^\/v1\/sandboxes\/([^/]+)$/))) {
      if (!state.live.delete(m[1])) { res.writeHead(404); res.end('{"code":"NOT_FOUND","message":"no"}'); return; }
      state.deleted++;
      res.writeHead(204, { 'content-length': '0' });
      res.end();
      return;
    }
    if ((m = u.pathname.match(/^\/sb\/([^/]+)(\/.*)$/))) {
      if (req.headers['x-bench-route'] !== m[1]) state.badHeader++;
      if (m[2] === '/ping') {
        const n = (state.pings.get(m[1]) || 0) + 1;
        state.pings.set(m[1], n);
        if (n === 1) { res.writeHead(503, { 'content-length': '0' }); res.end(); return; } // not ready yet
      }
      const up = http.request({ host: '127.0.0.1', port: execdPort, method: req.method, path: m[2] + u.search,
        headers: { ...req.headers, host: `127.0.0.1:${execdPort}` } }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => { res.writeHead(502); res.end(); });
      req.pipe(up);
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;

  // lifecycle: 12 sandboxes, 4 at a time
  const lc = await runBench(['lifecycle', '--url', base, '--api-key', 'k123', '--sandboxes', '12', '--concurrency', '4',
    '--image', 'bench:latest', '--poll-interval', '20ms', '--quiet']);
  assert.equal(lc.code, 0, `lifecycle exit ${lc.code}: ${lc.err}`);
  const d = JSON.parse(lc.out);
  assert.equal(d.scenario, 'lifecycle');
  assert.equal(d.ok, true);
  assert.deepEqual(d.counts, { sandboxes: 12, completed: 12, deleted: 12, not_deleted: 0, ping_attempts: 24 });
  assert.equal(d.errors.total, 0);
  for (const k of ['create', 'endpoint', 'ready', 'exec', 'delete', 'create_to_ready', 'total']) {
    assert.equal(d.latency_ms[k].count, 12, k);
    for (const f of ['min', 'mean', 'p50', 'p90', 'p99', 'p99_9', 'max']) assert.equal(typeof d.latency_ms[k][f], 'number', `${k}.${f}`);
    assert.ok(d.latency_ms[k].p50 <= d.latency_ms[k].p99 && d.latency_ms[k].p99 <= d.latency_ms[k].max, k);
  }
  assert.equal(typeof d.cpu.bench.total_s, 'number');
  assert.equal(state.created, 12);
  assert.equal(state.deleted, 12);
  assert.equal(state.live.size, 0);
  assert.equal(state.badHeader, 0, 'endpoint headers must be sent to the endpoint');
  assert.equal(state.keyMissing, 0, 'API key must be sent on every lifecycle call');
  for (const [, n] of state.pings) assert.equal(n, 2);

  // A failing exec still deletes the sandbox, and the document says not ok.
  const bad = await runBench(['lifecycle', '--url', base, '--api-key', 'k123', '--sandboxes', '2', '--concurrency', '2',
    '--image', 'bench:latest', '--poll-interval', '20ms', '--exec-command', 'exit 7', '--quiet']);
  // exit 7 is a completed command (an error event with evalue 7): the cycle itself succeeds.
  assert.equal(bad.code, 0, bad.err);
  assert.equal(state.live.size, 0);

  // exec straight against execd: exit codes are tallied from the final events.
  const ex = await runBench(['exec', '--url', `http://127.0.0.1:${execdPort}`, '--requests', '30', '--concurrency', '5',
    '--command', 'echo out; echo err >&2; exit 3', '--quiet']);
  assert.equal(ex.code, 0, ex.err);
  const e = JSON.parse(ex.out);
  assert.equal(e.scenario, 'exec');
  assert.deepEqual(e.exit_codes, { 3: 30 });
  assert.equal(e.counts.requests, 30);
  assert.equal(e.counts.completed, 30);
  assert.equal(e.counts.nonzero_exit, 30);
  assert.equal(e.counts.stdout_lines, 30);
  assert.equal(e.counts.stderr_lines, 30);
  assert.equal(e.latency_ms.completion.count, 30);
  assert.equal(e.latency_ms.first_byte.count, 30);

  // relay: 2 streams of 5000 lines each, every line counted.
  const rl = await runBench(['relay', '--url', `http://127.0.0.1:${execdPort}`, '--streams', '2',
    '--command', 'seq 1 5000', '--quiet']);
  assert.equal(rl.code, 0, rl.err);
  const rj = JSON.parse(rl.out);
  assert.equal(rj.counts.stdout_lines, 10000);
  assert.equal(rj.counts.completed, 2);
  assert.ok(rj.throughput.lines_per_s > 0);

  // A dead URL: errors counted, exit 1, document still complete.
  const dead = await runBench(['exec', '--url', 'http://127.0.0.1:1', '--requests', '3', '--concurrency', '2', '--quiet']);
  assert.equal(dead.code, 1);
  const dj = JSON.parse(dead.out);
  assert.equal(dj.ok, false);
  assert.equal(dj.errors.total, 3);
  assert.equal(dj.errors.connect, 3);

  server.close();
  console.log('ok - bench lifecycle/exec/relay');
}

main().then(() => {
  for (const c of children) c.kill('SIGTERM');
  fs.rmSync(TMP, { recursive: true, force: true });
}, (e) => {
  console.error(e);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
