import { AsyncResource } from 'node:async_hooks';
import type { ControlledTransaction, Kysely } from 'kysely';

/**
 * Group commit for SQLite's one writer: record writes that arrive while another is running wait
 * (as they would for the connection anyway), then run together in one transaction, each inside a
 * savepoint of its own, and commit once.
 *
 * Why: a commit writes every page the transaction changed to the write-ahead log. A single create
 * changes about 35 pages (the record and its indexes, stage history, the full-text index and its
 * segment, match keys, the timeline), many of them the same pages as the next create's (the tails
 * of time-ordered indexes, the full-text index's averages); the full-text index also writes one new
 * segment per transaction, which it must merge later. Writes that queue behind each other share
 * those pages and that segment when they commit together.
 *
 * What each write keeps:
 * - Atomicity: a write that fails is rolled back to its savepoint, and only it fails; the others
 *   of its group go on.
 * - Durability before the answer: every write's promise settles after the group's COMMIT has
 *   returned; if the COMMIT fails, every write of the group fails with its error (nothing was
 *   written, nothing was acknowledged).
 * - Its async context (AsyncLocalStorage: the request's schema, budget, log): each body runs bound
 *   to the context it was queued from.
 * - Isolation: the writes of a group run one after another, never interleaved, as separate
 *   transactions on one connection did.
 *
 * A write waits one turn of the event loop (the requests read from sockets meanwhile reach their
 * writes and join it); alone then, it runs in a plain transaction of its own, with no savepoint.
 * Groups hold at most `maxGroup` writes, so the write lock is held for a bounded time before other
 * processes get their turn. Writes wait for another process's lock as before (the dialect's
 * asynchronous wait at BEGIN), a group at a time: a write queued behind a group that waited past
 * the lock wait may wait up to twice that long before its own 503.
 *
 * Writes made inside a write's body must use the transaction it is given (`trx`), as in any
 * transaction on one connection: a second write through the handle would wait for the first.
 */
export interface GroupCommit<DB> {
  <T>(fn: (trx: Kysely<DB>) => Promise<T>): Promise<T>;
  /** The instance whose connection it writes through: a handle with another (a dry run's transaction) must not use it. */
  readonly kysely: Kysely<DB>;
  /** Writes run and the transactions they were committed in, since the handle opened. */
  readonly counts: { writes: number; transactions: number };
}

interface Pending<DB> {
  fn: (trx: Kysely<DB>) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

const SAVEPOINT = 'crm_group_write';
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

export function groupCommit<DB>(kysely: Kysely<DB>, maxGroup = 32): GroupCommit<DB> {
  const queue: Pending<DB>[] = [];
  let draining = false;
  const counts = { writes: 0, transactions: 0 };

  async function alone(p: Pending<DB>): Promise<void> {
    try {
      p.resolve(await kysely.transaction().execute(p.fn));
    } catch (e) {
      p.reject(e);
    }
  }

  async function together(group: Pending<DB>[]): Promise<void> {
    let trx: ControlledTransaction<DB> | undefined;
    const done: { p: Pending<DB>; value: unknown }[] = [];
    const failed = new Set<Pending<DB>>();
    try {
      trx = await kysely.startTransaction().execute();
      for (const p of group) {
        const sp = await trx.savepoint(SAVEPOINT).execute();
        let value: unknown;
        try {
          value = await p.fn(sp);
        } catch (e) {
          // Only this write is undone; a rollback that fails ends the group (caught below).
          failed.add(p);
          p.reject(e);
          await sp.rollbackToSavepoint(SAVEPOINT).execute();
          await sp.releaseSavepoint(SAVEPOINT).execute();
          continue;
        }
        await sp.releaseSavepoint(SAVEPOINT).execute();
        done.push({ p, value });
      }
      await trx.commit().execute();
    } catch (e) {
      // BEGIN, a savepoint, a rollback to one or the COMMIT failed (a lock held past the wait, a
      // full disk): nothing of the group is written, and every write not yet answered fails.
      if (trx)
        await trx
          .rollback()
          .execute()
          .catch(() => {});
      for (const p of group) if (!failed.has(p)) p.reject(e);
      return;
    }
    for (const { p, value } of done) p.resolve(value);
  }

  async function drain(): Promise<void> {
    draining = true;
    try {
      // One turn of the event loop first, and after each group: requests that arrived meanwhile
      // (read from their sockets, past their reads, which waited for the connection) join the next
      // group instead of each starting one of its own.
      await turn();
      while (queue.length) {
        const group = queue.splice(0, maxGroup);
        counts.writes += group.length;
        counts.transactions++;
        if (group.length === 1) await alone(group[0]!);
        else await together(group);
        await turn();
      }
    } finally {
      draining = false;
    }
  }

  const write = <T>(fn: (trx: Kysely<DB>) => Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      // Bound to the caller's async context by a resource of its own (AsyncResource.bind would also
      // define a deprecated accessor on every bound function: two util.deprecate wrappers a write).
      const context = new AsyncResource('crm-group-write');
      queue.push({ fn: (trx) => context.runInAsyncScope(fn, null, trx), resolve: resolve as (v: unknown) => void, reject });
      if (!draining) void drain();
    });
  return Object.assign(write, { kysely, counts });
}
