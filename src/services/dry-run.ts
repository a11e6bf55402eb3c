import { AsyncLocalStorage } from 'node:async_hooks';
import type { Kysely } from 'kysely';
import type { Db } from '../db/database.js';
import { overriding } from '../db/overriding.js';
import type { Tables } from '../db/tables.js';
import type { Ctx } from './context.js';

/** The databases of dry runs in progress. */
const dryDbs = new WeakSet<Db>();
const ROLL_BACK = Symbol('dry run rolled back');

/**
 * Run service code for real, inside one transaction that is always rolled back: a dry run that
 * goes through exactly the same validation, relation checks, unique constraints and activity code
 * as the real write, and leaves the database untouched.
 *
 * The services open their own transactions with `ctx.db.kysely.transaction().execute(fn)`. Here
 * ctx.db.kysely is the outer transaction, and its transaction() becomes a savepoint, so a service
 * that catches its own failure behaves as it would outside. The outer transaction holds the
 * connection until the rollback: other requests on this Db wait (SQLite has one writer anyway).
 */
export async function withRollback<T>(ctx: Ctx, fn: (dry: Ctx) => Promise<T>): Promise<T> {
  // Inside a dry run already (a tool's dry run calling a service that rolls back its own): a savepoint, rolled back.
  if (dryDbs.has(ctx.db)) {
    let out: T;
    try {
      await ctx.db.kysely.transaction().execute(async () => {
        out = await fn(ctx);
        throw ROLL_BACK;
      });
    } catch (e) {
      if (e !== ROLL_BACK) throw e;
    }
    return out!;
  }
  const trx = await ctx.db.kysely.startTransaction().execute();
  let n = 0;
  // The service transactions of one dry run share its connection: they take turns, as they would
  // outside (interleaved savepoints would release or roll back each other's work, and two creates
  // would take the same next search document id). One opened inside another runs at once.
  let turn: Promise<unknown> = Promise.resolve();
  const inside = new AsyncLocalStorage<true>();
  const savepoint = async <R>(body: (t: Kysely<Tables>) => Promise<R>): Promise<R> => {
    const name = `dry_run_${++n}`;
    const sp = await trx.savepoint(name).execute();
    try {
      const r = await inside.run(true, () => body(sp));
      await sp.releaseSavepoint(name).execute();
      return r;
    } catch (e) {
      await sp.rollbackToSavepoint(name).execute();
      throw e;
    }
  };
  const nested = {
    execute: <R>(body: (t: Kysely<Tables>) => Promise<R>): Promise<R> => {
      if (inside.getStore()) return savepoint(body);
      const mine = turn.then(() => savepoint(body));
      turn = mine.catch(() => {});
      return mine;
    },
  };
  const kysely = overriding(trx, {
    transaction: () => nested,
    startTransaction: () => {
      throw new Error('startTransaction inside a dry run');
    },
  }) as unknown as Kysely<Tables>;
  // Without the read pool or bounded reads: their connections would not see the transaction's uncommitted rows.
  // Nor with counts remembered by the database's version: the transaction's writes are its own.
  const { readPool: _pool, boundedRead: _bounded, stampExpression: _stamp, ...rest } = ctx.db;
  // Its workspace's view is itself: nothing may escape the transaction.
  const db: Db = { ...rest, kysely, close: async () => {}, forWorkspace: () => db };
  dryDbs.add(db);
  try {
    return await fn({ ...ctx, db });
  } finally {
    await trx.rollback().execute();
  }
}
