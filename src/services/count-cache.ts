import type { CompiledQuery } from 'kysely';
import type { Db } from '../db/database.js';

/**
 * Exact counts remembered while the database stays as they found it: a list's total (the contract's
 * exact count of every match) is the same question on every page of a listing, and on every poll of
 * an unchanged list, and at a million rows it costs a thousand times the page. A count is kept with
 * the database's change version read before it ran (`Db.changeVersion`: SQLite's data_version for
 * other connections' commits, and this connection's total_changes(), which every write raises as it
 * runs, committed or not, and a rollback never lowers), and answered again only while that version
 * is unchanged: any write anywhere in the file, by any connection or process, makes every count
 * be read again. PostgreSQL: the server's snapshot (`Db.changeStamp`, one more statement, no
 * count), equal only while no transaction that writes has begun or ended since. The count itself
 * runs after the version was read, so it saw that state or a newer one; a newer one has another
 * version, and the entry is never used. Where the version cannot be given (a transaction open on
 * the connection, such as a dry run's) nothing is kept.
 */

const MAX_ENTRIES = 1_000;
const caches = new WeakMap<Db, Map<string, { version: string; n: number }>>();
let hits = 0;

/** The count `query` answers (compiled only where counts are kept), from memory while the database is unchanged, else by `run`. */
export async function rememberedCount(db: Db, workspaceId: number, query: () => CompiledQuery, run: () => Promise<number>, dataVersion?: number): Promise<number> {
  const version = db.changeVersion ? db.changeVersion(dataVersion) : ((await db.changeStamp?.()) ?? null);
  if (version === null) return run();
  const origin = db.origin;
  let cache = caches.get(origin);
  if (!cache) caches.set(origin, (cache = new Map()));
  const { sql, parameters } = query();
  const key = `${workspaceId}\u0000${sql}\u0000${JSON.stringify(parameters, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`;
  const known = cache.get(key);
  if (known?.version === version) {
    // Most recently used last: the first entries are the ones to drop.
    cache.delete(key);
    cache.set(key, known);
    hits++;
    return known.n;
  }
  const n = await run();
  cache.delete(key);
  cache.set(key, { version, n });
  if (cache.size > MAX_ENTRIES) cache.delete(cache.keys().next().value!);
  return n;
}

/** Counts answered from memory since the process started (for tests and benchmarks). */
export const rememberedCountHits = () => hits;

/** Forgets every count remembered for `db` (benchmarks: the cost of counting, as after a write). */
export function forgetRememberedCounts(db: Db): void {
  caches.delete(db.origin);
}
