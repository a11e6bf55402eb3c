import { type Kysely, sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { type Db, openDatabase } from '../src/db/database.js';
import { followPhoneRegion, layoutSteps, migrate, migrateWorkspaces, type Step } from '../src/db/migrations.js';
import { workspaceSchema } from '../src/db/postgres/open.js';
import { findDuplicates } from '../src/services/duplicates.js';
import { defaultRegion } from '../src/services/phone-parse.js';
import { createRecord, createRecords, listRecords, updateRecord } from '../src/services/records.js';
import { createField, getSchema } from '../src/services/schema.js';
import { rebuildSearchIndex, searchAll } from '../src/services/search.js';
import { freshDb, isPostgres, makeWorkspace, matchKeys, oldMatchKeyTable, onPostgres, sqlAll, sqlGet, sqlRun } from './helpers.js';

/**
 * Each workspace's own tables, and their migrations: per workspace, each in a transaction of its
 * own, resumable, once when two processes run them at once; on PostgreSQL a schema per workspace.
 */

const open: Db[] = [];
async function fresh(): Promise<Db> {
  const db = await freshDb({ file: true });
  open.push(db);
  return db;
}
afterEach(async () => {
  // The first opened is the one freshDb made (on PostgreSQL it drops its schemas when closed): last.
  for (const db of open.splice(0).reverse()) await db.close();
});

const last = (db: Db) => Object.keys(layoutSteps(db)).sort().at(-1)!;
const levels = async (db: Db) =>
  (await sqlAll<{ id: number; migrated_to: string }>(db.kysely, 'SELECT id, migrated_to FROM workspaces ORDER BY id')).map((w): [number, string] => [Number(w.id), w.migrated_to]);
const hasColumn = async (db: Db, ws: number, table: string, column: string) => {
  const k = db.forWorkspace(ws).kysely as unknown as Kysely<any>;
  try {
    await sql`SELECT ${sql.ref(column)} FROM ${sql.table(table)} LIMIT 0`.execute(k);
    return true;
  } catch {
    return false;
  }
};

/** The layout's steps and one more: a column on each workspace's contacts table, which fails for the workspaces in `failOn`. */
function withStep(db: Db, failOn: Set<number> = new Set(), ran: number[] = []): Record<string, Step> {
  return {
    ...layoutSteps(db),
    '9000_probe': {
      async each(k, ws) {
        ran.push(ws);
        await sql`ALTER TABLE ${sql.table(`w${ws}_contacts`)} ADD COLUMN probe text`.execute(k);
        if (failOn.has(ws)) throw new Error(`probe failed on workspace ${ws}`);
      },
    },
  };
}

describe('workspace migrations', () => {
  it('a workspace is created at the latest step: a new database and a restart migrate nothing', async () => {
    const db = await fresh();
    await makeWorkspace(db, 'one');
    await makeWorkspace(db, 'two');
    expect(await levels(db)).toEqual([
      [1, last(db)],
      [2, last(db)],
    ]);
    expect(await migrateWorkspaces(db)).toBe(0);
    expect(await migrate(db)).toEqual([]);
  });

  it('a new step runs per workspace in its own transaction; stopped by a failure, it resumes where it stopped', async () => {
    const db = await fresh();
    for (const name of ['a', 'b', 'c', 'd', 'e']) await makeWorkspace(db, name);
    const ran: number[] = [];
    await expect(migrateWorkspaces(db, { steps: withStep(db, new Set([3]), ran) })).rejects.toThrow(/probe failed on workspace 3/);
    expect(ran).toEqual([1, 2, 3]);
    // 1 and 2 committed; 3 rolled back whole (its column too); 4 and 5 not begun.
    const levelOf = new Map(await levels(db));
    expect([1, 2, 3, 4, 5].map((w) => levelOf.get(w))).toEqual(['9000_probe', '9000_probe', last(db), last(db), last(db)]);
    expect(await Promise.all([1, 2, 3, 4, 5].map((w) => hasColumn(db, w, `w${w}_contacts`, 'probe')))).toEqual([true, true, false, false, false]);

    // Run again with the step mended: the three left, not the two done.
    ran.length = 0;
    const progress: [number, number][] = [];
    expect(await migrateWorkspaces(db, { steps: withStep(db, new Set(), ran), onProgress: (d, t) => progress.push([d, t]) })).toBe(3);
    expect(ran).toEqual([3, 4, 5]);
    expect(progress.at(-1)).toEqual([3, 3]);
    expect(await Promise.all([1, 2, 3, 4, 5].map((w) => hasColumn(db, w, `w${w}_contacts`, 'probe')))).toEqual([true, true, true, true, true]);
    expect(await migrateWorkspaces(db, { steps: withStep(db) })).toBe(0);
    // The workspaces work as before.
    const ctx = (await makeWorkspace(db, 'after')).ctx;
    await createRecord(ctx, 'contacts', { first_name: 'Still', last_name: 'Working' });
    expect((await listRecords(ctx, 'contacts', { limit: 5 })).data).toHaveLength(1);
  });

  it('two processes migrating at once: each workspace once, by one of them', async () => {
    const db = await fresh();
    const n = 12;
    for (let i = 0; i < n; i++) await makeWorkspace(db, `w${i}`);
    const other = openDatabase({ file: db.file, lockWaitMs: 30_000 });
    open.push(other);
    await sqlRun(db.kysely, 'CREATE TABLE probe_runs (workspace_id integer NOT NULL)');
    // Each run of the step is recorded in the shared probe table, in the workspace's transaction.
    const counting = (d: Db): Record<string, Step> => ({
      ...layoutSteps(d),
      '9000_probe': {
        async each(k, ws) {
          await sql`INSERT INTO probe_runs (workspace_id) VALUES (${ws})`.execute(k);
          await new Promise((r) => setTimeout(r, 5));
        },
      },
    });
    const [x, y] = await Promise.all([migrateWorkspaces(db, { steps: counting(db) }), migrateWorkspaces(other, { steps: counting(other) })]);
    expect(x + y).toBe(n);
    const runs = await sqlAll<{ workspace_id: number; n: number }>(db.kysely, 'SELECT workspace_id, count(*) AS n FROM probe_runs GROUP BY workspace_id ORDER BY workspace_id');
    expect(runs.map((r) => [Number(r.workspace_id), Number(r.n)])).toEqual(Array.from({ length: n }, (_, i) => [i + 1, 1]));
    expect(new Set((await levels(db)).map(([, l]) => l))).toEqual(new Set(['9000_probe']));
  });

  it('a database from before workspace migrations: SQLite upgrades, its workspaces as far as it had gone; PostgreSQL refuses the old layout', async () => {
    const db = await fresh();
    const ws = await makeWorkspace(db, 'old');
    await createRecord(ws.ctx, 'contacts', { first_name: 'Kept', last_name: 'Along' });
    // As the database was before step 0009: no migrated_to, 0009 (and the steps after it) not run.
    await sqlRun(db.kysely, "DELETE FROM kysely_migration WHERE name >= '0009_workspace_migrations'");
    await sqlRun(db.kysely, 'ALTER TABLE workspaces DROP COLUMN phone_region');
    await sqlRun(db.kysely, 'ALTER TABLE workspaces DROP COLUMN migrated_to');
    if (isPostgres(db)) {
      await expect(migrate(db)).rejects.toThrow(/holds every workspace's tables in one schema.*crm-mcp copy --replace/);
      return;
    }
    // The match keys of then (step 0005's table): 0011 and 0013 make them over.
    await oldMatchKeyTable(db);
    expect(await migrate(db)).toEqual(['0009_workspace_migrations', '0010_token_version', '0011_dedupe_keys_lookup_order', '0012_search_without_text', '0013_dedupe_keys_by_seq', '0014_phone_region']);
    expect(await levels(db)).toEqual([[ws.workspace.id, last(db)]]);
    expect((await listRecords(ws.ctx, 'contacts', { limit: 5 })).data.map((r) => r.first_name)).toEqual(['Kept']);
  });

  it('migration 0011 turns the match keys of a database made before it into a table in lookup order: each key once, duplicates found as before', async () => {
    const db = await fresh();
    const ws = await makeWorkspace(db, 'keys');
    const [ada, twin, other] = await createRecords(ws.ctx, 'contacts', [
      { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', phone: '+1 415 555 0100' },
      { first_name: 'Ada', last_name: 'Lovelace', email: 'ADA@example.org', phone: '(415) 555-0100' },
      { first_name: 'Grace', last_name: 'Hopper', email: 'grace@example.com' },
    ]);
    const before = await findDuplicates(ws.ctx, 'contacts');
    expect(before.data.map((c) => c.records.map((r) => r.id).sort())).toEqual([[ada!.id, twin!.id].sort()]);
    const k = db.forWorkspace(ws.workspace.id).kysely as unknown as Kysely<any>;
    const keysNow = async () => (await matchKeys(k, ws.workspace.id)).map(({ kind, key, record_id }) => ({ kind, key, record_id }));
    const keys = await keysNow();
    // As the database was before: the table of step 0005 (a rowid table and two indexes), one key written twice.
    await sqlRun(k, 'DROP TABLE dedupe_keys');
    await sqlRun(k, 'CREATE TABLE dedupe_keys (workspace_id integer not null, object_id integer not null, kind text not null, key text not null, record_id text not null)');
    await sqlRun(k, 'CREATE INDEX dedupe_keys_key ON dedupe_keys (workspace_id, object_id, kind, key)');
    await sqlRun(k, 'CREATE INDEX dedupe_keys_record ON dedupe_keys (workspace_id, object_id, record_id)');
    const objectId = Number((await sqlGet<{ id: number }>(k, "SELECT id FROM objects WHERE name = 'contacts'"))!.id);
    for (const r of [...keys, keys[0]!]) await sqlRun(k, sql`INSERT INTO dedupe_keys VALUES (${ws.workspace.id}, ${objectId}, ${r.kind}, ${r.key}, ${r.record_id})`);
    await sqlRun(db.kysely, "DELETE FROM kysely_migration WHERE name >= '0011_dedupe_keys_lookup_order'");
    await sqlRun(db.kysely, 'ALTER TABLE workspaces DROP COLUMN phone_region');
    await sqlRun(db.kysely, "UPDATE workspaces SET migrated_to = '0010_token_version'");
    expect(await migrate(db)).toEqual(['0011_dedupe_keys_lookup_order', '0012_search_without_text', '0013_dedupe_keys_by_seq', '0014_phone_region']);
    expect(await keysNow()).toEqual(keys);
    // The primary key is the lookup order: a key written again is refused, and the old lookup index is gone (SQLite: the table is that index); the record index too, since 0013.
    const stored = (await sqlGet<Record<string, unknown>>(k, 'SELECT workspace_id, object_id, kind, key, record_seq FROM dedupe_keys'))!;
    await expect(sqlRun(k, sql`INSERT INTO dedupe_keys VALUES (${stored.workspace_id}, ${stored.object_id}, ${stored.kind}, ${stored.key}, ${stored.record_seq})`)).rejects.toThrow(
      /unique|duplicate/i,
    );
    const indexes = isPostgres(db)
      ? (await sqlAll<{ n: string }>(k, "SELECT indexname AS n FROM pg_indexes WHERE tablename = 'dedupe_keys' AND schemaname = current_schema()")).map((r) => r.n)
      : (await sqlAll<{ n: string }>(k, "SELECT name AS n FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'dedupe_keys'")).map((r) => r.n);
    expect(indexes.sort()).toEqual(isPostgres(db) ? ['dedupe_keys_by_seq'] : []);
    // Writes and detection on the new table: the same cluster; a record changed and one deleted leave no keys behind.
    // (The same clusters and evidence; the order of ids within evidence follows the table's.)
    const shape = (d: typeof before.data) =>
      d.map((c) => ({ score: c.score, ids: c.records.map((r) => r.id).sort(), evidence: c.evidence.map((e) => `${e.kind}:${e.value}:${[...e.record_ids].sort()}`).sort() }));
    expect(shape((await findDuplicates(ws.ctx, 'contacts')).data)).toEqual(shape(before.data));
    await createField(ws.ctx, 'contacts', { name: 'mobile', type: 'PHONE' });
    const wrote = await createRecord(ws.ctx, 'contacts', { first_name: 'Grace', last_name: 'Hopper', email: 'grace@example.net', phone: '415 555 0199', mobile: '415 555 0199' });
    const again = (await findDuplicates(ws.ctx, 'contacts')).data.map((c) => c.records.map((r) => r.id).sort());
    expect(again).toEqual(expect.arrayContaining([[ada!.id, twin!.id].sort(), [other!.id, wrote.id].sort()]));
    expect((await keysNow()).filter((r) => r.record_id === wrote.id && r.kind === 'phone')).toHaveLength(1);
  });

  it('keys made in another CRM_DEFAULT_REGION are made again in this one, once, at start; a workspace that recorded none takes this one', async () => {
    const db = await fresh();
    const ws = await makeWorkspace(db, 'region');
    const other = await makeWorkspace(db, 'region-unset');
    await createRecord(ws.ctx, 'contacts', { first_name: 'Ada', last_name: 'Lovelace', phone: '(415) 555-0100' });
    const k = db.forWorkspace(ws.workspace.id).kysely as unknown as Kysely<any>;
    const keysNow = async () => (await matchKeys(k, ws.workspace.id)).map(({ kind, key, record_id }) => ({ kind, key, record_id }));
    const keys = await keysNow();
    expect(keys.filter((r) => r.kind === 'phone').length).toBeGreaterThan(0);
    const region = async (id: number) => (await sqlGet<{ r: string | null }>(db.kysely, sql`SELECT phone_region AS r FROM workspaces WHERE id = ${id}`))!.r;
    expect(await region(ws.workspace.id)).toBe(defaultRegion);
    // As if its keys had been made in another region: one key this region's values do not give.
    const phoneKey = (await sqlGet<Record<string, unknown>>(k, sql`SELECT * FROM dedupe_keys WHERE kind = 'phone'`))!;
    await sqlRun(
      k,
      sql`INSERT INTO dedupe_keys (workspace_id, object_id, kind, key, record_seq) VALUES (${phoneKey.workspace_id}, ${phoneKey.object_id}, 'phone', ${'+4415555501000'}, ${phoneKey.record_seq})`,
    );
    await sqlRun(db.kysely, sql`UPDATE workspaces SET phone_region = 'GB' WHERE id = ${ws.workspace.id}`);
    await sqlRun(db.kysely, sql`UPDATE workspaces SET phone_region = NULL WHERE id = ${other.workspace.id}`);
    expect(await followPhoneRegion(db)).toEqual([ws.workspace.id]);
    expect(await keysNow()).toEqual(keys);
    expect([await region(ws.workspace.id), await region(other.workspace.id)]).toEqual([defaultRegion, defaultRegion]);
    expect((await searchAll(ws.ctx, { q: '415 555 0100' })).data).toHaveLength(1);
    // Once: the next start finds every workspace in this region.
    expect(await followPhoneRegion(db)).toEqual([]);
  });

  it("migration 0013 names each key's record by its seq, drops the record index and makes the keys again from the values: a key the values no longer give is gone", async () => {
    const db = await fresh();
    const ws = await makeWorkspace(db, 'keys13');
    const ada = await createRecord(ws.ctx, 'contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', phone: '+1 415 555 0100' });
    await createRecord(ws.ctx, 'contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.org' });
    const k = db.forWorkspace(ws.workspace.id).kysely as unknown as Kysely<any>;
    const keysNow = async () => (await matchKeys(k, ws.workspace.id)).map(({ kind, key, record_id }) => ({ kind, key, record_id }));
    const keys = await keysNow();
    // As a database was before: the table of step 0011 (keys naming records by id, in lookup order, and
    // the record index), with a name key naming a company deleted since (which deletes did not rewrite).
    const objectId = Number((await sqlGet<{ id: number }>(k, "SELECT id FROM objects WHERE name = 'contacts'"))!.id);
    await sqlRun(k, 'DROP TABLE dedupe_keys');
    await sqlRun(
      k,
      `CREATE TABLE dedupe_keys (workspace_id integer not null, object_id integer not null, kind text not null, key text not null, record_id text not null,
        constraint dedupe_keys_lookup primary key (workspace_id, object_id, kind, key, record_id))${isPostgres(db) ? '' : ' WITHOUT ROWID'}`,
    );
    await sqlRun(k, 'CREATE INDEX dedupe_keys_record ON dedupe_keys (workspace_id, object_id, record_id)');
    for (const r of keys) await sqlRun(k, sql`INSERT INTO dedupe_keys VALUES (${ws.workspace.id}, ${objectId}, ${r.kind}, ${r.key}, ${r.record_id})`);
    await sqlRun(k, sql`INSERT INTO dedupe_keys VALUES (${ws.workspace.id}, ${objectId}, 'name', ${'ada lovelace|gone-company'}, ${ada.id})`);
    await sqlRun(db.kysely, "DELETE FROM kysely_migration WHERE name >= '0013_dedupe_keys_by_seq'");
    await sqlRun(db.kysely, 'ALTER TABLE workspaces DROP COLUMN phone_region');
    await sqlRun(db.kysely, "UPDATE workspaces SET migrated_to = '0012_search_without_text'");
    expect(await migrate(db)).toEqual(['0013_dedupe_keys_by_seq', '0014_phone_region']);
    expect(await levels(db)).toEqual([[ws.workspace.id, last(db)]]);
    expect(await keysNow()).toEqual(keys);
    const indexes = isPostgres(db)
      ? (await sqlAll<{ n: string }>(k, "SELECT indexname AS n FROM pg_indexes WHERE tablename = 'dedupe_keys' AND schemaname = current_schema()")).map((r) => r.n)
      : (await sqlAll<{ n: string }>(k, "SELECT name AS n FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'dedupe_keys'")).map((r) => r.n);
    expect(indexes).toEqual(isPostgres(db) ? ['dedupe_keys_by_seq'] : []);
    // Changes go on exactly: the old email's key replaced, the pair still found by name and phone-less twin.
    await updateRecord(ws.ctx, 'contacts', ada.id, { email: 'ada@lovelace.example' });
    expect((await keysNow()).filter((r) => r.kind === 'email').map((r) => r.key)).toEqual(expect.arrayContaining(['ada@lovelace.example', 'ada@example.org']));
    expect((await keysNow()).some((r) => r.key === 'ada@example.com')).toBe(false);
    expect((await findDuplicates(ws.ctx, 'contacts')).data).toHaveLength(1);
  });

  it.skipIf(onPostgres)('migration 0012 (SQLite): the full-text index of a database made before it loses its copy of the text; the same records found, with their snippets', async () => {
    const db = await fresh();
    const ws = await makeWorkspace(db, 'fts');
    const ada = await createRecord(ws.ctx, 'contacts', { first_name: 'Ada', last_name: 'Lovelace', job_title: 'Analyst of engines', email: 'ada@engines.example' });
    await createRecord(ws.ctx, 'contacts', { first_name: 'Grace', last_name: 'Hopper' });
    // As the database was before: FTS5 with its content table, the documents written into it.
    await sqlRun(db.kysely, 'DROP TABLE search_vocab');
    await sqlRun(db.kysely, 'DROP TABLE search_index');
    await sqlRun(db.kysely, "CREATE VIRTUAL TABLE search_index USING fts5(scope, name, body, exact, tokenize = 'unicode61 remove_diacritics 2', prefix = '3')");
    await sqlRun(db.kysely, "CREATE VIRTUAL TABLE search_vocab USING fts5vocab(search_index, 'row')");
    await sqlRun(db.kysely, 'DELETE FROM search_docs');
    await rebuildSearchIndex(db, ws.workspace.id, await getSchema(ws.ctx));
    expect(await sqlGet(db.kysely, "SELECT c1 AS name FROM search_index_content WHERE c1 = 'Ada Lovelace'")).toEqual({ name: 'Ada Lovelace' });
    await sqlRun(db.kysely, "DELETE FROM kysely_migration WHERE name >= '0012_search_without_text'");
    await sqlRun(db.kysely, 'ALTER TABLE workspaces DROP COLUMN phone_region');
    expect(await migrate(db)).toEqual(['0012_search_without_text', '0013_dedupe_keys_by_seq', '0014_phone_region']);
    expect(await sqlAll(db.kysely, "SELECT name FROM sqlite_schema WHERE name = 'search_index_content'")).toEqual([]);
    const found = await searchAll(ws.ctx, { q: 'engines' });
    expect(found.data.map((h) => h.id)).toEqual([ada.id]);
    expect(found.data[0]!.snippet).toContain('Analyst of <mark>engines</mark>');
    expect((await searchAll(ws.ctx, { q: 'ada@engines.example' })).data.map((h) => h.id)).toEqual([ada.id]);
    expect((await searchAll(ws.ctx, { q: 'Hoper' })).data.map((h) => [h.name, h.snippet, h.match])).toEqual([['Grace Hopper', 'Grace <mark>Hopper</mark>', 'fuzzy']]);
    // Updates and deletes go on in the new index.
    await updateRecord(ws.ctx, 'contacts', ada.id, { job_title: 'Poet of numbers' });
    expect((await searchAll(ws.ctx, { q: 'analyst' })).data).toEqual([]);
    expect((await searchAll(ws.ctx, { q: 'poet' })).data.map((h) => h.id)).toEqual([ada.id]);
  });

  it.runIf(!!process.env.CRM_TEST_DATABASE_URL)('PostgreSQL: each workspace in a schema of its own; the shared schema holds workspaces, users and tokens', async () => {
    const db = await fresh();
    const a = await makeWorkspace(db, 'alpha');
    const b = await makeWorkspace(db, 'beta');
    await createRecord(a.ctx, 'contacts', { first_name: 'Only', last_name: 'Alpha' });
    const shared = db.sharedSchema!;
    const tablesOf = async (schema: string) => (await sqlAll<{ t: string }>(db.kysely, sql`SELECT tablename AS t FROM pg_tables WHERE schemaname = ${schema} ORDER BY tablename`)).map((r) => r.t);
    expect(await tablesOf(shared)).toEqual(['api_tokens', 'crm_auth_version', 'kysely_migration', 'kysely_migration_lock', 'users', 'workspaces']);
    const inA = await tablesOf(workspaceSchema(shared, a.workspace.id));
    expect(inA).toEqual(expect.arrayContaining(['objects', 'fields', 'activity', 'notes', 'search_docs', 'search_terms', 'w1_contacts', 'w1_tasks']));
    expect(await tablesOf(workspaceSchema(shared, b.workspace.id))).toEqual(inA.map((t) => t.replace(/^w1_/, 'w2_')).sort());
    // Each workspace's handle reads its own rows of tables of the same name.
    const count = async (ws: number, table: string) => Number((await sqlGet<{ n: number }>(db.forWorkspace(ws), `SELECT count(*) AS n FROM ${table}`))!.n);
    expect(await count(a.workspace.id, 'activity')).toBe(1);
    expect(await count(b.workspace.id, 'activity')).toBe(0);
    // The shared handle sees no workspace's tables.
    await expect(sql`SELECT 1 FROM objects`.execute(db.kysely)).rejects.toThrow(/relation "objects" does not exist/);
  });
});
