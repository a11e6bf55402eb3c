import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { importFile } from '../src/import-file.js';
import { setClock } from '../src/services/clock.js';
import { createRecords } from '../src/services/records.js';
import { createField, getSchema } from '../src/services/schema.js';
import { call, holdWriteLock, indexedDocs, makeWorkspace, matchKeys, onPostgres, sqlAll, type TestApp, type TestWorkspace, tableOf, testApp } from './helpers.js';

/**
 * POST /import/{object} and GET /export/{object} through Fastify, against the documented contract
 * (kasar-import-export.txt): the examples exactly, limits and permissions, duplicate detection on
 * import, pipeline defaults, RFC 4180 CSV with formula neutralization, and a streamed 10,000-row export.
 */

let t: TestApp;
const api = (token: string, method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);

/** Every contact of a workspace, straight from its table (what import really wrote). */
async function contactRows(ws: TestWorkspace): Promise<Record<string, any>[]> {
  return sqlAll(t.db, sql`SELECT * FROM ${sql.table(await tableOf(t.db, ws.workspace.id, 'contacts'))} ORDER BY seq`);
}

const csvOf = (raw: string) => parse(raw, { columns: true }) as Record<string, string>[];

beforeAll(async () => {
  t = await testApp();
});

afterAll(async () => {
  setClock(null);
  await t?.close();
});

afterEach(() => setClock(null));

describe('the documented examples', () => {
  it('import: Alice + Bob where Bob already exists -> created 1, duplicates 1 (exact response)', async () => {
    // Workspace B holds only these two people, so the export example below reads exactly them.
    const bob = await api(t.b.adminToken, 'POST', '/records/contacts', { first_name: 'Bob', last_name: 'Dupont', email: 'bob@startup.io' });
    expect(bob.status).toBe(201);
    const r = await api(t.b.adminToken, 'POST', '/import/contacts', {
      records: [
        { first_name: 'Alice', last_name: 'Martin', email: 'alice@example.com' },
        { first_name: 'Bob', last_name: 'Dupont', email: 'bob@startup.io' },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ object_name: 'contacts', created: 1, duplicates: 1, failed: 0, errors: [] });
    const rows = await contactRows(t.b);
    expect(rows.map((x) => x.email).sort()).toEqual(['alice@example.com', 'bob@startup.io']);
    expect(rows.find((x) => x.email === 'bob@startup.io')!.id).toBe(bob.body.data.id);
  });

  it('export as JSON: format, records with only the asked fields, total (the example request)', async () => {
    const r = await api(t.b.adminToken, 'GET', '/export/contacts?format=json&fields=first_name,last_name,email&limit=500');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    // Default order is created_at desc: Alice (imported after Bob) first, as in the example.
    expect(r.body).toEqual({
      format: 'json',
      records: [
        { first_name: 'Alice', last_name: 'Martin', email: 'alice@example.com' },
        { first_name: 'Bob', last_name: 'Dupont', email: 'bob@startup.io' },
      ],
      total: 2,
    });
  });

  it('export as CSV: text/csv, attachment filename contacts_export.csv, a header row and the records', async () => {
    const r = await api(t.b.adminToken, 'GET', '/export/contacts?format=csv&fields=first_name,last_name,email');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/csv/);
    expect(r.headers['content-disposition']).toBe('attachment; filename="contacts_export.csv"');
    expect(r.raw).toBe('first_name,last_name,email\r\nAlice,Martin,alice@example.com\r\nBob,Dupont,bob@startup.io\r\n');
    // Companies get their own file name.
    const c = await api(t.b.adminToken, 'GET', '/export/companies?format=csv');
    expect(c.headers['content-disposition']).toBe('attachment; filename="companies_export.csv"');
  });

  it('the error example: one valid record created, the bad email reported by index, code and message', async () => {
    const g = await makeWorkspace(t.db, 'gamma');
    const r = await api(g.adminToken, 'POST', '/import/contacts', {
      records: [
        { first_name: 'Carol', last_name: 'Stone', email: 'carol@example.com' },
        { first_name: 'Dan', last_name: 'Brown', email: 'not-an-email' },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      object_name: 'contacts',
      created: 1,
      duplicates: 0,
      failed: 1,
      errors: [{ index: 1, code: 'VALIDATION_ERROR', message: "Field 'email' must be a valid email address" }],
    });
    expect((await contactRows(g)).map((x) => x.email)).toEqual(['carol@example.com']);
  });
});

describe('import: limits, permissions, errors', () => {
  it('51 records are refused with 400 and nothing is created; 50 are accepted', async () => {
    const ws = await makeWorkspace(t.db, 'limits');
    const records = Array.from({ length: 51 }, (_, i) => ({ first_name: `P${i}`, last_name: 'Batch', email: `p${i}@batch.test` }));
    const r = await api(ws.adminToken, 'POST', '/import/contacts', { records });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(r.body.message).toMatch(/50/);
    expect(await contactRows(ws)).toHaveLength(0);
    const ok = await api(ws.adminToken, 'POST', '/import/contacts', { records: records.slice(0, 50) });
    expect(ok.body).toEqual({ object_name: 'contacts', created: 50, duplicates: 0, failed: 0, errors: [] });
    expect(await contactRows(ws)).toHaveLength(50);
  });

  it('a member token is refused on import and export (403 PERMISSION_DENIED), nothing written', async () => {
    const ws = await makeWorkspace(t.db, 'perm');
    const imp = await api(ws.memberToken, 'POST', '/import/contacts', { records: [{ first_name: 'Eve', email: 'eve@example.com' }] });
    expect(imp.status).toBe(403);
    expect(imp.body).toMatchObject({ error: true, code: 'PERMISSION_DENIED' });
    expect(await contactRows(ws)).toHaveLength(0);
    for (const format of ['json', 'csv']) {
      const exp = await api(ws.memberToken, 'GET', `/export/contacts?format=${format}`);
      expect(exp.status).toBe(403);
      expect(exp.body).toMatchObject({ error: true, code: 'PERMISSION_DENIED' });
    }
    // No token at all: 401.
    expect((await api(null as unknown as string, 'GET', '/export/contacts')).status).toBe(401);
  });

  it('unknown object -> 400 INVALID_OBJECT; invalid format, field, filter or sort -> 400 VALIDATION_ERROR', async () => {
    const tok = t.a.adminToken;
    for (const r of [await api(tok, 'POST', '/import/widgets', { records: [{ name: 'x' }] }), await api(tok, 'GET', '/export/widgets')]) {
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('INVALID_OBJECT');
    }
    for (const url of [
      '/export/contacts?format=xml',
      '/export/contacts?fields=first_name,shoe_size',
      '/export/contacts?filter_field=status&filter_operator=resembles&filter_value=x',
      '/export/contacts?filter_field=shoe_size&filter_operator=eq&filter_value=x',
      '/export/contacts?filters=%7Bnot-json',
      '/export/contacts?sort_by=shoe_size',
      '/export/contacts?sort_dir=sideways',
      '/export/contacts?limit=0',
    ]) {
      const r = await api(tok, 'GET', url);
      expect(r.status, url).toBe(400);
      expect(r.body.code, url).toBe('VALIDATION_ERROR');
      expect(r.headers['content-type'], url).toMatch(/^application\/json/);
    }
    const body = await api(tok, 'POST', '/import/contacts', { rows: [] });
    expect(body.status).toBe(400);
    expect(body.body.code).toBe('VALIDATION_ERROR');
  });
});

describe('import: duplicate detection and defaults', () => {
  let ws: TestWorkspace;
  let acme: string;

  beforeAll(async () => {
    ws = await makeWorkspace(t.db, 'dupes');
    acme = (await api(ws.adminToken, 'POST', '/records/companies', { name: 'Acme Inc' })).body.data.id;
    const seed = [
      { first_name: 'Ada', last_name: 'Lovelace', email: 'Ada.Lovelace@Example.com' },
      { first_name: 'Grace', last_name: 'Hopper', email: 'grace@navy.mil', phone: '+1 (415) 555-0100' },
      { first_name: 'Alan', last_name: 'Turing', company: acme },
    ];
    for (const s of seed) expect((await api(ws.adminToken, 'POST', '/records/contacts', s)).status).toBe(201);
  });

  it('by email, case-insensitively', async () => {
    const r = await api(ws.adminToken, 'POST', '/import/contacts', { records: [{ first_name: 'Augusta', last_name: 'King', email: 'ADA.LOVELACE@EXAMPLE.COM' }] });
    expect(r.body).toEqual({ object_name: 'contacts', created: 0, duplicates: 1, failed: 0, errors: [] });
  });

  it('by phone written differently (digits compared)', async () => {
    const r = await api(ws.adminToken, 'POST', '/import/contacts', {
      records: [
        { first_name: 'G.', last_name: 'Murray', phone: '415.555.0100' },
        { first_name: 'Someone', last_name: 'Else', phone: '(415) 555-0199' },
      ],
    });
    expect(r.body).toEqual({ object_name: 'contacts', created: 1, duplicates: 1, failed: 0, errors: [] });
    const rows = await contactRows(ws);
    expect(rows.some((x) => x.last_name === 'Murray')).toBe(false);
    expect(rows.filter((x) => x.last_name === 'Else')).toHaveLength(1);
  });

  it('by name at the same company; company_name resolves the company (or creates it)', async () => {
    const before = (await contactRows(ws)).length;
    const r = await api(ws.adminToken, 'POST', '/import/contacts', {
      records: [
        // Same person at Acme ("ACME" and "Acme Inc" are the same company name).
        { first_name: 'alan', last_name: 'TURING', company_name: 'ACME' },
        // Same name at another company: a different person; Bletchley is created.
        { first_name: 'Alan', last_name: 'Turing', company_name: 'Bletchley Park' },
        // A new person at Acme: linked to the existing company.
        { first_name: 'Joan', last_name: 'Clarke', company_name: 'acme inc.' },
      ],
    });
    expect(r.body).toEqual({ object_name: 'contacts', created: 2, duplicates: 1, failed: 0, errors: [] });
    const rows = await contactRows(ws);
    expect(rows).toHaveLength(before + 2);
    const companies = (await api(ws.adminToken, 'GET', '/records/companies?limit=100')).body.data as { id: string; name: string }[];
    expect(companies.map((c) => c.name).sort()).toEqual(['Acme Inc', 'Bletchley Park']);
    const bletchley = companies.find((c) => c.name === 'Bletchley Park')!.id;
    expect(
      rows
        .filter((x) => x.last_name.toLowerCase() === 'turing')
        .map((x) => x.company)
        .sort(),
    ).toEqual([acme, bletchley].sort());
    expect(rows.find((x) => x.last_name === 'Clarke')!.company).toBe(acme);
    // Importing the same company again (by name) is a duplicate, not a second Acme.
    const again = await api(ws.adminToken, 'POST', '/import/companies', { records: [{ name: 'ACME inc' }, { name: 'Initech' }] });
    expect(again.body).toEqual({ object_name: 'companies', created: 1, duplicates: 1, failed: 0, errors: [] });
  });

  it("people's profile URLs: different LinkedIn profiles are different people, the same profile is a duplicate", async () => {
    const r = await api(ws.adminToken, 'POST', '/import/contacts', {
      records: [
        { first_name: 'Hedy', last_name: 'Lamarr', linkedin_url: 'https://www.linkedin.com/in/hedy' },
        { first_name: 'Rosalind', last_name: 'Franklin', linkedin_url: 'https://linkedin.com/in/rosalind' },
        { first_name: 'H.', last_name: 'Lamarr', linkedin_url: 'linkedin.com/in/Hedy/' },
      ],
    });
    expect(r.body).toEqual({ object_name: 'contacts', created: 2, duplicates: 1, failed: 0, errors: [] });
    // Companies still match on their domain, however written.
    const c = await api(ws.adminToken, 'POST', '/import/companies', {
      records: [
        { name: 'Hooli', domain: 'hooli.com' },
        { name: 'Hooli XYZ', website: 'https://www.hooli.com/about' },
      ],
    });
    expect(c.body).toEqual({ object_name: 'companies', created: 1, duplicates: 1, failed: 0, errors: [] });
  });

  it('within the same request: a later row repeating an earlier one (email, phone, name at company) is a duplicate', async () => {
    const before = (await contactRows(ws)).length;
    const r = await api(ws.adminToken, 'POST', '/import/contacts', {
      records: [
        { first_name: 'Mary', last_name: 'Jackson', email: 'mary@nasa.gov' },
        { first_name: 'M.', last_name: 'Jackson', email: 'MARY@nasa.gov' },
        { first_name: 'Dorothy', last_name: 'Vaughan', phone: '+1 757 555 0101' },
        { first_name: 'Dot', last_name: 'V', phone: '757-555-0101' },
        { first_name: 'Katherine', last_name: 'Johnson', company: acme },
        { first_name: 'Katherine', last_name: 'Johnson', company_name: 'Acme' },
        { first_name: 'Bad', email: 'nope' },
      ],
    });
    expect(r.body).toEqual({
      object_name: 'contacts',
      created: 3,
      duplicates: 3,
      failed: 1,
      errors: [{ index: 6, code: 'VALIDATION_ERROR', message: "Field 'email' must be a valid email address" }],
    });
    expect(await contactRows(ws)).toHaveLength(before + 3);
  });

  it("each imported record's match keys name that record, also once the table's last record was deleted (its number given again)", async () => {
    const w = await makeWorkspace(t.db, 'numbered');
    const made: string[] = [];
    for (const n of [1, 2, 3]) made.push((await api(w.adminToken, 'POST', '/records/contacts', { first_name: 'Old', last_name: `Contact${n}`, email: `old${n}@example.com` })).body.data.id);
    expect((await api(w.adminToken, 'DELETE', `/records/contacts/${made[2]}`)).status).toBe(200);
    const records = [1, 2, 3, 4, 5].map((n) => ({ first_name: 'New', last_name: `Person${n}`, email: `new${n}@example.com`, phone: `+1 415 555 01${10 + n}` }));
    expect((await api(w.adminToken, 'POST', '/import/contacts', { records })).body).toMatchObject({ created: 5, duplicates: 0, failed: 0 });
    const rows = await contactRows(w);
    const idOf = new Map(rows.map((r) => [r.email as string, r.id as string]));
    const keys = (await matchKeys(w.ctx.db, w.workspace.id)).filter((k) => k.kind === 'email' || k.kind === 'phone');
    // Every contact's email key (and each new one's phone key) names the contact itself, each once.
    expect(
      keys
        .filter((k) => k.kind === 'email')
        .map((k) => [k.key, k.record_id])
        .sort(),
    ).toEqual([...idOf].sort());
    for (const r of rows.filter((x) => x.phone)) expect(keys.filter((k) => k.kind === 'phone' && k.record_id === r.id)).toHaveLength(1);
    expect(keys.filter((k) => k.kind === 'phone')).toHaveLength(5);
    // The same rows again, each matched by its phone alone: all duplicates.
    const again = records.map((r, i) => ({ ...r, email: `other${i}@example.com`, last_name: `Renamed${i}` }));
    expect((await api(w.adminToken, 'POST', '/import/contacts', { records: again })).body).toMatchObject({ created: 0, duplicates: 5, failed: 0 });
  });

  it('rows fail alone: a missing required field, an unknown field, a bad option, a company name that is not an object', async () => {
    const r = await api(ws.adminToken, 'POST', '/import/contacts', {
      records: [
        { last_name: 'Nofirst' },
        { first_name: 'Ok', last_name: 'Row', email: 'ok.row@example.com' },
        { first_name: 'X', status: 'royalty' },
        'not an object',
        { first_name: 'Y', shoe_size: 42 },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body.created).toBe(1);
    expect(r.body.failed).toBe(4);
    expect(r.body.errors.map((e: { index: number }) => e.index)).toEqual([0, 2, 3, 4]);
    expect(r.body.errors[0]).toEqual({ index: 0, code: 'MISSING_REQUIRED_FIELD', message: "Field 'first_name' is required" });
    for (const e of r.body.errors.slice(1)) expect(e.code).toBe('VALIDATION_ERROR');
  });

  it('pipeline defaults: imported opportunities start on the first step with its probability; a named step gets its own', async () => {
    const r = await api(ws.adminToken, 'POST', '/import/opportunities', {
      records: [
        { name: 'Deal A', amount: 1200, company_name: 'Acme' },
        { name: 'Deal B', status: 'proposal' },
        { name: 'Deal C', status: 'qualified', probability: 33 },
      ],
    });
    expect(r.body).toEqual({ object_name: 'opportunities', created: 3, duplicates: 0, failed: 0, errors: [] });
    const list = (await api(ws.adminToken, 'GET', '/records/opportunities?sort_by=name&sort_dir=asc')).body.data;
    expect(list.map((o: any) => [o.name, o.status, o.probability])).toEqual([
      ['Deal A', 'open', 10],
      ['Deal B', 'proposal', 50],
      ['Deal C', 'qualified', 33],
    ]);
    expect(list[0].company).toBe(acme);
    // Each entered its step in the stage history, as a create does.
    const steps = await sqlAll<{ step_key: string }>(
      ws.ctx.db,
      sql`SELECT step_key FROM stage_history WHERE workspace_id = ${ws.workspace.id} AND record_id IN (${sql.join(list.map((o: any) => o.id))}) ORDER BY step_key`,
    );
    expect(steps.map((s) => s.step_key)).toEqual(['open', 'proposal', 'qualified']);
  });

  it('a name resolves the related record whether or not that record has a company (opportunity_name: Deal A at Acme, Deal B without)', async () => {
    const deals = (await api(ws.adminToken, 'GET', '/records/opportunities?sort_by=name&sort_dir=asc')).body.data as { id: string; name: string }[];
    const r = await api(ws.adminToken, 'POST', '/import/tasks', {
      records: [
        { title: 'Send the contract', opportunity_name: 'deal a' },
        { title: 'Book a demo', opportunity_name: 'Deal B' },
        { title: 'Chase', opportunity_name: 'Deal Z' },
      ],
    });
    expect(r.body).toMatchObject({ object_name: 'tasks', created: 2, duplicates: 0, failed: 1, errors: [{ index: 2, code: 'VALIDATION_ERROR' }] });
    expect(r.body.errors[0].message).toMatch(/No opportunities record named 'Deal Z'/);
    const tasks = (await api(ws.adminToken, 'GET', '/records/tasks?sort_by=title&sort_dir=asc')).body.data as { title: string; opportunity: string }[];
    expect(tasks.map((x) => [x.title, x.opportunity])).toEqual([
      ['Book a demo', deals.find((d) => d.name === 'Deal B')!.id],
      ['Send the contract', deals.find((d) => d.name === 'Deal A')!.id],
    ]);
  });
});

describe('export: filters, sorting, limits', () => {
  let ws: TestWorkspace;
  beforeAll(async () => {
    ws = await makeWorkspace(t.db, 'filters');
    // Created at known times, out of insertion order, to tell created_at from insertion order.
    const people: [string, string, string, string][] = [
      ['2024-06-01T00:00:00Z', 'Zoe', 'Zimmer', 'qualified'],
      ['2025-03-01T00:00:00Z', 'Amy', 'Adams', 'qualified'],
      ['2025-01-15T00:00:00Z', 'Max', 'Meyer', 'lead'],
      ['2025-02-01T00:00:00Z', 'Kim', 'Klein', 'qualified'],
      ['2023-12-31T00:00:00Z', 'Bea', 'Bauer', 'customer'],
    ];
    for (const [at, first, last, status] of people) {
      setClock(Date.parse(at));
      expect((await api(ws.adminToken, 'POST', '/records/contacts', { first_name: first, last_name: last, status })).status).toBe(201);
    }
    setClock(null);
  });

  it('default sort is created_at desc', async () => {
    const r = await api(ws.adminToken, 'GET', '/export/contacts?fields=last_name,created_at');
    expect(r.body.records.map((x: any) => x.last_name)).toEqual(['Adams', 'Klein', 'Meyer', 'Zimmer', 'Bauer']);
    expect(r.body.total).toBe(5);
    const csv = csvOf((await api(ws.adminToken, 'GET', '/export/contacts?format=csv&fields=last_name')).raw);
    expect(csv.map((x) => x.last_name)).toEqual(['Adams', 'Klein', 'Meyer', 'Zimmer', 'Bauer']);
  });

  it('filter_field / filter_operator / filter_value with sort_by and sort_dir (the documented request)', async () => {
    const r = await api(ws.adminToken, 'GET', '/export/contacts?format=json&filter_field=status&filter_operator=eq&filter_value=qualified&sort_by=last_name&sort_dir=asc');
    expect(r.status).toBe(200);
    expect(r.body.format).toBe('json');
    expect(r.body.total).toBe(3);
    expect(r.body.records.map((x: any) => [x.last_name, x.status])).toEqual([
      ['Adams', 'qualified'],
      ['Klein', 'qualified'],
      ['Zimmer', 'qualified'],
    ]);
    // All fields when none are asked for (id and timestamps included).
    expect(Object.keys(r.body.records[0])).toEqual(expect.arrayContaining(['id', 'first_name', 'last_name', 'email', 'status', 'company', 'created_at', 'updated_at']));
    const desc = await api(ws.adminToken, 'GET', '/export/contacts?format=csv&fields=last_name&filter_field=status&filter_operator=eq&filter_value=qualified&sort_by=last_name&sort_dir=desc');
    expect(csvOf(desc.raw).map((x) => x.last_name)).toEqual(['Zimmer', 'Klein', 'Adams']);
  });

  it('filters: a JSON-encoded FilterGroup (the documented status + created_at example)', async () => {
    const filters = JSON.stringify({
      operator: 'and',
      conditions: [
        { field: 'status', operator: 'eq', value: 'qualified' },
        { field: 'created_at', operator: 'gte', value: '2025-01-01' },
      ],
    });
    const r = await api(ws.adminToken, 'GET', `/export/contacts?format=json&filters=${encodeURIComponent(filters)}`);
    expect(r.status).toBe(200);
    expect(r.body.records.map((x: any) => x.last_name)).toEqual(['Adams', 'Klein']);
    expect(r.body.total).toBe(2);
    // Both filter styles together: AND.
    const both = await api(ws.adminToken, 'GET', `/export/contacts?fields=last_name&filter_field=first_name&filter_operator=eq&filter_value=Kim&filters=${encodeURIComponent(filters)}`);
    expect(both.body).toEqual({ format: 'json', records: [{ last_name: 'Klein' }], total: 1 });
    // An OR group, in CSV.
    const or = JSON.stringify({
      operator: 'or',
      conditions: [
        { field: 'status', operator: 'eq', value: 'customer' },
        { field: 'last_name', operator: 'starts_with', value: 'M' },
      ],
    });
    const csv = await api(ws.adminToken, 'GET', `/export/contacts?format=csv&fields=last_name&sort_by=last_name&sort_dir=asc&filters=${encodeURIComponent(or)}`);
    expect(csvOf(csv.raw).map((x) => x.last_name)).toEqual(['Bauer', 'Meyer']);
  });

  it('limit caps the rows; an empty result is a valid document', async () => {
    const r = await api(ws.adminToken, 'GET', '/export/contacts?fields=last_name&limit=2');
    // total counts every match (as a list's does, issue 15); nextCursor says the limit cut it short.
    expect(r.body).toEqual({ format: 'json', records: [{ last_name: 'Adams' }, { last_name: 'Klein' }], total: 5, nextCursor: expect.any(String) });
    const none = await api(ws.adminToken, 'GET', '/export/contacts?filter_field=status&filter_operator=eq&filter_value=churned');
    expect(none.body).toEqual({ format: 'json', records: [], total: 0 });
    const noneCsv = await api(ws.adminToken, 'GET', '/export/contacts?format=csv&fields=first_name,last_name&filter_field=status&filter_operator=eq&filter_value=churned');
    expect(noneCsv.raw).toBe('first_name,last_name\r\n');
  });
});

describe('CSV: RFC 4180 escaping and formula neutralization', () => {
  let ws: TestWorkspace;
  const tricky = [
    { first_name: 'Quote', last_name: 'He said "hi", then left', city: 'Paris, France', country: 'Line one\nLine two' },
    { first_name: 'Crlf', last_name: 'Two\r\nlines', city: '""', country: ',' },
    { first_name: 'Lone', last_name: 'carriage\rreturn', city: 'trailing space ', country: 'é ü 中文 😀' },
  ];
  const formulas = [
    { first_name: 'Eq', last_name: '=SUM(A1:A9)', city: '=HYPERLINK("http://evil.example","x")' },
    { first_name: 'Plus', last_name: '+33 formula', city: '+' },
    { first_name: 'Minus', last_name: '-2+3', city: '-' },
    { first_name: 'At', last_name: '@cmd', city: '@SUM(1)' },
    { first_name: 'Tab', last_name: '\tTabbed', city: 'ok' },
    { first_name: 'Cr', last_name: '\rCarriage', city: 'ok' },
    // Only the first character matters; inner signs are data.
    { first_name: 'Inner', last_name: 'a=b', city: 'x+y-z@w' },
  ];

  beforeAll(async () => {
    ws = await makeWorkspace(t.db, 'csv');
    const f = await api(ws.adminToken, 'POST', '/schema/contacts/fields', { name: 'balance', type: 'NUMBER' });
    expect(f.status, JSON.stringify(f.body)).toBe(201);
    const r = await api(ws.adminToken, 'POST', '/import/contacts', {
      records: [...tricky, ...formulas, { first_name: 'Numbers', last_name: 'Neg', balance: -42.5 }, { first_name: 'Numbers', last_name: 'Pos', balance: 7 }],
    });
    expect(r.body).toMatchObject({ created: tricky.length + formulas.length + 2, failed: 0, duplicates: 0 });
  });

  it('quotes, commas and line breaks in values round-trip through csv-parse unchanged', async () => {
    const r = await api(
      ws.adminToken,
      'GET',
      '/export/contacts?format=csv&fields=first_name,last_name,city,country&sort_by=first_name&sort_dir=asc&filter_field=first_name&filter_operator=in&filter_value=Quote,Crlf,Lone',
    );
    expect(r.status).toBe(200);
    const rows = parse(r.raw, { columns: true }) as Record<string, string>[];
    const expected = [...tricky].sort((a, b) => a.first_name.localeCompare(b.first_name));
    expect(rows).toEqual(expected.map((x) => ({ first_name: x.first_name, last_name: x.last_name, city: x.city, country: x.country })));
    // Escaped as RFC 4180 says: inner quotes doubled, fields with a comma, quote or line break quoted.
    expect(r.raw).toContain('"He said ""hi"", then left"');
    expect(r.raw).toContain('"Paris, France"');
    expect(r.raw).toContain('"Line one\nLine two"');
    expect(r.raw).toContain('"Two\r\nlines"');
    expect(r.raw).toContain('"carriage\rreturn"');
    expect(r.raw).toContain('""""""');
    // A reader that splits records on any line break (not only CRLF) still sees 3 records + the header:
    // every line break inside a value is quoted.
    const lenient = parse(r.raw.replace(/\r\n/g, '\n'), { columns: true, record_delimiter: ['\n'] }) as Record<string, string>[];
    expect(lenient).toHaveLength(3);
    // Records end with CRLF.
    expect(r.raw.endsWith('\r\n')).toBe(true);
  });

  it("cells starting with = + - @ tab or CR get a leading '; numbers and inner signs are left alone; JSON is not altered", async () => {
    const r = await api(ws.adminToken, 'GET', '/export/contacts?format=csv&fields=first_name,last_name,city,balance');
    const rows = parse(r.raw, { columns: true }) as Record<string, string>[];
    const by = new Map(rows.map((x) => [`${x.first_name}/${x.last_name!.replace(/^'/, '')}`, x]));
    for (const f of formulas) {
      const row = by.get(`${f.first_name}/${f.last_name}`)!;
      expect(row, f.first_name).toBeDefined();
      const guard = (v: string) => (/^[=+\-@\t\r]/.test(v) ? `'${v}` : v);
      expect(row.last_name).toBe(guard(f.last_name));
      expect(row.city).toBe(guard(f.city));
    }
    expect(by.get('Eq/=SUM(A1:A9)')!.last_name).toBe("'=SUM(A1:A9)");
    expect(by.get('Inner/a=b')!).toMatchObject({ last_name: 'a=b', city: 'x+y-z@w' });
    // Numbers: -42.5 stays a number, not text with a guard.
    expect(by.get('Numbers/Neg')!.balance).toBe('-42.5');
    expect(by.get('Numbers/Pos')!.balance).toBe('7');
    // The header row is not touched, and JSON exports hold the values as stored.
    expect(r.raw.split('\r\n')[0]).toBe('first_name,last_name,city,balance');
    const json = await api(
      ws.adminToken,
      'GET',
      '/export/contacts?format=json&fields=first_name,last_name,balance&filter_field=first_name&filter_operator=in&filter_value=Eq,Numbers&sort_by=last_name&sort_dir=asc',
    );
    expect(json.body.records).toEqual([
      { first_name: 'Eq', last_name: '=SUM(A1:A9)', balance: null },
      { first_name: 'Numbers', last_name: 'Neg', balance: -42.5 },
      { first_name: 'Numbers', last_name: 'Pos', balance: 7 },
    ]);
  });
});

describe('export: 10,000 rows, default 1000, max 10000, streamed', () => {
  let ws: TestWorkspace;
  const N = 10_000;

  beforeAll(async () => {
    ws = await makeWorkspace(t.db, 'big');
    const inputs = Array.from({ length: N }, (_, i) => ({
      first_name: `F${i}`,
      last_name: `L${String(i).padStart(5, '0')}`,
      email: `u${i}@big.test`,
      job_title: i % 7 === 0 ? 'Engineer, "senior"' : 'Engineer',
    }));
    for (let i = 0; i < N; i += 5000) await createRecords(ws.ctx, 'contacts', inputs.slice(i, i + 5000), { max: 5000, readBack: false });
  }, 30_000);

  it('limit defaults to 1000, allows 10000, refuses 10001 (the budget: 422 QUERY_TOO_EXPENSIVE)', async () => {
    const d = await api(ws.adminToken, 'GET', '/export/contacts?fields=email');
    expect(d.body.total).toBe(N);
    expect(d.body.records).toHaveLength(1000);
    // Newest first: the last created come first, no repeats.
    expect(d.body.records[0].email).toBe(`u${N - 1}@big.test`);
    expect(new Set(d.body.records.map((r: any) => r.email)).size).toBe(1000);
    const over = await api(ws.adminToken, 'GET', '/export/contacts?limit=10001');
    expect(over.status).toBe(422);
    expect(over.body.code).toBe('QUERY_TOO_EXPENSIVE');
    expect(over.body.message).toMatch(/10,000/);
    const all = await api(ws.adminToken, 'GET', '/export/contacts?fields=email&limit=10000');
    expect(all.body.total).toBe(N);
    expect(new Set(all.body.records.map((r: any) => r.email)).size).toBe(N);
  });

  it('a CSV export of 10,000 rows arrives over HTTP in several chunks, every row once', async () => {
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = t.app.server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/export/contacts?format=csv&limit=10000&fields=id,first_name,last_name,email,job_title&sort_by=last_name&sort_dir=asc`, {
      headers: { authorization: `Bearer ${ws.adminToken}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/csv/);
    // Streamed: no Content-Length known up front.
    expect(res.headers.get('content-length')).toBeNull();
    const reader = res.body!.getReader();
    const chunks: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    expect(chunks.length).toBeGreaterThan(3);
    const text = Buffer.concat(chunks).toString('utf8');
    const rows = parse(text, { columns: true }) as Record<string, string>[];
    expect(rows).toHaveLength(N);
    expect(rows[0]).toMatchObject({ first_name: 'F0', last_name: 'L00000', email: 'u0@big.test', job_title: 'Engineer, "senior"' });
    expect(rows[N - 1]).toMatchObject({ first_name: `F${N - 1}`, email: `u${N - 1}@big.test` });
    expect(new Set(rows.map((r) => r.id)).size).toBe(N);
    expect(rows.map((r) => r.last_name)).toEqual(Array.from({ length: N }, (_, i) => `L${String(i).padStart(5, '0')}`));

    // JSON too: several chunks, a valid document with total 10000.
    const j = await fetch(`http://127.0.0.1:${port}/api/v1/export/contacts?format=json&limit=10000&fields=email`, { headers: { authorization: `Bearer ${ws.adminToken}` } });
    let n = 0;
    let body = '';
    const dec = new TextDecoder();
    for await (const c of j.body as unknown as AsyncIterable<Uint8Array>) {
      n++;
      body += dec.decode(c, { stream: true });
    }
    expect(n).toBeGreaterThan(3);
    const doc = JSON.parse(body);
    expect(doc.format).toBe('json');
    expect(doc.total).toBe(N);
    expect(doc.records).toHaveLength(N);
  });
});

describe('a file import on this dialect: each batch prepared while the previous one is written', () => {
  it('a company the file names in every batch is made once, and the rows of every batch link to it (its name looked up once an import)', async () => {
    const w = await makeWorkspace(t.db, 'named');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-import-named-'));
    try {
      const [globex] = await createRecords(w.ctx, 'companies', [{ name: 'Globex' }]);
      // Batches of 3: 'Acme' made by the first, found again in later ones under other spellings.
      const names = ['Acme', 'GLOBEX', 'acme', 'Initech', 'Acme', 'globex', 'ACME', 'Initech', 'Globex'];
      const file = path.join(dir, 'named.csv');
      fs.writeFileSync(file, `first_name,last_name,email,Company\n${names.map((c, i) => `F${i},L${i},n${i}@named.test,${c}`).join('\n')}\n`);
      expect(await importFile(w.ctx, { object: 'contacts', file, map: 'Company=company_name', batch: 3 })).toMatchObject({ rows: 9, created: 9, failed: 0 });
      const companies = await sqlAll<{ id: string; name: string }>(
        t.db.forWorkspace(w.workspace.id),
        sql`SELECT id, name FROM ${sql.table(await tableOf(t.db, w.workspace.id, 'companies'))} ORDER BY name`,
      );
      expect(companies.map((c) => c.name)).toEqual(['Acme', 'Globex', 'Initech']);
      const idOf = new Map(companies.map((c) => [c.name.toLowerCase(), c.id]));
      expect(idOf.get('globex')).toBe(globex!.id);
      const rows = await contactRows(w);
      expect(rows.map((r) => [r.first_name, r.company])).toEqual(names.map((c, i) => [`F${i}`, idOf.get(c.toLowerCase())]));
      // The search documents hold the companies' names (the index keeps their words, folded).
      const docs = new Map((await indexedDocs(t.db, w.workspace.id)).map((d) => [d.record_id, d]));
      expect(docs.get(rows[2]!.id)).toMatchObject({ body: expect.stringContaining('acme') });
      // Again, in one batch: every row a duplicate, no company made.
      expect(await importFile(w.ctx, { object: 'contacts', file, map: 'Company=company_name', batch: 9 })).toMatchObject({ created: 0, duplicates: 9, failed: 0 });
      expect((await sqlAll(t.db.forWorkspace(w.workspace.id), sql`SELECT id FROM ${sql.table(await tableOf(t.db, w.workspace.id, 'companies'))}`)).length).toBe(3);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a piece of a batch the database refuses (a unique value taken) is undone alone and its rows created one by one: each record written once, with its document, keys and timeline entry', async () => {
    const w = await makeWorkspace(t.db, 'refused');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-import-refused-'));
    try {
      await createField(w.ctx, 'contacts', { name: 'badge', type: 'TEXT', unique: true });
      await createRecords(w.ctx, 'contacts', [{ first_name: 'Old', last_name: 'Timer', email: 'old@refused.test', badge: 'B-taken' }]);
      // One batch of 2,400 rows (on PostgreSQL written in pieces as they are planned: the file's first
      // 200 rows, then 1,000 at a time): row 1500 takes the badge of the record already there, row
      // 2200 the badge of row 100 (neither is a match key: the unique index refuses them, in the third
      // and fourth pieces).
      const badge = (i: number) => (i === 1500 ? 'B-taken' : i === 2200 ? 'B-100' : `B-${i}`);
      const file = path.join(dir, 'refused.csv');
      fs.writeFileSync(file, `first_name,last_name,email,badge\n${Array.from({ length: 2400 }, (_, i) => `F${i},L${i},r${i}@refused.test,${badge(i)}`).join('\n')}\n`);
      expect(await importFile(w.ctx, { object: 'contacts', file, batch: 2500 })).toMatchObject({ rows: 2400, created: 2398, duplicates: 2, failed: 0 });
      const rows = await contactRows(w);
      expect(rows).toHaveLength(2399);
      expect(new Set(rows.map((r) => r.email)).size).toBe(2399);
      expect(rows.some((r) => r.email === 'r1500@refused.test' || r.email === 'r2200@refused.test')).toBe(false);
      const contactsObject = (await getSchema(w.ctx)).objects.get('contacts')!.id;
      const docs = (await indexedDocs(t.db, w.workspace.id)).filter((d) => d.object_id === contactsObject);
      expect(docs).toHaveLength(2399);
      expect(new Set(docs.map((d) => d.record_id))).toEqual(new Set(rows.map((r) => r.id)));
      const count = async (q: ReturnType<typeof sql>) => Number((await sqlAll<{ n: number }>(t.db.forWorkspace(w.workspace.id), q))[0]!.n);
      expect(await count(sql`SELECT count(*) AS n FROM dedupe_keys WHERE workspace_id = ${w.workspace.id} AND object_id = ${contactsObject} AND kind = 'email'`)).toBe(2399);
      expect(await count(sql`SELECT count(*) AS n FROM activity WHERE workspace_id = ${w.workspace.id} AND object = 'contacts' AND action = 'created'`)).toBe(2399);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('every batch sees the records of every earlier one, the one still being written while it was prepared too: duplicates skipped, each record indexed, keyed and on the timeline', async () => {
    const w = await makeWorkspace(t.db, 'pipelined');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-import-pipe-'));
    let release: (() => Promise<void>) | null = null;
    try {
      // Batches of 300: rows 300-349 repeat rows 0-49 by phone (batch 2 against batch 1, being
      // written while batch 2 was prepared; by phone, as no unique constraint would catch it), rows
      // 900-949 rows 100-149 by phone (batch 4 against batch 1, committed), rows 600-609 rows 20-29
      // by email and phone (as rows 320-329 did, themselves duplicates).
      const lines = ['first_name,last_name,email,phone,Company'];
      for (let i = 0; i < 1200; i++) {
        const n = i >= 300 && i < 350 ? i - 300 : i >= 600 && i < 610 ? i - 580 : i;
        const email = (i >= 300 && i < 350) || (i >= 900 && i < 950) ? `other${i}@pipe.test` : `p${n}@pipe.test`;
        const phone = `+1 415 555 ${String(i >= 900 && i < 950 ? i - 800 : n).padStart(4, '0')}`;
        lines.push(`F${i},L${i},${email},${phone},Pipe ${i % 7}`);
      }
      const file = path.join(dir, 'pipe.csv');
      fs.writeFileSync(file, `${lines.join('\n')}\n`);
      await createRecords(
        w.ctx,
        'companies',
        Array.from({ length: 7 }, (_, i) => ({ name: `Pipe ${i}` })),
      );
      // On PostgreSQL, batch 1's transaction is held up at its timeline entries (another transaction
      // holds the activity table) for a while: batch 2 is prepared meanwhile, its lookups blind to
      // batch 1's uncommitted rows.
      if (onPostgres) {
        release = await holdWriteLock(t.db.forWorkspace(w.workspace.id), [sql`LOCK TABLE activity IN EXCLUSIVE MODE`]);
        setTimeout(() => void release?.(), 2000);
      }
      const r = await importFile(w.ctx, { object: 'contacts', file, map: 'Company=company_name', batch: 300 });
      expect(r).toMatchObject({ rows: 1200, created: 1200 - 110, duplicates: 110, failed: 0 });

      const rows = await contactRows(w);
      expect(rows).toHaveLength(1090);
      expect(new Set(rows.map((x) => x.phone)).size).toBe(1090);
      expect(rows.some((x) => /^F3[0-4]\d$/.test(x.first_name) || /^F9[0-4]\d$/.test(x.first_name) || /^F60\d$/.test(x.first_name))).toBe(false);
      const companies = await sqlAll<{ name: string }>(t.db.forWorkspace(w.workspace.id), sql`SELECT name FROM ${sql.table(await tableOf(t.db, w.workspace.id, 'companies'))} ORDER BY name`);
      expect(companies.map((c) => c.name)).toEqual(Array.from({ length: 7 }, (_, i) => `Pipe ${i}`));
      // Each record: its search document (with its company's name), its match keys, its timeline entry.
      const docs = await indexedDocs(t.db, w.workspace.id);
      const contactsObject = (await getSchema(w.ctx)).objects.get('contacts')!.id;
      const byRecord = new Map(docs.filter((d) => d.object_id === contactsObject).map((d) => [d.record_id, d]));
      expect(byRecord.size).toBe(1090);
      const last = rows.find((x) => x.first_name === 'F1199')!;
      expect(byRecord.get(last.id)).toMatchObject({ name: 'f1199 l1199', body: expect.stringContaining('pipe 2') });
      const keys = await sqlAll<{ n: number }>(
        t.db.forWorkspace(w.workspace.id),
        sql`SELECT count(DISTINCT record_seq) AS n FROM dedupe_keys WHERE workspace_id = ${w.workspace.id} AND object_id = ${contactsObject} AND kind = 'email'`,
      );
      expect(Number(keys[0]!.n)).toBe(1090);
      const created = await sqlAll<{ n: number }>(
        t.db.forWorkspace(w.workspace.id),
        sql`SELECT count(*) AS n FROM activity WHERE workspace_id = ${w.workspace.id} AND object = 'contacts' AND action = 'created'`,
      );
      expect(Number(created[0]!.n)).toBe(1090);
      // Run again: everything is there.
      expect(await importFile(w.ctx, { object: 'contacts', file, map: 'Company=company_name', batch: 300 })).toMatchObject({ created: 0, duplicates: 1200, failed: 0 });
    } finally {
      await release?.();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
