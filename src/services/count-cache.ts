import type { CompiledQuery, Expression } from 'kysely';
import type { Db } from '../db/database.js';

/**
 * Exact counts remembered while the database stays as they found it: a list's total (the contract's
 * exact count of every match) is the same question on every page of a listing, and on every poll of
 * an unchanged list, and at a million rows it costs a thousand times the page. A count is kept with
 * the database's state as the count saw it, and answered again only while that state is unchanged:
 * any write anywhere in the database, by any connection or process, makes every count be read again.
 *
 * - SQLite: the change version read before the count ran (`Db.changeVersion`: data_version for
 *   other connections' commits, and this connection's total_changes(), which every write raises as
 *   it runs, committed or not, and a rollback never lowers). The count saw that state or a newer
 *   one; a newer one has another version, and the entry is never used.
 * - PostgreSQL: the snapshot the count's own statement ran on (`Db.stampExpression`, selected beside
 *   the count: no statement of its own), and a later question's answer is the remembered one when a
 *   statement of its own (the page, which selects the same expression) saw an equal snapshot.
 *
 * Where no state can be given (a transaction open on the connection, such as a dry run's) nothing is kept.
 */

const MAX_ENTRIES = 1_000;
type Entry = { version: string; n: number };
const caches = new WeakMap<Db, Map<string, Entry>>();
let hits = 0;

/** One count's place in memory: what a caller needs to answer it from there, or to keep its answer. */
export interface CountPlan {
  db: Db;
  key: string;
  /** The count as last remembered, with the state it saw. */
  known: Entry | undefined;
  /** SQLite: the state read now, before the count runs. */
  version: string | null;
  /** PostgreSQL: the expression whose value, selected in a statement, is the state that statement saw. */
  stamp: Expression<string> | null;
}

/** The plan for the count `query` compiles to, or null where no count is remembered (inside a transaction). */
export function planCount(db: Db, workspaceId: number, query: () => CompiledQuery, dataVersion?: number): CountPlan | null {
  const version = db.changeVersion ? db.changeVersion(dataVersion) : null;
  const stamp = version === null ? (db.stampExpression?.() ?? null) : null;
  if (version === null && stamp === null) return null;
  const { sql, parameters } = query();
  const key = `${workspaceId}\u0000${sql}\u0000${JSON.stringify(parameters, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`;
  return { db, key, known: caches.get(db.origin)?.get(key), version, stamp };
}

/** The remembered count when `version` is the state it was counted in (most recently used last). */
export function knownCount(plan: CountPlan, version: string | null | undefined): number | undefined {
  const known = plan.known;
  if (!known || version == null || known.version !== version) return undefined;
  const cache = caches.get(plan.db.origin);
  if (cache?.get(plan.key) === known) {
    cache.delete(plan.key);
    cache.set(plan.key, known);
  }
  hits++;
  return known.n;
}

/** Keeps `n`, counted in state `version`; the least recently used entry goes past MAX_ENTRIES. */
export function rememberCount(plan: CountPlan, version: string | null | undefined, n: number): void {
  if (version == null) return;
  const origin = plan.db.origin;
  let cache = caches.get(origin);
  if (!cache) caches.set(origin, (cache = new Map()));
  cache.delete(plan.key);
  cache.set(plan.key, { version, n });
  if (cache.size > MAX_ENTRIES) cache.delete(cache.keys().next().value!);
}

/**
 * The count, from memory while the database is unchanged, else by `run`, which selects the plan's
 * stamp beside the count where there is one (PostgreSQL) and gives what it saw.
 */
export async function rememberedCount(plan: CountPlan | null, run: (stamp: Expression<string> | null) => Promise<{ n: number; stamp?: string | null }>): Promise<number> {
  if (!plan) return (await run(null)).n;
  if (plan.version !== null) {
    const known = knownCount(plan, plan.version);
    if (known !== undefined) return known;
  }
  const { n, stamp } = await run(plan.stamp);
  rememberCount(plan, plan.version ?? stamp, n);
  return n;
}

/** Counts answered from memory since the process started (for tests and benchmarks). */
export const rememberedCountHits = () => hits;

/** Forgets every count remembered for `db` (benchmarks: the cost of counting, as after a write). */
export function forgetRememberedCounts(db: Db): void {
  caches.delete(db.origin);
}
