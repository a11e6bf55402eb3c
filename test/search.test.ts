import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { createRecord, createRecords, deleteRecord, updateRecord } from '../src/services/records.js';
import { searchAll } from '../src/services/search.js';
import { call, indexedDocs, indexedRecords, makeWorkspace, onPostgres, type TestApp, testApp } from './helpers.js';

/**
 * GET /search through REST: ranking sanity, each matching rule (prefix, typos, diacritics, emails,
 * phones in any formatting, domains), snippets, parameters, tenancy, and the index following every
 * kind of write in its transaction (create, update, delete, batches, import, bulk, merge, unmerge).
 * Deleted records are checked in the index itself too (through the dialect's search backend): the
 * search answer drops hits whose record is gone, so only the index shows a stale entry.
 */

let t: TestApp;
const api = (token: string, method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);
const admin = () => t.a.adminToken;

function ok(r: { status: number; body: any }, status?: number) {
  if (status !== undefined) expect(r.status, JSON.stringify(r.body)).toBe(status);
  else expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  return r.body;
}

function err(r: { status: number; body: any }, status: number, code: string) {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body).toMatchObject({ error: true, code });
  return r.body as { message: string };
}

interface Hit {
  object: string;
  id: string;
  name: string;
  snippet: string;
  score: number;
  match: 'exact' | 'fuzzy';
}

async function search(q: string, extra = '', token = admin()): Promise<{ data: Hit[]; total: number; query: { q: string; objects: string[]; fuzzy: boolean } }> {
  const r = await api(token, 'GET', `/search?q=${encodeURIComponent(q)}${extra}`);
  return ok(r, 200);
}
const ids = async (q: string, extra = '', token = admin()) => (await search(q, extra, token)).data.map((h) => h.id);

/** Records whose indexed text holds this word, read from the index itself (any workspace). */
const indexed = (word: string) => indexedRecords(t.db, word);
const docsOf = async (id: string) => Number((await sql<{ n: number }>`SELECT COUNT(*) AS n FROM search_docs WHERE record_id = ${id}`.execute(t.a.ctx.db.kysely)).rows[0]!.n);

/** Every hit's score is at least the next one's among exact matches; fuzzy hits come after them. */
function expectRanked(hits: Hit[]) {
  const exact = hits.filter((h) => h.match === 'exact');
  expect(hits.slice(0, exact.length)).toEqual(exact);
  for (let i = 1; i < exact.length; i++) expect(exact[i - 1]!.score).toBeGreaterThanOrEqual(exact[i]!.score);
}

const rec: Record<string, string> = {};
async function make(name: string, object: string, body: Record<string, unknown>, token = admin()) {
  const r = ok(await api(token, 'POST', `/records/${object}`, body), 201);
  rec[name] = r.data.id;
  return r.data.id as string;
}

beforeAll(async () => {
  t = await testApp();
  await make('alice', 'contacts', { first_name: 'Alice', last_name: 'Liddell', email: 'alice@wonderland.test', phone: '+1 (415) 555-0123', job_title: 'Explorer' });
  await make('john', 'contacts', { first_name: 'John', last_name: 'Smith', email: 'john.smith@example.org' });
  await make('jurgen', 'contacts', { first_name: 'Jürgen', last_name: 'Müller' });
  await make('hans', 'contacts', { first_name: 'Hans', last_name: 'Muller' });
  await make('rabbit', 'companies', { name: 'Rabbit Hole', domain: 'rabbithole.io', description: 'Alice fell down here' });
  await make('hatter', 'companies', { name: 'Hatter Hats', website: 'https://www.hatterhats.com/about' });
  // Ranking fixtures.
  await make('zebulon', 'contacts', { first_name: 'Zebulon', last_name: 'Quartzite' });
  await make('qsupply', 'companies', { name: 'Quartzite Supply' });
  await make('gemworks', 'companies', { name: 'Gemworks', description: 'Cutting quartzite slabs since 1990' });
  await make('counter', 'opportunities', { name: 'Countertops', next_step: 'Send the quartzite quote' });
  await make('orionNebula', 'companies', { name: 'Orion Nebula' });
  await make('orion', 'companies', { name: 'Orion', description: 'Runs a nebula observatory on the hill' });
  await make('orionSmith', 'contacts', { first_name: 'Orion', last_name: 'Smith', job_title: 'Nebula watcher' });
  await make('orionOnly', 'companies', { name: 'Orion Freight' });
  await make('vortex', 'companies', { name: 'Vortex' });
  await make('vortexLong', 'companies', { name: 'Vortex Global Logistics and Shipping Holdings International' });
});

afterAll(async () => {
  await t?.close();
});

describe('ranking', () => {
  it('a name match ranks above a body-only match', async () => {
    const r = await search('quartzite');
    expectRanked(r.data);
    expect(
      r.data
        .map((h) => h.id)
        .slice(0, 2)
        .sort(),
    ).toEqual([rec.zebulon, rec.qsupply].sort());
    expect(
      r.data
        .map((h) => h.id)
        .slice(2)
        .sort(),
    ).toEqual([rec.gemworks, rec.counter].sort());
    expect(r.data.every((h) => h.match === 'exact')).toBe(true);

    const a = await search('alice');
    expect(a.data.map((h) => h.id)).toEqual([rec.alice, rec.rabbit]);
    expect(a.data[0]!.score).toBeGreaterThan(a.data[1]!.score);
  });

  it('more specific matches first', async () => {
    // Both words in the name beat one in the name and one in the other fields; all words are required.
    const r = await search('orion nebula');
    expectRanked(r.data);
    expect(r.data[0]!.id).toBe(rec.orionNebula);
    expect(r.data.map((h) => h.id).sort()).toEqual([rec.orionNebula, rec.orion, rec.orionSmith].sort());
    // The whole name beats one word of a long name.
    const v = await search('vortex');
    expect(v.data.map((h) => h.id)).toEqual([rec.vortex, rec.vortexLong]);
    expect(v.data[0]!.score).toBeGreaterThan(v.data[1]!.score);
  });
});

describe('matching rules', () => {
  it('prefix: "alic" finds Alice, with the matched word highlighted', async () => {
    const r = await search('alic');
    expect(r.data[0]).toMatchObject({ object: 'contacts', id: rec.alice, name: 'Alice Liddell', snippet: '<mark>Alice</mark> Liddell', match: 'exact' });
    expect(r.query.fuzzy).toBe(false);
    // The body-only hit's snippet shows the other text, highlighted.
    expect(r.data.find((h) => h.id === rec.rabbit)?.snippet).toContain('<mark>Alice</mark> fell down here');
    expect((await search('lidd')).data.map((h) => h.id)).toEqual([rec.alice]);
    expect((await search('alice lid')).data.map((h) => h.id)).toEqual([rec.alice]);
  });

  it('typos: "Jhon" finds John, as a fuzzy match', async () => {
    const r = await search('Jhon');
    expect(r.data.map((h) => [h.id, h.match])).toEqual([[rec.john, 'fuzzy']]);
    expect(r.data[0]!.name).toBe('John Smith');
    expect(r.data[0]!.snippet).toBe('<mark>John</mark> Smith');
    expect(r.query.fuzzy).toBe(true);
    expect((await search('Jhon Smith')).data.map((h) => [h.id, h.match])).toEqual([[rec.john, 'fuzzy']]);
    // Exact hits first, fuzzy ones after.
    const s = await search('smith');
    expect(s.data.map((h) => h.match)).toEqual(['exact', 'exact']);
    expect((await search('liddel')).data.map((h) => h.id)).toEqual([rec.alice]);
    expect((await search('qwertzuiop')).data).toEqual([]);
  });

  it('typo tolerance knows words written after its vocabulary was read, here or by another connection', async () => {
    // The index's words are kept in memory once a typo-tolerant search has read them (SQLite: its
    // data_version tells another connection's commits; PostgreSQL has no such counter, so the words
    // are read again for each search there, and only what is found is checked).
    const u = await testApp({ file: true });
    const scans = vi.spyOn(u.db.search, 'terms');
    try {
      const fuzzyIds = async (q: string) => (await searchAll(u.a.ctx, { q })).data.filter((h) => h.match === 'fuzzy').map((h) => h.id);
      const [kestrel] = await createRecords(u.a.ctx, 'contacts', [{ first_name: 'Kestrelle', last_name: 'Obry' }]);
      expect(await fuzzyIds('Kestrele')).toEqual([kestrel!.id]);
      if (!onPostgres) expect(scans.mock.calls.map((c) => c[1])).toEqual(['k']); // read the words starting with k
      // Written through this process after the read: added as they are indexed, nothing read again.
      const [kettle] = await createRecords(u.a.ctx, 'contacts', [{ first_name: 'Kettleborough', last_name: 'Obry' }]);
      expect(await fuzzyIds('Ketleborough')).toEqual([kettle!.id]);
      expect(await fuzzyIds('Kestrele')).toEqual([kestrel!.id]);
      if (!onPostgres) expect(scans).toHaveBeenCalledTimes(1);
      // Written by another connection (another process, say a CLI import): the words are read again.
      const other = openDatabase({ file: u.db.file });
      const [kinsale] = await createRecords({ ...u.a.ctx, db: other.forWorkspace(u.a.workspace.id) }, 'contacts', [{ first_name: 'Kinsaleworth', last_name: 'Obry' }]);
      await other.close();
      expect(await fuzzyIds('Kinsalevorth')).toEqual([kinsale!.id]);
      if (!onPostgres) expect(scans).toHaveBeenCalledTimes(2);
      // Words of records deleted since are harmless: they match nothing.
      await deleteRecord(u.a.ctx, 'contacts', kettle!.id);
      expect(await fuzzyIds('Ketleborough')).toEqual([]);
    } finally {
      scans.mockRestore();
      await u.close();
    }
  });

  it('diacritics: "muller" finds Müller, "Müller" finds Muller', async () => {
    const both = [rec.jurgen, rec.hans].sort();
    const plain = await search('muller');
    expect(plain.data.map((h) => h.id).sort()).toEqual(both);
    expect(plain.data.every((h) => h.match === 'exact')).toBe(true);
    expect(plain.data.find((h) => h.id === rec.jurgen)).toMatchObject({ name: 'Jürgen Müller', snippet: 'Jürgen <mark>Müller</mark>' });
    expect((await ids('Müller')).sort()).toEqual(both);
    expect((await ids('MÜLLER')).sort()).toEqual(both);
    expect(await ids('jurgen')).toEqual([rec.jurgen]);
    expect(await ids('Jürg')).toEqual([rec.jurgen]);
  });

  it('an email finds its contact', async () => {
    expect(await ids('alice@wonderland.test')).toEqual([rec.alice]);
    expect(await ids('ALICE@Wonderland.Test')).toEqual([rec.alice]);
    expect(await ids('john.smith@example.org')).toEqual([rec.john]);
    // The start of an address is enough; another address is not found.
    expect(await ids('alice@wonder')).toEqual([rec.alice]);
    expect(await ids('alice@example.org')).toEqual([]);
  });

  it('a phone number in another formatting finds it', async () => {
    for (const q of ['+1 (415) 555-0123', '415 555 0123', '555-0123', '4155550123', '14155550123', '(415) 555.0123', '+1 415-555-0123']) expect(await ids(q), q).toEqual([rec.alice]);
    expect(await ids('415 555 0199')).toEqual([]);
    expect(await ids('555-0199')).toEqual([]);
  });

  it('a number that is not a phone finds the text it is written in', async () => {
    // Digits only: it could be a phone, but also an order number, a postcode, a code in a name.
    const id = await make('numbered', 'companies', { name: 'Depot 40918273', description: 'Ships from 75008 Paris' });
    expect(await ids('40918273')).toEqual([id]);
    expect(await ids('75008')).toEqual([id]);
    expect(await ids('4091')).toEqual([id]);
    // Phones still match by their digits alone, and nothing else matches a number written nowhere.
    expect(await ids('4155550123')).toEqual([rec.alice]);
    expect(await ids('31415926')).toEqual([]);
    ok(await api(admin(), 'DELETE', `/records/companies/${id}`));
  });

  it('a word longer than an index entry may be (PostgreSQL: 2,047 bytes) is written, and found by its beginning', async () => {
    const word = `Longinus${'é'.repeat(1500)}${'x'.repeat(3000)}`;
    const id = await make('longword', 'companies', { name: 'Longword Labs', description: `Says ${word} twice: ${word}` });
    expect(await ids(`longinus${'e'.repeat(150)}`)).toEqual([id]);
    expect(await ids('longword')).toEqual([id]);
    ok(await api(admin(), 'DELETE', `/records/companies/${id}`));
  });

  it('a domain finds the company (by its domain) and its website', async () => {
    expect(await ids('rabbithole.io')).toEqual([rec.rabbit]);
    expect(await ids('www.rabbithole.io')).toEqual([rec.rabbit]);
    expect(await ids('hatterhats.com')).toEqual([rec.hatter]);
    expect(await ids('www.hatterhats.com')).toEqual([rec.hatter]);
    // The domain of a contact's email address finds the contact too.
    expect(await ids('wonderland.test')).toEqual([rec.alice]);
    expect(await ids('example.org')).toEqual([rec.john]);
    expect(await ids('nowhere.io')).toEqual([]);
  });
});

describe('parameters', () => {
  it('objects filter, limit, and validation', async () => {
    const both = await search('alice', '&objects=contacts,companies');
    expect(both.data.map((h) => h.id)).toEqual([rec.alice, rec.rabbit]);
    expect(both.query.objects).toEqual(['contacts', 'companies']);
    expect((await search('alice', '&objects=companies')).data.map((h) => [h.object, h.id])).toEqual([['companies', rec.rabbit]]);
    expect(await ids('alice', '&objects=contacts')).toEqual([rec.alice]);
    expect(await ids('alice', '&objects=opportunities,tasks')).toEqual([]);
    expect(await ids('quartzite', '&objects=opportunities')).toEqual([rec.counter]);

    expect(await ids('quartzite', '&limit=1')).toHaveLength(1);
    expect(await ids('quartzite', '&limit=100')).toHaveLength(4);
    expect(err(await api(admin(), 'GET', '/search?q=alice&limit=101'), 400, 'VALIDATION_ERROR').message).toMatch(/limit/);
    err(await api(admin(), 'GET', '/search?q=alice&limit=0'), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'GET', '/search?q=alice&limit=ten'), 400, 'VALIDATION_ERROR');
    const bad = err(await api(admin(), 'GET', '/search?q=alice&objects=contacts,nope'), 400, 'INVALID_OBJECT');
    expect(bad.message).toContain('nope');
    err(await api(admin(), 'GET', '/search'), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'GET', '/search?q='), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'GET', '/search?q=%20%20'), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'GET', `/search?q=${'a'.repeat(201)}`), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'GET', '/search?q=alice&sort=name'), 400, 'VALIDATION_ERROR');
    err(await call(t.app, null, 'GET', '/api/v1/search?q=alice'), 401, 'UNAUTHORIZED');
    // FTS syntax in the text is only text.
    expect((await search('"alice" OR NEAR(john')).data.map((h) => h.id)).toEqual([]);
    expect((await search('***')).data).toEqual([]);
    expect((await search('alice*')).data.map((h) => h.id)).toEqual([rec.alice, rec.rabbit]);
    // Members search too.
    expect(await ids('alic', '', t.a.memberToken)).toContain(rec.alice);
  });
});

describe('tenancy', () => {
  it("workspace B's records are never found by A, and the other way round", async () => {
    const b = t.b.adminToken;
    const bAlice = (await api(b, 'POST', '/records/contacts', { first_name: 'Alice', last_name: 'Bexclusive', email: 'alice@wonderland.test', phone: '+1 (415) 555-0123' })).body.data.id as string;
    const bCo = (await api(b, 'POST', '/records/companies', { name: 'Bexco', domain: 'rabbithole.io' })).body.data.id as string;
    expect(bAlice && bCo).toBeTruthy();

    for (const q of ['bexclusive', 'bexclusiv', 'Bexclusivee', 'bexco']) expect(await ids(q), q).toEqual([]);
    expect(await ids('alice')).toEqual([rec.alice, rec.rabbit]);
    expect(await ids('alice@wonderland.test')).toEqual([rec.alice]);
    expect(await ids('415 555 0123')).toEqual([rec.alice]);
    expect(await ids('rabbithole.io')).toEqual([rec.rabbit]);

    expect(await ids('alice', '', b)).toEqual([bAlice]);
    expect(await ids('bexclusive', '', b)).toEqual([bAlice]);
    expect(await ids('555-0123', '', b)).toEqual([bAlice]);
    expect(await ids('rabbithole.io', '', b)).toEqual([bCo]);
    for (const q of ['liddell', 'muller', 'quartzite', 'Jhon', 'hatterhats.com']) expect(await ids(q, '', b), q).toEqual([]);
  });
});

describe('the index follows every write', () => {
  const notFound = async (word: string, id: string) => {
    expect(await ids(word), word).not.toContain(id);
    expect(await indexed(word.toLowerCase()), word).not.toContain(id);
  };

  it('create: found at once; a failed write leaves nothing', async () => {
    const id = await make('quillon', 'contacts', { first_name: 'Quillon', last_name: 'Abernathy', job_title: 'Cartographer', email: 'quillon@maps.test' });
    expect(await ids('quillon')).toEqual([id]);
    expect(await ids('cartographer')).toEqual([id]);
    expect(await ids('quillon@maps.test')).toEqual([id]);
    expect(await indexed('quillon')).toEqual([id]);
    // A batch with a bad row writes nothing, the index included.
    err(await api(admin(), 'POST', '/records/contacts/batch/create', { records: [{ first_name: 'Phantasmo' }, { first_name: 'Bad', email: 'nope' }] }), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'POST', '/records/contacts/batch/create', { records: [{ first_name: 'Phantasmo' }, { first_name: 'Dup', email: 'quillon@maps.test' }] }), 409, 'DUPLICATE_RECORD');
    expect(await ids('phantasmo')).toEqual([]);
    expect(await indexed('phantasmo')).toEqual([]);
  });

  // FTS5 only: its rows are numbered apart from search_docs (PostgreSQL keeps the text and the vector in the search_docs row itself).
  it.skipIf(onPostgres)('a stray index row where the next documents go is cleared, not left to block creates or be found', async () => {
    const { next } = (await sql<{ next: number }>`SELECT coalesce(max(doc_id), 0) + 1 AS next FROM search_docs`.execute(t.db.kysely)).rows[0]!;
    await sql`INSERT INTO search_index (rowid, scope, name, body, exact) VALUES (${next}, '', 'Strayling', '', '')`.execute(t.db.kysely);
    const id = await make('ostrander', 'contacts', { first_name: 'Ostrander', last_name: 'Vell' });
    expect(await ids('ostrander')).toEqual([id]);
    expect(await indexed('strayling')).toEqual([]);
    expect(await ids('strayling')).toEqual([]);
    // Documents carry no workspace or object tokens (queries filter through search_docs).
    await sql`CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_vocab_instance USING fts5vocab(main, search_index, 'instance')`.execute(t.db.kysely);
    const scope = await sql<{ n: number }>`SELECT count(*) AS n FROM temp.search_vocab_instance WHERE col = 'scope'`.execute(t.db.kysely);
    expect(scope.rows).toEqual([{ n: 0 }]);
  });

  it('update: the old text is no longer found, the new text is', async () => {
    const id = rec.quillon!;
    ok(await api(admin(), 'PATCH', `/records/contacts/${id}`, { first_name: 'Rhodanthe', job_title: 'Lexicographer', email: 'rhodanthe@maps.test', phone: '+33 1 42 68 53 00' }));
    for (const old of ['quillon', 'cartographer']) {
      expect(await ids(old), old).toEqual([]);
      expect(await indexed(old)).toEqual([]);
    }
    expect(await ids('quillon@maps.test')).toEqual([]);
    const hit = (await search('rhodanthe')).data;
    expect(hit.map((h) => [h.id, h.name, h.snippet])).toEqual([[id, 'Rhodanthe Abernathy', '<mark>Rhodanthe</mark> Abernathy']]);
    expect(await ids('lexicographer')).toEqual([id]);
    expect(await ids('rhodanthe@maps.test')).toEqual([id]);
    expect(await ids('+33 142685300')).toEqual([id]);
    expect(await ids('(+33) 1.42.68.53.00')).toEqual([id]);
    expect(await ids('268-5300')).toEqual([id]);
    // Emptying a field removes its text.
    ok(await api(admin(), 'PUT', `/records/contacts/${id}`, { job_title: null, phone: null }));
    expect(await ids('lexicographer')).toEqual([]);
    expect(await ids('+33 1 42 68 53 00')).toEqual([]);
    expect(await ids('abernathy')).toEqual([id]);
  });

  it('delete: never returned again, gone from the index', async () => {
    const id = rec.quillon!;
    ok(await api(admin(), 'DELETE', `/records/contacts/${id}`));
    await notFound('rhodanthe', id);
    await notFound('abernathy', id);
    expect(await ids('rhodanthe@maps.test')).toEqual([]);
    expect(await docsOf(id)).toBe(0);
  });

  it('batch create, batch update, batch upsert and DELETE batch', async () => {
    const made = ok(
      await api(admin(), 'POST', '/records/contacts/batch/create', {
        records: [
          { first_name: 'Batchalpha', email: 'bx1@b.test' },
          { first_name: 'Batchbeta', email: 'bx2@b.test' },
          { first_name: 'Batchgamma', job_title: 'Glassblower' },
        ],
      }),
      201,
    ).data as { id: string }[];
    const [x, y, z] = made.map((m) => m.id) as [string, string, string];
    expect(await ids('batchalpha')).toEqual([x]);
    expect(await ids('bx2@b.test')).toEqual([y]);
    expect(await ids('glassblower')).toEqual([z]);

    ok(
      await api(admin(), 'POST', '/records/contacts/batch/update', {
        records: [
          { id: x, first_name: 'Updalpha' },
          { id: z, job_title: 'Silversmith' },
        ],
      }),
    );
    await notFound('batchalpha', x);
    await notFound('glassblower', z);
    expect(await ids('updalpha')).toEqual([x]);
    expect(await ids('silversmith')).toEqual([z]);

    // Upsert by email: one update (new name), one create.
    const up = ok(
      await api(admin(), 'POST', '/records/contacts/batch/upsert', {
        key: 'email',
        records: [
          { email: 'bx2@b.test', first_name: 'Upsbeta' },
          { email: 'bx4@b.test', first_name: 'Upsomega' },
        ],
      }),
    );
    expect(up.results.map((r: any) => r.action)).toEqual(['updated', 'created']);
    const w = up.results[1].id as string;
    await notFound('batchbeta', y);
    expect(await ids('upsbeta')).toEqual([y]);
    expect(await ids('bx2@b.test')).toEqual([y]);
    expect(await ids('upsomega')).toEqual([w]);
    expect(await ids('bx4@b.test')).toEqual([w]);

    const del = ok(await api(admin(), 'DELETE', '/records/contacts', { ids: [x, y, w, 'missing'] })).data;
    expect(del).toEqual({ deleted: [x, y, w], not_found: ['missing'] });
    for (const [word, id] of [
      ['updalpha', x],
      ['upsbeta', y],
      ['upsomega', w],
    ] as const) {
      await notFound(word, id);
      expect(await docsOf(id)).toBe(0);
    }
    expect(await ids('bx2@b.test')).toEqual([]);
    expect(await ids('silversmith')).toEqual([z]);
    // ?ids= form.
    ok(await api(admin(), 'DELETE', `/records/contacts?ids=${z}`));
    await notFound('silversmith', z);
  });

  it('import: new records (and companies made by company_name) are found; duplicates add nothing', async () => {
    const r = ok(
      await api(admin(), 'POST', '/import/contacts', {
        records: [
          { first_name: 'Impolina', last_name: 'Ravensworth', email: 'impolina@imp.test', phone: '+1 212 555 0199', company_name: 'Importia Widgets' },
          { first_name: 'Impostor', email: 'IMPOLINA@imp.test' }, // the same email: a duplicate
          { first_name: 'Impbroken', email: 'not-an-email' },
        ],
      }),
    );
    expect(r).toMatchObject({ created: 1, duplicates: 1, failed: 1 });
    const [hit] = (await search('ravensworth')).data;
    expect(hit).toMatchObject({ object: 'contacts', name: 'Impolina Ravensworth' });
    expect(await ids('impolina@imp.test')).toEqual([hit!.id]);
    expect(await ids('212-555-0199')).toEqual([hit!.id]);
    const co = (await search('importia')).data;
    // The company by its name, and the contact by its company's name (lower: it is not the contact's own name).
    expect(co.map((h) => [h.object, h.name])).toEqual([
      ['companies', 'Importia Widgets'],
      ['contacts', 'Impolina Ravensworth'],
    ]);
    expect(await ids('impostor')).toEqual([]);
    expect(await ids('impbroken')).toEqual([]);
    expect(await indexed('impostor')).toEqual([]);
  });

  it('bulk update (by ids and by filter)', async () => {
    const made = ok(
      await api(admin(), 'POST', '/records/contacts/batch/create', {
        records: [
          { first_name: 'Bulkone', job_title: 'Beekeeper', city: 'Bulkton' },
          { first_name: 'Bulktwo', job_title: 'Beekeeper', city: 'Bulkton' },
        ],
      }),
      201,
    ).data.map((m: any) => m.id) as string[];
    expect((await ids('beekeeper')).sort()).toEqual([...made].sort());
    const r = ok(await api(admin(), 'POST', '/bulk', { action: 'update', object: 'contacts', ids: made, values: { job_title: 'Apiarist' } })).data;
    expect(r).toMatchObject({ updated: 2 });
    for (const id of made) await notFound('beekeeper', id);
    expect((await ids('apiarist')).sort()).toEqual([...made].sort());
    // A dry run changes nothing, in the index either.
    ok(await api(admin(), 'POST', '/bulk', { action: 'update', object: 'contacts', ids: made, values: { job_title: 'Drydock' }, dry_run: true }));
    expect(await ids('drydock')).toEqual([]);
    ok(
      await api(admin(), 'POST', '/bulk', {
        action: 'update',
        object: 'contacts',
        filter: { operator: 'and', conditions: [{ field: 'city', operator: 'eq', value: 'Bulkton' }] },
        values: { job_title: 'Honeymaker' },
      }),
    );
    for (const id of made) await notFound('apiarist', id);
    expect((await ids('honeymaker')).sort()).toEqual([...made].sort());
  });

  it('merge: the merged-away record disappears, its text moves to the primary; unmerge restores both', async () => {
    const primary = await make('primula', 'contacts', { first_name: 'Primula', last_name: 'Vantongeren' });
    const dup = await make('dorcas', 'contacts', { first_name: 'Dorcasina', last_name: 'Quimby', email: 'dorcasina@merge.test', phone: '+44 20 7946 0958', job_title: 'Xenobotanist' });
    expect(await ids('quimby')).toEqual([dup]);
    expect(await ids('xenobotanist')).toEqual([dup]);

    const m = ok(await api(admin(), 'POST', '/duplicates', { action: 'merge', object: 'contacts', primary_id: primary, duplicate_ids: [dup] })).data;
    expect(m.merged_ids).toEqual([dup]);
    // The duplicate is gone from search and from the index.
    await notFound('quimby', dup);
    await notFound('dorcasina', dup);
    expect(await docsOf(dup)).toBe(0);
    // Its email, phone and job title filled the primary's empty fields: found on the primary now.
    expect(await ids('xenobotanist')).toEqual([primary]);
    expect(await ids('dorcasina@merge.test')).toEqual([primary]);
    expect(await ids('+44 20 7946 0958')).toEqual([primary]);
    expect(await ids('20 7946 0958')).toEqual([primary]);
    expect(await ids('quimby')).toEqual([]);
    expect(await ids('primula')).toEqual([primary]);

    ok(await api(admin(), 'POST', '/duplicates', { action: 'unmerge', merge_id: m.merge_id }));
    const back = (await search('quimby')).data;
    expect(back.map((h) => [h.id, h.name])).toEqual([[dup, 'Dorcasina Quimby']]);
    expect(await ids('xenobotanist')).toEqual([dup]);
    expect(await ids('dorcasina@merge.test')).toEqual([dup]);
    expect(await ids('+44 20 7946 0958')).toEqual([dup]);
    expect(await ids('primula')).toEqual([primary]);
    expect(await indexed('xenobotanist')).toEqual([dup]);
  });

  it('merging companies keeps the index of repointed records right', async () => {
    const keep = await make('keepco', 'companies', { name: 'Keepworthy Foods' });
    const gone = await make('goneco', 'companies', { name: 'Goneaway Foods', domain: 'goneaway.test', description: 'Pickled turnips' });
    const deal = await make('turnipDeal', 'opportunities', { name: 'Turnipfest', company: gone });
    const m = ok(await api(admin(), 'POST', '/duplicates', { action: 'merge', object: 'companies', primary_id: keep, duplicate_ids: [gone] })).data;
    await notFound('goneaway', gone);
    expect(await ids('goneaway.test')).toEqual([keep]);
    expect(await ids('turnips')).toEqual([keep]);
    expect(await ids('turnipfest')).toEqual([deal]);
    // The deal followed its company: found by the kept company's name, not the merged one's.
    expect(await ids('keepworthy')).toEqual([keep, deal]);
    ok(await api(admin(), 'POST', '/duplicates', { action: 'unmerge', merge_id: m.merge_id }));
    expect(await ids('goneaway')).toEqual([gone, deal]);
    expect(await ids('keepworthy')).toEqual([keep]);
    expect(await ids('turnips')).toEqual([gone]);
    expect(await ids('turnipfest')).toEqual([deal]);
  });

  it('custom objects are indexed too', async () => {
    ok(
      await api(admin(), 'POST', '/schema', {
        name: 'vessels',
        fields: [
          { name: 'title', type: 'TEXT', required: true },
          { name: 'port_phone', type: 'PHONE' },
          { name: 'notes', type: 'TEXT' },
        ],
      }),
      201,
    );
    const v = await make('vessel', 'vessels', { title: 'Nautilus', port_phone: '+31 10 252 1010', notes: 'Submersible' });
    expect((await search('nautil')).data.map((h) => [h.object, h.id, h.name])).toEqual([['vessels', v, 'Nautilus']]);
    expect(await ids('submersible', '&objects=vessels')).toEqual([v]);
    expect(await ids('+31 (10) 252-1010')).toEqual([v]);
    expect(await ids('252 1010')).toEqual([v]);
    ok(await api(admin(), 'PATCH', `/records/vessels/${v}`, { title: 'Argonaut' }));
    await notFound('nautilus', v);
    ok(await api(admin(), 'DELETE', `/records/vessels/${v}`));
    await notFound('argonaut', v);
  });
});

describe('property: the index matches the records after any sequence of writes', () => {
  it('each live record is found by its unique word, and no deleted or replaced word finds anything', async () => {
    const objects = ['contacts', 'companies', 'opportunities'] as const;
    type Obj = (typeof objects)[number];
    const op = fc.oneof(
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('create' as const), object: fc.constantFrom(...objects), n: fc.integer({ min: 1, max: 3 }) }) },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('update' as const), pick: fc.nat() }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }) },
    );
    let run = 0;
    let word = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
        const ws = await makeWorkspace(t.db, `prop${run++}`);
        const ctx = ws.ctx;
        // Words carry digits (so typo tolerance leaves them alone) and end in a letter (so none is a prefix of another).
        const fresh = () => `pw${run}x${word++}q`;
        const values = (object: Obj, w: string) =>
          object === 'contacts' ? { first_name: w, last_name: 'Prop' } : object === 'companies' ? { name: `Co ${w}`, description: 'property test' } : { name: 'Deal', next_step: `call ${w} soon` };
        const live = new Map<string, { object: Obj; word: string }>();
        const dead: string[] = [];
        for (const o of ops) {
          if (o.kind === 'create') {
            const words = Array.from({ length: o.n }, fresh);
            const made =
              o.n === 1
                ? [await createRecord(ctx, o.object, values(o.object, words[0]!))]
                : await createRecords(
                    ctx,
                    o.object,
                    words.map((w) => values(o.object, w)),
                  );
            made.forEach((m, i) => live.set(m.id, { object: o.object, word: words[i]! }));
            continue;
          }
          const keys = [...live.keys()];
          if (!keys.length) continue;
          const id = keys[o.pick % keys.length]!;
          const r = live.get(id)!;
          if (o.kind === 'update') {
            const w = fresh();
            await updateRecord(ctx, r.object, id, values(r.object, w));
            dead.push(r.word);
            live.set(id, { object: r.object, word: w });
          } else {
            await deleteRecord(ctx, r.object, id);
            dead.push(r.word);
            live.delete(id);
          }
        }
        for (const [id, r] of live) {
          const got = await searchAll(ctx, { q: r.word });
          expect(got.data.map((h) => [h.object, h.id, h.match])).toEqual([[r.object, id, 'exact']]);
        }
        for (const w of dead) {
          expect((await searchAll(ctx, { q: w })).data).toEqual([]);
          expect(await indexed(w)).toEqual([]);
        }
        // One index document per live record of this workspace, no more.
        const docs = await sql<{ record_id: string }>`SELECT record_id FROM search_docs WHERE workspace_id = ${ws.workspace.id}`.execute(ws.ctx.db.kysely);
        expect(docs.rows.map((d) => d.record_id).sort()).toEqual([...live.keys()].sort());
      }),
      { numRuns: 20 },
    );
  });
});

describe('incremental and rebuilt indexes agree', () => {
  it('the documents written with each change equal those a rebuild writes, company names included', async () => {
    const { getSchema } = await import('../src/services/schema.js');
    const { rebuildSearchIndex } = await import('../src/services/search.js');
    const ctx = t.a.ctx;
    const co = await createRecord(ctx, 'companies', { name: 'Rebuildia Partners' });
    const ct = await createRecord(ctx, 'contacts', { first_name: 'Rhea', last_name: 'Rebuild', job_title: 'Archivist', company: co.id });
    await updateRecord(ctx, 'companies', co.id, { name: 'Rebuildia Holdings' });
    const dump = async () => (await indexedDocs(t.db, t.a.workspace.id)).map(({ object_id, record_id, name, body, exact }) => ({ object_id, record_id, name, body, exact }));
    const incremental = await dump();
    expect(incremental.find((d) => d.record_id === ct.id)?.body).toContain('rebuildia holdings');
    await rebuildSearchIndex(ctx.db, t.a.workspace.id, await getSchema(ctx));
    expect(await dump()).toEqual(incremental);
  });
});
