import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { budgetCondition, isBudgetStop } from '../src/db/sqlite/read-pool.js';
import { resolveObject } from '../src/services/schema.js';
import { seedWorkspace } from '../src/services/seed.js';
import { freshPooledDb, makeWorkspace, onPostgres, type TestWorkspace } from './helpers.js';

/**
 * The per-row budget condition on the read pool: it calls into JavaScript for only some rows
 * (cheaper), so check that it still keeps every row while in time and still stops a statement
 * whose deadline has passed, through the index a GROUP BY uses as through the table. SQLite only:
 * the read pool is SQLite's worker threads on the file (PostgreSQL runs heavy reads on its own pool).
 */

let db: Db;
let w: TestWorkspace;
let table: string;

beforeAll(async () => {
  if (onPostgres) return;
  db = await freshPooledDb(1);
  w = await makeWorkspace(db, 'guard');
  await seedWorkspace(w.ctx, { contacts: 3000, companies: 20, opportunities: 0, activity: false, searchIndex: false, matchKeys: false });
  table = (await resolveObject(w.ctx, 'contacts')).table;
}, 60_000);
afterAll(async () => {
  await db?.close();
});

const k = () => db.kysely as unknown as Kysely<any>;

describe.skipIf(onPostgres)('budget condition on the read pool', () => {
  it('keeps every row before the deadline', async () => {
    const plain = k().selectFrom(table).select(sql<number>`COUNT(*)`.as('n')).compile();
    const guarded = k()
      .selectFrom(table)
      .where(budgetCondition(Date.now() + 60_000))
      .select(sql<number>`COUNT(*)`.as('n'))
      .compile();
    const [a] = await db.readPool!.all<{ n: number }>(plain.sql, plain.parameters);
    const [b] = await db.readPool!.all<{ n: number }>(guarded.sql, guarded.parameters);
    expect(a!.n).toBeGreaterThanOrEqual(3000);
    expect(b!.n).toBe(a!.n);
  });

  it('stops a statement past its deadline (a count, and a group by on an index)', async () => {
    const past = Date.now() - 1;
    for (const q of [
      k().selectFrom(table).where(budgetCondition(past)).select(sql<number>`COUNT(*)`.as('n')).compile(),
      k()
        .selectFrom(table)
        .where(budgetCondition(past))
        .select(['status', sql<number>`COUNT(*)`.as('n')])
        .groupBy('status')
        .compile(),
    ]) {
      const e = await db.readPool!.all(q.sql, q.parameters).then(
        () => null,
        (x: unknown) => x,
      );
      expect(isBudgetStop(e), String(e)).toBe(true);
    }
  });
});
