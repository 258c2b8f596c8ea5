// sandgate-execd shutting down (SIGTERM, 1 s grace) while file transfers are stuck in flight:
// a download whose reader stopped reading, an upload whose client stopped sending half-way, and
// a proxied download whose reader stopped. execd must exit 0 with ASan (leaks
// included) clean, and the half-written upload's temp file must be gone. No timing assertions.
'use strict';
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const TMP = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-shut-')));
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1' };
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}
function freePort() {
  return new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}

(async () => {
  const port = await freePort();
  const child = spawn(BIN, ['--listen', `127.0.0.1:${port}`, '--log-level', 'warn', '--shutdown-grace', '1s'], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  let up = false;
  for (let i = 0; i < 200 && !up; i++) {
    try {
      up = await new Promise((res, rej) => http.get({ host: '127.0.0.1', port, path: '/files/info', agent: false }, (r) => { r.resume(); res(r.statusCode === 200); }).on('error', rej));
    } catch { await sleep(50); }
  }
  assert.ok(up, `execd did not start: ${log}`);

  const big = path.join(TMP, 'big.bin');
  fs.writeFileSync(big, Buffer.alloc(48 * 1024 * 1024, 1));
  const started = [];
  // 1. download, reader stopped after the first bytes
  started.push(new Promise((res) => {
    http.get({ host: '127.0.0.1', port, path: `/files/download?path=${encodeURIComponent(big)}`, agent: false }, (rs) => {
      rs.once('data', () => { rs.pause(); res(); });
      rs.on('error', () => {});
    }).on('error', () => {});
  }));
  // 2. proxied download, reader stopped
  started.push(new Promise((res) => {
    http.get({ host: '127.0.0.1', port, path: `/proxy/${port}/files/download?path=${encodeURIComponent(big)}`, agent: false }, (rs) => {
      rs.once('data', () => { rs.pause(); res(); });
      rs.on('error', () => {});
    }).on('error', () => {});
  }));
  // 3. upload, sender stopped half-way through the file part
  const target = path.join(TMP, 'up', 'half.bin');
  started.push(new Promise((res) => {
    const b = 'shutBoundary';
    const r = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/files/upload', agent: false,
      headers: { 'content-type': `multipart/form-data; boundary=${b}`, 'content-length': 8 * 1024 * 1024 } });
    r.on('error', () => {});
    r.write(`--${b}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n${JSON.stringify({ path: target })}\r\n` +
      `--${b}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n`);
    r.write(Buffer.alloc(2 * 1024 * 1024, 2), () => res());
  }));
  await withTimeout(Promise.all(started), 30000, 'transfers started');
  // The upload's temp file exists once its first bytes are written (bounded wait).
  let tmpSeen = false;
  for (let i = 0; i < 200 && !tmpSeen; i++) {
    tmpSeen = fs.existsSync(path.dirname(target)) && fs.readdirSync(path.dirname(target)).some((n) => n.includes('.sgupload.'));
    if (!tmpSeen) await sleep(25);
  }
  assert.ok(tmpSeen, 'upload temp file never appeared');

  child.kill('SIGTERM');
  const ex = await withTimeout(exited, 30000, 'execd exit');
  assert.equal(ex.code, 0, `execd exit ${JSON.stringify(ex)}; log:\n${log}`);
  assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log), log);
  assert.deepEqual(fs.readdirSync(path.dirname(target)), [], 'temp file left after shutdown');
  fs.rmSync(TMP, { recursive: true, force: true });
  console.log('ok - execd shutdown with transfers in flight');
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
