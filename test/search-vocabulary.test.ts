import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { createPipeline, listPipelines } from '../src/services/pipelines.js';
import { createRecord, createRecords, deleteRecord, getRecord } from '../src/services/records.js';
import { createField, createObject, getObjectSchema } from '../src/services/schema.js';
import { searchAll } from '../src/services/search.js';
import { freshDb, makeWorkspace, oldMatchKeyTable, onPostgres, sqlAll, sqlRun, type TestWorkspace } from './helpers.js';

/**
 * Typo-tolerant search offers each query's near words (one or two edits away) from a vocabulary:
 * that vocabulary must be the workspace's own, or records written in another workspace change
 * what a workspace finds (34 "Jhon…" names in B made A's "Jhon" miss its John). And the caches a
 * process keeps (schema, pipelines, vocabulary) must follow what another process writes.
 */

/** 35 first names one edit from "jhon", all sorting before "john". */
const NEAR_JHON = [...'abcdefghijklmnopqrstuvwxyz'].map((c) => `Jhon${c}`).concat([...'abcdefghi'].map((c) => `J${c}on`));

let db: Db;
let a: TestWorkspace;
let b: TestWorkspace;
let john: string;

beforeAll(async () => {
  db = await freshDb({ file: true });
  a = await makeWorkspace(db, 'alpha');
  b = await makeWorkspace(db, 'beta');
  john = (await createRecord(a.ctx, 'contacts', { first_name: 'John', last_name: 'Smith' })).id;
  await createRecords(
    b.ctx,
    'contacts',
    NEAR_JHON.map((n) => ({ first_name: n, last_name: 'Other' })),
  );
});
afterAll(() => db.close());

const fuzzyIds = async (w: TestWorkspace, q: string, on: Db = db) =>
  (await searchAll({ ...w.ctx, db: on.forWorkspace(w.workspace.id) }, { q })).data.filter((h) => h.match === 'fuzzy').map((h) => h.id);

describe("a workspace's typo-tolerant search depends on its own records alone", () => {
  it("A's 'Jhon' finds its John on a cold cache, a warm one, and through another connection", async () => {
    // A second handle on the file: another process's view, its vocabulary not read yet (cold).
    const other = openDatabase({ file: db.file });
    try {
      expect(await fuzzyIds(a, 'Jhon', other)).toEqual([john]);
      expect(await fuzzyIds(a, 'Jhon', other)).toEqual([john]); // warm
      expect(await fuzzyIds(a, 'Jhon')).toEqual([john]);
      expect(await fuzzyIds(a, 'Jhon')).toEqual([john]);
    } finally {
      await other.close();
    }
  });

  it("more near names written in B after A's vocabulary was read change nothing for A; B finds its own", async () => {
    await createRecords(
      b.ctx,
      'contacts',
      [...'jklmn'].map((c) => ({ first_name: `J${c}on`, last_name: 'Later' })),
    );
    expect(await fuzzyIds(a, 'Jhon')).toEqual([john]);
    const inB = await searchAll(b.ctx, { q: 'Jhonx' });
    expect(inB.data.length).toBeGreaterThan(0);
    expect(inB.data.map((h) => h.id)).not.toContain(john);
  });

  it('words written in A by another connection after the vocabulary was read are offered', async () => {
    expect(await fuzzyIds(a, 'Jhon')).toEqual([john]); // A's words for 'j' are read and kept
    const other = openDatabase({ file: db.file });
    const jonah = (await createRecord({ ...a.ctx, db: other.forWorkspace(a.workspace.id) }, 'contacts', { first_name: 'Jonahtan', last_name: 'Marsh' })).id;
    await other.close();
    expect(await fuzzyIds(a, 'Jonathan')).toEqual([jonah]);
  });
});

describe('words of deleted records', () => {
  it("no longer crowd a workspace's near words out: 'Jhon' finds John once 34 near names are deleted", async () => {
    const g = await makeWorkspace(db, 'gamma');
    const johnG = (await createRecord(g.ctx, 'contacts', { first_name: 'John', last_name: 'Gray' })).id;
    // 34 names one edit from "jhon", all sorting before "john".
    const near = [...'abcdefg']
      .map((c) => `J${c}on`)
      .concat(
        [...'abcdefghijklmn'].map((c) => `Jh${c}n`),
        [...'abcdefghijklm'].map((c) => `Jho${c}`),
      );
    const ids = (
      await createRecords(
        g.ctx,
        'contacts',
        near.map((n) => ({ first_name: n, last_name: 'Temp' })),
      )
    ).map((r) => r.id);
    // While they exist, 35 words are one edit away: John, its letters swapped, comes first among them.
    expect((await searchAll(g.ctx, { q: 'Jhon', limit: 50 })).data.map((h) => h.id)).toContain(johnG);
    for (const id of ids) await deleteRecord(g.ctx, 'contacts', id);
    expect(await fuzzyIds(g, 'Jhon')).toEqual([johnG]); // warm
    const other = openDatabase({ file: db.file });
    try {
      expect(await fuzzyIds(g, 'Jhon', other)).toEqual([johnG]); // cold, another connection
    } finally {
      await other.close();
    }
    // The dead words are gone from the workspace's vocabulary; its live ones stay.
    const terms = (await sqlAll<{ term: string }>(g.ctx.db, sql`SELECT term FROM search_terms WHERE workspace_id = ${g.workspace.id} AND term LIKE 'j%'`)).map((t) => t.term);
    expect(terms).toContain('john');
    expect(terms.filter((t) => near.map((n) => n.toLowerCase()).includes(t))).toEqual([]);
    // A pruned word written again is offered again.
    const back = (await createRecord(g.ctx, 'contacts', { first_name: 'Jhoa', last_name: 'Back' })).id;
    expect(await fuzzyIds(g, 'Jhob')).toContain(back);
  });
});

describe('pruning races no write', () => {
  it('a word pruned while a record holding it is being written stays offered once that record commits', async () => {
    const w = await makeWorkspace(db, 'delta');
    // A deleted record leaves its words in the list: "quillon" is there, held by no document.
    const gone = (await createRecord(w.ctx, 'contacts', { first_name: 'Quillon', last_name: 'Tarrow' })).id;
    await deleteRecord(w.ctx, 'contacts', gone);
    const space = w.ctx.db.kysely;
    expect(await db.search.hasTerm(space, w.workspace.id, 'quillon')).toBe(false);
    // A create of the same word is held before its commit: on PostgreSQL at its timeline entry
    // (another transaction holds the workspace's feed lock), its document and words written; on
    // SQLite at its start (the file's write lock is held).
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let holding!: (pid: number) => void;
    const held = new Promise<number>((resolve) => (holding = resolve));
    const holder = space.transaction().execute(async (trx) => {
      if (onPostgres) await db.adapter.feedOrder(trx, w.workspace.id);
      else await sql`INSERT INTO search_terms (workspace_id, term) VALUES (${w.workspace.id}, ${'holder'}) ON CONFLICT DO NOTHING`.execute(trx);
      holding(onPostgres ? (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx)).rows[0]!.pid : 0);
      await released;
    });
    const pid = await held;
    const creating = createRecord(w.ctx, 'contacts', { first_name: 'Quillon', last_name: 'Again' });
    if (onPostgres)
      for (const until = Date.now() + 20_000; ; ) {
        const { n } = (await sql<{ n: number }>`SELECT count(*) AS n FROM pg_stat_activity WHERE ${pid} = ANY(pg_blocking_pids(pid))`.execute(db.kysely)).rows[0]!;
        if (Number(n) >= 1) break;
        if (Date.now() > until) throw new Error('the create never waited for the feed lock');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    // A search prunes the word meanwhile (as nearestLive does, in a transaction of its own).
    const pruning = space.transaction().execute((trx) => db.search.pruneTerms(trx, w.workspace.id, ['quillon']));
    await new Promise((resolve) => setTimeout(resolve, 100));
    release();
    await holder;
    const again = (await creating).id;
    await pruning;
    // The committed record holds the word: it stays in the list, and typo tolerance finds it.
    expect(await db.search.hasTerm(space, w.workspace.id, 'quillon')).toBe(true);
    expect((await sqlAll<{ term: string }>(space, sql`SELECT term FROM search_terms WHERE workspace_id = ${w.workspace.id} AND term = 'quillon'`)).length).toBe(1);
    expect(await fuzzyIds(w, 'Qiullon')).toEqual([again]);
  });
});

describe('caches follow what another connection writes', () => {
  let other: Db;
  beforeAll(async () => {
    other = openDatabase({ file: db.file });
    await migrate(other);
  });
  afterAll(() => other.close());
  const on = (w: TestWorkspace, d: Db) => ({ ...w.ctx, db: d.forWorkspace(w.workspace.id) });

  it('a field or object added by another connection is known on the next call', async () => {
    await getObjectSchema(on(a, db), 'contacts'); // cached here
    await createField(on(a, other), 'contacts', { name: 'shoe_size', type: 'INTEGER' });
    const rec = await createRecord(on(a, db), 'contacts', { first_name: 'Ann', shoe_size: 38 });
    expect((await getRecord(on(a, db), 'contacts', rec.id)).shoe_size).toBe(38);
    await createObject(on(a, other), { name: 'boats', fields: [{ name: 'title', type: 'TEXT' }] });
    expect((await createRecord(on(a, db), 'boats', { title: 'Wave' })).title).toBe('Wave');
  });

  it('a pipeline created by another connection is listed on the next call', async () => {
    await createObject(on(a, db), {
      name: 'jobs',
      fields: [
        { name: 'title', type: 'TEXT' },
        { name: 'stage', type: 'SELECT', options: ['new', 'won'] },
      ],
    });
    expect(await listPipelines(on(a, db), 'jobs')).toEqual([]);
    await createPipeline(on(a, other), { object: 'jobs', name: 'Hiring', field: 'stage', steps: [{ key: 'new' }, { key: 'won', won: true }] });
    expect((await listPipelines(on(a, db), 'jobs')).map((p) => p.steps.map((s: { key: string }) => s.key))).toEqual([['new', 'won']]);
  });
});

// SQLite files from before it; on PostgreSQL each workspace's schema is made with its word list.
describe.skipIf(onPostgres)('upgrading a database indexed before per-workspace words', () => {
  it("migration 0007 fills each workspace's words from the index", async () => {
    const old = await freshDb({ file: true });
    try {
      const x = await makeWorkspace(old, 'xray');
      const y = await makeWorkspace(old, 'yankee');
      const id = (await createRecord(x.ctx, 'contacts', { first_name: 'Johanna', last_name: 'Brisk' })).id;
      await createRecord(y.ctx, 'contacts', { first_name: 'Jovanni', last_name: 'Kestrelle' });
      // As a database from before the migration: no word list, the migration not applied.
      await sqlRun(old, 'DROP TABLE search_terms');
      await sqlRun(old, "DELETE FROM kysely_migration WHERE name >= '0007_search_terms'");
      await sqlRun(old, 'ALTER TABLE workspaces DROP COLUMN migrated_to');
      await sqlRun(old, 'ALTER TABLE workspaces DROP COLUMN phone_region');
      await oldMatchKeyTable(old);
      expect(await migrate(old)).toEqual([
        '0007_search_terms',
        '0008_change_notifications',
        '0009_workspace_migrations',
        '0010_token_version',
        '0011_dedupe_keys_lookup_order',
        '0012_search_without_text',
        '0013_dedupe_keys_by_seq',
        '0014_phone_region',
      ]);
      const words = await sqlAll<{ workspace_id: number; term: string }>(old, 'SELECT workspace_id, term FROM search_terms ORDER BY workspace_id, term');
      expect(words.filter((r) => r.workspace_id === x.workspace.id).map((r) => r.term)).toEqual(expect.arrayContaining(['johanna', 'brisk']));
      expect(words.filter((r) => r.workspace_id === x.workspace.id).map((r) => r.term)).not.toContain('kestrelle');
      expect(await fuzzyIds(x, 'Johana', old)).toEqual([id]);
    } finally {
      await old.close();
    }
  });
});
