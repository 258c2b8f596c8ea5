#!/usr/bin/env node
// bench/plots.js: gnuplot PNGs (800x450) from bench/results/*.json into docs/img/. Called by
// bench/report.js (which embeds them in docs/benchmarks.md); runnable alone:
//   node bench/plots.js            -> writes the PNGs, prints one line per plot
// Each plot is skipped with a note, never an error, when its results file (or gnuplot) is
// missing. The data goes to gnuplot inline (datablocks), so nothing but the PNGs is written.
//   fanout-latency.png     p50 / p99 / max delivery latency vs subscribers, one panel per
//                          publish rate, sandgate and Nchan (fanout-sandgate.json)
//   fanout-throughput.png  delivered vs offered deliveries/s, both servers
//   fanout-size.png        delivered MB/s of event bodies vs event size, both servers
//   idle-memory.png        server RSS per idle subscriber vs subscribers, with the 2 KiB target
//   relay.png              relay MB/s by path (direct / nginx / gateway), bulk and seq (relay.json)
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const W = 800, H = 450;
const COLOR = { sandgate: '#1f6fb4', Nchan: '#d0452b' };

// fanout-N-R[-sS][-g2] -> {n, rate, size, g2}
function parseKey(k) {
  const m = /^fanout-(\d+)-(\d+)(?:-s(\d+))?(-g2)?$/.exec(k);
  return m ? { n: +m[1], rate: +m[2], size: m[3] ? +m[3] : null, g2: !!m[4] } : null;
}

function gnuplot(script) {
  const r = spawnSync('gnuplot', [], { input: script, encoding: 'utf8', timeout: 30000 });
  if (r.error) return r.error.code === 'ENOENT' ? 'gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)' : String(r.error);
  if (r.status !== 0) return `gnuplot failed: ${(r.stderr || '').trim().split('\n').slice(-2).join(' ')}`;
  return null;
}
const block = (name, rows) => `$${name} << EOD\n${rows.map((r) => r.join(' ')).join('\n')}\nEOD\n`;
const head = (file, title) =>
  `set terminal pngcairo size ${W},${H} font "sans,10"\nset output "${file}"\nset title "${title}"\nset grid\nset key top left\n`;
const num = (x) => (typeof x === 'number' && isFinite(x) ? x : NaN);

function plotFanout(fs2, dir) {
  const out = [];
  const N = fs2.summary.nchan || {}, S = fs2.summary.sandgate || {};
  const servers = [['sandgate', S], ['Nchan', N]];
  const plain = [...new Set([...Object.keys(N), ...Object.keys(S)])].map((k) => [k, parseKey(k)]).filter(([, p]) => p && !p.size && !p.g2);
  // latency vs subscribers, one panel per rate
  const rates = [...new Set(plain.map(([, p]) => p.rate))].sort((a, b) => a - b);
  if (rates.length) {
    const file = path.join(dir, 'fanout-latency.png');
    let sc = head(file, '') + 'unset title\n';
    for (const [name, T] of servers) {
      for (const rate of rates) {
        const rows = plain.filter(([k, p]) => p.rate === rate && T[k]).map(([k, p]) => [p.n, num(T[k].delivery_ms.p50), num(T[k].delivery_ms.p99), num(T[k].delivery_ms.max)]).sort((a, b) => a[0] - b[0]);
        sc += block(`${name}_${rate}`, rows.length ? rows : [[NaN, NaN, NaN, NaN]]);
      }
    }
    sc += `set multiplot layout 1,${rates.length} title "Fan-out delivery latency vs subscribers (p50 solid, p99 dashed, max dotted; log scales)"\n`;
    sc += 'set logscale xy\nset xlabel "subscribers"\nset ylabel "latency (ms)"\nset xtics (100, 1000, 10000, 100000)\nset offsets graph 0.1, graph 0.1, 0, 0\nset key top left font ",8"\n';
    rates.forEach((rate, i) => {
      sc += `set title "${rate.toLocaleString('en-US')} events/s"\n`;
      if (i) sc += 'unset ylabel\nunset key\n';
      const parts = [];
      for (const [name] of servers) {
        const c = COLOR[name];
        parts.push(`$${name}_${rate} using 1:2 with linespoints lc rgb "${c}" dt 1 pt 7 title "${name} p50"`);
        parts.push(`$${name}_${rate} using 1:3 with linespoints lc rgb "${c}" dt 2 pt 5 title "${name} p99"`);
        parts.push(`$${name}_${rate} using 1:4 with linespoints lc rgb "${c}" dt 3 pt 9 title "${name} max"`);
      }
      sc += 'plot ' + parts.join(', \\\n  ') + '\n';
    });
    sc += 'unset multiplot\n';
    out.push({ file, alt: 'fan-out latency percentiles vs subscribers', err: gnuplot(sc) });
  } else out.push({ file: 'fanout-latency.png', alt: 'fan-out latency', err: 'no fan-out runs in the results' });
  // delivered vs offered
  if (plain.length) {
    const file = path.join(dir, 'fanout-throughput.png');
    const subs = [...new Set(plain.map(([, p]) => p.n))].sort((a, b) => a - b);
    let sc = head(file, 'Fan-out: delivered vs offered deliveries/s (offered = subscribers x publish rate)');
    const parts = [];
    let all = [];
    for (const [name, T] of servers) for (const [i, n] of subs.entries()) {
      const rows = plain.filter(([k, p]) => p.n === n && T[k]).map(([k, p]) => [T[k].offered_deliveries_per_s, num(T[k].deliveries_per_s)]).sort((a, b) => a[0] - b[0]);
      if (!rows.length) continue;
      all = all.concat(rows);
      sc += block(`${name}_${n}`, rows);
      parts.push(`$${name}_${n} using 1:2 with linespoints lc rgb "${COLOR[name]}" dt ${i + 1} pt ${7 + 2 * i} ps 1.3 title "${name}, ${n.toLocaleString('en-US')} subscribers"`);
    }
    const lo = Math.min(...all.map((r) => r[0])) / 2, hi = Math.max(...all.map((r) => r[0])) * 2;
    sc += `set logscale xy\nset xrange [${lo}:${hi}]\nset yrange [${lo / 2}:${hi}]\nset xlabel "offered deliveries/s"\nset ylabel "delivered deliveries/s"\nset format x "%.0s%c"\nset format y "%.0s%c"\n`;
    parts.push('x with lines lc rgb "#999999" dt 4 title "delivered = offered"');
    sc += 'plot ' + parts.join(', \\\n  ') + '\n';
    out.push({ file, alt: 'fan-out delivered vs offered deliveries per second', err: gnuplot(sc) });
  }
  // throughput vs payload size
  const sizeCfg = (fs2.params && fs2.params.size_config) || null;
  const sized = [];
  if (sizeCfg) {
    const [n, rate] = sizeCfg.split('x').map(Number);
    for (const [name, T] of servers) {
      const rows = [];
      for (const [k, v] of Object.entries(T)) {
        const p = parseKey(k);
        if (!p || p.g2 || p.n !== n || p.rate !== rate) continue;
        const size = p.size || v.size;
        rows.push([size, num(v.deliveries_per_s) * size / 1e6, num(v.deliveries_per_s), v.ok_runs === v.rounds ? 1 : 0]);
      }
      sized.push([name, rows.sort((a, b) => a[0] - b[0])]);
    }
  }
  if (sized.some(([, rows]) => rows.length > 1)) {
    const file = path.join(dir, 'fanout-size.png');
    let sc = head(file, `Fan-out throughput vs event size (${sizeCfg.replace('x', ' subscribers x ')} events/s offered)`);
    const parts = [];
    for (const [name, rows] of sized) {
      if (!rows.length) continue;
      sc += block(`${name}_size`, rows);
      parts.push(`$${name}_size using 1:2 with linespoints lc rgb "${COLOR[name]}" pt 7 ps 1.3 title "${name}"`);
      parts.push(`$${name}_size using 1:($4 > 0.5 ? NaN : $2) with points lc rgb "black" pt 6 ps 2.5 notitle`);
    }
    sc += 'set logscale x 2\nset xlabel "event body size (bytes)"\nset ylabel "delivered MB/s of event bodies (10^6 B)"\nset yrange [0:*]\n';
    sc += 'set label 1 "circled: not every run was ok (see the table)" at graph 0.02, graph 0.72 font ",8"\n';
    sc += 'plot ' + parts.join(', \\\n  ') + '\n';
    out.push({ file, alt: 'fan-out throughput vs event size', err: gnuplot(sc) });
  } else out.push({ file: 'fanout-size.png', alt: 'fan-out throughput vs event size', err: 'no payload-size sweep in the results (fanout-sandgate.sh --sizes)' });
  // idle memory
  const idle = (T) => Object.entries(T).filter(([k]) => k.startsWith('idle-')).map(([, v]) => [v.subscribers, num(v.server_rss_bytes_per_subscriber)]).sort((a, b) => a[0] - b[0]);
  const iS = idle(S), iN = idle(N);
  if (iS.length || iN.length) {
    const file = path.join(dir, 'idle-memory.png');
    let sc = head(file, 'Server RSS per idle subscriber vs subscribers');
    const xs = [...iS, ...iN].map((r) => r[0]);
    sc += block('sg', iS.length ? iS : [[NaN, NaN]]) + block('nc', iN.length ? iN : [[NaN, NaN]]);
    sc += `set logscale x\nset xrange [${Math.min(...xs) / 2}:${Math.max(...xs) * 2}]\nset yrange [0:*]\nset xlabel "idle subscribers"\nset ylabel "bytes per subscriber"\nset key top right\n`;
    sc += `plot $sg using 1:2 with linespoints lc rgb "${COLOR.sandgate}" pt 7 ps 1.3 title "sandgate (gateway process)", \\\n  $nc using 1:2 with linespoints lc rgb "${COLOR.Nchan}" pt 5 ps 1.3 title "Nchan (nginx master + worker)", \\\n  2048 with lines lc rgb "#999999" dt 2 title "target: < 2 KiB (issue 6)"\n`;
    out.push({ file, alt: 'server memory per idle subscriber vs subscribers', err: gnuplot(sc) });
  } else out.push({ file: 'idle-memory.png', alt: 'idle memory', err: 'no idle runs in the results' });
  return out;
}

function plotRelay(rl, dir) {
  const file = path.join(dir, 'relay.png');
  const cmds = Object.keys(rl.summary);
  let sc = head(file, '') + 'unset title\n';
  sc += `set multiplot layout 1,${cmds.length} title "Relay throughput by path (one stream; 0 = the path delivered nothing)"\n`;
  sc += 'set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\nset boxwidth 0.8\nset yrange [0:*]\nset ylabel "MB/s of command output"\nunset key\nset grid ytics\nunset xtics\nset xtics nomirror\n';
  for (const c of cmds) {
    const s = rl.summary[c];
    const rows = ['direct', 'nginx', 'gateway'].map((p) => [`"${p}"`, s[p] && typeof s[p].MBps === 'number' ? s[p].MBps : 0]);
    sc += block(`r_${c}`, rows);
    const d = s.direct && s.direct.MBps;
    sc += `set title "${c}: ${s.command.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"\n`;
    sc += `plot $r_${c} using 2:xtic(1) lc rgb "${COLOR.sandgate}"${typeof d === 'number' ? `, ${0.9 * d} with lines lc rgb "#999999" dt 2 title "0.9x direct"` : ''}\n`;
  }
  sc += 'unset multiplot\n';
  return { file, alt: 'relay throughput by path, bulk and seq', err: gnuplot(sc) };
}

function makePlots(load, dir) {
  fs.mkdirSync(dir, { recursive: true });
  const plots = [];
  const fs2 = load('fanout-sandgate');
  if (fs2) plots.push(...plotFanout(fs2, dir));
  else for (const f of ['fanout-latency.png', 'fanout-throughput.png', 'fanout-size.png', 'idle-memory.png']) plots.push({ file: f, err: 'bench/results/fanout-sandgate.json is missing' });
  const rl = load('relay');
  plots.push(rl ? plotRelay(rl, dir) : { file: 'relay.png', err: 'bench/results/relay.json is missing' });
  return plots.map((p) => ({ ...p, name: path.basename(p.file) }));
}

module.exports = { makePlots, parseKey };

if (require.main === module) {
  const load = (name) => {
    const f = path.join(root, 'bench', 'results', name + '.json');
    return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : null;
  };
  for (const p of makePlots(load, path.join(root, 'docs', 'img'))) console.log(`${p.name}: ${p.err ? 'skipped: ' + p.err : 'written'}`);
}
