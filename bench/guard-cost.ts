/**
 * Cost of the heavy reads' per-row budget condition (read-pool.ts budgetCondition) on 200,000
 * contacts: a COUNT(*) and a GROUP BY status with no condition, with a call into JavaScript for
 * every row (the first version), and with the condition as it is.
 *   node --import tsx bench/guard-cost.ts [database file]   (default: builds /tmp/crm-guard-cost.db, ~40 s)
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { budgetCondition } from '../src/db/sqlite/read-pool.js';
import { seedWorkspace } from '../src/services/seed.js';
import { makeWorkspace } from '../test/helpers.js';

const file = process.argv[2] ?? '/tmp/crm-guard-cost.db';
if (!fs.existsSync(file)) {
  console.log(`building ${file} (200,000 contacts)...`);
  const db = openDatabase({ file });
  await migrate(db);
  const a = await makeWorkspace(db, 'alpha');
  await seedWorkspace(a.ctx, { contacts: 200_000, companies: 2000, opportunities: 0, activity: false, searchIndex: false, matchKeys: false });
  await db.close();
}

const db = new Database(file, { readonly: true });
db.pragma('mmap_size = 0');
db.pragma('cache_size = -65536');
// As read-worker.js registers it now (the condition calls it for about one row in 128)...
db.function('crm_budget', { deterministic: false }, (d: number) => {
  if (Date.now() > d) throw new Error('crm_budget: time limit exceeded');
  return 1;
});
// ...and as it was: called for every row, reading the clock every 1,024th call.
let calls = 0;
db.function('crm_budget_every_row', { deterministic: false }, (d: number) => {
  if ((++calls & 1023) === 0 && Date.now() > d) throw new Error('crm_budget: time limit exceeded');
  return 1;
});
const table = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'w%\\_contacts' ESCAPE '\\'").get() as { name: string }).name;
const k = new Kysely<any>({ dialect: new SqliteDialect({ database: db }) });
const deadline = Date.now() + 600_000;
const variants = {
  none: undefined,
  'every row (before)': sql<boolean>`crm_budget_every_row(${deadline})`,
  'budgetCondition (now)': budgetCondition(deadline),
};

function median(q: { sql: string; parameters: readonly unknown[] }): number {
  const st = db.prepare(q.sql);
  st.all(...q.parameters);
  const ts: number[] = [];
  for (let i = 0; i < 9; i++) {
    const t0 = performance.now();
    st.all(...q.parameters);
    ts.push(performance.now() - t0);
  }
  return ts.sort((a, b) => a - b)[4]!;
}

console.log(`${table}: ${(db.prepare(`SELECT COUNT(*) n FROM ${table}`).get() as { n: number }).n} rows; median of 9 runs`);
for (const [name, cond] of Object.entries(variants)) {
  const from = cond ? k.selectFrom(table).where(cond) : k.selectFrom(table);
  const count = median(from.select(sql<number>`COUNT(*)`.as('n')).compile());
  const group = median(
    from
      .select(['status', sql<number>`COUNT(*)`.as('n')])
      .groupBy('status')
      .compile(),
  );
  console.log(`${name.padEnd(24)} COUNT(*) ${count.toFixed(1).padStart(6)} ms   GROUP BY status ${group.toFixed(1).padStart(6)} ms`);
}
await k.destroy();
