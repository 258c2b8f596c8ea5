// _lib.js: what the gateway integration tests share: a real `sandgate serve` on a free
// loopback port (local provider, the host image as ubuntu:22.04), JSON calls, sandbox
// creation with a bounded wait for Running, SSE readers over plain node:http (no connection
// pool limits, so a test can hold a thousand streams), and cleanup that also kills sandboxes
// a failed run left (they outlive the gateway by design). No timing assertions: every wait is
// a bounded poll.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const BIN_DIR = process.env.SG_BIN_DIR || 'build';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ok = (m) => console.log('ok - ' + m);

async function freePort() {
  return new Promise((res) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

const gateways = [];

function killSandboxes(data) {
  try {
    for (const id of fs.readdirSync(path.join(data, 'sandboxes'))) {
      try {
        const st = JSON.parse(fs.readFileSync(path.join(data, 'sandboxes', id, 'state.json'), 'utf8'));
        if (st.init_pid) process.kill(st.init_pid, 'SIGKILL');
      } catch (_) { /* no state */ }
    }
  } catch (_) { /* no dir */ }
}

function cleanup() {
  for (const g of gateways) {
    try { if (g.child.exitCode === null) g.child.kill('SIGKILL'); } catch (_) { /* gone */ }
    killSandboxes(g.data);
    try { fs.rmSync(g.tmp, { recursive: true, force: true }); } catch (_) { /* busy mounts */ }
  }
}
process.on('exit', cleanup);

// Starts a gateway; resolves once /health answers. extra: more command-line flags.
async function startGateway(name, extra = [], opts = {}) {
  const tmp = opts.data ? path.dirname(opts.data) : fs.mkdtempSync(path.join(os.tmpdir(), `sg-${name}-`));
  const data = opts.data || path.join(tmp, 'data');
  const port = await freePort();
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--data', data, '--image', 'ubuntu:22.04=host',
    '--execd-bin', path.join(BIN_DIR, 'sandgate-execd'), '--log-level', 'warn', ...extra];
  // Under ASan, freed memory sits in a quarantine (256 MB by default) that would hide what
  // memory bounds a test checks: keep it small.
  const asan = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=4', 'thread_local_quarantine_size_kb=64'].filter(Boolean).join(':');
  if (opts.port) args[2] = `127.0.0.1:${opts.port}`;
  const child = spawn(path.join(BIN_DIR, 'sandgate'), args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ASAN_OPTIONS: asan } });
  const p = opts.port || port;
  const g = { tmp, data, port: p, child, base: `http://127.0.0.1:${p}`, log: '' };
  child.stdout.on('data', (d) => { g.log += d; });
  child.stderr.on('data', (d) => { g.log += d; });
  gateways.push(g);
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`gateway exited ${child.exitCode}: ${g.log}`);
    try {
      const r = await fetch(`${g.base}/health`);
      if (r.status === 200) break;
    } catch (_) { /* not yet */ }
    await sleep(50);
  }
  g.call = (method, p, body, headers) => call(g.base, method, p, body, headers);
  return g;
}

async function call(base, method, p, body, headers = {}) {
  const opts = { method, headers: { ...headers } };
  if (body !== undefined) {
    opts.body = typeof body === 'string' ? body : JSON.stringify(body);
    opts.headers['content-type'] = 'application/json';
  }
  const res = await fetch(base + p, opts);
  const buf = Buffer.from(await res.arrayBuffer());
  const text = buf.toString('utf8');
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch (_) { json = undefined; }
  return { status: res.status, headers: res.headers, text, buf, json };
}

const SANDBOX_BODY = { image: { uri: 'ubuntu:22.04' }, entrypoint: ['tail', '-f', '/dev/null'], resourceLimits: { cpu: '1', memory: '2Gi' }, env: {}, metadata: {}, timeout: 600 };

// Creates a sandbox and waits (bounded) until it is Running; returns its id.
async function createRunning(g, extra = {}) {
  const r = await g.call('POST', '/v1/sandboxes', { ...SANDBOX_BODY, ...extra });
  assert.equal(r.status, 202, `create: ${r.status} ${r.text}`);
  for (let i = 0; i < 600; i++) {
    const s = await g.call('GET', `/v1/sandboxes/${r.json.id}`);
    if (s.json && s.json.status.state === 'Running') return r.json.id;
    if (s.json && s.json.status.state === 'Failed') throw new Error(`sandbox failed: ${s.text}`);
    await sleep(50);
  }
  throw new Error('sandbox never became Running');
}

// A streamed GET or POST over node:http. onData(chunk) sees the body as it arrives; resolves
// {status, headers, body (Buffer), aborted} when it ends or is destroyed through ctl.abort().
function stream(url, { method = 'GET', headers = {}, body, onData, onResponse } = {}) {
  const ctl = {};
  ctl.done = new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      let ended = false;
      ctl.res = res;
      if (onResponse) onResponse(res, ctl);
      res.on('data', (d) => { chunks.push(d); if (onData) onData(d, ctl); });
      res.on('end', () => { ended = true; resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), aborted: false }); });
      res.on('close', () => { if (!ended) resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), aborted: true }); });
      res.on('error', () => { /* close follows */ });
    });
    ctl.abort = () => req.destroy();
    req.on('error', (e) => { if (ctl.res) return; reject(e); });
    if (body !== undefined) req.write(typeof body === 'string' ? body : JSON.stringify(body));
    req.end();
  });
  return ctl;
}

// Standard SSE text -> [{id, event, data}] (comments dropped, a trailing partial event too).
function parseSse(text) {
  const out = [];
  for (const block of text.split('\n\n').slice(0, -1)) {
    const ev = { id: undefined, event: 'message', data: [] };
    let any = false;
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const f = i < 0 ? line : line.slice(0, i);
      const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (f === 'id') { ev.id = v; any = true; } else if (f === 'event') { ev.event = v; any = true; } else if (f === 'data') { ev.data.push(v); any = true; } else if (f === 'retry') { ev.retry = v; }
    }
    if (any) out.push({ id: ev.id, event: ev.event, data: ev.data.join('\n') });
  }
  return out;
}

// ExecD framing (JSON + blank line) -> parsed objects.
function parseExecd(text) {
  return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

// Local sandboxes outlive their gateway (by design): at the end of a test, pass or fail, stop
// the gateways and kill every sandbox their data directories still describe.
function cleanup() {
  for (const g of gateways) {
    if (g.child.exitCode === null) g.child.kill('SIGKILL');
    let ids = [];
    try { ids = fs.readdirSync(path.join(g.data, 'sandboxes')); } catch (_) { /* none */ }
    for (const id of ids) {
      const pid = initPid(g.data, id);
      if (pid > 1) try { process.kill(pid, 'SIGKILL'); } catch (_) { /* gone */ }
    }
  }
}

async function main(fn) {
  try {
    await fn();
    console.log('PASS');
    cleanup();
    process.exit(0);
  } catch (e) {
    console.error('FAIL:', e && e.stack ? e.stack : e);
    for (const g of gateways) console.error(`--- gateway :${g.port} log (tail)\n` + g.log.slice(-4000));
    cleanup();
    process.exit(1);
  }
}

// The host pid of a local sandbox's init (from its state file), or 0.
function initPid(data, id) {
  try { return JSON.parse(fs.readFileSync(path.join(data, 'sandboxes', id, 'state.json'), 'utf8')).init_pid || 0; } catch (_) { return 0; }
}

function pidAlive(pid) {
  try { process.kill(pid, 0); return true; } catch (_) { return false; }
}

module.exports = { initPid, pidAlive, sleep, ok, freePort, startGateway, createRunning, stream, parseSse, parseExecd, rssKiB, main, assert };
