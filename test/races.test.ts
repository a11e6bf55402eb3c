import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { errorHandler } from '../src/http/errors.js';
import { ensureDefaultWorkspace } from '../src/services/bootstrap.js';
import { fromDatabaseError, isCrmError } from '../src/services/errors.js';
import { createPipeline } from '../src/services/pipelines.js';
import { createRecord, upsertRecords } from '../src/services/records.js';
import { createField, createObject } from '../src/services/schema.js';
import { createWorkspace } from '../src/services/users.js';
import { call, freshDb, holdWriteLock, makeWorkspace, oldMatchKeyTable, onPostgres, silent, sqlAll, sqlRun, type TestApp, type TestWorkspace, testApp } from './helpers.js';

/**
 * Concurrent calls inside one process: the services check a name, then insert it; two calls that
 * both pass the check must not answer a raw SQLITE_CONSTRAINT_UNIQUE (500). The database's unique
 * constraint decides, and the loser gets 409 DUPLICATE_RECORD.
 */

/** Exactly one call succeeded; every other failed with DUPLICATE_RECORD and a message naming the conflict. */
function oneWinner(results: PromiseSettledResult<unknown>[], named: RegExp) {
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  expect(won.length).toBe(1);
  expect(lost.length).toBe(results.length - 1);
  for (const l of lost) {
    expect(isCrmError(l.reason), String(l.reason)).toBe(true);
    expect(l.reason).toMatchObject({ code: 'DUPLICATE_RECORD', status: 409 });
    expect(l.reason.message).toMatch(named);
  }
}

let db: Db;
let w: TestWorkspace;

beforeAll(async () => {
  db = await freshDb();
  w = await makeWorkspace(db, 'racers');
});
afterAll(() => db.close());

describe('concurrent creates of one name', () => {
  it('workspace: one is created, the other answers DUPLICATE_RECORD', async () => {
    oneWinner(await Promise.allSettled([createWorkspace(db, 'twin'), createWorkspace(db, 'twin')]), /twin/);
  });

  it('custom object: one is created, the others answer DUPLICATE_RECORD', async () => {
    const spec = { name: 'gadgets', fields: [{ name: 'title', type: 'TEXT' }] };
    oneWinner(await Promise.allSettled([createObject(w.ctx, spec), createObject(w.ctx, spec), createObject(w.ctx, spec)]), /gadgets/);
  });

  it('custom field: one is created, the other answers DUPLICATE_RECORD', async () => {
    const spec = { name: 'nickname', type: 'TEXT' };
    oneWinner(await Promise.allSettled([createField(w.ctx, 'contacts', spec), createField(w.ctx, 'contacts', spec)]), /nickname/);
  });

  it('pipeline of one object: one is created, the other answers DUPLICATE_RECORD', async () => {
    await createObject(w.ctx, {
      name: 'tickets',
      fields: [
        { name: 'title', type: 'TEXT' },
        { name: 'stage', type: 'SELECT', options: ['open', 'done'] },
      ],
    });
    const spec = { object: 'tickets', name: 'Support', field: 'stage', steps: [{ key: 'open' }, { key: 'done' }] };
    oneWinner(await Promise.allSettled([createPipeline(w.ctx, spec), createPipeline(w.ctx, spec)]), /tickets/);
  });
});

describe('first start of two servers on one new file', () => {
  it('one creates the default workspace and its token, the other starts without one', async () => {
    const fresh = await freshDb();
    try {
      const starts = await Promise.all([1, 2].map(() => ensureDefaultWorkspace(fresh, silent, { name: 'default', demo: false })));
      expect(starts.filter((s) => s !== null).length).toBe(1);
      expect(starts.find((s) => s !== null)!.token.token).toMatch(/^ksr_/);
    } finally {
      await fresh.close();
    }
  });
});

// SQLite files (the migration's lock is the file's write lock); PostgreSQL's migrations are the product's own (src/db/migrations.ts).
describe.skipIf(onPostgres)('two connections migrating one new file at once', () => {
  it('both finish, each migration runs once, and the schema is whole', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'crm-migrate-')), 'crm.db');
    const handles = [openDatabase({ file }), openDatabase({ file }), openDatabase({ file })];
    try {
      const applied = await Promise.all(handles.map((h) => migrate(h)));
      // One connection applied every migration; the others, taking the lock after it, found none pending.
      const all = applied.flat();
      expect(new Set(all).size).toBe(all.length);
      expect(applied.filter((a) => a.length > 0).length).toBe(1);
      const ran = await sqlAll<{ name: string }>(handles[0]!, 'SELECT name FROM kysely_migration ORDER BY name');
      expect(ran.map((r) => r.name)).toEqual([...all].sort());
      // The schema is usable from every handle.
      const w = await makeWorkspace(handles[1]!, 'after-race');
      expect((await createRecord(w.ctx, 'contacts', { first_name: 'Ok' })).id).toBeTruthy();
    } finally {
      for (const h of handles) await h.close();
    }
  });
});

describe.skipIf(onPostgres)('migrating while another process holds the write lock longer than a write waits', () => {
  it("waits for it (as for another process's long migration), then migrates", async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'crm-migrate-')), 'crm.db');
    const first = openDatabase({ file });
    await migrate(first);
    // A migration pending for the second process: the last ones, undone.
    await sqlRun(first, "DELETE FROM kysely_migration WHERE name >= '0009_workspace_migrations'");
    await sqlRun(first, 'ALTER TABLE workspaces DROP COLUMN migrated_to');
    await sqlRun(first, 'ALTER TABLE workspaces DROP COLUMN phone_region');
    await oldMatchKeyTable(first);
    const late = openDatabase({ file, lockWaitMs: 50 });
    let release: (() => Promise<void>) | undefined;
    try {
      release = await holdWriteLock(first);
      const migrating = migrate(late);
      await new Promise((r) => setTimeout(r, 400));
      await release();
      release = undefined;
      expect(await migrating).toEqual(['0009_workspace_migrations', '0010_token_version', '0011_dedupe_keys_lookup_order', '0012_search_without_text', '0013_dedupe_keys_by_seq', '0014_phone_region']);
    } finally {
      await release?.();
      await late.close();
      await first.close();
    }
  });
});

describe('concurrent upserts on one request context', () => {
  it('both succeed (no "schema not preloaded")', async () => {
    const company = await createRecord(w.ctx, 'companies', { name: 'Acme' });
    const rows = (tag: string) => Array.from({ length: 5 }, (_, i) => ({ email: `${tag}${i}@acme.test`, first_name: `${tag}${i}`, company: company.id }));
    const [a, b] = await Promise.all([upsertRecords(w.ctx, 'contacts', rows('a'), 'email'), upsertRecords(w.ctx, 'contacts', rows('b'), 'email')]);
    expect(a.results.map((r) => r.action)).toEqual(Array(5).fill('created'));
    expect(b.results.map((r) => r.action)).toEqual(Array(5).fill('created'));
    // And again, now as updates of the same records, still concurrently.
    const [c, d] = await Promise.all([upsertRecords(w.ctx, 'contacts', rows('a'), 'email'), upsertRecords(w.ctx, 'contacts', rows('b'), 'email')]);
    expect([...c.results, ...d.results].every((r) => r.action === 'updated')).toBe(true);
  });
});

describe('over REST', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await testApp();
  });
  afterAll(() => t.close());

  it('parallel POST /schema and POST /schema/{object}/fields of one name: one 201, the others 409 in the contract shape', async () => {
    const objs = await Promise.all([1, 2, 3].map(() => call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', { name: 'widgets', fields: [{ name: 'title', type: 'TEXT' }] })));
    expect(objs.map((r) => r.status).sort()).toEqual([201, 409, 409]);
    const fields = await Promise.all([1, 2, 3].map(() => call(t.app, t.a.adminToken, 'POST', '/api/v1/schema/widgets/fields', { name: 'size', type: 'INTEGER' })));
    expect(fields.map((r) => r.status).sort()).toEqual([201, 409, 409]);
    for (const r of [...objs, ...fields].filter((x) => x.status === 409)) expect(r.body).toEqual({ error: true, code: 'DUPLICATE_RECORD', message: expect.stringMatching(/widgets|size/) });
  });
});

describe('driver errors the surfaces map once (REST and MCP)', () => {
  /** The error a statement fails with. */
  const rejected = async (p: Promise<unknown>): Promise<unknown> => {
    try {
      await p;
    } catch (e) {
      return e;
    }
    throw new Error('expected an error');
  };
  const run = (stmt: string) => sqlRun(db, stmt);

  it('a unique violation on a record, a name or a link is DUPLICATE_RECORD (409) naming what is taken, on an internal table a logged 500; the lock held past the wait is SERVICE_UNAVAILABLE (503)', async () => {
    const unique = await rejected(run("INSERT INTO workspaces (name, created_at) VALUES ('racers', 'now')"));
    expect(fromDatabaseError(unique)).toMatchObject({ code: 'DUPLICATE_RECORD', status: 409, message: 'A workspace with the same name already exists' });
    // A record table's columns are its fields: named; a metadata table's own columns are not shown.
    const table = `w${w.workspace.id}_contacts`;
    const row = "VALUES ('x1', 'now', 'now', 'Dup', 'dup@race.test')";
    await run(`INSERT INTO ${table} (id, created_at, updated_at, first_name, email) ${row}`);
    const dupEmail = await rejected(run(`INSERT INTO ${table} (id, created_at, updated_at, first_name, email) ${row.replace("'x1'", "'x2'")}`));
    expect(fromDatabaseError(dupEmail)).toMatchObject({ code: 'DUPLICATE_RECORD', message: 'A record with the same email already exists', details: { fields: ['email'] } });
    const pair = "INSERT INTO associations (workspace_id, a_object, a_id, b_object, b_id, created_at) VALUES (1, 'a', '1', 'b', '2', 'now')";
    await run(pair);
    expect((fromDatabaseError(await rejected(run(pair))) as { message?: string } | null)?.message).toBe('A record with the same unique value already exists');
    // Another connection holds the lock past this one's wait: SQLite's write lock on the file
    // (lockWaitMs 0: at once); PostgreSQL's lock on the table, past lock_timeout.
    const file = await freshDb({ file: true, lockWaitMs: onPostgres ? 50 : 0 });
    const other = openDatabase({ file: file.file });
    const release = await holdWriteLock(other, onPostgres ? [sql`LOCK TABLE workspaces IN EXCLUSIVE MODE`] : []);
    try {
      const busy = await rejected(file.kysely.transaction().execute((trx) => sqlRun(trx, "INSERT INTO workspaces (name, created_at) VALUES ('busy', 'now')")));
      expect(fromDatabaseError(busy)).toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503, details: { retryAfter: 1 } });
    } finally {
      await release();
      await other.close();
      await file.close();
    }
    expect(fromDatabaseError(new Error('a bug'))).toBeNull();
    // A unique violation on an internal table, or on a metadata table's generated id, is a bug: 500, logged.
    const internal = [
      "INSERT INTO kysely_migration (name, timestamp) VALUES ('0001_core', 'now')",
      `INSERT INTO search_terms (workspace_id, term) VALUES (${w.workspace.id}, 'taken')`,
      onPostgres
        ? `INSERT INTO search_docs (doc_id, workspace_id, object_id, record_id, name, body, exact, tsv) VALUES (1000001, ${w.workspace.id}, 1, 'dup', '', '', '', '')`
        : `INSERT INTO search_docs (doc_id, workspace_id, object_id, record_id) VALUES (1000001, ${w.workspace.id}, 1, 'dup')`,
      `INSERT INTO workspaces (id, name, created_at) VALUES (${w.workspace.id}, 'other name', 'now')`,
    ];
    for (const stmt of internal) {
      if (!stmt.startsWith('INSERT INTO workspaces')) await run(onPostgres ? `${stmt} ON CONFLICT DO NOTHING` : stmt.replace('INSERT', 'INSERT OR IGNORE'));
      const e = await rejected(run(stmt));
      expect(db.adapter.classifyError(e)?.kind, stmt).toBe('unique');
      expect(fromDatabaseError(e), stmt).toBeNull();
    }
    // Through the REST error handler: 500 in the contract's shape, and an error line in the log.
    const logs: string[] = [];
    const app = Fastify({ logger: { level: 'error', stream: { write: (line: string) => void logs.push(line) } } });
    app.setErrorHandler(errorHandler);
    app.get('/internal-unique', async () => run(internal[1]!));
    try {
      const r = await app.inject({ method: 'GET', url: '/internal-unique' });
      expect(r.statusCode).toBe(500);
      expect(r.json()).toMatchObject({ error: true, code: 'INTERNAL_ERROR' });
      expect(logs.join('')).toContain(onPostgres ? 'search_terms_pkey' : 'SQLITE_CONSTRAINT_PRIMARYKEY');
    } finally {
      await app.close();
    }
    expect(fromDatabaseError(await rejected(run('SELECT * FROM no_such_table')))).toBeNull();
  });
});
