/**
 * npm run bench:aggregate: the aggregation engine against hand-written SQL on the same SQLite file.
 *
 *   BENCH_ROWS=1000000   opportunities to seed (BENCH_ROWS=100000 for a quick run)
 *
 * For each shape of the issue (SUM by status; COUNT and AVG by status x owner; COUNT_DISTINCT with a
 * filter; a monthly histogram over a year; a monthly histogram of created_at in a zone; a three-level tree) it times the service call (which runs
 * on the read pool, as the server does) and the plain SQL a person would write on raw better-sqlite3,
 * checks they agree, prints EXPLAIN QUERY PLAN, and reports the ratio (target <= 1.3x).
 * Then it measures how responsive the HTTP server stays while heavy aggregates run: latency of
 * GET /health and of a small list call, with the read pool and without it.
 */
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import Database from '../src/db/sqlite/driver.js';
import { aggregateGroups } from '../src/services/aggregate.js';
import { aggregateTree } from '../src/services/aggregate-tree.js';
import { seedWorkspace } from '../src/services/seed.js';
import { createToken } from '../src/services/users.js';
import { benchWorkspace } from './common.js';

const ROWS = Number(process.env.BENCH_ROWS ?? 1_000_000);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-bench-agg-'));
const file = path.join(dir, 'bench.db');
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill();
  fs.rmSync(dir, { recursive: true, force: true });
});

const log = (...a: unknown[]) => console.log(...a);
const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 0 });
const msf = (n: number) => `${n < 10 ? n.toFixed(2) : n.toFixed(1)} ms`;

async function time<T>(fn: () => Promise<T> | T, iters: number): Promise<{ median: number; p95: number; last: T }> {
  let last = await fn();
  const t: number[] = [];
  for (let i = 0; i < iters; i++) {
    const s = performance.now();
    last = await fn();
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return { median: t[Math.floor(t.length / 2)]!, p95: t[Math.min(t.length - 1, Math.floor(t.length * 0.95))]!, last };
}

log(`crm-mcp aggregate bench: ${fmt(ROWS)} opportunities; node ${process.version}, ${os.cpus().length} CPUs`);
const db = openDatabase({ file, readWorkers: 2 });
await migrate(db);
const { ws, admin, ctx } = await benchWorkspace(db);
const t0 = performance.now();
await seedWorkspace(ctx, { companies: 20_000, contacts: 50_000, opportunities: ROWS, seed: 42, activity: false, searchIndex: false, matchKeys: false });
log(`seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const T = `w${ws.id}_opportunities`;
const raw = new Database(file, { readonly: true });
raw.pragma('cache_size = -65536');
raw.pragma('mmap_size = 268435456');

const yearAgo = new Date(Date.now() - 365 * 86_400_000).toISOString().slice(0, 10);
const today = new Date().toISOString().slice(0, 10);

interface Shape {
  name: string;
  service: () => Promise<unknown>;
  rawSql: string;
  params: unknown[];
  /** The service's answer and the raw rows, reduced to comparable form. */
  same: (service: any, rows: any[]) => boolean;
}

const _sumOf = (rows: any[], k: string) => rows.reduce((s, r) => s + Number(r[k]), 0);
/** A year of close_date by month, SUM(amount): timed beside two raw forms (per-row strftime, days rolled up). */
const monthly = () =>
  aggregateGroups(ctx, 'opportunities', {
    metrics: [{ field: 'amount', function: 'sum' }],
    groupBy: [{ field: 'close_date', interval: 'month' }],
    filter: { operator: 'and', conditions: [{ field: 'close_date', operator: 'between', value: [yearAgo, today] }] },
  });
const sameMonths: Shape['same'] = (sv, rows) => sv.groups.length === rows.length && sv.groups.every((g: any, i: number) => g.values.close_date === rows[i].m && g.count === rows[i].n);
/**
 * Two years of created_at by month in America/New_York, COUNT and SUM(amount) (issue 16): the
 * service against raw SQL with the zone's offsets written out by hand (per row: a CASE picks the
 * offset of each row's instant, strftime cuts the month) and the fastest raw form (each local month
 * a range of the created_at index, found here with Intl).
 */
const NY = 'America/New_York';
const nyOffset = (t: number) => {
  const m = /GMT([+-])(\d{2}):?(\d{2})?/.exec(new Intl.DateTimeFormat('en-US', { timeZone: NY, timeZoneName: 'longOffset' }).format(t));
  return m ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3] ?? 0)) : 0;
};
const createdSpan = raw.prepare(`SELECT MIN(created_at) AS lo, MAX(created_at) AS hi FROM ${T}`).get() as { lo: string; hi: string };
/** Local midnight of the first of each month from the span's first to one past its last, as UTC instants. */
const nyMonths: { m: string; at: string }[] = [];
for (let y = Number(createdSpan.lo.slice(0, 4)) - 1, mo = 0; ; mo++) {
  if (mo === 12) {
    y++;
    mo = 0;
  }
  let at = Date.UTC(y, mo, 1);
  for (let k = 0; k < 2; k++) at = Date.UTC(y, mo, 1) - nyOffset(at) * 60_000;
  const iso = new Date(at).toISOString();
  nyMonths.push({ m: `${y}-${String(mo + 1).padStart(2, '0')}-01`, at: iso });
  if (iso > createdSpan.hi) break;
}
/** The zone's offset changes over the span (DST starts and ends), hour by hour. */
const nyChanges: { at: string; modifier: string }[] = [];
for (let t = Date.parse(nyMonths[0]!.at); t < Date.parse(nyMonths[nyMonths.length - 1]!.at); t += 3_600_000)
  if (nyOffset(t) !== nyOffset(t + 3_600_000)) nyChanges.push({ at: new Date(t + 3_600_000).toISOString(), modifier: `${nyOffset(t)} minutes` });
const lastModifier = `${nyOffset(Date.parse(createdSpan.hi))} minutes`;
const nyModifier = `CASE ${nyChanges.map((c) => `WHEN created_at < '${c.at}' THEN '${c.modifier}'`).join(' ')} ELSE '${lastModifier}' END`;
const nyRanges = nyMonths
  .slice(0, -1)
  .map((x, i) => `SELECT '${x.m}' AS m, COUNT(*) AS n, SUM(amount) AS s FROM ${T} WHERE created_at >= '${x.at}' AND created_at < '${nyMonths[i + 1]!.at}'`)
  .join(' UNION ALL ');
const createdMonthly = () =>
  aggregateGroups(ctx, 'opportunities', {
    metrics: [{ field: 'amount', function: 'sum' }],
    groupBy: [{ field: 'created_at', interval: 'month', timeZone: NY }],
  });
const sameCreatedMonths: Shape['same'] = (sv, rows) =>
  sv.groups.length === rows.length && sv.groups.every((g: any, i: number) => g.values.created_at === rows[i].m && g.count === rows[i].n && Math.round(g.aggregates.amount.sum * 100) === rows[i].s);
const shapes: Shape[] = [
  {
    name: 'SUM(amount) by status',
    service: () => aggregateGroups(ctx, 'opportunities', { metrics: [{ field: 'amount', function: 'sum' }], groupBy: ['status'] }),
    rawSql: `SELECT status, COUNT(*) AS n, SUM(amount) AS s FROM ${T} GROUP BY status ORDER BY n DESC, status`,
    params: [],
    same: (sv, rows) => sv.groups.length === rows.length && sv.groups.every((g: any, i: number) => g.count === rows[i].n && Math.round(g.aggregates.amount.sum * 100) === rows[i].s),
  },
  {
    name: 'COUNT, AVG(amount) by status x owner',
    service: () => aggregateGroups(ctx, 'opportunities', { metrics: [{ field: 'amount', function: 'avg' }], groupBy: ['status', 'owner'] }),
    rawSql: `SELECT status, owner, COUNT(*) AS n, AVG(amount) AS a FROM ${T} GROUP BY status, owner ORDER BY n DESC, status, owner LIMIT 100`,
    params: [],
    same: (sv, rows) => sv.groups.length === rows.length && sv.groups.every((g: any, i: number) => g.count === rows[i].n && Math.abs(g.aggregates.amount.avg - rows[i].a / 100) < 1e-6),
  },
  {
    name: 'COUNT_DISTINCT(company) where status = closed_won',
    service: () =>
      aggregateGroups(ctx, 'opportunities', {
        metrics: [{ field: 'company', function: 'count_distinct' }],
        filter: { operator: 'and', conditions: [{ field: 'status', operator: 'eq', value: 'closed_won' }] },
      }),
    rawSql: `SELECT COUNT(*) AS n, COUNT(DISTINCT company) AS d FROM ${T} WHERE status = ?`,
    params: ['closed_won'],
    same: (sv, rows) => sv.count === rows[0].n && sv.aggregates.company.count_distinct === rows[0].d,
  },
  {
    name: 'monthly histogram of close_date over a year (SUM amount)',
    service: monthly,
    rawSql: `SELECT strftime('%Y-%m-01', close_date) AS m, COUNT(*) AS n, SUM(amount) AS s FROM ${T} WHERE close_date BETWEEN ? AND ? GROUP BY m ORDER BY m`,
    params: [yearAgo, today],
    same: sameMonths,
  },
  {
    // The service groups by day on the (close_date, amount) index and rolls the days up to months
    // (issue 16); here beside the same roll-up written by hand (the row above: per-row strftime).
    name: 'monthly histogram of close_date over a year (SUM amount), raw SQL rolled up from days',
    service: monthly,
    rawSql: `SELECT strftime('%Y-%m-01', d) AS m, SUM(dn) AS n, SUM(ds) AS s FROM (SELECT close_date AS d, COUNT(*) AS dn, SUM(amount) AS ds FROM ${T} WHERE close_date BETWEEN ? AND ? GROUP BY close_date) GROUP BY m ORDER BY m`,
    params: [yearAgo, today],
    same: sameMonths,
  },
  {
    name: 'monthly histogram of created_at over two years in America/New_York (COUNT, SUM amount), raw SQL per row',
    service: createdMonthly,
    rawSql: `SELECT strftime('%Y-%m-01', created_at, ${nyModifier}) AS m, COUNT(*) AS n, SUM(amount) AS s FROM ${T} GROUP BY m ORDER BY m`,
    params: [],
    same: sameCreatedMonths,
  },
  {
    // The service counts each local month as a range of the created_at index (issue 16); here the
    // same ranges written by hand.
    name: 'monthly histogram of created_at over two years in America/New_York (COUNT, SUM amount), raw SQL by index ranges',
    service: createdMonthly,
    rawSql: `SELECT m, n, s FROM (${nyRanges}) WHERE n > 0 ORDER BY m`,
    params: [],
    same: sameCreatedMonths,
  },
  {
    // The tree's (and Cognite's) timeHistogram, top-level without children: the same index ranges.
    name: 'tree timeHistogram of created_at over two years in America/New_York (COUNT, SUM amount), raw SQL by index ranges',
    service: () =>
      aggregateTree(ctx, 'opportunities', {
        aggregates: { months: { timeHistogram: { property: 'created_at', calendarInterval: '1M', timeZone: NY, aggregates: { s: { sum: { property: 'amount' } } } } } },
      }),
    rawSql: `SELECT m, n, s FROM (${nyRanges}) WHERE n > 0 ORDER BY m`,
    params: [],
    same: (sv, rows) => {
      const b = sv.aggregates.months.timeHistogramBuckets as { start: string; count: number; aggregates: { s: { sum: number } } }[];
      return b.length === rows.length && b.every((x, i) => x.start === rows[i].m && x.count === rows[i].n && Math.round(x.aggregates.s.sum * 100) === rows[i].s);
    },
  },
  {
    name: 'three-level tree: status > owner > priority (counts, avg amount)',
    service: () =>
      aggregateTree(ctx, 'opportunities', {
        aggregates: {
          by_status: {
            uniqueValues: {
              property: 'status',
              aggregates: { avg: { avg: { property: 'amount' } }, by_owner: { uniqueValues: { property: 'owner', aggregates: { by_priority: { uniqueValues: { property: 'priority' } } } } } },
            },
          },
        },
      }),
    // By hand: one grouped query per level, as a tree needs.
    rawSql: `SELECT (SELECT COUNT(*) FROM (SELECT status, AVG(amount) FROM ${T} GROUP BY status)) +
                    (SELECT COUNT(*) FROM (SELECT status, owner, COUNT(*) FROM ${T} GROUP BY status, owner)) +
                    (SELECT COUNT(*) FROM (SELECT status, owner, priority, COUNT(*) FROM ${T} GROUP BY status, owner, priority)) AS groups`,
    params: [],
    same: (sv) => Array.isArray(sv.aggregates.by_status.uniqueValueBuckets) && sv.aggregates.by_status.uniqueValueBuckets.length > 0,
  },
];

interface Out {
  shape: string;
  service_ms: number;
  service_p95_ms: number;
  raw_ms: number;
  ratio: number;
  agree: boolean;
  plan: string;
}
const results: Out[] = [];
for (const s of shapes) {
  const st = raw.prepare(s.rawSql);
  const iters = ROWS >= 500_000 ? 7 : 15;
  const r = await time(() => st.all(...s.params), iters);
  const sv = await time(s.service, iters);
  const plan = (raw.prepare(`EXPLAIN QUERY PLAN ${s.rawSql}`).all(...s.params) as { detail: string }[]).map((p) => p.detail).join('; ');
  const out: Out = { shape: s.name, service_ms: sv.median, service_p95_ms: sv.p95, raw_ms: r.median, ratio: sv.median / r.median, agree: s.same(sv.last, r.last as any[]), plan };
  results.push(out);
  log(
    `${s.name}: service ${msf(sv.median)} (p95 ${msf(sv.p95)}), raw SQL ${msf(r.median)}, ratio ${out.ratio.toFixed(2)}x ${out.ratio <= 1.3 ? '✓' : '✗'}${out.agree ? '' : '  RESULTS DIFFER'}\n    plan: ${plan}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Responsiveness while heavy aggregates run

const token = (await createToken(db, ws.id, admin.id, 'bench')).token;
await db.close();

async function serve(readWorkers: number): Promise<{ port: number; child: ChildProcess }> {
  const child = fork(path.join(root, 'bench/agg-server.ts'), [file, String(readWorkers)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
  return { port, child };
}

async function latencyUnderLoad(readWorkers: number) {
  const { port, child } = await serve(readWorkers);
  const base = `http://127.0.0.1:${port}`;
  const H = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const heavy = JSON.stringify({
    aggregate: [
      { field: 'amount', function: 'avg' },
      { field: 'amount', function: 'sum' },
    ],
    groupBy: ['owner', 'priority', 'source'],
  });
  let stop = false;
  let heavyDone = 0;
  const loaders = Array.from({ length: 2 }, async () => {
    while (!stop) {
      await fetch(`${base}/api/v1/aggregate/opportunities`, { method: 'POST', headers: H, body: heavy }).then((r) => r.arrayBuffer());
      heavyDone++;
    }
  });
  await new Promise((r) => setTimeout(r, 300));
  const probe = async (url: string) => {
    const t: number[] = [];
    const end = performance.now() + 4000;
    while (performance.now() < end) {
      const s = performance.now();
      await fetch(url, { headers: H }).then((r) => r.arrayBuffer());
      t.push(performance.now() - s);
      await new Promise((r) => setTimeout(r, 20));
    }
    t.sort((a, b) => a - b);
    return { n: t.length, p50: t[Math.floor(t.length / 2)]!, p95: t[Math.floor(t.length * 0.95)]!, max: t[t.length - 1]! };
  };
  const health = await probe(`${base}/health`);
  const list = await probe(`${base}/api/v1/records/opportunities?limit=10&include_total=false`);
  stop = true;
  await Promise.all(loaders);
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
  children.delete(child);
  return { readWorkers, heavyAggregates: heavyDone, health, list };
}

const pooled = await latencyUnderLoad(2);
const inline = await latencyUnderLoad(0);
for (const l of [pooled, inline])
  log(
    `while 2 clients run heavy aggregates (${l.heavyAggregates} done), read workers ${l.readWorkers}: ` +
      `GET /health p50 ${msf(l.health.p50)} p95 ${msf(l.health.p95)} max ${msf(l.health.max)}; ` +
      `GET /records (10) p50 ${msf(l.list.p50)} p95 ${msf(l.list.p95)} max ${msf(l.list.max)}`,
  );

fs.mkdirSync(path.join(root, '.bench'), { recursive: true });
fs.writeFileSync(path.join(root, '.bench/aggregate.json'), JSON.stringify({ rows: ROWS, results, responsiveness: [pooled, inline] }, null, 2));
log('\nshape | service | raw SQL | ratio');
for (const r of results) log(`${r.shape} | ${msf(r.service_ms)} | ${msf(r.raw_ms)} | ${r.ratio.toFixed(2)}x ${r.ratio <= 1.3 ? '✓' : '✗'}`);
process.exit(0);
