// Integration test for sandgate-execd's /proxy/{port}/{path...}: the real binary in front of a
// node upstream on loopback. Checks path/query/method/status/header passthrough, hop-by-hop
// removal and X-Forwarded-*, a 512 MiB response and a 512 MiB request body streamed through
// with bounded execd memory (SHA-256 both ways; the reader stalls mid-way), 502 JSON for a
// closed port, 400 for bad ports, an upstream cut mid-body cutting the client, and a client
// disconnect closing the upstream exchange (at the upstream's next write). No timing assertions.
'use strict';
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const assert = require('node:assert/strict');

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1' };
const MiB = 1024 * 1024;
const BIG = 512 * MiB;
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
function chunk(i) {
  const words = new Uint32Array(MiB / 4);
  let x = (0x2545f491 ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0 || 1;
  for (let k = 0; k < words.length; k++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; words[k] = x; }
  return Buffer.from(words.buffer);
}
function hwm(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return parseInt(s.match(/^VmHWM:\s+(\d+)/m)[1], 10) * 1024;
}
function rss(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return parseInt(s.match(/^VmRSS:\s+(\d+)/m)[1], 10) * 1024;
}

let PORT, UP;
function req(method, p, { body, headers } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port: PORT, method, path: p, headers: headers || {}, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        let json;
        try { json = JSON.parse(buf.toString()); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: buf, text: buf.toString(), json });
      });
      res.on('error', reject);
    });
    r.on('error', reject);
    if (body !== undefined) r.write(body);
    r.end();
  }), 60000, `${method} ${p}`);
}

async function main() {
  // ---- the upstream
  let hangClosed = null;
  const held = [];
  const upstream = http.createServer(async (rq, rs) => {
    const u = new URL(rq.url, 'http://x');
    if (u.pathname.startsWith('/echo')) {
      const h = crypto.createHash('sha256');
      let n = 0;
      rq.on('data', (d) => { h.update(d); n += d.length; });
      rq.on('end', () => {
        rs.writeHead(201, { 'content-type': 'application/json', 'x-custom': 'yes', connection: 'keep-alive, x-drop-me', 'x-drop-me': '1', 'keep-alive': 'timeout=5' });
        rs.end(JSON.stringify({ method: rq.method, url: rq.url, headers: rq.headers, n, sha: h.digest('hex') }));
      });
    } else if (u.pathname === '/big') {
      rs.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG });
      for (let i = 0; i < BIG / MiB; i++) {
        if (!rs.write(chunk(i))) await new Promise((r) => rs.once('drain', r));
        if (rs.destroyed) return;
      }
      rs.end();
    } else if (u.pathname === '/cut') {
      rs.writeHead(200, { 'content-length': 10 * MiB });
      rs.write(Buffer.alloc(MiB, 7), () => setTimeout(() => rq.socket.destroy(), 50));
    } else if (u.pathname === '/held') {
      rs.writeHead(200, { 'content-type': 'text/plain' });
      rs.write('hi\n');
      held.push(rs);
    } else if (u.pathname === '/hang') {
      rs.writeHead(200, { 'content-type': 'text/plain' });
      rs.write('started\n');
      // A stream with heartbeats: execd's server notices a vanished client at its next write
      // (a client EOF alone reads as a half-close), and then must cancel this exchange.
      const tick = setInterval(() => rs.write('tick\n'), 100);
      hangClosed = new Promise((r) => rs.on('close', () => { clearInterval(tick); r(); }));
    } else {
      rs.writeHead(404);
      rs.end('nope');
    }
  });
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  UP = upstream.address().port;

  PORT = await freePort();
  const child = spawn(BIN, ['--listen', `127.0.0.1:${PORT}`, '--log-level', 'warn'], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  let ok = false;
  for (let i = 0; i < 200 && !ok; i++) {
    try { ok = (await req('GET', '/files/info')).status === 200; } catch { await sleep(50); }
  }
  assert.ok(ok, `execd did not start: ${log}`);

  // ---- passthrough: method, path, query, status, headers
  {
    const r = await req('PUT', `/proxy/${UP}/echo/a%20b/c?x=1&y=%2F`, {
      body: 'hello', headers: { 'content-type': 'text/plain', 'x-client': 'c1', te: 'trailers', 'proxy-authorization': 'secret',
        connection: 'keep-alive, x-hop', 'x-hop': 'drop', 'x-forwarded-for': '10.9.8.7', host: 'my.host:1234' } });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.headers['x-custom'], 'yes');
    assert.equal(r.headers['x-drop-me'], undefined, 'header named in upstream Connection must go');
    assert.equal(r.headers['keep-alive'], undefined);
    const e = r.json;
    assert.equal(e.method, 'PUT');
    assert.equal(e.url, '/echo/a%20b/c?x=1&y=%2F');
    assert.equal(e.n, 5);
    assert.equal(e.sha, crypto.createHash('sha256').update('hello').digest('hex'));
    assert.equal(e.headers['x-client'], 'c1');
    assert.equal(e.headers['content-type'], 'text/plain');
    assert.equal(e.headers.te, undefined);
    assert.equal(e.headers['proxy-authorization'], undefined);
    assert.equal(e.headers['x-hop'], undefined);
    assert.equal(e.headers['x-forwarded-for'], '10.9.8.7, 127.0.0.1');
    assert.equal(e.headers['x-forwarded-proto'], 'http');
    assert.equal(e.headers['x-forwarded-host'], 'my.host:1234');
    assert.equal(e.headers.host, 'my.host:1234');
    const r2 = await req('GET', `/proxy/${UP}`);
    assert.equal(r2.status, 404);
    assert.equal(r2.text, 'nope');
    const r3 = await req('GET', `/proxy/${UP}/echo`);
    assert.equal(r3.json.url, '/echo');
    assert.equal(r3.json.headers['x-forwarded-for'], '127.0.0.1');
  }

  // ---- errors
  {
    const closed = await freePort();
    let r = await req('GET', `/proxy/${closed}/x`);
    assert.equal(r.status, 502, r.text);
    assert.equal(r.json.code, 'RUNTIME_ERROR');
    assert.match(r.json.message, /bad gateway.*refused/);
    for (const bad of ['0', '65536', '99999999', 'abc', '-1', '80x']) {
      r = await req('GET', `/proxy/${bad}/x`);
      assert.equal(r.status, 400, `${bad}: ${r.text}`);
      assert.equal(r.json.code, 'INVALID_REQUEST_BODY');
    }
  }

  // ---- 512 MiB response streamed down with backpressure (the reader stalls a while)
  {
    const h = crypto.createHash('sha256');
    const want = crypto.createHash('sha256');
    for (let i = 0; i < BIG / MiB; i++) want.update(chunk(i));
    let n = 0, stalled = false, rssStall = 0;
    const res = await withTimeout(new Promise((resolve, reject) => {
      const r = http.get({ host: '127.0.0.1', port: PORT, path: `/proxy/${UP}/big`, agent: false }, (rs) => {
        rs.on('data', (d) => {
          h.update(d);
          n += d.length;
          if (!stalled && n > 64 * MiB) {
            stalled = true;
            rs.pause();
            setTimeout(() => { rssStall = rss(child.pid); rs.resume(); }, 1500);
          }
        });
        rs.on('end', () => resolve(rs));
        rs.on('error', reject);
      });
      r.on('error', reject);
    }), 300000, 'big proxied response');
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(BIG));
    assert.equal(n, BIG);
    assert.equal(h.digest('hex'), want.digest('hex'));
    assert.ok(rssStall > 0 && rssStall < RSS_BOUND, `execd RSS while the reader stalled: ${rssStall}`);
  }

  // ---- 512 MiB request body streamed up (chunked, and with Content-Length)
  for (const withLength of [false, true]) {
    const sent = crypto.createHash('sha256');
    const res = await withTimeout(new Promise((resolve, reject) => {
      const headers = { 'content-type': 'application/octet-stream' };
      if (withLength) headers['content-length'] = BIG;
      const r = http.request({ host: '127.0.0.1', port: PORT, method: 'POST', path: `/proxy/${UP}/echo`, headers, agent: false }, (rs) => {
        const c = [];
        rs.on('data', (d) => c.push(d));
        rs.on('end', () => resolve({ status: rs.statusCode, json: JSON.parse(Buffer.concat(c).toString()) }));
      });
      r.on('error', reject);
      (async () => {
        for (let i = 0; i < BIG / MiB; i++) {
          const c = chunk(i);
          sent.update(c);
          if (!r.write(c)) await new Promise((rs) => r.once('drain', rs));
        }
        r.end();
      })().catch(reject);
    }), 300000, 'big proxied request body');
    assert.equal(res.status, 201);
    assert.equal(res.json.n, BIG);
    assert.equal(res.json.sha, sent.digest('hex'));
  }
  const peak = hwm(child.pid);
  console.log(`proxy 512 MiB both ways: execd VmHWM ${(peak / MiB).toFixed(1)} MiB`);
  assert.ok(peak < RSS_BOUND, `execd VmHWM ${peak}`);

  // ---- upstream cut mid-body: the client must not see a clean end
  {
    const outcome = await withTimeout(new Promise((resolve) => {
      const r = http.get({ host: '127.0.0.1', port: PORT, path: `/proxy/${UP}/cut`, agent: false }, (rs) => {
        let n = 0;
        rs.on('data', (d) => { n += d.length; });
        rs.on('end', () => resolve({ clean: rs.complete, n }));
        rs.on('aborted', () => resolve({ clean: false, n }));
        rs.on('error', () => resolve({ clean: false, n }));
      });
      r.on('error', () => resolve({ clean: false, n: -1 }));
    }), 30000, 'cut');
    assert.equal(outcome.clean, false, `cut upstream gave a clean end: ${JSON.stringify(outcome)}`);
    assert.ok(outcome.n < 10 * MiB);
  }

  // ---- client disconnect closes the upstream exchange
  {
    await withTimeout(new Promise((resolve) => {
      const r = http.get({ host: '127.0.0.1', port: PORT, path: `/proxy/${UP}/hang`, agent: false }, (rs) => {
        rs.once('data', () => { r.destroy(); resolve(); });
      });
      r.on('error', () => {});
    }), 30000, 'hang start');
    await withTimeout(hangClosed, 30000, 'upstream closed after the client left');
  }

  // ---- one keep-alive connection carrying streamed uploads/downloads, direct and proxied to
  // execd itself (its bridge-mode endpoint is host:PORT/proxy/44772): every request on the
  // socket must be answered (a body left paused would stall the next one)
  {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ka = (method, p, body, headers = {}) => withTimeout(new Promise((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: PORT, method, path: p, agent, headers }, (rs) => {
        const c = [];
        rs.on('data', (d) => c.push(d));
        rs.on('end', () => resolve({ status: rs.statusCode, body: Buffer.concat(c), socket: r.socket }));
      });
      r.on('error', reject);
      r.end(body);
    }), 30000, `keep-alive ${method} ${p}`);
    const dir = fs.mkdtempSync('/tmp/sg-proxy-ka-');
    const mp = (target, data) => {
      const b = 'kaBoundary';
      const body = Buffer.concat([Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n${JSON.stringify({ path: target })}\r\n` +
        `--${b}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n`), data, Buffer.from(`\r\n--${b}--\r\n`)]);
      return [body, { 'content-type': `multipart/form-data; boundary=${b}`, 'content-length': body.length }];
    };
    const sockets = new Set();
    const data = chunk(3).subarray(0, 700000);
    for (const pfx of ['', `/proxy/${PORT}`]) {
      let r = await ka('POST', `${pfx}/files/upload`, ...mp(`${dir}/f${pfx ? 'p' : 'd'}`, data));
      assert.equal(r.status, 200, r.body.toString());
      sockets.add(r.socket);
      r = await ka('GET', `${pfx}/files/download?path=${encodeURIComponent(`${dir}/f${pfx ? 'p' : 'd'}`)}`);
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(data));
      sockets.add(r.socket);
      const mv = Buffer.from(JSON.stringify([{ src: `${dir}/f${pfx ? 'p' : 'd'}`, dest: `${dir}/m${pfx ? 'p' : 'd'}` }]));
      r = await ka('POST', `${pfx}/files/mv`, mv, { 'content-length': mv.length });
      assert.equal(r.status, 200, r.body.toString());
      sockets.add(r.socket);
    }
    assert.equal(sockets.size, 1, 'all requests should share one keep-alive connection');
    assert.ok(fs.readFileSync(`${dir}/mp`).equals(data));
    agent.destroy();
    fs.rmSync(dir, { recursive: true });
  }

  // ---- many concurrent long-lived streams to one port all flow (no small per-origin cap)
  {
    const N = 40;
    const ends = [];
    await withTimeout(Promise.all(Array.from({ length: N }, () => new Promise((resolve, reject) => {
      const r = http.get({ host: '127.0.0.1', port: PORT, path: `/proxy/${UP}/held`, agent: false }, (rs) => {
        let got = '';
        ends.push(new Promise((res) => rs.on('end', () => res(got))));
        rs.on('data', (d) => { got += d; if (got === 'hi\n') resolve(); });
      });
      r.on('error', reject);
    }))), 30000, `${N} concurrent held streams`);
    assert.equal(held.length, N);
    held.forEach((rs) => rs.end('bye\n'));
    const bodies = await withTimeout(Promise.all(ends), 30000, 'held streams end');
    bodies.forEach((b) => assert.equal(b, 'hi\nbye\n'));
  }

  // execd still serves after all that
  assert.equal((await req('GET', `/proxy/${UP}/echo`)).status, 201);

  child.kill('SIGTERM');
  const ex = await withTimeout(exited, 20000, 'execd exit');
  assert.equal(ex.code, 0, `execd exit ${JSON.stringify(ex)}; log:\n${log}`);
  assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log), log);
  upstream.close();
  console.log('ok - execd proxy');
}

main().catch((e) => { console.error(e); process.exit(1); });
