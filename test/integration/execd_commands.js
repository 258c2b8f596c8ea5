// Integration tests for sandgate-execd's command API (POST /command, DELETE /command, status,
// logs, sessions, metrics, the sandgate.raw and POST /command/{id}/signal extensions): starts the real binary on a loopback
// port and speaks HTTP with node's http / net modules. Event sequences are compared exactly
// (modulo ids and timestamps); the wire framing is checked byte by byte on a raw socket.
// No timing assertions: every wait is a generous safety bound. Run by ctest (SG_BIN_DIR).
'use strict';
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-'));
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1' };
const agent = new http.Agent({ keepAlive: false });

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}

async function startExecd(name, args = [], env = {}) {
  const portFile = path.join(TMP, `${name}.port`);
  const logDir = path.join(TMP, `${name}-logs`);
  fs.mkdirSync(logDir, { recursive: true });
  const child = spawn(BIN, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--log-dir', logDir,
    '--log-level', 'warn', ...args], { env: { ...ENV, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  for (let i = 0; i < 400 && !(fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim()); i++) await sleep(25);
  assert.ok(fs.existsSync(portFile), `execd ${name} did not start: ${log}`);
  const port = parseInt(fs.readFileSync(portFile, 'utf8'), 10);
  return { child, port, exited, log: () => log, logDir };
}

async function stopExecd(s) {
  s.child.kill('SIGTERM');
  const r = await withTimeout(s.exited, 30000, 'execd exit');
  assert.equal(r.code, 0, `execd exit ${JSON.stringify(r)}; log:\n${s.log()}`);
  assert.doesNotMatch(s.log(), /AddressSanitizer|LeakSanitizer|runtime error/, s.log());
}

// One HTTP exchange; resolves with status, headers and the whole body (a Buffer).
function request(port, method, p, body, headers = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    const req = http.request({ host: '127.0.0.1', port, method, path: p, agent,
      headers: { ...(data !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}), ...headers } },
    (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  }), 30000, `${method} ${p}`);
}
async function json(port, method, p, body, headers) {
  const r = await request(port, method, p, body, headers);
  r.json = r.body.length ? JSON.parse(r.body.toString('utf8')) : undefined;
  return r;
}

// Parses an execd event stream body: every event is exactly JSON + "\n\n".
function parseEvents(buf) {
  const s = buf.toString('latin1');
  const out = [];
  let i = 0;
  while (i < s.length) {
    const j = s.indexOf('\n\n', i);
    assert.ok(j > i, `unterminated event at ${i}: ${JSON.stringify(s.slice(i, i + 80))}`);
    const line = Buffer.from(s.slice(i, j), 'latin1').toString('utf8');
    assert.ok(!line.includes('\n'), `event spans lines: ${line}`);
    out.push(JSON.parse(line));
    i = j + 2;
  }
  return out;
}
async function run(port, body, headers) {
  const r = await request(port, 'POST', '/command', body, headers);
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.headers['content-type'], 'text/event-stream');
  return { ...r, events: parseEvents(r.body) };
}
// Event list without timestamps / ids, for exact comparisons.
function shape(events) {
  return events.map((e) => {
    const c = { ...e };
    assert.equal(typeof c.timestamp, 'number', JSON.stringify(e));
    delete c.timestamp;
    if (c.type === 'init') { c.text = '<id>'; }
    if (c.type === 'execution_complete' && 'execution_time' in c) {
      assert.ok(Number.isInteger(c.execution_time) && c.execution_time > 0);
      delete c.execution_time;
    }
    return c;
  });
}
const noPings = (evs) => evs.filter((e, i) => !(e.type === 'ping' && i !== 1));

// A raw socket request returning the exact response bytes (until the server closes or the
// chunked terminator arrives).
function rawExchange(port, text, { untilClose = false } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!untilClose && buf.includes('\r\n0\r\n\r\n')) { sock.destroy(); resolve(buf); }
    });
    sock.on('close', () => resolve(buf));
    sock.on('error', reject);
    sock.write(text);
  }), 30000, 'raw exchange');
}

const tests = [];
function test(name, fn) { tests.push({ name, fn }); }

let A; // the main agent
let B; // access token + a shell that does not exist

test('framing is byte-compatible with reference 2.8', async () => {
  const body = '{"command":"echo hi; echo err >&2; exit 3","background":false}';
  const raw = await rawExchange(A.port, `POST /command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  const s = raw.toString('latin1');
  const he = s.indexOf('\r\n\r\n');
  const head = s.slice(0, he).split('\r\n');
  assert.equal(head[0], 'HTTP/1.1 200 OK');
  const hs = {};
  for (const l of head.slice(1)) { const k = l.indexOf(':'); hs[l.slice(0, k).toLowerCase()] = l.slice(k + 2); }
  assert.equal(hs['content-type'], 'text/event-stream');
  assert.equal(hs['cache-control'], 'no-cache');
  assert.equal(hs.connection, 'keep-alive');
  assert.equal(hs['x-accel-buffering'], 'no');
  assert.equal(hs['transfer-encoding'], 'chunked');
  assert.ok(hs.date);
  assert.equal(hs['content-length'], undefined);
  // Every chunk is exactly one event + "\n\n"; the body ends with the zero chunk.
  let i = he + 4;
  const chunks = [];
  for (;;) {
    const le = s.indexOf('\r\n', i);
    const n = parseInt(s.slice(i, le), 16);
    assert.match(s.slice(i, le), /^[0-9a-f]+$/);
    if (n === 0) { assert.equal(s.slice(le), '\r\n\r\n'); break; }
    const data = s.slice(le + 2, le + 2 + n);
    assert.equal(s.slice(le + 2 + n, le + 4 + n), '\r\n');
    chunks.push(data);
    i = le + 4 + n;
  }
  const norm = chunks.map((c) => c.replace(/"text":"[0-9a-f]{32}"/, '"text":"ID"').replace(/"timestamp":\d{13}/, '"timestamp":T'));
  const exp = [
    '{"type":"init","text":"ID","timestamp":T}\n\n',
    '{"type":"ping","text":"pong","timestamp":T}\n\n',
    '{"type":"stdout","text":"hi","timestamp":T}\n\n',
    '{"type":"stderr","text":"err","timestamp":T}\n\n',
    '{"type":"error","timestamp":T,"error":{"ename":"CommandExecError","evalue":"3","traceback":["exit status 3"]}}\n\n',
  ];
  // stdout and stderr may come in either order (two pipes), as with Go.
  const sorted = (a) => [a[0], a[1], ...[a[2], a[3]].sort(), a[4]];
  assert.deepEqual(sorted(norm), sorted(exp));
  // chunk sizes equal to Go's for the same ids/timestamps widths: 55 39 39 3a 7c
  assert.deepEqual(chunks.map((c) => c.length.toString(16)).sort(), ['55', '39', '39', '3a', '7c'].sort());
});

test('success: init, ping, lines, execution_complete; response ends', async () => {
  const r = await run(A.port, { command: 'echo a; echo; printf "b\\r\\nc\\rd"' });
  assert.match(r.events[0].text, /^[0-9a-f]{32}$/);
  assert.deepEqual(shape(noPings(r.events)), [
    { type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' },
    { type: 'stdout', text: 'a' }, { type: 'stdout', text: '\n' }, { type: 'stdout', text: 'b' },
    { type: 'stdout', text: 'c' }, { type: 'stdout', text: 'd' }, { type: 'execution_complete' }]);
  const st = await json(A.port, 'GET', `/command/status/${r.events[0].text}`);
  assert.equal(st.status, 200);
  assert.deepEqual(Object.keys(st.json), ['id', 'content', 'running', 'exit_code', 'started_at', 'finished_at']);
  assert.equal(st.json.exit_code, 0);
  assert.equal(st.json.running, false);
  assert.match(st.json.started_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/);
  assert.match(st.json.finished_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$/);
});

test('failure exit 3: error event with evalue "3", status exit_code 3', async () => {
  const r = await run(A.port, { command: 'echo out; exit 3' });
  assert.deepEqual(shape(noPings(r.events)), [
    { type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' }, { type: 'stdout', text: 'out' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: '3', traceback: ['exit status 3'] } }]);
  const st = await json(A.port, 'GET', `/command/status/${r.events[0].text}`);
  assert.equal(st.json.exit_code, 3);
  assert.equal(st.json.error, 'exit status 3');
  assert.equal(st.json.content, 'echo out; exit 3');
});

test('timeout kills the group: evalue -1, signal: killed', async () => {
  const r = await run(A.port, { command: 'echo start; sleep 30', timeout: 300 });
  assert.deepEqual(shape(noPings(r.events)), [
    { type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' }, { type: 'stdout', text: 'start' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: '-1', traceback: ['signal: killed'] } }]);
  const st = await json(A.port, 'GET', `/command/status/${r.events[0].text}`);
  assert.equal(st.json.exit_code, -1);
  assert.equal(st.json.error, 'signal: killed');
});

test('interrupt via DELETE /command?id=', async () => {
  // Stream incrementally: read the init event, then interrupt.
  const events = [];
  let id;
  const done = new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: A.port, method: 'POST', path: '/command', agent,
      headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const ev = JSON.parse(buf.slice(0, k));
          buf = buf.slice(k + 2);
          events.push(ev);
          if (ev.type === 'init') id = ev.text;
        }
      });
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify({ command: 'echo ready; sleep 30' }));
  });
  for (let i = 0; i < 400 && !events.some((e) => e.type === 'stdout'); i++) await sleep(25);
  assert.ok(id, 'no init');
  const d = await request(A.port, 'DELETE', `/command?id=${id}`);
  assert.equal(d.status, 200);
  assert.equal(d.headers['content-length'], '0');
  assert.equal(d.body.length, 0);
  await withTimeout(done, 20000, 'stream end after interrupt');
  assert.deepEqual(shape(noPings(events)), [
    { type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' }, { type: 'stdout', text: 'ready' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: '-1', traceback: ['signal: terminated'] } }]);
  const again = await json(A.port, 'DELETE', `/command?id=${id}`);
  assert.equal(again.status, 500);
  assert.deepEqual(again.json, { code: 'RUNTIME_ERROR', message: `error interruptting code context. command session ${id} is not running` });
  const unknown = await json(A.port, 'DELETE', '/command?id=0123456789abcdef0123456789abcdef');
  assert.equal(unknown.status, 500);
  assert.equal(unknown.json.code, 'RUNTIME_ERROR');
  const missing = await json(A.port, 'DELETE', '/command');
  assert.equal(missing.status, 400);
  assert.deepEqual(missing.json, { code: 'MISSING_QUERY', message: "missing query parameter 'id'" });
});

test('start failure after init: bad uid and missing shell are error events', async () => {
  const r = await run(A.port, { command: 'true', uid: 3999999999 });
  assert.deepEqual(shape(r.events), [
    { type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: 'user: unknown userid 3999999999', traceback: ['user: unknown userid 3999999999'] } }]);
  const st = await json(A.port, 'GET', `/command/status/${r.events[0].text}`);
  assert.equal(st.json.exit_code, 255);
  const tok = { 'x-execd-access-token': 'sekret' };
  const m = await run(B.port, { command: 'true' }, tok);
  assert.deepEqual(shape(m.events), [
    { type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: 'fork/exec /nonexistent/sh: no such file or directory', traceback: ['fork/exec /nonexistent/sh: no such file or directory'] } }]);
  // background start failure: also an error event (Go appends a bare JSON object instead)
  const bg = await run(B.port, { command: 'true', background: true }, tok);
  assert.deepEqual(shape(bg.events).map((e) => e.type), ['init', 'ping', 'error']);
});

test('failure before the process (log file cannot be created): 500 RUNTIME_ERROR, no stream', async () => {
  fs.rmSync(B.logDir, { recursive: true, force: true });
  const r = await json(B.port, 'POST', '/command', { command: 'true', background: true }, { 'x-execd-access-token': 'sekret' });
  assert.equal(r.status, 500);
  assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
  assert.equal(r.json.code, 'RUNTIME_ERROR');
  assert.match(r.json.message, /^error running commands open .*\.output: no such file or directory$/);
});

test('validation errors are JSON 400 before any event', async () => {
  const cases = [
    ['{"background":false}', 'invalid request, validation error command is required'],
    ['{"command":"true","gid":5}', 'uid is required when gid is provided'],
    ['{"command":"true","cwd":"/no/such/dir"}', 'invalid request, validation error working directory does not exist: /no/such/dir'],
    ['', 'error parsing request, MAYBE invalid body format. EOF'],
    ['{"command":true}', 'error parsing request, MAYBE invalid body format. json: cannot unmarshal bool into Go struct field RunCommandRequest.command of type string'],
  ];
  for (const [body, msg] of cases) {
    const r = await json(A.port, 'POST', '/command', body);
    assert.equal(r.status, 400, body);
    assert.deepEqual(r.json, { code: 'INVALID_REQUEST_BODY', message: msg });
  }
  const bad = await json(A.port, 'POST', '/command', '{"command":');
  assert.equal(bad.status, 400);
  assert.match(bad.json.message, /^error parsing request, MAYBE invalid body format\. /);
  const neg = await json(A.port, 'POST', '/command', { command: 'true', timeout: -5 });
  assert.equal(neg.status, 400);
  assert.equal(neg.json.code, 'INVALID_REQUEST_BODY');
});

test('background: init, ping, execution_complete; logs by cursor; status', async () => {
  const r = await run(A.port, { command: 'for i in 1 2 3; do echo line$i; sleep 0.2; done; echo e >&2', background: true });
  assert.deepEqual(shape(r.events), [{ type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' }, { type: 'execution_complete' }]);
  const id = r.events[0].text;
  let cursor = 0; let content = ''; let running = true; let polls = 0;
  while (running && polls++ < 400) {
    const st = await json(A.port, 'GET', `/command/status/${id}`);
    running = st.json.running;
    const l = await request(A.port, 'GET', `/command/${id}/logs?cursor=${cursor}`);
    assert.equal(l.status, 200);
    assert.equal(l.headers['content-type'], 'text/plain; charset=utf-8');
    const next = Number(l.headers['execd-commands-tail-cursor']);
    assert.equal(next, cursor + l.body.length);
    content += l.body.toString();
    cursor = next;
    if (running) await sleep(50);
  }
  assert.equal(running, false);
  const tail = await request(A.port, 'GET', `/command/${id}/logs?cursor=${cursor}`);
  content += tail.body.toString();
  assert.equal(content, 'line1\nline2\nline3\ne\n');
  const all = await request(A.port, 'GET', `/command/${id}/logs`);
  assert.equal(all.body.toString(), content);
  const past = await request(A.port, 'GET', `/command/${id}/logs?cursor=9999`);
  assert.equal(past.body.length, 0);
  assert.equal(past.headers['execd-commands-tail-cursor'], '9999');
  const neg = await json(A.port, 'GET', `/command/${id}/logs?cursor=-1`);
  assert.equal(neg.status, 400);
  const st = await json(A.port, 'GET', `/command/status/${id}`);
  assert.equal(st.json.exit_code, 0);
  assert.equal(st.json.error, undefined);
  const unknown = await json(A.port, 'GET', '/command/0123456789abcdef0123456789abcdef/logs');
  assert.equal(unknown.status, 400);
  assert.deepEqual(unknown.json, { code: 'INVALID_REQUEST_BODY', message: 'command not found: 0123456789abcdef0123456789abcdef' });
  const fg = await run(A.port, { command: 'true' });
  const fgl = await json(A.port, 'GET', `/command/${fg.events[0].text}/logs`);
  assert.equal(fgl.status, 400);
  assert.deepEqual(fgl.json, { code: 'INVALID_REQUEST_BODY', message: `command ${fg.events[0].text} is not running in background` });
  const nf = await json(A.port, 'GET', '/command/status/0123456789abcdef0123456789abcdef');
  assert.equal(nf.status, 404);
  assert.deepEqual(nf.json, { code: 'INVALID_REQUEST_BODY', message: 'command not found: 0123456789abcdef0123456789abcdef' });
});

test('logs of a large background output in one response', async () => {
  const r = await run(A.port, { command: 'seq 1 300000', background: true });
  const id = r.events[0].text;
  for (let i = 0; i < 400 && (await json(A.port, 'GET', `/command/status/${id}`)).json.running; i++) await sleep(25);
  const l = await request(A.port, 'GET', `/command/${id}/logs`);
  const want = Array.from({ length: 300000 }, (_, i) => `${i + 1}\n`).join('');
  assert.equal(l.body.length, want.length);
  assert.equal(l.body.toString(), want);
  assert.equal(l.headers['execd-commands-tail-cursor'], String(want.length));
});

test('a running command status has no exit_code / finished_at', async () => {
  const r = await run(A.port, { command: 'sleep 30', background: true });
  const id = r.events[0].text;
  const st = await json(A.port, 'GET', `/command/status/${id}`);
  assert.deepEqual(Object.keys(st.json), ['id', 'content', 'running', 'started_at']);
  assert.equal(st.json.running, true);
  assert.equal((await request(A.port, 'DELETE', `/command?id=${id}`)).status, 200);
  const after = await json(A.port, 'GET', `/command/status/${id}`);
  assert.equal(after.json.running, false);
  assert.equal(after.json.exit_code, -1);
});

test('concurrent commands: no crosstalk', async () => {
  const N = 12;
  const rs = await Promise.all(Array.from({ length: N }, (_, k) =>
    run(A.port, { command: `for i in $(seq 1 300); do echo c${k}-$i; echo e${k}-$i >&2; done` })));
  rs.forEach((r, k) => {
    const out = r.events.filter((e) => e.type === 'stdout').map((e) => e.text);
    const err = r.events.filter((e) => e.type === 'stderr').map((e) => e.text);
    assert.deepEqual(out, Array.from({ length: 300 }, (_, i) => `c${k}-${i + 1}`));
    assert.deepEqual(err, Array.from({ length: 300 }, (_, i) => `e${k}-${i + 1}`));
    assert.equal(r.events.at(-1).type, 'execution_complete');
  });
  assert.equal(new Set(rs.map((r) => r.events[0].text)).size, N);
});

test('access token: 401 shape, then accepted', async () => {
  const r = await request(B.port, 'GET', '/ping');
  assert.equal(r.status, 401);
  assert.equal(r.body.toString(), '{"error":"Unauthorized: invalid or missing header X-EXECD-ACCESS-TOKEN"}');
  const w = await request(B.port, 'GET', '/ping', undefined, { 'x-execd-access-token': 'wrong' });
  assert.equal(w.status, 401);
  const ok = await request(B.port, 'GET', '/ping', undefined, { 'x-execd-access-token': 'sekret' });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers['content-length'], '0');
});

test('sessions keep env and cwd; errors', async () => {
  const c = await json(A.port, 'POST', '/session', '');
  assert.equal(c.status, 200);
  assert.deepEqual(Object.keys(c.json), ['session_id']);
  const sid = c.json.session_id;
  assert.match(sid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  const dir = fs.mkdtempSync(path.join(TMP, 'sess-'));
  const r1 = await request(A.port, 'POST', `/session/${sid}/run`, { command: `export FOO=bar; cd ${dir}` });
  assert.equal(r1.status, 200);
  assert.equal(r1.headers['content-type'], 'text/event-stream');
  const e1 = parseEvents(r1.body);
  assert.deepEqual(shape(e1), [{ type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' }, { type: 'execution_complete' }]);
  assert.equal(e1[0].text, sid);
  const r2 = parseEvents((await request(A.port, 'POST', `/session/${sid}/run`, { command: 'echo $FOO; pwd; echo oops >&2; exit 4' })).body);
  assert.deepEqual(shape(noPings(r2)), [{ type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' },
    { type: 'stdout', text: 'bar' }, { type: 'stdout', text: dir }, { type: 'stdout', text: 'oops' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: '4', traceback: ['exit status 4'] } }]);
  const d = await request(A.port, 'DELETE', `/session/${sid}`);
  assert.equal(d.status, 200);
  assert.equal(d.headers['content-length'], '0');
  const d2 = await json(A.port, 'DELETE', `/session/${sid}`);
  assert.equal(d2.status, 404);
  assert.deepEqual(d2.json, { code: 'CONTEXT_NOT_FOUND', message: `session ${sid} not found` });
  const gone = await json(A.port, 'POST', `/session/${sid}/run`, { command: 'true' });
  assert.equal(gone.status, 500);
  assert.deepEqual(gone.json, { code: 'RUNTIME_ERROR', message: 'context not found' });
  const c2 = await json(A.port, 'POST', '/session', { cwd: path.join(TMP, 'newdir', 'x') });
  assert.equal(c2.status, 200);
  assert.ok(fs.statSync(path.join(TMP, 'newdir', 'x')).isDirectory());
  const pw = parseEvents((await request(A.port, 'POST', `/session/${c2.json.session_id}/run`, { command: 'pwd' })).body);
  assert.equal(pw.find((e) => e.type === 'stdout').text, path.join(TMP, 'newdir', 'x'));
});

test('metrics shape and watch stream', async () => {
  const r = await request(A.port, 'GET', '/metrics');
  assert.equal(r.status, 200);
  const m = JSON.parse(r.body.toString());
  assert.deepEqual(Object.keys(m), ['cpu_count', 'cpu_used_pct', 'mem_total_mib', 'mem_used_mib', 'timestamp']);
  assert.ok(m.cpu_count >= 1 && m.cpu_used_pct >= 0 && m.cpu_used_pct <= 100);
  assert.ok(m.mem_total_mib > 0 && m.mem_used_mib > 0 && m.mem_used_mib <= m.mem_total_mib);
  assert.ok(Number.isInteger(m.timestamp) && Math.abs(m.timestamp - Date.now()) < 60000);
  const lines = await withTimeout(new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: A.port, path: '/metrics/watch', agent }, (res) => {
      assert.equal(res.headers['content-type'], 'text/event-stream');
      let buf = '';
      res.on('data', (d) => {
        buf += d;
        const parts = buf.split('\n');
        if (parts.length >= 3) { req.destroy(); resolve(parts.slice(0, 2)); }
      });
    });
    req.on('error', (e) => { if (e.code !== 'ECONNRESET') reject(e); });
  }), 20000, 'metrics watch');
  for (const l of lines) assert.deepEqual(Object.keys(JSON.parse(l)), Object.keys(m));
});

test('Go-compatible escaping: <>&, invalid UTF-8, U+2028', async () => {
  const r = await run(A.port, { command: "printf 'a<b>&c\\xff\\xe2\\x80\\xa8\"\\\\\\t\\x01\\n'" });
  const raw = r.body.toString('latin1');
  assert.ok(raw.includes('"text":"a\\u003cb\\u003e\\u0026c\\ufffd\\u2028\\"\\\\\\t\\u0001"'), raw);  // \b \f short escapes (Go >= 1.22), DEL and 4-byte UTF-8 literal, overlong / surrogate /
  // truncated sequences one U+FFFD per byte (utf8.DecodeRune)
  const r2 = await run(A.port, { command: "printf '\\x08\\x0c\\x7f\\xf0\\x9f\\x98\\x80|\\xc0\\x80|\\xed\\xa0\\x80|\\xe2\\x82'" });
  const raw2 = r2.body;
  const want = Buffer.concat([Buffer.from('"text":"\\b\\f\x7f'), Buffer.from([0xf0, 0x9f, 0x98, 0x80]),
    Buffer.from('|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd"')]);
  assert.ok(raw2.includes(want), raw2.toString('latin1'));
});

test('raw extension reproduces exact bytes; OpenSandbox events unchanged', async () => {
  const cmd = "printf '\\x00\\xff\\r\\nno-newline'; printf 'E\\n' >&2";
  for (const [body, hdr] of [[{ command: cmd }, { 'x-sandgate-raw': '1' }], [{ command: cmd, sandgate: { raw: true } }, {}]]) {
    const r = await run(A.port, body, hdr);
    const rawEvs = r.events.filter((e) => e.type === 'sandgate.raw');
    const out = Buffer.concat(rawEvs.filter((e) => e.stream === 'stdout').map((e) => Buffer.from(e.data_b64, 'base64')));
    assert.deepEqual(out, Buffer.from([0, 0xff, 0x0d, 0x0a, ...Buffer.from('no-newline')]));
    const err = Buffer.concat(rawEvs.filter((e) => e.stream === 'stderr').map((e) => Buffer.from(e.data_b64, 'base64')));
    assert.equal(err.toString(), 'E\n');
    let off = { stdout: 0, stderr: 0 };
    for (const e of rawEvs) { assert.equal(e.offset, off[e.stream]); off[e.stream] += Buffer.from(e.data_b64, 'base64').length; }
    assert.deepEqual(rawEvs.map((e) => e.combined_offset).sort((a, b) => a - b)[0], 0);
    const std = r.events.filter((e) => e.type !== 'sandgate.raw');
    assert.deepEqual(shape(noPings(std)).filter((e) => e.type !== 'stderr'), [{ type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' },
      { type: 'stdout', text: '\u0000\ufffd' }, { type: 'stdout', text: 'no-newline' }, { type: 'execution_complete' }]);
  }
  const plain = await run(A.port, { command: cmd });
  assert.ok(!plain.events.some((e) => e.type === 'sandgate.raw'));
});

test('raw resume: GET /command/{id}/raw?offset=N', async () => {
  const r = await run(A.port, { command: "printf '\\x00\\x01abc\\xff'", background: true });
  const id = r.events[0].text;
  for (let i = 0; i < 400 && (await json(A.port, 'GET', `/command/status/${id}`)).json.running; i++) await sleep(25);
  const full = await request(A.port, 'GET', `/command/${id}/raw`);
  assert.equal(full.headers['content-type'], 'application/octet-stream');
  assert.deepEqual(full.body, Buffer.from([0, 1, 0x61, 0x62, 0x63, 0xff]));
  const part = await request(A.port, 'GET', `/command/${id}/raw?offset=3`);
  assert.deepEqual(part.body, Buffer.from([0x62, 0x63, 0xff]));
  assert.equal(part.headers['execd-commands-tail-cursor'], '6');
  assert.equal(part.headers['x-sandgate-running'], '0');
});

test('EXECD_ENVS file and request envs', async () => {
  const r = await run(A.port, { command: 'echo $FROM_FILE-$OVER', envs: { OVER: 'req' } });
  assert.equal(r.events.find((e) => e.type === 'stdout').text, 'file value-req');
});

test('client disconnect does not kill the command', async () => {
  const marker = path.join(TMP, 'survived');
  const body = JSON.stringify({ command: `echo go; sleep 0.5; echo yes > ${marker}` });
  const sock = net.connect({ port: A.port, host: '127.0.0.1' });
  let got = '';
  await withTimeout(new Promise((resolve) => {
    sock.on('data', (d) => { got += d; if (got.includes('"stdout"')) resolve(); });
    sock.write(`POST /command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  }), 20000, 'first stdout');
  sock.destroy();
  for (let i = 0; i < 400 && !fs.existsSync(marker); i++) await sleep(25);
  assert.equal(fs.readFileSync(marker, 'utf8'), 'yes\n');
  const id = /"text":"([0-9a-f]{32})"/.exec(got)[1];
  for (let i = 0; i < 400 && (await json(A.port, 'GET', `/command/status/${id}`)).json.running; i++) await sleep(25);
  assert.equal((await json(A.port, 'GET', `/command/status/${id}`)).json.exit_code, 0);
});

// A stalled client normally just holds the command (execd_backpressure.js); the bound is the
// last resort. Set below the 256 KiB high-water mark, it decides before any hold.
test('a stalled client is dropped past a max-stream-buffer below the high-water mark; the command finishes', async () => {
  const C = await startExecd('slow', ['--max-stream-buffer', '64K']);
  try {
    const SIZE = 64 << 20;
    const body = JSON.stringify({ command: `head -c ${SIZE} /dev/zero | tr '\\0' 'a'` });
    const sock = net.connect({ port: C.port, host: '127.0.0.1' });
    let got = Buffer.alloc(0); let closed = false; let paused = false;
    sock.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (!paused && got.includes('"text":"pong"')) { paused = true; sock.pause(); }
    });
    sock.on('close', () => { closed = true; });
    sock.on('error', () => {});
    sock.write(`POST /command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    for (let i = 0; i < 400 && !/"text":"[0-9a-f]{32}"/.test(got.toString('latin1')); i++) await sleep(25);
    const id = /"text":"([0-9a-f]{32})"/.exec(got.toString('latin1'))[1];
    let st;
    for (let i = 0; i < 1200; i++) { st = await json(C.port, 'GET', `/command/status/${id}`); if (!st.json.running) break; await sleep(50); }
    assert.equal(st.json.running, false);
    assert.equal(st.json.exit_code, 0);
    sock.resume();
    for (let i = 0; i < 400 && !closed; i++) await sleep(25);
    assert.ok(closed, `dropped connection closed (got ${got.length}) log: ${C.log()}`);
    assert.ok(got.length < SIZE / 4, `received ${got.length} bytes: the stream was not cut`);
    assert.ok(!got.includes('\r\n0\r\n\r\n'), 'a cut stream has no terminating chunk');
    assert.match(C.log(), /slow client dropped/);
  } finally {
    await stopExecd(C);
  }
});

test('pings keep coming every 3 s while a command runs', async () => {
  const r = await run(A.port, { command: 'sleep 4; echo end' });
  const types = r.events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 2), ['init', 'ping']);
  assert.ok(types.filter((t) => t === 'ping').length >= 2, types.join(','));
  assert.deepEqual(types.slice(-2), ['stdout', 'execution_complete']);
});

test('SIGTERM: streams in flight are cut after the grace, the agent exits 0', async () => {
  const D = await startExecd('term', ['--shutdown-grace', '1s']);
  const ended = new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: D.port, method: 'POST', path: '/command', agent,
      headers: { 'content-type': 'application/json' } }, (res) => {
      let got = '';
      res.on('data', (d) => { got += d; if (got.includes('"stdout"')) D.child.kill('SIGTERM'); });
      res.on('end', () => resolve('end'));
      res.on('error', () => resolve('error'));
      res.on('close', () => resolve('close'));
    });
    req.on('error', () => resolve('error'));
    req.end(JSON.stringify({ command: 'echo up; sleep 60' }));
  });
  await withTimeout(ended, 20000, 'stream cut by shutdown');
  const r = await withTimeout(D.exited, 20000, 'execd exit');
  assert.equal(r.code, 0, D.log());
  assert.doesNotMatch(D.log(), /AddressSanitizer|LeakSanitizer|runtime error/, D.log());
});

// A POST /command read incrementally: events as they arrive, `until` waits for one.
function liveRun(port, body) {
  const events = [];
  const done = new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/command', agent,
      headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, k)));
          buf = buf.slice(k + 2);
        }
      });
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
  const until = async (pred, what) => {
    for (let i = 0; i < 800 && !events.some(pred); i++) await sleep(25);
    assert.ok(events.some(pred), `no ${what} in ${JSON.stringify(events)}`);
  };
  return { events, done, until, id: () => events[0] && events[0].text };
}
const sigPost = (port, id, body) => json(port, 'POST', `/command/${id}/signal`, body);

test('signal extension: USR1 reaches a bash trap, SIGTERM ends the command', async () => {
  const r = liveRun(A.port, { command: "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done" });
  await r.until((e) => e.type === 'stdout' && e.text === 'ready', 'ready');
  const id = r.id();
  const s1 = await sigPost(A.port, id, { signal: 'USR1' });
  assert.equal(s1.status, 202, s1.body.toString());
  assert.match(s1.headers['content-type'], /^application\/json/);
  assert.deepEqual(s1.json, { id, signal: 10 });
  await r.until((e) => e.type === 'stdout' && e.text === 'got-usr1', 'trap output');
  const running = await json(A.port, 'GET', `/command/status/${id}`);
  assert.equal(running.json.running, true);
  assert.equal(running.json.signal, 10);
  const s2 = await sigPost(A.port, id, { signal: 'SIGTERM' });
  assert.equal(s2.status, 202);
  assert.deepEqual(s2.json, { id, signal: 15 });
  await withTimeout(r.done, 20000, 'stream end after SIGTERM');
  // The whole group got USR1: the untrapped `sleep` child died of it and bash said so.
  const errs = r.events.filter((e) => e.type === 'stderr');
  assert.ok(errs.every((e) => /User defined signal 1/.test(e.text)), JSON.stringify(errs));
  assert.deepEqual(shape(noPings(r.events.filter((e) => e.type !== 'stderr'))), [
    { type: 'init', text: '<id>' }, { type: 'ping', text: 'pong' },
    { type: 'stdout', text: 'ready' }, { type: 'stdout', text: 'got-usr1' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: '-1', traceback: ['signal: terminated'] } }]);
  const st = await json(A.port, 'GET', `/command/status/${id}`);
  assert.equal(st.json.running, false);
  assert.equal(st.json.exit_code, -1);
  assert.equal(st.json.error, 'signal: terminated');
  assert.equal(st.json.signal, 15);
  // Finished: 409, nothing sent.
  const again = await sigPost(A.port, id, { signal: 'TERM' });
  assert.equal(again.status, 409);
  assert.deepEqual(again.json, { code: 'COMMAND_NOT_RUNNING', message: `command ${id} is not running` });
});

test('signal extension: "term" ends a sleep; numbers; background commands', async () => {
  const r = liveRun(A.port, { command: 'echo start; sleep 30' });
  await r.until((e) => e.type === 'stdout', 'start');
  const s = await sigPost(A.port, r.id(), { signal: 'term' });
  assert.equal(s.status, 202);
  assert.equal(s.json.signal, 15);
  await withTimeout(r.done, 20000, 'stream end after term');
  assert.deepEqual(shape(noPings(r.events)).slice(2), [
    { type: 'stdout', text: 'start' },
    { type: 'error', error: { ename: 'CommandExecError', evalue: '-1', traceback: ['signal: terminated'] } }]);

  // A background command (its stream ended at once) by number; KILL gives "signal: killed".
  const bg = await run(A.port, { command: 'sleep 30', background: true });
  const id = bg.events[0].text;
  const k = await sigPost(A.port, id, { signal: 9 });
  assert.equal(k.status, 202);
  assert.deepEqual(k.json, { id, signal: 9 });
  let st;
  for (let i = 0; i < 800; i++) { st = await json(A.port, 'GET', `/command/status/${id}`); if (!st.json.running) break; await sleep(25); }
  assert.equal(st.json.running, false);
  assert.equal(st.json.exit_code, -1);
  assert.equal(st.json.error, 'signal: killed');
  assert.equal(st.json.signal, 9);
  // A command never signalled has no "signal" in its status (Go's shape).
  const plain = await run(A.port, { command: 'true' });
  const pst = await json(A.port, 'GET', `/command/status/${plain.events[0].text}`);
  assert.equal('signal' in pst.json, false);
});

test('signal extension: 400 / 404 / 405 errors', async () => {
  const r = await run(A.port, { command: 'sleep 30', background: true });
  const id = r.events[0].text;
  const bad = [
    [{ signal: 'FOO' }, 'invalid request, validation error unknown signal "FOO": want a name like "TERM" or "SIGTERM", or a number 1..64'],
    [{ signal: 0 }, 'invalid request, validation error signal 0 is not in 1..64'],
    [{ signal: 65 }, 'invalid request, validation error signal 65 is not in 1..64'],
    [{ signal: '65' }, null], [{ signal: 'SIG' }, null], [{ signal: '' }, null], [{ signal: 1.5 }, null],
    [{ signal: true }, 'invalid request, validation error signal must be a name or an integer, got boolean'],
    [{}, 'invalid request, validation error signal is required'],
    [{ signal: null }, 'invalid request, validation error signal is required'],
    ['[1]', null], ['{"signal":', null],
    ['', 'error parsing request, MAYBE invalid body format. EOF'],
  ];
  for (const [body, msg] of bad) {
    const e = await sigPost(A.port, id, body);
    assert.equal(e.status, 400, `${JSON.stringify(body)}: ${e.body}`);
    assert.equal(e.json.code, 'INVALID_REQUEST_BODY', JSON.stringify(body));
    if (msg) assert.equal(e.json.message, msg);
  }
  const st = await json(A.port, 'GET', `/command/status/${id}`);
  assert.equal(st.json.running, true, 'a rejected request sends nothing');
  assert.equal('signal' in st.json, false);
  const unknown = await sigPost(A.port, '0123456789abcdef0123456789abcdef', { signal: 'TERM' });
  assert.equal(unknown.status, 404);
  assert.deepEqual(unknown.json, { code: 'COMMAND_NOT_FOUND', message: 'command not found: 0123456789abcdef0123456789abcdef' });
  // The body is checked before the id.
  assert.equal((await sigPost(A.port, '0123456789abcdef0123456789abcdef', { signal: 'FOO' })).status, 400);
  const get = await json(A.port, 'GET', `/command/${id}/signal`);
  assert.equal(get.status, 405);
  assert.equal(get.json.code, 'NOT_SUPPORTED');
  assert.equal((await sigPost(A.port, 'not-an-id!', { signal: 'TERM' })).status, 404);
  assert.equal((await sigPost(A.port, id, { signal: 'KILL' })).status, 202);
});

test('unknown routes and methods', async () => {
  assert.equal((await request(A.port, 'GET', '/nope')).status, 404);
  assert.equal((await request(A.port, 'PUT', '/command')).status, 405);
});

(async () => {
  const envFile = path.join(TMP, 'envs');
  fs.writeFileSync(envFile, '# comment\nFROM_FILE=file value\r\nOVER=file\n\nnot a pair\n');
  A = await startExecd('a', [], { EXECD_ENVS: envFile });
  B = await startExecd('b', ['--access-token', 'sekret', '--shell', '/nonexistent/sh']);
  let failed = 0;
  const only = process.env.ONLY;
  for (const t of tests) {
    if (only && !t.name.includes(only)) continue;
    try {
      await withTimeout(t.fn(), 120000, t.name);
      console.log(`ok - ${t.name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL - ${t.name}\n${e.stack}`);
    }
  }
  try { await stopExecd(A); await stopExecd(B); } catch (e) { failed++; console.log(`FAIL - shutdown\n${e.stack}`); }
  fs.rmSync(TMP, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
})();
