// Integration tests for sandgate-execd's file API (opensandbox-protocol.md 2.11, 2.12): starts
// the real binary on a free loopback port and drives every /files and /directories endpoint
// with node:http, checking status codes, error codes/messages and JSON shapes (FileInfo key
// order, mode digits, RFC3339Nano times). Uploads use hand-built multipart bodies (the exact
// layout the JS SDK sends, and variants). No timing assertions; waits are safety bounds.
'use strict';
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const BIN = path.join(process.env.SG_BIN_DIR || 'build', 'sandgate-execd');
const TMP = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'sg-execd-files-')));
const ENV = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=4:detect_leaks=1', SG_FILES_TEST_HOME: TMP,
  EXECD_MAX_WALK_ENTRIES: '50' };

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}
function freePort() {
  return new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}

let PORT;
function req(method, p, { body, headers } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port: PORT, method, path: p, headers: headers || {}, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        let json;
        try { json = buf.length ? JSON.parse(buf.toString()) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: buf, text: buf.toString(), json });
      });
      res.on('error', reject);
    });
    r.on('error', reject);
    if (body !== undefined) r.write(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
    r.end();
  }), 30000, `${method} ${p}`);
}
const q = (s) => encodeURIComponent(s);
const F = (...p) => path.join(TMP, ...p);

function assertEmpty200(r, what) {
  assert.equal(r.status, 200, `${what}: ${r.status} ${r.text}`);
  assert.equal(r.headers['content-length'], '0', `${what}: empty 200 needs Content-Length: 0`);
  assert.equal(r.body.length, 0);
}
function assertErr(r, status, code, msgPart, what) {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text}`);
  assert.ok(r.json, `${what}: JSON error body expected, got ${r.text}`);
  assert.equal(r.json.code, code, `${what}: ${r.text}`);
  if (msgPart) assert.ok(String(r.json.message).includes(msgPart), `${what}: message ${r.json.message} lacks ${msgPart}`);
}
const RFC3339NANO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/;
function assertInfo(info, p, type) {
  assert.deepEqual(Object.keys(info), ['path', 'type', 'size', 'modified_at', 'created_at', 'owner', 'group', 'mode']);
  assert.equal(info.path, p);
  assert.equal(info.type, type);
  assert.match(info.modified_at, RFC3339NANO);
  assert.match(info.created_at, RFC3339NANO);
  assert.equal(typeof info.size, 'number');
  assert.equal(typeof info.owner, 'string');
  assert.equal(typeof info.group, 'string');
  assert.equal(typeof info.mode, 'number');
  const st = fs.lstatSync(p);
  assert.equal(info.size, st.size);
  assert.equal(info.mode, parseInt((st.mode & 0o777).toString(8), 10));
  assert.equal(new Date(info.modified_at).getTime(), Math.floor(st.mtimeMs));
}

// Multipart body builder: parts = [{name, filename?, type?, data}]
function multipart(parts, boundary = '----formdata-undici-070131299245') {
  const bufs = [];
  for (const p of parts) {
    let h = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) h += `; filename="${p.filename}"`;
    h += '\r\n';
    if (p.type) h += `Content-Type: ${p.type}\r\n`;
    bufs.push(Buffer.from(h + '\r\n'), Buffer.from(p.data), Buffer.from('\r\n'));
  }
  bufs.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(bufs), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}
function upload(parts) {
  const m = multipart(parts);
  return req('POST', '/files/upload', { body: m.body, headers: { ...m.headers, 'content-length': m.body.length } });
}
const meta = (o, filename = 'metadata') => ({ name: 'metadata', filename, type: 'application/json', data: JSON.stringify(o) });
const file = (data, filename = 'blob') => ({ name: 'file', filename, type: 'application/octet-stream', data });

async function main() {
  PORT = await freePort();
  const child = spawn(BIN, ['--listen', `127.0.0.1:${PORT}`, '--log-level', 'warn'], { env: ENV, cwd: TMP, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => child.on('exit', (code, sig) => res({ code, sig })));
  let up = false;
  for (let i = 0; i < 200 && !up; i++) {
    try { const r = await req('GET', '/files/info'); up = r.status === 200; } catch { await sleep(50); }
  }
  assert.ok(up, `execd did not start: ${log}`);

  // ---- setup
  fs.mkdirSync(F('tree/b/c'), { recursive: true });
  fs.mkdirSync(F('tree/a'), { recursive: true });
  fs.writeFileSync(F('tree/a/one.txt'), 'one');
  fs.writeFileSync(F('tree/b/two.txt'), 'two');
  fs.writeFileSync(F('tree/b/c/three.py'), 'print(3)');
  fs.writeFileSync(F('tree/top.md'), '# top');
  fs.symlinkSync('a', F('tree/zlink'));
  fs.chmodSync(F('tree/top.md'), 0o600);

  // ---- GET /files/info
  {
    let r = await req('GET', `/files/info?path=${q(F('tree/top.md'))}&path=${q(F('tree/a'))}&path=${q(F('tree/zlink'))}`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.json), [F('tree/top.md'), F('tree/a'), F('tree/zlink')]);
    assertInfo(r.json[F('tree/top.md')], F('tree/top.md'), 'file');
    assert.equal(r.json[F('tree/top.md')].mode, 600);
    assertInfo(r.json[F('tree/a')], F('tree/a'), 'directory');
    assertInfo(r.json[F('tree/zlink')], F('tree/zlink'), 'symlink');
    r = await req('GET', '/files/info');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, {});
    // Relative and $VAR / ~ paths: the key is as given, the path inside absolute.
    r = await req('GET', `/files/info?path=${q('tree/./a/../top.md')}&path=${q('$SG_FILES_TEST_HOME/tree')}&path=${q('${SG_FILES_TEST_HOME}/tree/a')}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json['tree/./a/../top.md'].path, F('tree/top.md'));
    assert.equal(r.json['$SG_FILES_TEST_HOME/tree'].path, F('tree'));
    assert.equal(r.json['${SG_FILES_TEST_HOME}/tree/a'].path, F('tree/a'));
    r = await req('GET', `/files/info?path=${q('~')}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json['~'].path, os.homedir());
    r = await req('GET', `/files/info?path=${q('$SG_NO_SUCH_VAR_X/a')}`);
    assertErr(r, 400, 'INVALID_REQUEST_BODY', 'SG_NO_SUCH_VAR_X', 'undefined var');
    r = await req('GET', `/files/info?path=${q(F('tree/top.md'))}&path=${q(F('nope'))}`);
    assertErr(r, 404, 'FILE_NOT_FOUND', `file not found. file not found: ${F('nope')}: lstat ${F('nope')}: no such file or directory`, 'info missing');
  }

  // ---- GET /directories/list
  {
    let r = await req('GET', `/directories/list?path=${q(F('tree'))}`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.map((i) => i.path), ['a', 'b', 'top.md', 'zlink'].map((n) => F('tree', n)));
    assert.deepEqual(r.json.map((i) => i.type), ['directory', 'directory', 'file', 'symlink']);
    r.json.forEach((i) => assertInfo(i, i.path, i.type));
    r = await req('GET', `/directories/list?path=${q(F('tree'))}&depth=3`);
    assert.deepEqual(r.json.map((i) => i.path), ['a', 'a/one.txt', 'b', 'b/c', 'b/c/three.py', 'b/two.txt', 'top.md', 'zlink'].map((n) => F('tree', n)));
    r = await req('GET', `/directories/list?path=${q(F('tree'))}&depth=2`);
    assert.deepEqual(r.json.map((i) => i.path), ['a', 'a/one.txt', 'b', 'b/c', 'b/two.txt', 'top.md', 'zlink'].map((n) => F('tree', n)));
    r = await req('GET', `/directories/list?path=${q(F('tree'))}&depth=0`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, []);
    assertErr(await req('GET', '/directories/list'), 400, 'MISSING_QUERY', null, 'list no path');
    assertErr(await req('GET', `/directories/list?path=${q(F('tree'))}&depth=-1`), 400, 'INVALID_REQUEST_BODY', null, 'depth -1');
    assertErr(await req('GET', `/directories/list?path=${q(F('tree'))}&depth=x`), 400, 'INVALID_REQUEST_BODY', null, 'depth x');
    assertErr(await req('GET', `/directories/list?path=${q(F('nope'))}`), 404, 'FILE_NOT_FOUND', null, 'list missing');
    assertErr(await req('GET', `/directories/list?path=${q(F('tree/zlink'))}`), 400, 'INVALID_REQUEST_BODY', 'path is a symbolic link, refusing to traverse', 'list symlink');
    assertErr(await req('GET', `/directories/list?path=${q(F('tree/top.md'))}`), 400, 'INVALID_REQUEST_BODY', 'not a directory', 'list file');
  }

  // ---- GET /files/search (reference 2.11.5 semantics)
  {
    const names = async (pattern) => {
      const r = await req('GET', `/files/search?path=${q(F('tree'))}${pattern === undefined ? '' : `&pattern=${q(pattern)}`}`);
      assert.equal(r.status, 200, `${pattern}: ${r.text}`);
      r.json.forEach((i) => assertInfo(i, i.path, i.type));
      return r.json.map((i) => path.relative(F('tree'), i.path));
    };
    const all = ['a/one.txt', 'b/c/three.py', 'b/two.txt', 'top.md', 'zlink']; // lexical walk, no dirs, symlink kept
    assert.deepEqual(await names(undefined), all);
    assert.deepEqual(await names('**'), all);
    assert.deepEqual(await names('*.txt'), ['a/one.txt', 'b/two.txt']);
    assert.deepEqual(await names('**/*.txt'), ['a/one.txt', 'b/two.txt']);
    assert.deepEqual(await names('*.{py,md}'), ['b/c/three.py', 'top.md']);
    assert.deepEqual(await names('t??.*'), ['b/two.txt', 'top.md']);
    assert.deepEqual(await names('[ot]*'), ['a/one.txt', 'b/c/three.py', 'b/two.txt', 'top.md']);
    assert.deepEqual(await names('src/*.py'), []);
    assert.deepEqual(await names('b/*.txt'), []); // base names only
    assert.deepEqual(await names('zlink'), ['zlink']); // symlinks not followed, still listed
    let r = await req('GET', `/files/search?path=${q(F('tree'))}&pattern=${q('[')}`);
    assertErr(r, 500, 'RUNTIME_ERROR', 'syntax error in pattern', 'bad pattern');
    assertErr(await req('GET', '/files/search?pattern=x'), 400, 'MISSING_QUERY', null, 'search no path');
    assertErr(await req('GET', `/files/search?path=${q(F('nope'))}`), 404, 'FILE_NOT_FOUND', null, 'search missing');
    // Bound: EXECD_MAX_WALK_ENTRIES=50 in this test's environment.
    fs.mkdirSync(F('many'));
    for (let i = 0; i < 60; i++) fs.writeFileSync(F('many', `f${i}`), '');
    r = await req('GET', `/files/search?path=${q(F('many'))}`);
    assertErr(r, 500, 'RUNTIME_ERROR', 'too many entries', 'search bound');
    r = await req('GET', `/directories/list?path=${q(F('many'))}`);
    assertErr(r, 500, 'RUNTIME_ERROR', 'too many entries', 'list bound');
    fs.rmSync(F('many'), { recursive: true });
  }

  // ---- POST /files/replace
  {
    fs.writeFileSync(F('rep.txt'), 'aXbXcXX');
    fs.chmodSync(F('rep.txt'), 0o640);
    let r = await req('POST', '/files/replace', { body: { [F('rep.txt')]: { old: 'X', new: '--' } } });
    assertEmpty200(r, 'replace');
    assert.equal(fs.readFileSync(F('rep.txt'), 'utf8'), 'a--b--c----');
    assert.equal(fs.statSync(F('rep.txt')).mode & 0o777, 0o640);
    r = await req('POST', '/files/replace?verbose=true', { body: { [F('rep.txt')]: { old: '--', new: '' } } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { [F('rep.txt')]: { replacedCount: 4 } });
    assert.equal(fs.readFileSync(F('rep.txt'), 'utf8'), 'abc');
    // A match spanning the 64 KiB read window.
    const big = Buffer.alloc(200000, 'a');
    big.write('NEEDLE', 65533);
    big.write('NEEDLE', 131070);
    fs.writeFileSync(F('rep2.txt'), big);
    r = await req('POST', '/files/replace?verbose=true', { body: { [F('rep2.txt')]: { old: 'NEEDLE', new: 'n' } } });
    assert.deepEqual(r.json, { [F('rep2.txt')]: { replacedCount: 2 } });
    assert.equal(fs.readFileSync(F('rep2.txt')).length, 200000 - 10);
    assertErr(await req('POST', '/files/replace', { body: { [F('rep.txt')]: { old: '', new: 'x' } } }), 400, 'INVALID_REQUEST_BODY', 'old content must not be empty', 'replace empty old');
    assertErr(await req('POST', '/files/replace', { body: { [F('nope')]: { old: 'a', new: 'x' } } }), 404, 'FILE_NOT_FOUND', null, 'replace missing');
    assertErr(await req('POST', '/files/replace', { body: '{nope' }), 400, 'INVALID_REQUEST_BODY', 'invalid JSON', 'replace bad json');
    assertErr(await req('POST', '/files/replace', { body: [] }), 400, 'INVALID_REQUEST_BODY', 'object', 'replace array');
  }

  // ---- POST /files/permissions
  {
    fs.writeFileSync(F('perm.txt'), 'x');
    const me = os.userInfo();
    let r = await req('POST', '/files/permissions', { body: { [F('perm.txt')]: { mode: 751, owner: me.username } } });
    assertEmpty200(r, 'permissions');
    assert.equal(fs.statSync(F('perm.txt')).mode & 0o777, 0o751);
    r = await req('POST', '/files/permissions', { body: { [F('perm.txt')]: { owner: 'no-such-user-sg', group: 'no-such-group-sg' } } });
    assertEmpty200(r, 'permissions unknown names are ignored');
    assert.equal(fs.statSync(F('perm.txt')).mode & 0o777, 0o751); // mode absent: unchanged
    assert.equal(fs.statSync(F('perm.txt')).uid, process.getuid());
    assertErr(await req('POST', '/files/permissions', { body: { [F('perm.txt')]: { mode: 789 } } }), 400, 'INVALID_REQUEST_BODY', 'invalid mode', 'bad mode');
    assertErr(await req('POST', '/files/permissions', { body: { [F('nope')]: { mode: 644 } } }), 500, 'RUNTIME_ERROR', 'no such file or directory', 'permissions missing');
  }

  // ---- POST /files/mv
  {
    fs.writeFileSync(F('mv-src.txt'), 'move me');
    let r = await req('POST', '/files/mv', { body: [{ src: F('mv-src.txt'), dest: F('mvdir/deep/moved.txt') }] });
    assertEmpty200(r, 'mv');
    assert.equal(fs.readFileSync(F('mvdir/deep/moved.txt'), 'utf8'), 'move me');
    assert.ok(!fs.existsSync(F('mv-src.txt')));
    assertErr(await req('POST', '/files/mv', { body: [{ src: F('nope'), dest: F('x') }] }), 404, 'FILE_NOT_FOUND', null, 'mv missing');
    fs.writeFileSync(F('mv2.txt'), 'b');
    assertErr(await req('POST', '/files/mv', { body: [{ src: F('mv2.txt'), dest: F('mvdir/deep/moved.txt') }] }), 500, 'RUNTIME_ERROR', 'destination path already exists', 'mv exists');
    assertErr(await req('POST', '/files/mv', { body: {} }), 400, 'INVALID_REQUEST_BODY', null, 'mv object');
  }

  // ---- DELETE /files
  {
    fs.writeFileSync(F('del1'), '1');
    fs.writeFileSync(F('del2'), '2');
    assertEmpty200(await req('DELETE', `/files?path=${q(F('del1'))}&path=${q(F('del2'))}&path=${q(F('never-there'))}`), 'delete');
    assert.ok(!fs.existsSync(F('del1')) && !fs.existsSync(F('del2')));
    assertErr(await req('DELETE', `/files?path=${q(F('tree'))}`), 500, 'RUNTIME_ERROR', `error removing file ${F('tree')}. path is a directory: ${F('tree')}`, 'delete dir');
  }

  // ---- POST /directories, DELETE /directories
  {
    let r = await req('POST', '/directories', { body: { [F('nd/x/y')]: { mode: 700 }, [F('nd/z')]: { mode: 755 } } });
    assertEmpty200(r, 'mkdir');
    assert.equal(fs.statSync(F('nd/x/y')).mode & 0o777, 0o700);
    assert.equal(fs.statSync(F('nd/z')).mode & 0o777, 0o755);
    fs.writeFileSync(F('nd/x/y/f'), 'f');
    fs.symlinkSync(F('tree'), F('nd/x/lnk')); // rm -rf must not follow it
    assertEmpty200(await req('DELETE', `/directories?path=${q(F('nd'))}&path=${q(F('never-there'))}`), 'rmdir');
    assert.ok(!fs.existsSync(F('nd')));
    assert.ok(fs.existsSync(F('tree/top.md')));
    fs.writeFileSync(F('blocker'), 'x');
    r = await req('POST', '/directories', { body: { [F('blocker/sub')]: { mode: 755 } } });
    assertErr(r, 500, 'RUNTIME_ERROR', null, 'mkdir under a file');
  }

  // ---- POST /files/upload
  {
    // The exact JS SDK layout (metadata first, filename= on both).
    let r = await upload([meta({ path: F('up/hello.txt'), mode: 644 }), file('hello world\n', 'hello.txt')]);
    assertEmpty200(r, 'upload');
    assert.equal(fs.readFileSync(F('up/hello.txt'), 'utf8'), 'hello world\n');
    assert.equal(fs.statSync(F('up/hello.txt')).mode & 0o777, 0o644);
    // metadata without filename= (Go refuses it; we accept), several pairs, mode 600.
    r = await upload([meta({ path: F('up/a.bin'), mode: 600 }, undefined), file(Buffer.from([0, 1, 2, 255])),
      meta({ path: F('up/sub/b.txt') }, undefined), file('bee', undefined)]);
    assertEmpty200(r, 'upload without filename');
    assert.deepEqual(fs.readFileSync(F('up/a.bin')), Buffer.from([0, 1, 2, 255]));
    assert.equal(fs.statSync(F('up/a.bin')).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(F('up/sub/b.txt'), 'utf8'), 'bee');
    // Overwrite keeps an existing file's mode when metadata has none.
    fs.chmodSync(F('up/sub/b.txt'), 0o604);
    assertEmpty200(await upload([meta({ path: F('up/sub/b.txt') }), file('new content')]), 'overwrite');
    assert.equal(fs.readFileSync(F('up/sub/b.txt'), 'utf8'), 'new content');
    assert.equal(fs.statSync(F('up/sub/b.txt')).mode & 0o777, 0o604);
    // An empty file and a payload containing a near-delimiter.
    assertEmpty200(await upload([meta({ path: F('up/empty') }), file('')]), 'empty file');
    assert.equal(fs.readFileSync(F('up/empty')).length, 0);
    const tricky = '\r\n----formdata-undici-07013129924\r\n--x';
    assertEmpty200(await upload([meta({ path: F('up/tricky') }), file(tricky)]), 'tricky');
    assert.equal(fs.readFileSync(F('up/tricky'), 'utf8'), tricky);
    // Errors.
    assertErr(await upload([meta({ path: F('up/m1') }), file('1'), meta({ path: F('up/m2') })]), 400, 'INVALID_FILE', 'metadata and file count mismatch: 2 vs 1', 'count mismatch');
    assert.ok(!fs.existsSync(F('up/m1')), 'nothing written on a count mismatch');
    assertErr(await upload([file('x'), meta({ path: F('up/late') })]), 400, 'INVALID_FILE_METADATA', 'metadata', 'file before metadata');
    assertErr(await upload([{ name: 'other', data: 'x' }]), 400, 'INVALID_FILE_METADATA', 'metadata file is missing', 'no metadata');
    assertErr(await upload([meta({ path: F('up/nofile') })]), 400, 'INVALID_FILE_CONTENT', 'file is missing', 'no file');
    assertErr(await upload([]), 400, 'INVALID_FILE', 'multipart form is empty', 'empty form');
    assertErr(await upload([meta({ path: '' }), file('x')]), 400, 'INVALID_FILE_METADATA', 'metadata path is empty', 'empty path');
    assertErr(await upload([{ name: 'metadata', filename: 'metadata', data: '{bad' }, file('x')]), 400, 'INVALID_FILE_METADATA', null, 'bad metadata json');
    r = await req('POST', '/files/upload', { body: 'x', headers: { 'content-type': 'text/plain' } });
    assertErr(r, 400, 'INVALID_FILE', null, 'not multipart');
    const m = multipart([meta({ path: F('up/trunc') }), file('abc')]);
    r = await req('POST', '/files/upload', { body: m.body.subarray(0, m.body.length - 10), headers: { ...m.headers } }); // chunked, cut short
    assertErr(r, 400, 'INVALID_FILE', null, 'truncated form');
    assert.ok(!fs.existsSync(F('up/trunc')));
    // A client that vanishes mid-upload: the temp file is removed, the target never appears.
    {
      const m = multipart([meta({ path: F('up/aborted.bin') }), file(Buffer.alloc(4 * 1024 * 1024, 3))]);
      await withTimeout(new Promise((resolve) => {
        const r = http.request({ host: '127.0.0.1', port: PORT, method: 'POST', path: '/files/upload', agent: false,
          headers: { ...m.headers, 'content-length': m.body.length } });
        r.on('error', () => resolve());
        r.write(m.body.subarray(0, 2 * 1024 * 1024), () => setTimeout(() => { r.destroy(); resolve(); }, 200));
      }), 10000, 'aborted upload');
      let left = true;
      for (let i = 0; i < 200 && left; i++) {
        left = fs.readdirSync(F('up')).some((n) => n.includes('aborted'));
        if (left) await sleep(50);
      }
      assert.ok(!left, `aborted upload left ${fs.readdirSync(F('up'))}`);
    }
    // Concurrent uploads, written interleaved.
    {
      const a = Buffer.alloc(3 * 1024 * 1024, 'a'), b = Buffer.alloc(3 * 1024 * 1024, 'b');
      const rs = await Promise.all([upload([meta({ path: F('up/ca') }), file(a)]), upload([meta({ path: F('up/cb') }), file(b)])]);
      rs.forEach((r) => assertEmpty200(r, 'concurrent upload'));
      assert.ok(fs.readFileSync(F('up/ca')).equals(a));
      assert.ok(fs.readFileSync(F('up/cb')).equals(b));
    }
    // Chunked body (the SDK's stream path), relative path against execd's cwd (TMP), ~ expanded.
    {
      const m = multipart([meta({ path: 'up/rel.txt' }), file('relative')], 'opensandbox_abc_1700000000000');
      const r = await req('POST', '/files/upload', { body: m.body, headers: m.headers });
      assertEmpty200(r, 'chunked relative upload');
      assert.equal(fs.readFileSync(F('up/rel.txt'), 'utf8'), 'relative');
    }
    // The body dribbled in tiny TCP segments (1..97 bytes, no Nagle), so delimiters and part
    // headers are split across body pieces while the parser pauses for each disk write.
    {
      const content = Buffer.alloc(20000);
      for (let i = 0; i < content.length; i++) content[i] = (i * 31 + 7) & 0xff;
      content.write('\r\n----formdata-undici-070131299245', 5000, 'latin1'); // a prefix of the delimiter
      const m = multipart([meta({ path: F('up/dribble1') }), file(content), meta({ path: F('up/dribble2'), mode: 640 }, undefined), file('second')]);
      const reply = await withTimeout(new Promise((resolve, reject) => {
        const sock = net.connect(PORT, '127.0.0.1');
        sock.setNoDelay(true);
        let got = '';
        sock.on('data', (d) => { got += d; if (/\r\n\r\n/.test(got)) { sock.end(); } });
        sock.on('close', () => resolve(got));
        sock.on('error', reject);
        sock.on('connect', async () => {
          sock.write(`POST /files/upload HTTP/1.1\r\nHost: x\r\nContent-Type: ${m.headers['content-type']}\r\nContent-Length: ${m.body.length}\r\n\r\n`);
          let seed = 12345;
          for (let off = 0; off < m.body.length;) {
            seed = (seed * 1103515245 + 12345) & 0x7fffffff;
            const n = Math.min(1 + (seed % 97), m.body.length - off);
            await new Promise((r) => sock.write(m.body.subarray(off, off + n), r));
            await new Promise((r) => setImmediate(r));
            off += n;
          }
        });
      }), 60000, 'dribbled upload');
      assert.match(reply, /^HTTP\/1.1 200 /, reply);
      assert.ok(fs.readFileSync(F('up/dribble1')).equals(content));
      assert.equal(fs.readFileSync(F('up/dribble2'), 'utf8'), 'second');
      assert.equal(fs.statSync(F('up/dribble2')).mode & 0o777, 0o640);
    }
    // No temp files left behind by any of the above.
    const leftovers = [];
    const scan = (d) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => {
      if (e.isDirectory()) scan(path.join(d, e.name)); else if (e.name.includes('.sgupload.')) leftovers.push(e.name);
    });
    scan(F('up'));
    assert.deepEqual(leftovers, []);
  }

  // ---- GET /files/download
  {
    const data = Buffer.alloc(300000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    fs.writeFileSync(F('dl.bin'), data);
    let r = await req('GET', `/files/download?path=${q(F('dl.bin'))}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, data);
    assert.equal(r.headers['content-length'], String(data.length));
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    assert.equal(r.headers['content-disposition'], 'attachment; filename="dl.bin"');
    assert.equal(r.headers['accept-ranges'], 'bytes');
    assert.ok(r.headers['last-modified']);
    const range = async (h, status, start, end) => {
      const rr = await req('GET', `/files/download?path=${q(F('dl.bin'))}`, { headers: { Range: h } });
      assert.equal(rr.status, status, `${h}: ${rr.status} ${rr.text.slice(0, 100)}`);
      if (status === 206) {
        assert.equal(rr.headers['content-range'], `bytes ${start}-${end}/${data.length}`, h);
        assert.equal(rr.headers['content-length'], String(end - start + 1), h);
        assert.deepEqual(rr.body, data.subarray(start, end + 1), h);
      }
      return rr;
    };
    await range('bytes=0-0', 206, 0, 0);
    await range('bytes=10-99', 206, 10, 99);
    await range('bytes=299990-', 206, 299990, 299999);
    await range('bytes=-5', 206, 299995, 299999);
    await range('bytes=-999999', 206, 0, 299999);
    await range('bytes=100-9999999', 206, 100, 299999);
    await range('bytes=5-9, 20-30', 206, 5, 9); // a list: the first range is served
    r = await range('bytes=300000-', 416);
    assert.equal(r.headers['content-range'], 'bytes */300000');
    r = await range('bytes=9-3', 416);
    assert.deepEqual(r.json, { code: 'UNKNOWN' });
    r = await range('bytes=abc', 416);
    assert.deepEqual(r.json, { code: 'UNKNOWN' });
    r = await range('items=0-1', 416);
    assert.deepEqual(r.json, { code: 'UNKNOWN' });
    assertErr(await req('GET', '/files/download'), 400, 'MISSING_QUERY', null, 'download no path');
    assertErr(await req('GET', `/files/download?path=${q(F('nope'))}`), 404, 'FILE_NOT_FOUND', null, 'download missing');
    // Non-ASCII names.
    fs.writeFileSync(F('é x.txt'), 'e');
    r = await req('GET', `/files/download?path=${q(F('é x.txt'))}`);
    assert.equal(r.headers['content-disposition'], `attachment; filename="%C3%A9%20x.txt"; filename*=UTF-8''%C3%A9%20x.txt`);
    // Empty file.
    fs.writeFileSync(F('empty.bin'), '');
    r = await req('GET', `/files/download?path=${q(F('empty.bin'))}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], '0');
    // Line mode.
    fs.writeFileSync(F('lines.txt'), 'l1\r\nl2\n\nl4\nl5\n');
    const lines = async (qs) => {
      const rr = await req('GET', `/files/download?path=${q(F('lines.txt'))}${qs}`);
      assert.equal(rr.status, 200, `${qs}: ${rr.text}`);
      assert.equal(rr.headers['content-type'], 'text/plain; charset=utf-8');
      return rr.text;
    };
    assert.equal(await lines('&offset=1&limit=2'), 'l1\nl2');
    assert.equal(await lines('&offset=2&limit=3'), 'l2\n\nl4');
    assert.equal(await lines('&offset=4'), 'l4\nl5');
    assert.equal(await lines('&limit=100'), 'l1\nl2\n\nl4\nl5');
    assert.equal(await lines('&offset=9&limit=1'), '');
    assertErr(await req('GET', `/files/download?path=${q(F('lines.txt'))}&offset=0`), 400, 'INVALID_REQUEST_BODY', null, 'offset 0');
    assertErr(await req('GET', `/files/download?path=${q(F('lines.txt'))}&limit=x`), 400, 'INVALID_REQUEST_BODY', null, 'limit x');
    assertErr(await req('GET', `/files/download?path=${q(F('lines.txt'))}&limit=1`, { headers: { Range: 'bytes=0-1' } }), 400, 'INVALID_REQUEST_BODY', null, 'lines + range');
    // A client that goes away mid-download does not hurt the server.
    const big = Buffer.alloc(8 * 1024 * 1024, 1);
    fs.writeFileSync(F('big.bin'), big);
    await withTimeout(new Promise((res) => {
      const rq = http.get({ host: '127.0.0.1', port: PORT, path: `/files/download?path=${q(F('big.bin'))}`, agent: false }, (resp) => {
        resp.once('data', () => { rq.destroy(); res(); });
      });
      rq.on('error', () => {});
    }), 10000, 'abort download');
    r = await req('GET', `/files/download?path=${q(F('dl.bin'))}`);
    assert.deepEqual(r.body, data);
  }

  // ---- unknown routes / methods under /files
  assert.equal((await req('PUT', '/files/info')).status, 404);
  assert.equal((await req('GET', '/files/nothing')).status, 404);

  child.kill('SIGTERM');
  const ex = await withTimeout(exited, 20000, 'execd exit');
  assert.equal(ex.code, 0, `execd exit ${JSON.stringify(ex)}; log:\n${log}`);
  assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log), log);
  fs.rmSync(TMP, { recursive: true, force: true });
  console.log('ok - execd files');
}

main().catch((e) => { console.error(e); process.exit(1); });
