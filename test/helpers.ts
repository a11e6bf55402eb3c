import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { type Kysely, type RawBuilder, sql } from 'kysely';
import pino from 'pino';
import { type Db, openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { termsOf } from '../src/db/search.js';
import { buildApp } from '../src/http/app.js';
import { type Ctx, contextFor, type Role } from '../src/services/context.js';
import { createToken, createUser, createWorkspace, type User, type Workspace } from '../src/services/users.js';

export const silent = pino({ level: 'silent' });

export interface TestWorkspace {
  workspace: Workspace;
  admin: User;
  member: User;
  adminToken: string;
  memberToken: string;
  /** Service context acting as the admin (via 'test'). */
  ctx: Ctx;
}

/**
 * With CRM_TEST_DATABASE_URL (postgres://…), tests run on PostgreSQL: each fresh database is a
 * schema of its own in that database, dropped when the test closes it.
 */
export const TEST_DATABASE_URL = process.env.CRM_TEST_DATABASE_URL || undefined;
export const onPostgres = !!TEST_DATABASE_URL;
let schemas = 0;

/** The URL of a new, unique schema in the database of `url` (created by the first migrate). */
export function schemaUrl(url: string, prefix = 't'): string {
  const u = new URL(url);
  u.searchParams.set('schema', `${prefix}${process.pid}_${++schemas}_${Math.random().toString(36).slice(2, 8)}`);
  return u.toString();
}

/** The schemas of a shared schema's workspaces (`<shared>_w<id>`), by workspace id. */
async function workspaceSchemas(k: Kysely<any>, shared: string): Promise<string[]> {
  const r = await sql<{ s: string }>`SELECT nspname AS s FROM pg_namespace WHERE nspname ~ ${`^${shared}_w[0-9]+$`} ORDER BY length(nspname), nspname`.execute(k);
  return r.rows.map((x) => x.s);
}

/** Drops a shared schema and its workspaces' schemas, with everything in them. */
async function dropSchemas(k: Kysely<any>, shared: string): Promise<void> {
  for (const s of [...(await workspaceSchemas(k, shared)), shared]) await sql`DROP SCHEMA IF EXISTS ${sql.id(s)} CASCADE`.execute(k);
}

/** Drops the schema a schemaUrl names, and its workspaces' schemas, with everything in them. */
export async function dropSchemaOf(location: string): Promise<void> {
  const schema = new URL(location).searchParams.get('schema');
  if (!schema) return;
  const db = openDatabase({ file: location });
  try {
    await dropSchemas(db.kysely, schema);
  } finally {
    await db.close();
  }
}

async function freshPostgres(url: string, opts: { heavyReads?: number; lockWaitMs?: number | undefined } = {}): Promise<Db> {
  const location = schemaUrl(url);
  const schema = new URL(location).searchParams.get('schema')!;
  // Heavy reads at once as on SQLite: one without read workers, else one per worker.
  const db = openDatabase({ file: location, readWorkers: opts.heavyReads ?? 1, ...(opts.lockWaitMs !== undefined ? { lockWaitMs: opts.lockWaitMs } : {}) });
  await migrate(db);
  const close = db.close.bind(db);
  db.close = async () => {
    try {
      await dropSchemas(db.kysely, schema);
    } finally {
      await close();
    }
  };
  return db;
}

/**
 * A fresh, migrated database: in memory by default, or a file on disk when durability matters or
 * another connection must open it (`openDatabase({ file: db.file })`); a schema on PostgreSQL.
 * `lockWaitMs`: how long its writes wait for another connection's lock.
 */
export async function freshDb(opts: { file?: boolean; lockWaitMs?: number } = {}): Promise<Db> {
  if (TEST_DATABASE_URL) return freshPostgres(TEST_DATABASE_URL, { lockWaitMs: opts.lockWaitMs });
  let file = ':memory:';
  if (opts.file) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-test-'));
    file = path.join(dir, 'crm.db');
  }
  const db = openDatabase({ file, ...(opts.lockWaitMs !== undefined ? { lockWaitMs: opts.lockWaitMs } : {}) });
  await migrate(db);
  return db;
}

export async function makeWorkspace(db: Db, name: string): Promise<TestWorkspace> {
  const workspace = await createWorkspace(db, name);
  const admin = await createUser(db, workspace.id, { email: `admin@${name}.test`, name: `${name} Admin`, role: 'admin' });
  const member = await createUser(db, workspace.id, { email: `member@${name}.test`, name: `${name} Member`, role: 'member' });
  const adminToken = (await createToken(db, workspace.id, admin.id, 'test admin')).token;
  const memberToken = (await createToken(db, workspace.id, member.id, 'test member')).token;
  return { workspace, admin, member, adminToken, memberToken, ctx: ctxFor(db, workspace.id, admin.id, 'admin') };
}

export function ctxFor(db: Db, workspaceId: number, userId: string, role: Role, via = 'test'): Ctx {
  return contextFor(db, silent, { workspaceId, userId, role, via });
}

export interface TestApp {
  db: Db;
  app: FastifyInstance;
  a: TestWorkspace;
  b: TestWorkspace;
  close(): Promise<void>;
}

/** Database + Fastify app + two workspaces (A and B) for tenancy checks. */
export async function testApp(opts: { file?: boolean } = {}): Promise<TestApp> {
  return testAppOn(await freshDb(opts));
}

/** app.inject with a bearer token and JSON body; returns status and parsed JSON. */
export async function call(app: FastifyInstance, token: string | null, method: string, url: string, body?: unknown) {
  const res = await app.inject({
    method: method as 'GET',
    url,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { payload: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  let json: any = null;
  try {
    json = res.json();
  } catch {
    json = null;
  }
  return { status: res.statusCode, body: json, headers: res.headers, raw: res.body };
}

/** A migrated file database whose heavy reads (aggregates) run on `readWorkers` worker threads. */
export async function freshPooledDb(readWorkers = 2): Promise<Db> {
  if (TEST_DATABASE_URL) return freshPostgres(TEST_DATABASE_URL, { heavyReads: readWorkers });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-test-'));
  const db = openDatabase({ file: path.join(dir, 'crm.db'), readWorkers });
  await migrate(db);
  return db;
}

/** Like testApp, over a database the caller opened (e.g. freshPooledDb()). */
export async function testAppOn(db: Db): Promise<TestApp> {
  const app = await buildApp({ db, log: silent });
  const a = await makeWorkspace(db, 'alpha');
  const b = await makeWorkspace(db, 'beta');
  return {
    db,
    app,
    a,
    b,
    async close() {
      await app.close();
      await db.close();
    },
  };
}

/** Every record of an object, read page by page through the records service. */
export async function listAll(ctx: Ctx, object: string, filter?: import('../src/services/filters.js').FilterGroup) {
  const { listRecords } = await import('../src/services/records.js');
  const out: Record<string, unknown>[] = [];
  let cursor: string | undefined;
  do {
    const page = await listRecords(ctx, object, { limit: 100, cursor, filter, includeTotal: false });
    out.push(...page.data);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return out;
}

/**
 * Raw SQL for tests, on either dialect, through the database's Kysely (never the driver's own
 * handle): a `sql` template (values bound, `sql.id`/`sql.table` for names) or plain text without
 * values. Quote identifiers with "x" (both dialects); COUNT(*) and other int8 arrive as numbers on
 * PostgreSQL too (open.ts sets the parser).
 */
type Query = RawBuilder<unknown> | string;
const raw = (q: Query) => (typeof q === 'string' ? sql.raw(q) : q);

/**
 * Runs a raw statement. On PostgreSQL's shared handle (a test's `db`), every workspace's schema
 * is on the search path, in the order of their ids, before the shared one: the tables of the
 * test's (first) workspace are found by their plain names. Pass `db.forWorkspace(id)` for another's.
 */
async function run(db: Db | Kysely<any>, q: Query) {
  if (!('kysely' in db)) return raw(q).execute(db);
  const shared = db.sharedSchema;
  if (!shared) return raw(q).execute(db.kysely);
  if (!(await sql<{ ok: boolean }>`SELECT current_schema() = ${shared} AS ok`.execute(db.kysely)).rows[0]!.ok) return raw(q).execute(db.kysely);
  return db.kysely.transaction().execute(async (trx) => {
    const path = [...(await workspaceSchemas(trx, shared)), shared, 'public'].map((s) => `"${s}"`).join(', ');
    await sql`SELECT set_config('search_path', ${path}, true)`.execute(trx);
    return raw(q).execute(trx);
  });
}

/** Every row of a query. */
export async function sqlAll<T = Record<string, any>>(db: Db | Kysely<any>, q: Query): Promise<T[]> {
  return (await run(db, q)).rows as T[];
}

/** SQLite: the match keys' table as step 0005 made it (empty), for tests that run steps 0011 and 0013 again. */
export async function oldMatchKeyTable(db: Db | Kysely<any>): Promise<void> {
  await sqlRun(db, 'DROP TABLE dedupe_keys');
  await sqlRun(db, 'CREATE TABLE dedupe_keys (workspace_id integer not null, object_id integer not null, kind text not null, key text not null, record_id text not null)');
}

/**
 * A workspace's match keys with their records' ids (dedupe_keys names a record by its seq: each
 * object's table joined), sorted. `db`: the workspace's (on PostgreSQL, its schema).
 */
export async function matchKeys(db: Db | Kysely<any>, workspaceId: number): Promise<{ object_id: number; kind: string; key: string; record_id: string }[]> {
  const out: { object_id: number; kind: string; key: string; record_id: string }[] = [];
  for (const o of await sqlAll<{ id: number; table_name: string }>(db, sql`SELECT id, table_name FROM objects WHERE workspace_id = ${workspaceId} ORDER BY id`))
    out.push(
      ...(await sqlAll<{ object_id: number; kind: string; key: string; record_id: string }>(
        db,
        sql`SELECT k.object_id, k.kind, k.key, r.id AS record_id FROM dedupe_keys k JOIN ${sql.table(o.table_name)} r ON r.seq = k.record_seq
            WHERE k.workspace_id = ${workspaceId} AND k.object_id = ${o.id}`,
      )),
    );
  return out.map((k) => ({ ...k, object_id: Number(k.object_id) })).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}

/** The first row of a query (undefined when there is none). */
export async function sqlGet<T = Record<string, any>>(db: Db | Kysely<any>, q: Query): Promise<T | undefined> {
  return (await sqlAll<T>(db, q))[0];
}

/** Runs a statement; returns the rows it changed (insert, update, delete). */
export async function sqlRun(db: Db | Kysely<any>, q: Query): Promise<number> {
  return Number((await run(db, q)).numAffectedRows ?? 0);
}

/** Whether this database is PostgreSQL (a test may open a SQLite file of its own on either run). */
export const isPostgres = (db: Db) => db.adapter.name === 'postgres';

/** The table holding a workspace's records of an object (w1_contacts, …). */
export async function tableOf(db: Db, workspaceId: number, object: string): Promise<string> {
  const r = await sqlGet<{ table_name: string }>(db.forWorkspace(workspaceId), sql`SELECT table_name FROM objects WHERE workspace_id = ${workspaceId} AND name = ${object}`);
  if (!r) throw new Error(`no object ${object} in workspace ${workspaceId}`);
  return r.table_name;
}

/** The names of the database's tables (its schema's, on PostgreSQL), sorted by byte order. */
export async function tableNames(db: Db): Promise<string[]> {
  // PostgreSQL: the shared schema's and its workspaces' (each name once).
  const r = db.sharedSchema
    ? await sqlAll<{ name: string }>(
        db.kysely,
        sql`SELECT DISTINCT table_name AS name FROM information_schema.tables WHERE (table_schema = ${db.sharedSchema} OR table_schema ~ ${`^${db.sharedSchema}_w[0-9]+$`}) AND table_type = 'BASE TABLE'`,
      )
    : await sqlAll<{ name: string }>(db, sql`SELECT name FROM sqlite_master WHERE type = 'table'`);
  return r.map((x) => x.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A document of the search index as stored: the text of its columns, whatever the dialect's index. */
export interface IndexedDoc {
  workspace_id: number;
  object_id: number;
  record_id: string;
  name: string;
  body: string;
  exact: string;
}

/**
 * The search index's documents (of a workspace, or all), ordered by object and record, each column
 * as the words the index holds for it, folded and in order (termsOf): SQLite's FTS5 keeps no copy
 * of the text, so its words are read from the index itself (fts5vocab 'instance') and joined to
 * search_docs; PostgreSQL's search_docs rows hold their text, split the same way.
 */
export async function indexedDocs(db: Db, workspaceId?: number): Promise<IndexedDoc[]> {
  if (workspaceId === undefined && db.sharedSchema) {
    // PostgreSQL: each workspace's index is in its own schema.
    const out: IndexedDoc[] = [];
    for (const w of await sqlAll<{ id: number }>(db.kysely, 'SELECT id FROM workspaces ORDER BY id')) out.push(...(await indexedDocs(db, w.id)));
    return out;
  }
  const where = workspaceId === undefined ? sql`` : sql`WHERE d.workspace_id = ${workspaceId}`;
  const k = workspaceId === undefined ? db : db.forWorkspace(workspaceId);
  if (isPostgres(db)) {
    const rows = await sqlAll<IndexedDoc>(k, sql`SELECT d.workspace_id, d.object_id, d.record_id, d.name, d.body, d.exact FROM search_docs d ${where} ORDER BY d.object_id, d.record_id COLLATE "C"`);
    return rows.map((r) => ({ ...r, name: termsOf(r.name).join(' '), body: termsOf(r.body).join(' '), exact: termsOf(r.exact).join(' ') }));
  }
  await sqlRun(k, `CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_vocab_instance USING fts5vocab(main, search_index, 'instance')`);
  const words = await sqlAll<{ doc: number; col: string; words: string | null }>(
    k,
    sql`SELECT doc, col, group_concat(term, ' ' ORDER BY offset) AS words FROM temp.search_vocab_instance GROUP BY doc, col`,
  );
  const byDoc = new Map<number, Record<string, string>>();
  for (const w of words) byDoc.set(Number(w.doc), { ...byDoc.get(Number(w.doc)), [w.col]: w.words ?? '' });
  const docs = await sqlAll<{ doc_id: number; workspace_id: number; object_id: number; record_id: string }>(
    k,
    sql`SELECT d.doc_id, d.workspace_id, d.object_id, d.record_id FROM search_docs d ${where} ORDER BY d.object_id, d.record_id`,
  );
  return docs.map(({ doc_id, ...d }) => {
    const cols = byDoc.get(Number(doc_id)) ?? {};
    return { ...d, name: cols.name ?? '', body: cols.body ?? '', exact: cols.exact ?? '' };
  });
}

/**
 * Records whose indexed text holds this word (whole, in any column), in any workspace, sorted: read
 * from the index through the dialect's search backend, not through the search service (which drops
 * hits whose record is gone, so only the index shows a stale entry).
 */
export async function indexedRecords(db: Db, word: string): Promise<string[]> {
  const workspaces = await sqlAll<{ id: number }>(db.kysely, 'SELECT id FROM workspaces');
  const match = { any: [{ in: 'text' as const, all: [[{ term: word, prefix: false }]] }] };
  const out: string[] = [];
  for (const w of workspaces) for (const h of await db.search.query(db.forWorkspace(w.id).kysely, w.id, [], match, 10_000, [])) out.push(h.record_id);
  return out.sort();
}

/**
 * Holds a write transaction open on `db` (another connection: another process's long import
 * batch, say) until the returned function is called, which commits it. On SQLite the transaction
 * begins IMMEDIATE, holding the file's write lock; on PostgreSQL writes lock rows and tables, not
 * the database, so `locks` are taken in it first (LOCK TABLE … IN EXCLUSIVE MODE: others may read
 * those tables, not write them).
 */
export async function holdWriteLock(db: Db, locks: Query[] = []): Promise<() => Promise<void>> {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let held!: () => void;
  const holding = new Promise<void>((r) => (held = r));
  const done = db.kysely.transaction().execute(async (trx) => {
    for (const l of locks) await raw(l).execute(trx);
    held();
    await released;
  });
  await Promise.race([holding, done]);
  return async () => {
    release();
    await done;
  };
}
