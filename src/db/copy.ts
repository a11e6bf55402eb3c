import fs from 'node:fs';
import type Database from 'better-sqlite3';
import { CompiledQuery, type Kysely, sql, type Transaction } from 'kysely';
import type { Ctx } from '../services/context.js';
import { type FieldType, storageOf } from '../services/field-types.js';
import { getSchema } from '../services/schema.js';
import { indexRows } from '../services/search.js';
import { type Db, isPostgresUrl, openDatabase, openSqliteDatabase, type SqliteDb } from './database.js';
import { createWorkspaceSpace, migrate } from './migrations.js';
import { currentSchemaOid } from './postgres/adapter.js';
import { workspaceSchema } from './postgres/open.js';

/**
 * `crm-mcp copy`: a SQLite database into PostgreSQL, whole.
 *
 * - The target is migrated first (its own shared tables, its own kysely_migration state).
 * - Everything else happens in ONE PostgreSQL transaction: emptying the target (--replace), the
 *   shared tables (workspaces, users, tokens), then each workspace into a schema of its own (as
 *   creating it there makes it: migrations.ts): its rows of the workspace tables in dependency
 *   order, each object's record table (created from the source's own columns and indexes, typed
 *   from the field metadata), its search documents (rebuilt through the search backend: FTS5's
 *   tables do not exist on PostgreSQL), the identity sequences set past the largest copied key,
 *   and the row counts of both sides compared. A failure anywhere (a mismatch included) rolls it
 *   all back: the target is left as it was.
 * - The source is read in one read transaction (a consistent snapshot, even while a server writes
 *   to it), a batch of rows at a time by key; each batch goes in as one INSERT … SELECT FROM
 *   unnest(array per column) statement (any number of rows and columns, no parameter limit).
 * - A target that already holds data is refused unless `replace`: then it is emptied first, in the
 *   same transaction (readers of the target see the old data until the copy commits).
 */

/** The shared tables, in the order their foreign keys need. */
const SHARED_TABLES = ['workspaces', 'users', 'api_tokens'];
/** A workspace's tables (rows with its workspace_id), in the order their foreign keys need. Record tables follow; search_terms comes last. */
const WORKSPACE_TABLES = ['objects', 'fields', 'pipelines', 'pipeline_steps', 'stage_history', 'associations', 'activity', 'notes', 'threads', 'messages', 'merges', 'dedupe_keys'];
/** Rebuilt on the target (search_docs) or left as the target's migrate made them. */
const NOT_COPIED = new Set(['search_docs', 'kysely_migration', 'kysely_migration_lock']);
/** SQLite's own tables and FTS5's (the index, its shadow tables, its vocabulary view). */
const isSqliteInternal = (t: string) => /^sqlite_/.test(t) || /^search_index($|_)/.test(t) || t === 'search_vocab';

const BATCH_ROWS = 5000;

export interface TableCount {
  table: string;
  source: number;
  target: number;
}

export interface CopyProgress {
  /** What is being done: a table's name, or 'search' while documents are rebuilt. */
  step: string;
  done: number;
  total: number;
}

export interface CopyOptions {
  /** Empty a target that holds data first (in the copy's transaction). */
  replace?: boolean;
  onProgress?: (p: CopyProgress) => void;
  /** Rows per INSERT statement (default 5,000). */
  batchRows?: number;
}

export interface CopyResult {
  counts: TableCount[];
  /** Rows copied (search documents not counted). */
  rows: number;
  /** Search documents written on the target. */
  searchDocs: number;
  seconds: number;
  /** Seconds spent: migrating the target, copying rows (indexes and sequences included), rebuilding search, comparing counts (and ANALYZE). */
  phases: { migrate: number; rows: number; search: number; verify: number };
}

/** The copy did not run (the target holds data) or did not commit (a count differed): nothing changed on the target. */
export class CopyError extends Error {
  constructor(
    message: string,
    readonly counts?: TableCount[],
  ) {
    super(message);
    this.name = 'CopyError';
  }
}

const quoteId = (s: string) => `"${s.replace(/"/g, '""')}"`;

interface SourceTable {
  name: string;
  columns: string[];
  /** Keyset columns: rowid, or the primary key of a WITHOUT ROWID table. */
  keys: string[];
  count: number;
  /** The rows of one workspace: a condition and its value. */
  where?: { sql: string; value: number };
}

/** One workspace's rows of a shared-layout table: by workspace_id, or (pipeline steps) by their pipeline's. */
const ofWorkspace = (table: string, workspaceId: number) => ({
  sql: table === 'pipeline_steps' ? 'pipeline_id IN (SELECT id FROM pipelines WHERE workspace_id = ?)' : 'workspace_id = ?',
  value: workspaceId,
});

function sourceTable(sqlite: Database.Database, name: string, where?: SourceTable['where']): SourceTable {
  const info = sqlite.prepare(`SELECT name, pk FROM pragma_table_info(?) ORDER BY cid`).all(name) as { name: string; pk: number }[];
  if (!info.length) throw new CopyError(`table ${name} is not in the source`);
  const ddl = (sqlite.prepare(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) as { sql: string }).sql;
  const withoutRowid = /WITHOUT\s+ROWID\s*$/i.test(ddl.trim());
  const keys = withoutRowid
    ? info
        .filter((c) => c.pk > 0)
        .sort((a, b) => a.pk - b.pk)
        .map((c) => c.name)
    : ['rowid'];
  const count = (sqlite.prepare(`SELECT count(*) AS n FROM ${quoteId(name)}${where ? ` WHERE ${where.sql}` : ''}`).get(...(where ? [where.value] : [])) as { n: number }).n;
  return { name, columns: info.map((c) => c.name), keys, count, ...(where ? { where } : {}) };
}

/** The source's rows of a table, a batch at a time, in key order (statements run to completion: the connection is never left busy). */
function* sourceBatches(sqlite: Database.Database, t: SourceTable, per: number): Generator<unknown[][]> {
  const cols = t.columns.map(quoteId).join(', ');
  const keySel = t.keys.map((k, i) => `${k === 'rowid' ? 'rowid' : quoteId(k)} AS __k${i}`).join(', ');
  const order = t.keys.map((k) => (k === 'rowid' ? 'rowid' : quoteId(k))).join(', ');
  const only = t.where ? `${t.where.sql} AND ` : '';
  const scope = t.where ? [t.where.value] : [];
  const first = sqlite.prepare(`SELECT ${keySel}, ${cols} FROM ${quoteId(t.name)}${t.where ? ` WHERE ${t.where.sql}` : ''} ORDER BY ${order} LIMIT ?`).raw(true);
  const next = sqlite.prepare(`SELECT ${keySel}, ${cols} FROM ${quoteId(t.name)} WHERE ${only}(${order}) > (${t.keys.map(() => '?').join(', ')}) ORDER BY ${order} LIMIT ?`).raw(true);
  let last: unknown[] | null = null;
  for (;;) {
    const rows = (last ? next.all(...scope, ...last, per) : first.all(...scope, per)) as unknown[][];
    if (!rows.length) return;
    last = rows[rows.length - 1]!.slice(0, t.keys.length);
    yield rows.map((r) => r.slice(t.keys.length));
    if (rows.length < per) return;
  }
}

/** Column name → PostgreSQL type (format_type) of a target table. */
async function targetColumns(trx: Kysely<any>, table: string): Promise<Map<string, string>> {
  const r = await sql<{ name: string; type: string }>`
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
    FROM pg_attribute a
    WHERE a.attrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident(${table})) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum`.execute(trx);
  return new Map(r.rows.map((x) => [x.name, x.type]));
}

/** Copies one table's rows, batch by batch; returns the rows written. */
async function copyRows(sqlite: Database.Database, trx: Kysely<any>, t: SourceTable, per: number, progress: (n: number) => void): Promise<number> {
  const types = await targetColumns(trx, t.name);
  if (!types.size) throw new CopyError(`table ${t.name} is not on the target`);
  const missing = t.columns.filter((c) => !types.has(c));
  if (missing.length) throw new CopyError(`column(s) ${missing.join(', ')} of ${t.name} are not on the target`);
  // One array parameter per column: ROWS FROM zips them into rows (unnest of each alone: no limit on columns).
  const text =
    `INSERT INTO ${quoteId(t.name)} (${t.columns.map(quoteId).join(', ')}) ` + `SELECT * FROM ROWS FROM (${t.columns.map((c, i) => `unnest(CAST($${i + 1} AS ${types.get(c)}[]))`).join(', ')})`;
  let written = 0;
  for (const rows of sourceBatches(sqlite, t, per)) {
    const params = t.columns.map((c, j) =>
      rows.map((r) => {
        const v = r[j];
        if (v !== null && typeof v === 'object') throw new CopyError(`${t.name}.${c} holds a binary value (BLOB): not copied`);
        return v;
      }),
    );
    try {
      await trx.executeQuery(CompiledQuery.raw(text, params));
    } catch (e) {
      throw new CopyError(`copying ${t.name} failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    written += rows.length;
    progress(rows.length);
  }
  return written;
}

interface SqliteColumn {
  name: string;
  type: string;
  notnull: number;
  pk: number;
}

/**
 * A record table on the target as the source has it: its columns (seq the identity key; fields
 * typed from their metadata as the schema service types them; built-in columns as declared) and
 * its unique constraints now, its other indexes after the rows are in (`indexes`).
 */
async function createRecordTable(sqlite: Database.Database, trx: Kysely<any>, target: Db, table: string, fieldTypes: Map<string, FieldType>) {
  const cols = sqlite.prepare(`SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid`).all(table) as SqliteColumn[];
  if (!cols.length) throw new CopyError(`record table ${table} (named in objects.table_name) is not in the source`);
  const list = sqlite.prepare(`SELECT name, "unique", origin, partial FROM pragma_index_list(?)`).all(table) as { name: string; unique: number; origin: string; partial: number }[];
  const columnsOf = (index: string) => {
    const c = sqlite.prepare(`SELECT name FROM pragma_index_info(?) ORDER BY seqno`).all(index) as { name: string | null }[];
    if (c.some((x) => x.name === null)) throw new CopyError(`index ${index} of ${table} is on an expression: not supported`);
    return c.map((x) => x.name!);
  };
  const uniqueCols = list.filter((i) => i.origin === 'u').map((i) => columnsOf(i.name));
  const single = new Set(uniqueCols.filter((c) => c.length === 1).map((c) => c[0]!));
  let t = trx.schema.createTable(table);
  for (const c of cols) {
    const ft = fieldTypes.get(c.name);
    const declared = c.type.toUpperCase();
    if (c.pk) {
      t = t.addColumn(c.name, target.adapter.idType, (b) => target.adapter.identity(b));
      continue;
    }
    const type = ft
      ? target.adapter.columnType(storageOf(ft))
      : declared.includes('INT')
        ? 'bigint'
        : declared.includes('REAL') || declared.includes('FLOA') || declared.includes('DOUB')
          ? 'double precision'
          : 'text';
    t = t.addColumn(c.name, type as never, (b) => {
      let x = b;
      if (c.notnull) x = x.notNull();
      if (single.has(c.name)) x = x.unique();
      return x;
    });
  }
  for (const u of uniqueCols.filter((c) => c.length > 1)) t = t.addUniqueConstraint(`${table}__${u.join('_')}__key`, u as never[]);
  await t.execute();
  const indexes = list
    .filter((i) => i.origin === 'c')
    .map((i) => {
      if (i.partial) throw new CopyError(`index ${i.name} of ${table} is partial: not supported`);
      return { name: i.name, unique: i.unique === 1, columns: columnsOf(i.name) };
    });
  return indexes;
}

function tableNames(sqlite: Database.Database): string[] {
  return (sqlite.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).all() as { name: string }[]).map((r) => r.name);
}

async function countTarget(trx: Kysely<any>, table: string): Promise<number> {
  const r = await sql<{ n: number }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(trx);
  return Number(r.rows[0]!.n);
}

/**
 * Copies every table of an open, migrated SQLite database into an open PostgreSQL database (migrated
 * here), in one transaction on the target. Throws CopyError, target untouched, when it holds data
 * (without `replace`) or when a table's row count differs after the copy.
 */
export async function copyDatabase(source: SqliteDb, target: Db, opts: CopyOptions = {}): Promise<CopyResult> {
  const sqlite = source.sqlite;
  if (!sqlite || source.adapter.name !== 'sqlite') throw new CopyError('the source must be a SQLite database');
  if (target.adapter.name !== 'postgres') throw new CopyError('the target must be a PostgreSQL database (postgres://…)');
  const t0 = performance.now();
  const per = opts.batchRows ?? BATCH_ROWS;
  // Both migrated as every command migrates them: the source's tables are the target's.
  await migrate(source);
  await migrate(target);
  const phases = { migrate: (performance.now() - t0) / 1000, rows: 0, search: 0, verify: 0 };
  let mark = performance.now();
  const lap = (phase: keyof typeof phases) => {
    const now = performance.now();
    phases[phase] += (now - mark) / 1000;
    mark = now;
  };

  // One read transaction on the source: every table as of one moment, even while a server writes.
  sqlite.exec('BEGIN');
  try {
    const all = tableNames(sqlite);
    const objects = sqlite.prepare(`SELECT id, workspace_id, table_name FROM objects ORDER BY id`).all() as { id: number; workspace_id: number; table_name: string }[];
    const workspaceIds = (sqlite.prepare('SELECT id FROM workspaces ORDER BY id').all() as { id: number }[]).map((w) => w.id);
    const known = new Set([...SHARED_TABLES, ...WORKSPACE_TABLES, ...objects.map((o) => o.table_name), 'search_terms', ...NOT_COPIED]);
    // Tables the product does not make (another tool's): copied whole into the shared schema, where the target must have them.
    const extra = all.filter((t) => !known.has(t) && !isSqliteInternal(t));
    const shared = [...SHARED_TABLES, ...extra].map((t) => sourceTable(sqlite, t));
    const perWorkspace = new Map(
      workspaceIds.map((ws) => [
        ws,
        {
          tables: WORKSPACE_TABLES.map((t) => sourceTable(sqlite, t, ofWorkspace(t, ws))),
          objects: objects.filter((o) => o.workspace_id === ws).map((o) => ({ ...o, source: sourceTable(sqlite, o.table_name) })),
          terms: sourceTable(sqlite, 'search_terms', ofWorkspace('search_terms', ws)),
          docs: all.includes('search_docs') ? (sqlite.prepare('SELECT count(*) AS n FROM search_docs WHERE workspace_id = ?').get(ws) as { n: number }).n : 0,
        },
      ]),
    );
    const sourceMigrations = (sqlite.prepare('SELECT count(*) AS n FROM kysely_migration').get() as { n: number }).n;
    const fieldTypes = new Map<number, Map<string, FieldType>>();
    for (const f of sqlite.prepare('SELECT object_id, column_name, type FROM fields').all() as { object_id: number; column_name: string; type: FieldType }[]) {
      if (!fieldTypes.has(f.object_id)) fieldTypes.set(f.object_id, new Map());
      fieldTypes.get(f.object_id)!.set(f.column_name, f.type);
    }
    const sum = (ts: SourceTable[]) => ts.reduce((n, t) => n + t.count, 0);
    const recordRows = [...perWorkspace.values()].reduce((n, w) => n + sum(w.objects.map((o) => o.source)), 0);
    const total = sum(shared) + [...perWorkspace.values()].reduce((n, w) => n + sum(w.tables) + w.terms.count, 0) + 2 * recordRows;
    let done = 0;
    const progress = (step: string) => (n: number) => {
      done += n;
      opts.onProgress?.({ step, done, total });
    };
    opts.onProgress?.({ step: 'start', done: 0, total });
    const counts = new Map<string, TableCount>();
    const count = async (trx: Kysely<any>, t: SourceTable) => {
      const c = counts.get(t.name) ?? { table: t.name, source: 0, target: 0 };
      c.source += t.count;
      c.target += await countTarget(trx, t.name);
      counts.set(t.name, c);
    };
    /** Copies a table, its secondary indexes built once after the rows are in, not row by row (the unique ones stay: keys are checked as they arrive). */
    const copyTable = async (trx: Kysely<any>, t: SourceTable) => {
      const indexes = t.count > per ? await target.adapter.secondaryIndexes(trx, t.name) : [];
      for (const i of indexes) await sql`DROP INDEX ${sql.id(i.name)}`.execute(trx);
      const n = await copyRows(sqlite, trx, t, per, progress(t.name));
      for (const i of indexes) await sql.raw(i.create).execute(trx);
      return n;
    };

    const k = target.kysely as unknown as Kysely<any>;
    const result = await k.transaction().execute(async (trx) => {
      // A second copy into the same target waits here, then finds it holding data.
      await sql`LOCK TABLE workspaces IN EXCLUSIVE MODE`.execute(trx);
      const held: string[] = [];
      for (const t of [...SHARED_TABLES, ...extra]) {
        if (!(await targetColumns(trx, t)).size) continue;
        const r = await sql<{ any: boolean }>`SELECT EXISTS (SELECT 1 FROM ${sql.table(t)}) AS any`.execute(trx);
        if (r.rows[0]!.any) held.push(t);
      }
      if (held.length && !opts.replace) throw new CopyError(`the target already holds data (in ${held.join(', ')}); nothing was copied. Pass --replace to empty it and copy again`);
      if (held.length) await emptyTarget(trx, target, [...SHARED_TABLES, ...extra]);

      let rows = 0;
      for (const t of shared) rows += await copyTable(trx, t);
      await setIdentities(trx);
      for (const t of shared) await count(trx, t);
      await target.adapter.analyze(trx, true);
      lap('rows');

      let searchDocs = 0;
      for (const [ws, w] of perWorkspace) {
        // Its schema, made as creating the workspace makes it; the transaction's statements now work in it.
        await createWorkspaceSpace(target, trx, ws);
        for (const t of w.tables) rows += await copyTable(trx, t);
        for (const o of w.objects) {
          const indexes = await createRecordTable(sqlite, trx, target, o.table_name, fieldTypes.get(o.id) ?? new Map());
          rows += await copyRows(sqlite, trx, o.source, per, progress(o.table_name));
          for (const i of indexes) {
            let q = trx.schema.createIndex(i.name).on(o.table_name).columns(i.columns);
            if (i.unique) q = q.unique();
            await q.execute();
          }
        }
        await setIdentities(trx);
        lap('rows');
        searchDocs += await rebuildSearch(trx, target, ws, per, progress('search'), recordRows > per);
        lap('search');
        // The word list exactly as the source's (the documents above wrote theirs: replaced).
        await sql`DELETE FROM search_terms`.execute(trx);
        rows += await copyRows(sqlite, trx, w.terms, per, progress('search_terms'));
        lap('rows');
        for (const t of [...w.tables, ...w.objects.map((o) => o.source), w.terms]) await count(trx, t);
        const docs = counts.get('search_docs') ?? { table: 'search_docs', source: 0, target: 0 };
        docs.source += w.docs;
        docs.target += await countTarget(trx, 'search_docs');
        counts.set('search_docs', docs);
        await target.adapter.analyze(trx, true);
        lap('verify');
      }
      const migrations = {
        table: 'kysely_migration',
        source: sourceMigrations,
        target: Number((await sql<{ n: number }>`SELECT count(*) AS n FROM ${sql.table(`${target.sharedSchema}.kysely_migration`)}`.execute(trx)).rows[0]!.n),
      };
      const list = [...counts.values(), migrations];
      const bad = list.filter((c) => c.source !== c.target);
      if (bad.length) throw new CopyError(`row counts differ: ${bad.map((c) => `${c.table} (source ${c.source}, target ${c.target})`).join(', ')}; nothing was committed`, list);
      // Servers already running on the target are told, at commit, that every workspace's schema and
      // words changed (TRUNCATE and INSERT fire none of the triggers that tell them otherwise).
      const channel = `crm:${target.sharedSchema}`;
      await sql`SELECT pg_notify(${channel}, 'schema:' || id), pg_notify(${channel}, 'words:' || id) FROM ${sql.table(`${target.sharedSchema}.workspaces`)}`.execute(trx);
      return { counts: list, rows, searchDocs };
    });
    return { ...result, seconds: (performance.now() - t0) / 1000, phases };
  } finally {
    sqlite.exec('COMMIT');
  }
}

/** A workspace's search documents through the search backend, from its rows now on the target (its schema read in this transaction). */
async function rebuildSearch(trx: Transaction<any>, target: Db, ws: number, per: number, progress: (n: number) => void, rebuildIndexes: boolean): Promise<number> {
  const tdb: Db = { ...target.forWorkspace(ws), kysely: trx as never };
  // The full-text (GIN) index built once at the end: far faster than growing it document by document.
  const searchIndexes = rebuildIndexes ? await target.adapter.secondaryIndexes(trx, 'search_docs') : [];
  for (const i of searchIndexes) await sql`DROP INDEX ${sql.id(i.name)}`.execute(trx);
  const ctx: Ctx = { db: tdb, log: { info() {}, warn() {}, error() {}, debug() {} }, actor: { workspaceId: ws, userId: 'system', role: 'admin', via: 'cli' } };
  const schema = await getSchema(ctx);
  let written = 0;
  for (const obj of schema.objects.values()) {
    let after = 0;
    for (;;) {
      const batch = (await trx.selectFrom(obj.table).selectAll().where('seq', '>', after).orderBy('seq').limit(per).execute()) as Record<string, unknown>[];
      if (!batch.length) break;
      await indexRows(trx, tdb, obj, ws, batch, true, schema);
      written += batch.length;
      after = Number(batch[batch.length - 1]!.seq);
      progress(batch.length);
    }
  }
  for (const i of searchIndexes) await sql.raw(i.create).execute(trx);
  return written;
}

/** --replace: the target's workspace schemas dropped and its shared tables emptied, in the copy's transaction. */
async function emptyTarget(trx: Transaction<any>, target: Db, tables: string[]) {
  const existing: string[] = [];
  for (const t of tables) if ((await targetColumns(trx, t)).size) existing.push(t);
  for (const w of (await trx.selectFrom('workspaces').select('id').execute()) as { id: number }[])
    await sql`DROP SCHEMA IF EXISTS ${sql.id(workspaceSchema(target.sharedSchema!, w.id))} CASCADE`.execute(trx);
  await sql.raw(`TRUNCATE ${existing.map(quoteId).join(', ')} RESTART IDENTITY CASCADE`).execute(trx);
}

/** Every identity column of the transaction's current schema set past its largest value, so new rows never reuse a copied key. */
async function setIdentities(trx: Kysely<any>) {
  // From the catalog, this schema's tables only (information_schema.columns checks privileges on
  // every column it considers: other schemas' too, some perhaps being dropped meanwhile).
  const cols = await sql<{ table_name: string; column_name: string }>`
    SELECT c.relname AS table_name, a.attname AS column_name FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = ${currentSchemaOid} AND c.relkind = 'r'
      AND a.attidentity <> '' AND a.attnum > 0 AND NOT a.attisdropped`.execute(trx);
  for (const c of cols.rows) {
    await sql`SELECT setval(pg_get_serial_sequence(quote_ident(current_schema()) || '.' || ${quoteId(c.table_name)}, ${c.column_name}), m)
      FROM (SELECT max(${sql.ref(c.column_name)}) AS m FROM ${sql.table(c.table_name)}) x WHERE m IS NOT NULL`.execute(trx);
  }
}

/**
 * Every value of every copied table compared between source and target (rows sorted, text, numbers
 * and nulls as each side's driver reads them), and the search documents by record. Returns the
 * differences found (at most a few per table); empty when both read back the same.
 */
export async function compareDatabases(source: SqliteDb, target: Db): Promise<string[]> {
  const sqlite = source.sqlite;
  const diffs: string[] = [];
  const objects = sqlite.prepare(`SELECT workspace_id, table_name FROM objects ORDER BY id`).all() as { workspace_id: number; table_name: string }[];
  const all = tableNames(sqlite);
  const known = new Set([...SHARED_TABLES, ...WORKSPACE_TABLES, ...objects.map((o) => o.table_name), 'search_terms', ...NOT_COPIED]);
  const key = (row: unknown[]) => JSON.stringify(row);
  const compare = (table: string, a: unknown[][], b: unknown[][]) => {
    const sa = a.map(key).sort();
    const sb = b.map(key).sort();
    if (sa.length !== sb.length) diffs.push(`${table}: ${sa.length} rows on the source, ${sb.length} on the target`);
    let shown = 0;
    for (let i = 0; i < Math.max(sa.length, sb.length) && shown < 3; i++)
      if (sa[i] !== sb[i]) {
        diffs.push(`${table}: source ${sa[i] ?? '(none)'} / target ${sb[i] ?? '(none)'}`);
        shown++;
      }
  };
  const compareTable = async (k: Kysely<any>, t: string, where?: SourceTable['where']) => {
    const cols = (sqlite.prepare(`SELECT name FROM pragma_table_info(?) ORDER BY cid`).all(t) as { name: string }[]).map((c) => c.name);
    const a = sqlite
      .prepare(`SELECT ${cols.map(quoteId).join(', ')} FROM ${quoteId(t)}${where ? ` WHERE ${where.sql}` : ''}`)
      .raw(true)
      .all(...(where ? [where.value] : [])) as unknown[][];
    const r = await sql<Record<string, unknown>>`SELECT ${sql.join(cols.map((c) => sql.ref(c)))} FROM ${sql.table(t)}`.execute(k);
    compare(
      t,
      a,
      r.rows.map((row) => cols.map((c) => row[c])),
    );
  };
  for (const t of [...SHARED_TABLES, ...all.filter((t) => !known.has(t) && !isSqliteInternal(t))]) await compareTable(target.kysely, t);
  for (const { id } of sqlite.prepare('SELECT id FROM workspaces ORDER BY id').all() as { id: number }[]) {
    const k = target.forWorkspace(id).kysely as unknown as Kysely<any>;
    for (const t of [...WORKSPACE_TABLES, 'search_terms']) await compareTable(k, t, ofWorkspace(t, id));
    for (const o of objects.filter((x) => x.workspace_id === id)) await compareTable(k, o.table_name);
    const docs = `SELECT workspace_id, object_id, record_id FROM search_docs`;
    compare(
      'search_docs',
      sqlite.prepare(`${docs} WHERE workspace_id = ?`).raw(true).all(id) as unknown[][],
      (await sql.raw<Record<string, unknown>>(docs).execute(k)).rows.map((r) => [r.workspace_id, r.object_id, r.record_id]),
    );
  }
  return diffs;
}

/** Opens `from` (an existing SQLite file, migrated as every command does) and `to` (a postgres:// URL). */
export function openForCopy(from: string, to: string, lockWaitMs?: number): { source: SqliteDb; target: Db } {
  if (isPostgresUrl(from)) throw new CopyError('the source (--from, else --db) must be a SQLite file: copying from PostgreSQL is not supported');
  if (!isPostgresUrl(to)) throw new CopyError('--to must be a postgres:// URL');
  if (from === ':memory:' || !fs.existsSync(from)) throw new CopyError(`no SQLite database at ${from}`);
  const source = openSqliteDatabase({ file: from });
  const target = openDatabase({ file: to, ...(lockWaitMs !== undefined ? { lockWaitMs } : {}) });
  return { source, target };
}
