// _execd.js: what the sandgate-execd integration tests share: the binary, a started execd on a
// free loopback port (--port-file) with its log captured and checked for sanitizer reports at
// stop, JSON calls with a bound, and the command status shortcut. No timing assertions.
'use strict';
const { spawn } = require('node:child_process');
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const assert = require('node:assert/strict');

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1' };
const agent = new http.Agent({ keepAlive: false });
let TMP; // set by use()

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

async function startExecd(name, args = []) {
  assert.ok(TMP, '_execd.js: call use(tmpdir) first');
  const portFile = path.join(TMP, `${name}.port`);
  const logDir = path.join(TMP, `${name}-logs`);
  fs.mkdirSync(logDir, { recursive: true });
  const child = spawn(BIN, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--log-dir', logDir,
    '--log-level', 'warn', ...args], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  for (let i = 0; i < 400 && !(fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim()); i++) await sleep(25);
  assert.ok(fs.existsSync(portFile), `execd ${name} did not start: ${log}`);
  const port = parseInt(fs.readFileSync(portFile, 'utf8'), 10);
  return { child, port, exited, log: () => log };
}

async function stopExecd(s) {
  s.child.kill('SIGTERM');
  const r = await withTimeout(s.exited, 30000, 'execd exit');
  assert.equal(r.code, 0, `execd exit ${JSON.stringify(r)}; log:\n${s.log()}`);
  assert.doesNotMatch(s.log(), /AddressSanitizer|LeakSanitizer|runtime error/, s.log());
}

function json(port, method, p, body) {
  return withTimeout(new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, method, path: p, agent,
      headers: data !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
    (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        resolve({ status: res.statusCode, headers: res.headers, body: b,
          json: b.length && /json/.test(res.headers['content-type'] || '') ? JSON.parse(b.toString('utf8')) : undefined });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  }), 30000, `${method} ${p}`);
}
const status = async (port, id) => (await json(port, 'GET', `/command/status/${id}`)).json;

function use(tmp) { TMP = tmp; }

module.exports = { BIN, ENV, agent, use, sleep, withTimeout, startExecd, stopExecd, json, status };
