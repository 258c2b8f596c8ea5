// The OpenSandbox JS SDK (@alibaba-group/opensandbox 0.1.11) against the real sandgate-execd:
// a small mock lifecycle server answers the endpoint lookups (reference 3.2) and points the
// SDK at execd, which then runs commands, background commands + logs + status, interrupt,
// sessions and metrics through the SDK's own code paths. Also checks that a stream with the
// sandgate.raw extension leaves the SDK's results unchanged.
//
// Needs the SDK: `npm i @alibaba-group/opensandbox@0.1.11` somewhere node can resolve it, or
// SG_OPENSANDBOX_SDK=<dir containing node_modules>. Without it the test prints SKIP and passes
// (ctest has no network to install it). Run by ctest with SG_BIN_DIR set.
'use strict';
const { spawn } = require('node:child_process');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

let sdk;
try {
  const base = process.env.SG_OPENSANDBOX_SDK;
  sdk = require(base ? require.resolve('@alibaba-group/opensandbox', { paths: [base] }) : '@alibaba-group/opensandbox');
} catch (e) {
  console.log('SKIP - @alibaba-group/opensandbox not installed (set SG_OPENSANDBOX_SDK)');
  process.exit(0);
}
const { ConnectionConfig, Sandbox } = sdk;

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-sdk-'));
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1' };
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}

(async () => {
  const portFile = path.join(TMP, 'port');
  const child = spawn(BIN, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--log-dir', TMP, '--log-level', 'warn'],
    { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  for (let i = 0; i < 400 && !(fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim()); i++) await sleep(25);
  const execdPort = parseInt(fs.readFileSync(portFile, 'utf8'), 10);

  // Mock lifecycle: only what Sandbox.connect needs.
  const lifecycle = http.createServer((req, res) => {
    const m = /^\/v1\/sandboxes\/([^/]+)\/endpoints\/(\d+)/.exec(req.url);
    if (req.method === 'GET' && m) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ endpoint: m[2] === '44772' ? `127.0.0.1:${execdPort}` : '127.0.0.1:9' }));
      return;
    }
    res.statusCode = 404;
    res.end('{"code":"NOT_FOUND","message":"mock"}');
  });
  await new Promise((r) => lifecycle.listen(0, '127.0.0.1', r));
  const connectionConfig = new ConnectionConfig({ domain: `127.0.0.1:${lifecycle.address().port}`, protocol: 'http', disableMetrics: true });

  let failed = 0;
  const sbx = await withTimeout(Sandbox.connect({ sandboxId: 'sbx-test', connectionConfig }), 30000, 'connect');
  const steps = [
    ['run: failure exit 3 through the SDK', async () => {
      const seen = [];
      const ex = await sbx.commands.run('echo hi; echo err >&2; exit 3', { workingDirectory: '/tmp', timeoutSeconds: 30, envs: { FOO: 'bar' } }, {
        onInit: (i) => seen.push(['init', i.id]), onStdout: (m) => seen.push(['stdout', m.text]),
        onStderr: (m) => seen.push(['stderr', m.text]), onError: (e) => seen.push(['error', e.name, e.value]),
      });
      assert.equal(ex.exitCode, 3);
      assert.match(ex.id, /^[0-9a-f]{32}$/);
      assert.deepEqual(ex.logs.stdout.map((l) => l.text), ['hi']);
      assert.deepEqual(ex.logs.stderr.map((l) => l.text), ['err']);
      assert.deepEqual(ex.error.traceback, ['exit status 3']);
      assert.deepEqual(seen.filter((s) => s[0] === 'error'), [['error', 'CommandExecError', '3']]);
    }],
    ['run: success, env, cwd', async () => {
      const ex = await sbx.commands.run('echo $FOO; pwd', { workingDirectory: '/tmp', envs: { FOO: 'bar' } });
      assert.equal(ex.exitCode, 0);
      assert.deepEqual(ex.logs.stdout.map((l) => l.text), ['bar', '/tmp']);
      assert.ok(ex.complete);
    }],
    ['run: start failure gives exitCode null', async () => {
      const ex = await sbx.commands.run('true', { uid: 3999999999 });
      assert.equal(ex.exitCode, null);
      assert.equal(ex.error.name, 'CommandExecError');
    }],
    ['background: status and logs', async () => {
      const ex = await sbx.commands.run('echo one; sleep 0.3; echo two', { background: true });
      let cursor; let content = '';
      for (let i = 0; i < 200; i++) {
        const st = await sbx.commands.getCommandStatus(ex.id);
        const l = await sbx.commands.getBackgroundCommandLogs(ex.id, cursor);
        content += l.content; cursor = l.cursor;
        if (!st.running) break;
        await sleep(50);
      }
      const l = await sbx.commands.getBackgroundCommandLogs(ex.id, cursor);
      content += l.content;
      assert.equal(content, 'one\ntwo\n');
      const st = await sbx.commands.getCommandStatus(ex.id);
      assert.equal(st.running, false);
      assert.equal(st.exitCode, 0);
      assert.ok(st.startedAt instanceof Date && !isNaN(st.startedAt));
      assert.ok(st.finishedAt instanceof Date && !isNaN(st.finishedAt));
    }],
    ['interrupt', async () => {
      const ex = await sbx.commands.run('sleep 30', { background: true });
      await sbx.commands.interrupt(ex.id);
      const st = await sbx.commands.getCommandStatus(ex.id);
      assert.equal(st.running, false);
      assert.equal(st.exitCode, -1);
    }],
    ['sessions', async () => {
      const sid = await sbx.commands.createSession({ workingDirectory: '/tmp' });
      const a = await sbx.commands.runInSession(sid, 'export X=42; cd /');
      assert.equal(a.exitCode, 0);
      const b = await sbx.commands.runInSession(sid, 'echo $X; pwd; exit 2');
      assert.deepEqual(b.logs.stdout.map((l) => l.text), ['42', '/']);
      assert.equal(b.exitCode, 2);
      await sbx.commands.deleteSession(sid);
    }],
    ['sandgate.raw events do not change SDK results', async () => {
      const cc = new ConnectionConfig({ domain: `127.0.0.1:${lifecycle.address().port}`, protocol: 'http', disableMetrics: true,
        headers: { 'X-Sandgate-Raw': '1' } });
      const s2 = await Sandbox.connect({ sandboxId: 'sbx-raw', connectionConfig: cc });
      const types = [];
      const ex = await s2.commands.run("printf 'a\\nb'; echo e >&2; exit 5", {}, { onEvent: (e) => types.push(e.type) });
      assert.ok(types.includes('sandgate.raw'), types.join(','));
      assert.deepEqual(ex.logs.stdout.map((l) => l.text), ['a', 'b']);
      assert.deepEqual(ex.logs.stderr.map((l) => l.text), ['e']);
      assert.equal(ex.exitCode, 5);
      await s2.close();
    }],
    ['metrics', async () => {
      const m = await sbx.getMetrics();
      assert.ok(m.cpuCount >= 1 && m.memoryTotalMiB > 0, JSON.stringify(m));
    }],
  ];
  for (const [name, fn] of steps) {
    try { await withTimeout(fn(), 60000, name); console.log(`ok - ${name}`); } catch (e) { failed++; console.log(`FAIL - ${name}\n${e.stack}`); }
  }
  await sbx.close();
  lifecycle.close();
  child.kill('SIGTERM');
  const r = await withTimeout(exited, 30000, 'execd exit');
  if (r.code !== 0 || /AddressSanitizer|LeakSanitizer|runtime error/.test(log)) { failed++; console.log(`FAIL - execd exit ${JSON.stringify(r)}\n${log}`); }
  fs.rmSync(TMP, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.log(`FAIL - ${e.stack}`); process.exit(1); });
