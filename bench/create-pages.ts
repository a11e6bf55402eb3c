/**
 * node --import tsx bench/create-pages.ts: pages a single create writes to SQLite's write-ahead log,
 * on this code's layout, beside a bare INSERT of the row alone. Since migration 0013 (match keys
 * name their records by seq) this code no longer writes the layouts before issue 16's storage cuts:
 * compare with an older commit by running its own copy of this file (`git archive <commit>`).
 *
 *   BENCH_PAGES_CREATES=300   creates measured per object and round
 *   BENCH_PAGES_ROWS=5000     records of each object already there (b-trees with some depth)
 *   BENCH_PAGES_ROUNDS=2      rounds
 */
import fs from 'node:fs';
import path from 'node:path';
import { openSqliteDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { createRecord } from '../src/services/records.js';
import { seedWorkspace } from '../src/services/seed.js';
import { benchWorkspace, envInt, log, scratchDir } from './common.js';

const CREATES = envInt('BENCH_PAGES_CREATES', 300);
const ROWS = envInt('BENCH_PAGES_ROWS', 5000);
const ROUNDS = envInt('BENCH_PAGES_ROUNDS', 2);
const dir = scratchDir('crm-bench-pages-');

type Layout = 'after';
const results: Record<string, number[]> = {};
const note = (k: string, v: number) => (results[k] ??= []).push(v);
const traces: Record<string, string> = {};

async function round(layout: Layout, n: number) {
  const file = path.join(dir, `${layout}-${n}.db`);
  const db = openSqliteDatabase({ file });
  await migrate(db);
  const { ws, ctx } = await benchWorkspace(db);
  await seedWorkspace(ctx, { companies: 200, contacts: ROWS, opportunities: ROWS, seed: 7 });
  const walFrames = () => {
    try {
      return Math.max(0, (fs.statSync(`${file}-wal`).size - 32) / (4096 + 24));
    } catch {
      return 0;
    }
  };
  db.sqlite.pragma('wal_autocheckpoint = 0');
  const measure = async (what: string, write: (i: number) => Promise<unknown> | unknown) => {
    db.sqlite.pragma('wal_checkpoint(TRUNCATE)');
    const before = walFrames();
    for (let i = 0; i < CREATES; i++) await write(i);
    note(`${layout} ${what}`, (walFrames() - before) / CREATES);
  };
  await measure('opportunity create', () => createRecord(ctx, 'opportunities', { name: 'Bench deal', amount: 12500, close_date: '2027-03-31' }));
  await measure('contact create', (i) =>
    createRecord(ctx, 'contacts', { first_name: 'Page', last_name: `Count${n}x${i}`, email: `page${n}x${i}@pages.example`, phone: `+1 415 555 ${String(1000 + i).slice(-4)}` }),
  );
  // One more create of each, its frames mapped to the b-trees their pages belong to (dbstat).
  for (const [what, write] of [
    ['opportunity', () => createRecord(ctx, 'opportunities', { name: 'Bench deal', amount: 12500, close_date: '2027-03-31' })],
    ['contact', () => createRecord(ctx, 'contacts', { first_name: 'Page', last_name: `Traced${n}`, email: `traced${n}@pages.example`, phone: '+1 415 555 0999' })],
  ] as const) {
    db.sqlite.pragma('wal_checkpoint(TRUNCATE)');
    await write();
    const wal = fs.readFileSync(`${file}-wal`);
    const pages: number[] = [];
    for (let at = 32; at + 24 <= wal.length; at += 4096 + 24) pages.push(wal.readUInt32BE(at));
    const owner = new Map((db.sqlite.prepare('SELECT pageno, name FROM dbstat').all() as { pageno: number; name: string }[]).map((r) => [r.pageno, r.name]));
    const by = new Map<string, number>();
    for (const p of pages) by.set(owner.get(p) ?? (p === 1 ? 'header' : '?'), (by.get(owner.get(p) ?? (p === 1 ? 'header' : '?')) ?? 0) + 1);
    note(`${layout} ${what} traced frames`, pages.length);
    traces[`${layout} ${what}`] = [...by]
      .sort((a, b) => b[1] - a[1])
      .map(([name, c]) => `${name} ${c}`)
      .join(', ');
  }
  const insert = db.sqlite.prepare(`INSERT INTO w${ws.id}_opportunities (id, created_at, updated_at, name, amount, close_date) VALUES (?, ?, ?, 'Bench deal', 12500, '2027-03-31') RETURNING *`);
  await measure('bare INSERT of the opportunity row', (i) => insert.get(`bare-${n}-${i}`, new Date().toISOString(), new Date().toISOString()));
  await db.close();
}

log(`WAL pages per single create: ${CREATES} creates a measure, ${ROWS} records of each object there already, ${ROUNDS} rounds; load ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
for (let n = 0; n < ROUNDS; n++) await round('after', n);
for (const [k, v] of Object.entries(results)) log(`  ${k}: ${v.map((x) => x.toFixed(1)).join(', ')} pages`);
log('frames of one create (last round) by b-tree:');
for (const [k, v] of Object.entries(traces)) log(`  ${k}: ${v}`);
process.exit(0);
