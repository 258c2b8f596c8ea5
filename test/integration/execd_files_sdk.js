// The OpenSandbox JS SDK's filesystem adapter (@alibaba-group/opensandbox 0.1.11, reference
// 3.6) against the real sandgate-execd: every `sandbox.files` method the SDK has, through the
// SDK's own request building and response parsing (openapi-fetch JSON parsing of empty 200s,
// FormData / streamed uploads, Range and offset/limit reads, error mapping to
// SandboxApiException codes). The adapter is built the way Sandbox.connect builds it
// (createExecdClient + FilesystemAdapter from the SDK's internal entry), so no lifecycle stand-in
// or /ping is needed.
//
// The SDK is pinned in test/sdk/package.json and installed by scripts/setup.sh; a missing SDK
// is a failure, not a skip. SG_OPENSANDBOX_SDK=<dir containing node_modules> overrides where
// it is looked up. Run by ctest with SG_BIN_DIR and SG_SOURCE_DIR set.
'use strict';
const { spawn } = require('node:child_process');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const assert = require('node:assert/strict');

let sdk, internal;
try {
  const base = process.env.SG_OPENSANDBOX_SDK ||
    path.join(process.env.SG_SOURCE_DIR || path.join(__dirname, '..', '..'), 'test', 'sdk');
  sdk = require(require.resolve('@alibaba-group/opensandbox', { paths: [base] }));
  internal = require(require.resolve('@alibaba-group/opensandbox/internal', { paths: [base] }));
} catch (e) {
  console.error('FAIL - @alibaba-group/opensandbox not installed: run scripts/setup.sh (' + e.message + ')');
  process.exit(1);
}
const { SandboxApiException } = sdk;
const { createExecdClient, FilesystemAdapter } = internal;

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const TMP = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-files-sdk-')));
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1' };
const MiB = 1024 * 1024;
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}
function freePort() {
  return new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}
const F = (...p) => path.join(TMP, ...p);
async function rejectsWith(p, code, what) {
  try {
    await p;
  } catch (e) {
    // The SDK's cjs index and internal entry are separate bundles: compare by class name.
    assert.ok(e instanceof SandboxApiException || e?.constructor?.name === 'SandboxApiException', `${what}: ${e}`);
    assert.equal(e.error?.code, code, `${what}: ${JSON.stringify(e.error)}`);
    return e;
  }
  assert.fail(`${what}: did not reject`);
}

(async () => {
  const port = await freePort();
  const child = spawn(BIN, ['--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  const baseUrl = `http://127.0.0.1:${port}`;
  let up = false;
  for (let i = 0; i < 200 && !up; i++) {
    try { up = (await fetch(`${baseUrl}/files/info`)).status === 200; } catch { await sleep(50); }
  }
  assert.ok(up, `execd did not start: ${log}`);
  const client = createExecdClient({ baseUrl, headers: {}, fetch: globalThis.fetch });
  const files = new FilesystemAdapter(client, { baseUrl, fetch: globalThis.fetch, headers: {} });

  let failed = 0;
  const steps = [
    ['writeFiles (string, bytes, Blob) + readFile/readBytes', async () => {
      await files.writeFiles([
        { path: F('w/hello.txt'), data: 'hello world\n', mode: 644 },
        { path: F('w/bytes.bin'), data: new Uint8Array([0, 1, 2, 250]), mode: 600 },
        { path: F('w/blob.txt'), data: new Blob(['from a blob']) },
      ]);
      assert.equal(await files.readFile(F('w/hello.txt')), 'hello world\n');
      assert.deepEqual(Array.from(await files.readBytes(F('w/bytes.bin'))), [0, 1, 2, 250]);
      assert.equal(await files.readFile(F('w/blob.txt')), 'from a blob');
      assert.equal(fs.statSync(F('w/bytes.bin')).mode & 0o777, 0o600);
    }],
    ['writeFiles streamed (AsyncIterable, chunked) + readBytesStream', async () => {
      const h = crypto.createHash('sha256');
      async function* gen() {
        for (let i = 0; i < 16; i++) {
          const c = crypto.createHash('sha512').update(String(i)).digest();
          const b = Buffer.alloc(MiB);
          for (let k = 0; k < MiB; k += c.length) c.copy(b, k);
          h.update(b);
          yield new Uint8Array(b);
        }
      }
      await files.writeFiles([{ path: F('w/stream.bin'), data: gen() }]);
      const want = h.digest('hex');
      const g = crypto.createHash('sha256');
      let n = 0;
      for await (const c of files.readBytesStream(F('w/stream.bin'))) { g.update(c); n += c.length; }
      assert.equal(n, 16 * MiB);
      assert.equal(g.digest('hex'), want);
    }],
    ['readFile with range and with offset/limit', async () => {
      assert.equal(await files.readFile(F('w/hello.txt'), { range: 'bytes=6-10' }), 'world');
      fs.writeFileSync(F('w/lines.txt'), 'a\nb\nc\nd\n');
      assert.equal(await files.readFile(F('w/lines.txt'), { offset: 2, limit: 2 }), 'b\nc');
    }],
    ['getFileInfo', async () => {
      const info = await files.getFileInfo([F('w/hello.txt'), F('w')]);
      const f = info[F('w/hello.txt')];
      assert.equal(f.path, F('w/hello.txt'));
      assert.equal(f.type, 'file');
      assert.equal(f.size, 12);
      assert.equal(f.mode, 644);
      assert.ok(f.modifiedAt instanceof Date && !isNaN(f.modifiedAt.getTime()));
      assert.ok(f.createdAt instanceof Date && !isNaN(f.createdAt.getTime()));
      assert.equal(info[F('w')].type, 'directory');
      await rejectsWith(files.getFileInfo([F('nope')]), 'FILE_NOT_FOUND', 'info missing');
    }],
    ['createDirectories / listDirectory / deleteDirectories', async () => {
      await files.createDirectories([{ path: F('d/x/y'), mode: 700 }, { path: F('d/z') }]);
      assert.equal(fs.statSync(F('d/x/y')).mode & 0o777, 0o700);
      assert.equal(fs.statSync(F('d/z')).mode & 0o777, 0o755); // the SDK's default mode
      const l = await files.listDirectory({ path: F('d'), depth: 2 });
      assert.deepEqual(l.map((e) => e.path), [F('d/x'), F('d/x/y'), F('d/z')]);
      assert.ok(l.every((e) => e.type === 'directory'));
      await files.deleteDirectories([F('d'), F('never')]);
      assert.ok(!fs.existsSync(F('d')));
    }],
    ['search', async () => {
      const r = await files.search({ path: F('w'), pattern: '*.txt' });
      assert.deepEqual(r.map((e) => e.path).sort(), [F('w/blob.txt'), F('w/hello.txt'), F('w/lines.txt')]);
      assert.deepEqual(await files.search({ path: F('w'), pattern: 'src/*.py' }), []);
      assert.equal((await files.search({ path: F('w') })).length, 5);
    }],
    ['moveFiles / replaceContents / replaceContentsDetailed / setPermissions / deleteFiles', async () => {
      await files.moveFiles([{ src: F('w/blob.txt'), dest: F('m/moved.txt') }]);
      assert.equal(fs.readFileSync(F('m/moved.txt'), 'utf8'), 'from a blob');
      await files.replaceContents([{ path: F('m/moved.txt'), oldContent: 'blob', newContent: 'BLOB' }]);
      assert.equal(fs.readFileSync(F('m/moved.txt'), 'utf8'), 'from a BLOB');
      const d = await files.replaceContentsDetailed([{ path: F('m/moved.txt'), oldContent: 'o', newContent: '0' }]);
      assert.deepEqual(d, [{ path: F('m/moved.txt'), replacedCount: 1 }]); // "from a BLOB"
      await files.setPermissions([{ path: F('m/moved.txt'), mode: 640 }]);
      assert.equal(fs.statSync(F('m/moved.txt')).mode & 0o777, 0o640);
      await files.deleteFiles([F('m/moved.txt'), F('never')]);
      assert.ok(!fs.existsSync(F('m/moved.txt')));
      await rejectsWith(files.moveFiles([{ src: F('nope'), dest: F('x') }]), 'FILE_NOT_FOUND', 'mv missing');
      await rejectsWith(files.deleteFiles([F('w')]), 'RUNTIME_ERROR', 'delete dir');
    }],
  ];
  for (const [name, fn] of steps) {
    try {
      await withTimeout(fn(), 60000, name);
      console.log(`ok - ${name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL - ${name}: ${e.stack || e}`);
    }
  }
  child.kill('SIGTERM');
  const ex = await withTimeout(exited, 20000, 'execd exit');
  if (ex.code !== 0 || /ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log)) {
    failed++;
    console.log(`FAIL - execd exit ${JSON.stringify(ex)}; log:\n${log}`);
  }
  fs.rmSync(TMP, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(1); });
