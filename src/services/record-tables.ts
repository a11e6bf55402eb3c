import type { Kysely } from 'kysely';
import type { Tables } from '../db/tables.js';
import { nowIso } from './clock.js';
import type { ObjectDef } from './schema.js';

/**
 * The common queries on a record table (`obj.table`), in one place: does a record exist, which of
 * these ids exist, the stored rows of these ids. `db` is the context's connection or the running
 * transaction: code inside a transaction must pass the transaction. Queries of their own shape
 * (lists, aggregates, search reindexing) build on `obj.table` where they live.
 */

type Db = Kysely<Tables> | Kysely<any>;
const any = (db: Db) => db as unknown as Kysely<any>;

// Ids per statement: far below SQLite's 32,766 parameters, and a page of rows at a time.
const CHUNK = 500;

/** Whether a record with this id exists in `obj`'s table. */
export async function recordExists(db: Db, obj: ObjectDef, id: string): Promise<boolean> {
  return !!(await any(db).selectFrom(obj.table).select('id').where('id', '=', id).executeTakeFirst());
}

/** Those of `ids` that name a record of `obj`. */
export async function existingIds(db: Db, obj: ObjectDef, ids: string[]): Promise<Set<string>> {
  return new Set((await seqsOf(db, obj, ids)).keys());
}

/** Those of `ids` that name a record of `obj`, with its seq (the table's own key, a lookup cheaper than the id's). */
export async function seqsOf(db: Db, obj: ObjectDef, ids: string[]): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for (let i = 0; i < ids.length; i += CHUNK) {
    const rows = (await any(db)
      .selectFrom(obj.table)
      .select(['id', 'seq'])
      .where('id', 'in', ids.slice(i, i + CHUNK))
      .execute()) as { id: string; seq: number }[];
    for (const r of rows) found.set(r.id, r.seq);
  }
  return found;
}

/** The stored rows (every column, or `columns` and id) of these ids, by id; ids that name nothing are absent. */
export async function rowsByIds(db: Db, obj: ObjectDef, ids: string[], columns?: string[]): Promise<Map<string, Record<string, unknown>>> {
  const out = new Map<string, Record<string, unknown>>();
  const cols = columns ? [...new Set(['id', ...columns])] : undefined;
  for (let i = 0; i < ids.length; i += CHUNK) {
    const q = any(db).selectFrom(obj.table);
    const rows = (await (cols ? q.select(cols) : q.selectAll()).where('id', 'in', ids.slice(i, i + CHUNK)).execute()) as Record<string, unknown>[];
    for (const r of rows) out.set(r.id as string, r);
  }
  return out;
}

/** Set stored values (column -> value) on one record, stamping updated_at. */
export async function updateRow(db: Db, obj: ObjectDef, id: string, values: Record<string, unknown>): Promise<void> {
  await any(db)
    .updateTable(obj.table)
    .set({ ...values, updated_at: nowIso() })
    .where('id', '=', id)
    .execute();
}

/** Delete these records' rows (the caller removes what derives from them). */
export async function deleteRows(db: Db, obj: ObjectDef, ids: string[]): Promise<void> {
  await any(db).deleteFrom(obj.table).where('id', 'in', ids).execute();
}

/** Point a relation column of `obj` that holds one of `fromIds` at `to` instead (null: empties it). */
export async function repoint(db: Db, obj: ObjectDef, column: string, fromIds: string[], to: string | null): Promise<void> {
  await any(db)
    .updateTable(obj.table)
    .set({ [column]: to })
    .where(column, 'in', fromIds)
    .execute();
}

/**
 * Every row of `obj` (these columns and seq), in batches in seq order: a pass over a whole table,
 * or over the rows whose `where.column` holds one of `where.ids`, that never holds more than a
 * batch. Keyset on seq, so each batch costs what the first did.
 */
export async function* rowBatches(db: Db, obj: ObjectDef, columns: string[], opts: { batch: number; where?: { column: string; ids: string[] } }): AsyncGenerator<Record<string, unknown>[]> {
  const cols = [...new Set(['seq', ...columns])];
  let after = 0;
  for (;;) {
    let q = any(db).selectFrom(obj.table).select(cols);
    if (opts.where) q = q.where(opts.where.column, 'in', opts.where.ids);
    const rows = (await q.where('seq', '>', after).orderBy('seq').limit(opts.batch).execute()) as Record<string, unknown>[];
    if (!rows.length) return;
    yield rows;
    after = rows[rows.length - 1]!.seq as number;
  }
}

/** How many records `obj` holds. */
export async function countRows(db: Db, obj: ObjectDef): Promise<number> {
  return Number(
    (
      (await any(db)
        .selectFrom(obj.table)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()) as { n: number | string }
    ).n,
  );
}

/** Whether `obj` holds any record (one index probe, not a count). */
export async function hasRows(db: Db, obj: ObjectDef): Promise<boolean> {
  return !!(await any(db).selectFrom(obj.table).select('seq').limit(1).executeTakeFirst());
}
