// The OpenSandbox JS SDK (@alibaba-group/opensandbox 0.1.11, pinned in test/sdk) against
// `sandgate serve --provider local`: Sandbox.create (lifecycle + both endpoint lookups +
// /ping through the gateway's proxy + metrics events), getInfo, commands.run streamed through
// the proxy, pause/resume through the SDK, SandboxManager-style list, renew, kill -> 404.
// A missing SDK is a failure, not a skip (scripts/setup.sh installs it).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

let sdk;
try {
  const base = process.env.SG_OPENSANDBOX_SDK ||
    path.join(process.env.SG_SOURCE_DIR || path.join(__dirname, '..', '..'), 'test', 'sdk');
  sdk = require(require.resolve('@alibaba-group/opensandbox', { paths: [base] }));
} catch (e) {
  console.error('FAIL - @alibaba-group/opensandbox not installed: run scripts/setup.sh (' + e.message + ')');
  process.exit(1);
}
const { ConnectionConfig, Sandbox } = sdk;

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-api-sdk-'));
const DATA = path.join(TMP, 'data');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ok = (m) => console.log('ok - ' + m);
let child;
let log = '';

function cleanup() {
  try { if (child && child.exitCode === null) child.kill('SIGKILL'); } catch (_) { /* gone */ }
  try {
    for (const id of fs.readdirSync(path.join(DATA, 'sandboxes'))) {
      try {
        const st = JSON.parse(fs.readFileSync(path.join(DATA, 'sandboxes', id, 'state.json'), 'utf8'));
        // Kill the sandbox's init and its bwrap so nothing outlives a failed run.
        for (const pid of [st.init_pid, st.bwrap_pid]) {
          try { if (pid > 0) process.kill(pid, 'SIGKILL'); } catch (_) { /* gone */ }
        }
      } catch (_) { /* no state */ }
    }
  } catch (_) { /* no dir */ }
  try { fs.rmSync(TMP, { recursive: true, force: true }); } catch (_) { /* busy */ }
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}

(async () => {
  const net = require('node:net');
  const port = await new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
  const BASE = `http://127.0.0.1:${port}`;
  child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data', DATA, '--api-key', 'k1',
    '--image', 'ubuntu:22.04=host'], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(BASE + '/health')).status === 200) break; } catch (_) { /* not yet */ }
    await sleep(50);
  }

  const connectionConfig = new ConnectionConfig({ domain: `127.0.0.1:${port}`, protocol: 'http', apiKey: 'k1' });
  const sbx = await withTimeout(Sandbox.create({
    connectionConfig, image: 'ubuntu:22.04', timeoutSeconds: 600, metadata: { suite: 'sdk' },
    env: { SDK_ENV: 'from-create' },
  }), 60000, 'Sandbox.create');
  assert.match(sbx.id, /^[0-9a-f-]{36}$/);
  // The SDK's own /ping went through the proxy: a 2xx from execd made the sandbox Running
  // before the SDK heard it, so the state agrees with what the SDK just saw.
  const info = await sbx.getInfo();
  assert.equal(info.status.state, 'Running');
  assert.deepEqual(info.metadata, { suite: 'sdk' });
  ok('Sandbox.create: lifecycle, endpoints 44772 + 18080, /ping through the proxy');

  const seen = [];
  const ex = await sbx.commands.run('echo hi; echo "$SDK_ENV"; echo err >&2; exit 3', { workingDirectory: '/tmp' }, {
    onStdout: (m) => seen.push(['stdout', m.text]), onStderr: (m) => seen.push(['stderr', m.text]),
  });
  assert.equal(ex.exitCode, 3);
  assert.deepEqual(ex.logs.stdout.map((l) => l.text), ['hi', 'from-create']);
  assert.deepEqual(ex.logs.stderr.map((l) => l.text), ['err']);
  assert.deepEqual(seen[0], ['stdout', 'hi']);
  const ok0 = await sbx.commands.run('true');
  assert.equal(ok0.exitCode, 0);
  ok('commands.run streamed through /sandboxes/{id}/proxy/44772 (exit code, stdout, stderr, env)');

  await sbx.pause();
  assert.equal((await sbx.getInfo()).status.state, 'Paused');
  const resumed = await withTimeout(sbx.resume(), 60000, 'resume');
  assert.equal((await resumed.getInfo()).status.state, 'Running');
  const ex2 = await resumed.commands.run('echo back');
  assert.deepEqual(ex2.logs.stdout.map((l) => l.text), ['back']);
  ok('pause / resume through the SDK');

  const renewed = await resumed.renew(1200);
  assert.ok(renewed === undefined || typeof renewed === 'object');
  const exp = Date.parse((await resumed.getInfo()).expiresAt);
  assert.ok(exp > Date.now() + 1100 * 1000, 'renew moved expiresAt');
  ok('renew');

  await resumed.kill();
  const r = await fetch(`${BASE}/v1/sandboxes/${sbx.id}`, { headers: { 'OPEN-SANDBOX-API-KEY': 'k1' } });
  assert.equal(r.status, 404);
  await resumed.close();
  await sbx.close();
  ok('kill -> 404');

  child.kill('SIGTERM');
  const e = await exited;
  assert.equal(e.code, 0, `exit ${e.code} ${e.sig}\n${log}`);
  assert.ok(/path=\/v1\/metrics\/events status=204/.test(log), 'the SDK posted metrics events');
  assert.ok(!/handles open/.test(log), log);
  ok('clean exit; metrics events answered 204');
  cleanup();
})().catch((e) => {
  console.error('FAIL -', e && e.stack ? e.stack : e);
  console.error(log.split('\n').slice(-30).join('\n'));
  cleanup();
  process.exit(1);
});
