// The OpenSandbox JS SDK (@alibaba-group/opensandbox 0.1.11, pinned in test/sdk) against a real
// `sandgate serve --provider local --image ubuntu:22.04=host`, everything going through the
// gateway (lifecycle API + /sandboxes/{id}/proxy/44772 to the sandbox's sandgate-execd):
//   - SandboxManager.listSandboxInfos with state and metadata filters; patchMetadata;
//   - commands.run streamed: exit 0 / non-zero / timeout / interrupt, envs + workingDirectory,
//     a background command with getCommandStatus and the getBackgroundCommandLogs cursor;
//   - bash sessions (env and cwd persist between runs);
//   - every sandbox.files call: writeFiles, readFile / readBytes / readBytesStream (range and
//     offset/limit), getFileInfo, search, replaceContents(Detailed), moveFiles, setPermissions,
//     deleteFiles, createDirectories / listDirectory / deleteDirectories;
//   - kill, then GET /v1/sandboxes/{id} is 404 and the manager no longer lists it.
// gateway_api_sdk.js covers create/pause/resume/renew. A missing SDK is a failure, not a skip.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
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
const { ConnectionConfig, Sandbox, SandboxManager, SandboxApiException } = sdk;

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-sdk-full-'));
const DATA = path.join(TMP, 'data');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let child;
let log = '';

function cleanup() {
  try { if (child && child.exitCode === null) child.kill('SIGKILL'); } catch (_) { /* gone */ }
  try {
    for (const id of fs.readdirSync(path.join(DATA, 'sandboxes'))) {
      try {
        const st = JSON.parse(fs.readFileSync(path.join(DATA, 'sandboxes', id, 'state.json'), 'utf8'));
        // After a failure sandboxes may be left (serve keeps them across restarts): kill
        // the sandbox's init and its bwrap so nothing outlives the test.
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

async function rejectsWith(p, code, what) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof SandboxApiException || e?.constructor?.name === 'SandboxApiException', `${what}: ${e}`);
    assert.equal(e.error?.code, code, `${what}: ${JSON.stringify(e.error)}`);
    return e;
  }
  assert.fail(`${what}: did not reject`);
}

// readFile / readBytes map any non-2xx download to UNEXPECTED_RESPONSE "Download failed" (SDK
// 0.1.11, FilesystemAdapter.readBytes): execd's own answer is in statusCode and rawBody.
async function downloadFails(p, status, code, what) {
  const e = await rejectsWith(p, 'UNEXPECTED_RESPONSE', what);
  assert.equal(e.statusCode, status, what);
  assert.equal(JSON.parse(e.rawBody).code, code, `${what}: ${e.rawBody}`);
}

const texts = (ls) => ls.map((l) => l.text);
const ids = (r) => r.items.map((i) => i.id).sort();

(async () => {
  const net = require('node:net');
  const port = await new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
  const BASE = `http://127.0.0.1:${port}`;
  child = spawn(BIN, ['serve', '--provider', 'local', '--listen', `127.0.0.1:${port}`, '--data', DATA, '--api-key', 'k1',
    '--image', 'ubuntu:22.04=host'], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  let up = false;
  for (let i = 0; i < 200 && !up; i++) {
    try { up = (await fetch(BASE + '/health')).status === 200; } catch (_) { await sleep(50); }
  }
  assert.ok(up, 'sandgate serve did not start');

  const connectionConfig = new ConnectionConfig({ domain: `127.0.0.1:${port}`, protocol: 'http', apiKey: 'k1' });
  const manager = SandboxManager.create({ connectionConfig });
  const create = (metadata) => withTimeout(Sandbox.create({
    connectionConfig, image: 'ubuntu:22.04', timeoutSeconds: 600, metadata, env: { SDK_ENV: 'from-create' },
  }), 60000, 'Sandbox.create');
  const sbx = await create({ suite: 'full', role: 'main' });
  const other = await create({ suite: 'full', role: 'other' });

  let failed = 0;
  const steps = [
    ['list: state and metadata filters (SandboxManager.listSandboxInfos)', async () => {
      assert.deepEqual(ids(await manager.listSandboxInfos({ metadata: { suite: 'full' } })), [sbx.id, other.id].sort());
      assert.deepEqual(ids(await manager.listSandboxInfos({ metadata: { suite: 'full', role: 'main' } })), [sbx.id]);
      assert.deepEqual(ids(await manager.listSandboxInfos({ metadata: { suite: 'nope' } })), []);
      assert.deepEqual(ids(await manager.listSandboxInfos({ states: ['Running'] })), [sbx.id, other.id].sort());
      assert.deepEqual(ids(await manager.listSandboxInfos({ states: ['Paused'] })), []);
      await other.pause();
      assert.deepEqual(ids(await manager.listSandboxInfos({ states: ['Paused'] })), [other.id]);
      assert.deepEqual(ids(await manager.listSandboxInfos({ states: ['Running'], metadata: { suite: 'full' } })), [sbx.id]);
      assert.deepEqual(ids(await manager.listSandboxInfos({ states: ['Running', 'Paused'] })), [sbx.id, other.id].sort());
      const page = await manager.listSandboxInfos({ metadata: { suite: 'full' }, page: 1, pageSize: 1 });
      assert.equal(page.items.length, 1);
      assert.equal(page.pagination.totalItems, 2);
      const info = (await manager.listSandboxInfos({ metadata: { role: 'main' } })).items[0];
      assert.equal(info.status.state, 'Running');
      assert.deepEqual(info.metadata, { suite: 'full', role: 'main' });
    }],
    ['patchMetadata: set, change, delete with null', async () => {
      const r = await sbx.patchMetadata({ role: 'primary', extra: 'x' });
      assert.deepEqual(r.metadata, { suite: 'full', role: 'primary', extra: 'x' });
      const r2 = await manager.patchSandboxMetadata(sbx.id, { extra: null });
      assert.deepEqual(r2.metadata, { suite: 'full', role: 'primary' });
      assert.deepEqual((await sbx.getInfo()).metadata, { suite: 'full', role: 'primary' });
      assert.deepEqual(ids(await manager.listSandboxInfos({ metadata: { role: 'primary' } })), [sbx.id]);
      assert.deepEqual(ids(await manager.listSandboxInfos({ metadata: { role: 'main' } })), []);
    }],
    ['commands.run streamed: exit 0 and non-zero, stdout/stderr handlers in order', async () => {
      const seen = [];
      const h = {
        onInit: (i) => seen.push(['init', i.id]), onStdout: (m) => seen.push(['stdout', m.text]),
        onStderr: (m) => seen.push(['stderr', m.text]), onError: (e) => seen.push(['error', e.name, e.value]),
        onExecutionComplete: () => seen.push(['complete']),
      };
      const ok0 = await sbx.commands.run('echo a; echo b', {}, h);
      assert.equal(ok0.exitCode, 0);
      assert.equal(ok0.error, undefined);
      assert.deepEqual(texts(ok0.logs.stdout), ['a', 'b']);
      assert.deepEqual(seen, [['init', ok0.id], ['stdout', 'a'], ['stdout', 'b'], ['complete']]);
      seen.length = 0;
      const bad = await sbx.commands.run('echo out; echo err >&2; exit 7', {}, h);
      assert.equal(bad.exitCode, 7);
      assert.deepEqual(texts(bad.logs.stdout), ['out']);
      assert.deepEqual(texts(bad.logs.stderr), ['err']);
      assert.deepEqual(bad.error.traceback, ['exit status 7']);
      assert.deepEqual(seen.filter((s) => s[0] === 'error'), [['error', 'CommandExecError', '7']]);
      assert.deepEqual(seen.filter((s) => s[0] === 'stdout' || s[0] === 'stderr').sort(), [['stderr', 'err'], ['stdout', 'out']]);
    }],
    ['commands.run: envs and workingDirectory (plus the create-time env)', async () => {
      const ex = await sbx.commands.run('echo "$FOO"; echo "$SDK_ENV"; pwd', { workingDirectory: '/usr/bin', envs: { FOO: 'bar baz' } });
      assert.equal(ex.exitCode, 0);
      assert.deepEqual(texts(ex.logs.stdout), ['bar baz', 'from-create', '/usr/bin']);
    }],
    ['commands.run: timeoutSeconds kills the command', async () => {
      const ex = await withTimeout(sbx.commands.run('echo started; sleep 30; echo never', { timeoutSeconds: 1 }), 20000, 'timeout run');
      assert.deepEqual(texts(ex.logs.stdout), ['started']);
      // execd kills the process group with SIGKILL: the SDK's exit code is -1 (docs/execd.md).
      assert.equal(ex.exitCode, -1);
      assert.equal(ex.error.name, 'CommandExecError');
      assert.deepEqual(ex.error.traceback, ['signal: killed']);
      assert.equal(ex.complete, undefined);
    }],
    ['commands.interrupt: a streamed foreground command', async () => {
      let id;
      const got = new Promise((res) => { id = res; });
      const run = sbx.commands.run('echo up; sleep 30; echo never', {}, { onStdout: () => {}, onInit: (i) => id(i.id) });
      const cid = await withTimeout(got, 10000, 'init');
      await sbx.commands.interrupt(cid);
      const ex = await withTimeout(run, 20000, 'interrupted run');
      assert.deepEqual(texts(ex.logs.stdout), ['up']);
      assert.equal(ex.exitCode, -1);
      assert.deepEqual(ex.error.traceback, ['signal: terminated']);
      const st = await sbx.commands.getCommandStatus(cid);
      assert.equal(st.running, false);
      assert.equal(st.exitCode, -1);
      assert.equal(st.error, 'signal: terminated');
      assert.equal(st.content, 'echo up; sleep 30; echo never');
    }],
    ['background command: getCommandStatus + getBackgroundCommandLogs cursor', async () => {
      const ex = await sbx.commands.run('echo one; sleep 0.5; echo two; exit 4', { background: true });
      assert.match(ex.id, /^[0-9a-f]{32}$/);
      let cursor; let content = ''; let st;
      for (let i = 0; i < 200; i++) {
        st = await sbx.commands.getCommandStatus(ex.id);
        const l = await sbx.commands.getBackgroundCommandLogs(ex.id, cursor);
        content += l.content; cursor = l.cursor;
        if (!st.running) break;
        await sleep(50);
      }
      const l = await sbx.commands.getBackgroundCommandLogs(ex.id, cursor);
      content += l.content;
      assert.equal(content, 'one\ntwo\n');
      assert.equal(l.cursor, cursor, 'the cursor does not move past the end');
      const whole = await sbx.commands.getBackgroundCommandLogs(ex.id, 0);
      assert.equal(whole.content, 'one\ntwo\n');
      st = await sbx.commands.getCommandStatus(ex.id);
      assert.equal(st.running, false);
      assert.equal(st.exitCode, 4);
      assert.ok(st.finishedAt instanceof Date && st.finishedAt >= st.startedAt);
      const bg2 = await sbx.commands.run('sleep 30', { background: true });
      assert.equal((await sbx.commands.getCommandStatus(bg2.id)).running, true);
      await sbx.commands.interrupt(bg2.id);
      const st2 = await sbx.commands.getCommandStatus(bg2.id);
      assert.equal(st2.running, false);
      assert.equal(st2.exitCode, -1);
    }],
    ['bash sessions: env and cwd persist, exit codes per run', async () => {
      const sid = await sbx.commands.createSession({ workingDirectory: '/tmp' });
      const a = await sbx.commands.runInSession(sid, 'export X=42; cd /usr; pwd');
      assert.equal(a.exitCode, 0);
      assert.deepEqual(texts(a.logs.stdout), ['/usr']);
      const b = await sbx.commands.runInSession(sid, 'echo $X; pwd; exit 2');
      assert.deepEqual(texts(b.logs.stdout), ['42', '/usr']);
      assert.equal(b.exitCode, 2);
      const c = await sbx.commands.runInSession(sid, 'echo $X');
      assert.deepEqual(texts(c.logs.stdout), ['42']);
      const sid2 = await sbx.commands.createSession({ workingDirectory: '/tmp' });
      const d = await sbx.commands.runInSession(sid2, 'echo "[$X]"; pwd');
      assert.deepEqual(texts(d.logs.stdout), ['[]', '/tmp']);
      await sbx.commands.deleteSession(sid);
      await sbx.commands.deleteSession(sid2);
      await assert.rejects(sbx.commands.runInSession(sid, 'true'));
    }],
  ];

  const W = '/tmp/sg-sdk-full-' + process.pid;
  const P = (...p) => path.posix.join(W, ...p);
  const files = sbx.files;
  steps.push(
    ['files: writeFiles (string, bytes, Blob, stream) + readFile / readBytes / readBytesStream', async () => {
      await files.writeFiles([
        { path: P('w/hello.txt'), data: 'hello world\n', mode: 644 },
        { path: P('w/bytes.bin'), data: new Uint8Array([0, 1, 2, 250]), mode: 600 },
        { path: P('w/blob.txt'), data: new Blob(['from a blob']) },
      ]);
      assert.equal(await files.readFile(P('w/hello.txt')), 'hello world\n');
      assert.deepEqual(Array.from(await files.readBytes(P('w/bytes.bin'))), [0, 1, 2, 250]);
      assert.equal(await files.readFile(P('w/blob.txt')), 'from a blob');
      const h = crypto.createHash('sha256');
      async function* gen() {
        for (let i = 0; i < 4; i++) {
          const b = crypto.createHash('sha512').update(String(i)).digest();
          const c = Buffer.alloc(256 * 1024);
          for (let k = 0; k < c.length; k += b.length) b.copy(c, k);
          h.update(c);
          yield new Uint8Array(c);
        }
      }
      await files.writeFiles([{ path: P('w/stream.bin'), data: gen() }]);
      const want = h.digest('hex');
      const g = crypto.createHash('sha256');
      let n = 0;
      for await (const c of files.readBytesStream(P('w/stream.bin'))) { g.update(c); n += c.length; }
      assert.equal(n, 1024 * 1024);
      assert.equal(g.digest('hex'), want);
      // The command side sees what the files side wrote.
      const ex = await sbx.commands.run(`cat ${P('w/hello.txt')}; stat -c %a ${P('w/bytes.bin')}`);
      assert.deepEqual(texts(ex.logs.stdout), ['hello world', '600']);
    }],
    ['files: download ranges (Range header, offset/limit)', async () => {
      assert.equal(await files.readFile(P('w/hello.txt'), { range: 'bytes=6-10' }), 'world');
      assert.deepEqual(Array.from(await files.readBytes(P('w/bytes.bin'), { range: 'bytes=2-' })), [2, 250]);
      await files.writeFiles([{ path: P('w/lines.txt'), data: 'a\nb\nc\nd\n' }]);
      assert.equal(await files.readFile(P('w/lines.txt'), { offset: 2, limit: 2 }), 'b\nc');
      await downloadFails(files.readFile(P('w/missing.txt')), 404, 'FILE_NOT_FOUND', 'read missing');
    }],
    ['files: getFileInfo', async () => {
      const info = await files.getFileInfo([P('w/hello.txt'), P('w')]);
      const f = info[P('w/hello.txt')];
      assert.equal(f.path, P('w/hello.txt'));
      assert.equal(f.type, 'file');
      assert.equal(f.size, 12);
      assert.equal(f.mode, 644);
      assert.ok(f.modifiedAt instanceof Date && !isNaN(f.modifiedAt.getTime()));
      assert.equal(info[P('w')].type, 'directory');
      await rejectsWith(files.getFileInfo([P('nope')]), 'FILE_NOT_FOUND', 'info missing');
    }],
    ['files: search', async () => {
      const r = await files.search({ path: P('w'), pattern: '*.txt' });
      assert.deepEqual(r.map((e) => e.path).sort(), [P('w/blob.txt'), P('w/hello.txt'), P('w/lines.txt')]);
      assert.deepEqual(await files.search({ path: P('w'), pattern: '*.none' }), []);
      assert.equal((await files.search({ path: P('w') })).length, 5);
    }],
    ['files: replaceContents / replaceContentsDetailed / moveFiles / setPermissions / deleteFiles', async () => {
      await files.moveFiles([{ src: P('w/blob.txt'), dest: P('m/moved.txt') }]);
      assert.equal(await files.readFile(P('m/moved.txt')), 'from a blob');
      await downloadFails(files.readFile(P('w/blob.txt')), 404, 'FILE_NOT_FOUND', 'moved away');
      await files.replaceContents([{ path: P('m/moved.txt'), oldContent: 'blob', newContent: 'BLOB' }]);
      assert.equal(await files.readFile(P('m/moved.txt')), 'from a BLOB');
      const d = await files.replaceContentsDetailed([{ path: P('m/moved.txt'), oldContent: 'o', newContent: '0' }]);
      assert.deepEqual(d, [{ path: P('m/moved.txt'), replacedCount: 1 }]);
      assert.equal(await files.readFile(P('m/moved.txt')), 'fr0m a BLOB');
      await files.setPermissions([{ path: P('m/moved.txt'), mode: 640 }]);
      assert.equal((await files.getFileInfo([P('m/moved.txt')]))[P('m/moved.txt')].mode, 640);
      await files.deleteFiles([P('m/moved.txt')]);
      await rejectsWith(files.getFileInfo([P('m/moved.txt')]), 'FILE_NOT_FOUND', 'deleted');
      await rejectsWith(files.moveFiles([{ src: P('nope'), dest: P('x') }]), 'FILE_NOT_FOUND', 'mv missing');
    }],
    ['files: createDirectories / listDirectory / deleteDirectories', async () => {
      await files.createDirectories([{ path: P('d/x/y'), mode: 700 }, { path: P('d/z') }]);
      const info = await files.getFileInfo([P('d/x/y'), P('d/z')]);
      assert.equal(info[P('d/x/y')].mode, 700);
      assert.equal(info[P('d/z')].mode, 755);
      const l = await files.listDirectory({ path: P('d'), depth: 2 });
      assert.deepEqual(l.map((e) => e.path), [P('d/x'), P('d/x/y'), P('d/z')]);
      assert.ok(l.every((e) => e.type === 'directory'));
      await files.deleteDirectories([P('d')]);
      await rejectsWith(files.getFileInfo([P('d')]), 'FILE_NOT_FOUND', 'dir deleted');
      await files.deleteDirectories([W]);
    }],
  );

  for (const [name, fn] of steps) {
    try { await withTimeout(fn(), 60000, name); console.log(`ok - ${name}`); } catch (e) { failed++; console.log(`FAIL - ${name}\n${e.stack || e}`); }
  }

  // kill -> 404 through plain HTTP and the SDK, and gone from the list.
  try {
    await sbx.kill();
    const r = await fetch(`${BASE}/v1/sandboxes/${sbx.id}`, { headers: { 'OPEN-SANDBOX-API-KEY': 'k1' } });
    assert.equal(r.status, 404);
    const nf = await rejectsWith(manager.getSandboxInfo(sbx.id), 'SANDBOX::SANDBOX_NOT_FOUND', 'getSandboxInfo after kill');
    assert.equal(nf.statusCode, 404);
    await assert.rejects(sbx.commands.run('true'), 'the proxy of a killed sandbox is gone');
    assert.deepEqual(ids(await manager.listSandboxInfos({ metadata: { suite: 'full' } })), [other.id]);
    await manager.killSandbox(other.id);
    assert.deepEqual(ids(await manager.listSandboxInfos({})), []);
    console.log('ok - kill -> 404, gone from the list');
  } catch (e) { failed++; console.log(`FAIL - kill\n${e.stack || e}`); }
  await sbx.close();
  await other.close();
  await manager.close();

  child.kill('SIGTERM');
  const e = await withTimeout(exited, 30000, 'serve exit');
  if (e.code !== 0 || /handles open|ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log)) {
    failed++;
    console.log(`FAIL - serve exit ${JSON.stringify(e)}\n${log.split('\n').slice(-30).join('\n')}`);
  }
  if (failed) console.log(log.split('\n').slice(-40).join('\n'));
  cleanup();
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.error('FAIL -', e && e.stack ? e.stack : e);
  console.error(log.split('\n').slice(-30).join('\n'));
  cleanup();
  process.exit(1);
});
