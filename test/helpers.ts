import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { sql } from 'kysely';
import type { FastifyInstance } from 'fastify';
import { openDatabase, type Db } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { buildApp } from '../src/http/app.js';
import type { Ctx, Role } from '../src/services/context.js';
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

/** Drops the schema a schemaUrl names, with everything in it. */
export async function dropSchemaOf(location: string): Promise<void> {
  const schema = new URL(location).searchParams.get('schema');
  if (!schema) return;
  const db = openDatabase({ file: location });
  try {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db.kysely);
  } finally {
    await db.close();
  }
}

async function freshPostgres(url: string, heavyReads = 1): Promise<Db> {
  const location = schemaUrl(url);
  const schema = new URL(location).searchParams.get('schema')!;
  // Heavy reads at once as on SQLite: one without read workers, else one per worker.
  const db = openDatabase({ file: location, readWorkers: heavyReads });
  await migrate(db);
  const close = db.close.bind(db);
  db.close = async () => {
    try {
      await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db.kysely);
    } finally {
      await close();
    }
  };
  return db;
}

/** A fresh, migrated database: in memory by default, or a file on disk when durability matters (a schema on PostgreSQL). */
export async function freshDb(opts: { file?: boolean } = {}): Promise<Db> {
  if (TEST_DATABASE_URL) return freshPostgres(TEST_DATABASE_URL);
  let file = ':memory:';
  if (opts.file) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-test-'));
    file = path.join(dir, 'crm.db');
  }
  const db = openDatabase({ file });
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
  return { db, log: silent, actor: { workspaceId, userId, role, via } };
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
  if (TEST_DATABASE_URL) return freshPostgres(TEST_DATABASE_URL, readWorkers);
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
