import { CompiledQuery, type Kysely, PostgresAdapter, sql } from 'kysely';

/**
 * Multi-row INSERT for bulk paths (imports, seeds, index maintenance). Kysely builds the statement
 * for a given table, column list and row count once; later chunks of the same shape reuse its SQL
 * text with new parameters, so bulk writes skip per-call query building and stay dialect-neutral.
 */
const texts = new WeakMap<object, Map<string, string>>();

/**
 * PostgreSQL: the rows as one JSON parameter, spread into the table's own column types by
 * json_populate_recordset: a whole batch in one statement, up to JSON_STATEMENT_BYTES of text. A
 * VALUES list of thousands of parameters costs PostgreSQL more to parse and plan than the rows cost
 * to write; one parameter a statement does not, and each statement more is a round trip during
 * which the transaction waits. Only for rows of text, finite numbers and null (the stored forms),
 * which JSON carries unchanged; anything else (a Date, a Buffer, a boolean) goes as parameters, as
 * node-postgres sends it.
 */
const safe = (v: unknown) => v === null || v === undefined || typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
const jsonSafe = (row: Row, columns: string[]) => (Array.isArray(row) ? row.every(safe) : columns.every((c) => safe(row[c])));

/**
 * A row: its values in the order of the columns, or an object of column -> value (as the caller
 * built it: on PostgreSQL its JSON is made from it as it is, without a copy; a missing column, or
 * one whose value is undefined, is null).
 */
export type Row = unknown[] | Record<string, unknown>;

/** Text of one statement's JSON parameter, at most (about 16 MB: memory stays bounded whatever the rows hold). */
export const JSON_STATEMENT_BYTES = 16 << 20;

/**
 * Objects as JSON arrays of at most `maxRows` rows and JSON_STATEMENT_BYTES of text each: all of
 * them in one JSON.stringify when they fit (the usual case), else in halves until they do.
 */
export function* jsonChunks(objects: unknown[], maxRows = Number.POSITIVE_INFINITY): Generator<string> {
  for (let i = 0; i < objects.length; ) {
    let n = Math.min(objects.length - i, maxRows);
    let text = JSON.stringify(objects.slice(i, i + n));
    while (text.length > JSON_STATEMENT_BYTES && n > 1) {
      n = Math.ceil(n / 2);
      text = JSON.stringify(objects.slice(i, i + n));
    }
    yield text;
    i += n;
  }
}

export interface BulkInsertOptions {
  ignoreConflicts?: boolean;
  perStatement?: number;
  /** Answer the rows as inserted (`RETURNING *`: every column, the table's own seq and defaults included). */
  returning?: boolean;
}

async function jsonInsert(db: Kysely<any>, table: string, columns: string[], rows: Row[], opts: BulkInsertOptions): Promise<Record<string, unknown>[]> {
  const cols = sql.join(columns.map((c) => sql.ref(c)));
  // json_populate_recordset reads each object's keys by name (others are ignored, missing ones null).
  const objects = rows.map((r) => {
    if (!Array.isArray(r)) return r;
    const o: Record<string, unknown> = {};
    for (let j = 0; j < columns.length; j++) o[columns[j]!] = r[j] ?? null;
    return o;
  });
  const out: Record<string, unknown>[] = [];
  for (const json of jsonChunks(objects, opts.perStatement)) {
    const r = await sql<Record<string, unknown>>`INSERT INTO ${sql.table(table)} (${cols}) SELECT ${cols} FROM json_populate_recordset(NULL::${sql.table(table)}, ${json}::json)${
      opts.ignoreConflicts ? sql` ON CONFLICT DO NOTHING` : sql``
    }${opts.returning ? sql` RETURNING *` : sql``}`.execute(db);
    if (opts.returning) out.push(...r.rows);
  }
  return out;
}

/** Inserts `rows`; with `returning`, answers them as inserted (in no promised order), else []. */
export async function bulkInsert(db: Kysely<any>, table: string, columns: string[], rows: Row[], opts: BulkInsertOptions = {}): Promise<Record<string, unknown>[]> {
  if (!rows.length) return [];
  // By dialect (its adapter): one process may hold a SQLite and a PostgreSQL database (tests, `copy`).
  const adapter = db.getExecutor().adapter;
  if (adapter instanceof PostgresAdapter && rows.every((r) => jsonSafe(r, columns))) return jsonInsert(db, table, columns, rows, opts);
  let compiled = texts.get(adapter);
  if (!compiled) texts.set(adapter, (compiled = new Map()));
  // At most 30,000 parameters a statement (SQLite allows 32,766); 500 rows unless told otherwise.
  const per = Math.max(1, Math.min(opts.perStatement ?? 500, Math.floor(30000 / columns.length)));
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < rows.length; i += per) {
    const part = rows.slice(i, i + per);
    const key = `${table}|${columns.join(',')}|${part.length}|${opts.ignoreConflicts ? 1 : 0}|${opts.returning ? 1 : 0}`;
    let text = compiled.get(key);
    if (!text) {
      const placeholder = Object.fromEntries(columns.map((c) => [c, null]));
      let q = db.insertInto(table).values(Array.from({ length: part.length }, () => placeholder));
      if (opts.ignoreConflicts) q = q.onConflict((oc) => oc.doNothing());
      text = (opts.returning ? q.returningAll() : q).compile().sql;
      if (compiled.size > 1000) compiled.clear();
      compiled.set(key, text);
    }
    const params: unknown[] = [];
    for (const r of part)
      if (Array.isArray(r)) for (let c = 0; c < columns.length; c++) params.push(r[c] ?? null);
      else for (const c of columns) params.push(r[c] ?? null);
    const r = await db.executeQuery<Record<string, unknown>>(CompiledQuery.raw(text, params));
    if (opts.returning) out.push(...r.rows);
  }
  return out;
}
