#!/usr/bin/env node
// bench/merge-generators.js: one fan-out run measured by several `sandgate-bench fanout`
// processes (each holding a share of the subscribers of the same stream) -> one document of
// the same shape as a single generator's, so summaries and the report treat it alike.
//
//   node bench/merge-generators.js OUT IN1 IN2 ...
//
// Merged: counts summed; delivered events/s = all deliveries / the union of the generators'
// measured windows (CLOCK_MONOTONIC, same host); delivery latency percentiles from the merged
// histograms (each generator runs with --latency-buckets; the percentile rule is hist.c's:
// the sample of rank ceil(q * count), its bucket's middle clamped to [min, max]); bench CPU is
// the generators' CPU time summed over the union window (cores used by the load generation);
// server CPU is the largest of the generators' views of the server over that window (each
// samples the same server over its own window); server RSS peak the largest. The generators'
// own figures stay under `generators`. ok only if every generator's run was ok.
'use strict';
const fs = require('fs');

function percentile(buckets, count, minNs, maxNs, q) {
  if (!count) return null;
  if (q >= 1) return maxNs;
  const rank = Math.min(count, Math.max(1, Math.ceil(q * count)));
  let seen = 0;
  for (const [lo, hi, n] of buckets) {
    seen += n;
    if (seen >= rank) return Math.min(maxNs, Math.max(minNs, lo + Math.floor((hi - lo) / 2)));
  }
  return maxNs;
}

function merge(docs) {
  const d0 = docs[0];
  for (const d of docs) {
    if (!d.latency_ms || !d.latency_ms.delivery_buckets) throw new Error('a generator ran without --latency-buckets');
  }
  const sum = (f) => docs.reduce((a, d) => a + (f(d) || 0), 0);
  const start = Math.min(...docs.map((d) => d.throughput.window_start_ns));
  const end = Math.max(...docs.map((d) => d.throughput.window_end_ns));
  const windowS = (end - start) / 1e9;
  // histogram merge: buckets are the same fixed layout in every generator
  const byLow = new Map();
  for (const d of docs) for (const [lo, hi, n] of d.latency_ms.delivery_buckets.buckets) {
    const e = byLow.get(lo); if (e) e[2] += n; else byLow.set(lo, [lo, hi, n]);
  }
  const buckets = [...byLow.values()].sort((a, b) => a[0] - b[0]);
  const hs = docs.map((d) => d.latency_ms.delivery_buckets).filter((h) => h.count);
  const count = sum((d) => d.latency_ms.delivery_buckets.count);
  const minNs = hs.length ? Math.min(...hs.map((h) => h.min_ns)) : 0, maxNs = hs.length ? Math.max(...hs.map((h) => h.max_ns)) : 0;
  const ms = (q) => { const v = percentile(buckets, count, minNs, maxNs, q); return v === null ? null : v / 1e6; };
  const meanSum = sum((d) => (d.latency_ms.delivery.mean || 0) * d.latency_ms.delivery.count);
  const counts = {};
  for (const k of Object.keys(d0.counts)) counts[k] = sum((d) => d.counts[k]);
  const errors = { total: sum((d) => d.errors.total), drain_timeout: docs.some((d) => d.errors.drain_timeout),
    connect_timeout: docs.some((d) => d.errors.connect_timeout) };
  const serverTotal = Math.max(...docs.map((d) => (d.cpu.server && d.cpu.server.total_s) || 0));
  const benchTotal = sum((d) => d.cpu.bench.total_s);
  return {
    scenario: d0.scenario,
    generators_merged: docs.length,
    params: { ...d0.params, subscribers: sum((d) => d.params.subscribers), events: d0.params.events },
    ok: docs.every((d) => d.ok),
    counts, errors,
    throughput: { measured_s: windowS, window_start_ns: start, window_end_ns: end,
      deliveries_per_s: windowS > 0 ? counts.deliveries / windowS : 0 },
    latency_ms: {
      delivery: { count, min: minNs / 1e6, mean: count ? meanSum / count : null, p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), p99_9: ms(0.999), max: maxNs / 1e6 },
    },
    cpu: { bench: { total_s: benchTotal, util: windowS > 0 ? benchTotal / windowS : null, processes: docs.length },
      server: { total_s: serverTotal, util: windowS > 0 ? serverTotal / windowS : null } },
    memory: { server_rss_kb_max: Math.max(...docs.map((d) => d.memory.server_rss_kb_max || 0)) },
    generators: docs.map((d) => ({
      subscribers: d.params.subscribers, publishes: d.counts.events_published > 0,
      ok: d.ok, deliveries: d.counts.deliveries, deliveries_per_s: d.throughput.deliveries_per_s, measured_s: d.throughput.measured_s,
      delivery_ms: { p50: d.latency_ms.delivery.p50, p99: d.latency_ms.delivery.p99, max: d.latency_ms.delivery.max },
      bench_cpu_util: d.cpu.bench.util, server_cpu_util: d.cpu.server && d.cpu.server.util,
    })),
  };
}

if (require.main === module) {
  const [out, ...ins] = process.argv.slice(2);
  if (!out || ins.length < 1) { console.error('usage: merge-generators.js OUT IN1 IN2 ...'); process.exit(2); }
  const docs = ins.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')));
  fs.writeFileSync(out, JSON.stringify(merge(docs), null, 2) + '\n');
}
module.exports = { merge, percentile };
