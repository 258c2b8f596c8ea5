// Integration test: a 1 GiB upload and a 1 GiB download through the real sandgate-execd with
// flat memory. The data is a deterministic PRNG stream generated 1 MiB at a time (never a 1 GiB
// buffer here either) and hashed as it goes; the file on disk and the downloaded stream must
// hash the same. The server's peak resident memory (VmHWM from /proc) must stay far below the
// transfer size: the upload is streamed to disk, the download read with backpressure (the
// reader also stops for a while mid-download so the server must hold back). Range reads of
// the big file are checked against the generator. No timing assertions.
'use strict';
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const assert = require('node:assert/strict');

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const TMP = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-big-')));
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1' };
const MiB = 1024 * 1024;
const TOTAL = 1024 * MiB;
const RSS_BOUND = 64 * MiB;

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}
function freePort() {
  return new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}

// xorshift32 stream: chunk i of 1 MiB is a pure function of (seed, i), so any slice can be
// regenerated for the Range checks.
function chunk(i) {
  const words = new Uint32Array(MiB / 4);
  let x = (0x9e3779b9 ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0 || 1;
  for (let k = 0; k < words.length; k++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    words[k] = x;
  }
  return Buffer.from(words.buffer);
}
function slice(start, end) { // inclusive end, within the 1 GiB stream
  const parts = [];
  for (let i = Math.floor(start / MiB); i <= Math.floor(end / MiB); i++) {
    const c = chunk(i);
    const a = Math.max(start - i * MiB, 0), b = Math.min(end - i * MiB + 1, MiB);
    parts.push(c.subarray(a, b));
  }
  return Buffer.concat(parts);
}

function procStatus(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => parseInt((s.match(new RegExp(`^${k}:\\s+(\\d+)`, 'm')) || [0, 0])[1], 10) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

let PORT;
function get(p, headers = {}) {
  return new Promise((resolve, reject) => {
    const r = http.get({ host: '127.0.0.1', port: PORT, path: p, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    r.on('error', reject);
  });
}

async function main() {
  PORT = await freePort();
  const child = spawn(BIN, ['--listen', `127.0.0.1:${PORT}`, '--log-level', 'warn'], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  let up = false;
  for (let i = 0; i < 200 && !up; i++) {
    try { up = (await get('/files/info')).status === 200; } catch { await sleep(50); }
  }
  assert.ok(up, `execd did not start: ${log}`);
  const base = procStatus(child.pid);
  let peakRss = 0;
  const sampler = setInterval(() => { try { peakRss = Math.max(peakRss, procStatus(child.pid).rss); } catch { /* exited */ } }, 100);

  // ---- 1 GiB upload, streamed with backpressure from the generator
  const target = path.join(TMP, 'big', 'data.bin');
  const boundary = 'opensandbox_0123456789abcdef_1700000000000';
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="metadata"; filename="metadata"\r\n` +
    `Content-Type: application/json\r\n\r\n${JSON.stringify({ path: target, mode: 644 })}\r\n` +
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="data.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const sent = crypto.createHash('sha256');
  const upRes = await withTimeout(new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port: PORT, method: 'POST', path: '/files/upload', agent: false,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': head.length + TOTAL + tail.length } }, (res) => {
      const c = [];
      res.on('data', (d) => c.push(d));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(c).toString() }));
    });
    r.on('error', reject);
    (async () => {
      r.write(head);
      for (let i = 0; i < TOTAL / MiB; i++) {
        const c = chunk(i);
        sent.update(c);
        if (!r.write(c)) await new Promise((res) => r.once('drain', res));
      }
      r.end(tail);
    })().catch(reject);
  }), 600000, '1 GiB upload');
  assert.equal(upRes.status, 200, upRes.text);
  const sentHash = sent.digest('hex');
  assert.equal(fs.statSync(target).size, TOTAL);
  const diskHash = await new Promise((res, rej) => {
    const h = crypto.createHash('sha256');
    fs.createReadStream(target, { highWaterMark: 4 * MiB }).on('data', (d) => h.update(d)).on('end', () => res(h.digest('hex'))).on('error', rej);
  });
  assert.equal(diskHash, sentHash, 'uploaded file differs from what was sent');
  const afterUpload = procStatus(child.pid);
  console.log(`upload ok: VmHWM ${(afterUpload.hwm / MiB).toFixed(1)} MiB (baseline RSS ${(base.rss / MiB).toFixed(1)} MiB)`);
  assert.ok(afterUpload.hwm < RSS_BOUND, `VmHWM ${afterUpload.hwm} after a 1 GiB upload`);

  // ---- 1 GiB download, hashed as it arrives; the reader stalls for a while mid-way
  const got = crypto.createHash('sha256');
  let n = 0, stalled = false, rssDuringStall = 0;
  const dl = await withTimeout(new Promise((resolve, reject) => {
    const r = http.get({ host: '127.0.0.1', port: PORT, path: `/files/download?path=${encodeURIComponent(target)}`, agent: false }, (res) => {
      res.on('data', (d) => {
        got.update(d);
        n += d.length;
        if (!stalled && n > 100 * MiB) {
          stalled = true;
          res.pause();
          setTimeout(() => { rssDuringStall = procStatus(child.pid).rss; res.resume(); }, 1500);
        }
      });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers }));
      res.on('error', reject);
    });
    r.on('error', reject);
  }), 600000, '1 GiB download');
  assert.equal(dl.status, 200);
  assert.equal(dl.headers['content-length'], String(TOTAL));
  assert.equal(n, TOTAL);
  assert.equal(got.digest('hex'), sentHash, 'downloaded bytes differ');
  assert.ok(rssDuringStall > 0 && rssDuringStall < RSS_BOUND, `RSS while the reader stalled: ${rssDuringStall}`);
  const afterDownload = procStatus(child.pid);
  console.log(`download ok: VmHWM ${(afterDownload.hwm / MiB).toFixed(1)} MiB, sampled peak RSS ${(peakRss / MiB).toFixed(1)} MiB`);
  assert.ok(afterDownload.hwm < RSS_BOUND, `VmHWM ${afterDownload.hwm} after a 1 GiB download`);

  // ---- Ranges into the big file, checked against the generator
  for (const [h, a, b] of [['bytes=0-99', 0, 99], [`bytes=${512 * MiB - 10}-${512 * MiB + 3 * MiB}`, 512 * MiB - 10, 515 * MiB],
    [`bytes=-${MiB + 7}`, TOTAL - MiB - 7, TOTAL - 1], [`bytes=${TOTAL - 5}-`, TOTAL - 5, TOTAL - 1]]) {
    const r = await withTimeout(get(`/files/download?path=${encodeURIComponent(target)}`, { Range: h }), 60000, h);
    assert.equal(r.status, 206, h);
    assert.equal(r.headers['content-range'], `bytes ${a}-${b}/${TOTAL}`, h);
    assert.ok(r.body.equals(slice(a, b)), `${h}: bytes differ`);
  }
  const r416 = await get(`/files/download?path=${encodeURIComponent(target)}`, { Range: `bytes=${TOTAL}-` });
  assert.equal(r416.status, 416);

  clearInterval(sampler);
  child.kill('SIGTERM');
  const ex = await withTimeout(exited, 20000, 'execd exit');
  assert.equal(ex.code, 0, `execd exit ${JSON.stringify(ex)}; log:\n${log}`);
  assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log), log);
  fs.rmSync(TMP, { recursive: true, force: true });
  console.log('ok - execd 1 GiB upload/download with flat memory');
}

main().catch((e) => { console.error(e); fs.rmSync(TMP, { recursive: true, force: true }); process.exit(1); });
