import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ERROR_STATUS } from '../src/services/errors.js';
import { call, type TestApp, testApp } from './helpers.js';
import { dbDigest, memoryClient } from './mcp-helpers.js';

/**
 * Issue 13: a hostile or careless client must never get a 5xx. Random filters, field names, values,
 * query strings and MCP tool arguments go to the real server (REST through inject, MCP through the
 * SDK client over the real tool list); every answer is below 500, every 4xx (and every MCP tool
 * error) has the contract's shape, and a refused request leaves the database as it was.
 *
 * FUZZ_RUNS=2000 npx vitest run test/fuzz.property.test.ts for a longer run; FUZZ_SEED to replay one.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 250);
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined;
const opts = { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}) };
const TIMEOUT = Math.max(60_000, RUNS * 200);
const CODES = Object.keys(ERROR_STATUS);

let t: TestApp;
let client: Client;
let tools: Tool[];
let ids: { contact: string; company: string; deal: string; task: string };

beforeAll(async () => {
  t = await testApp();
  const tok = t.a.adminToken;
  const post = async (url: string, body: unknown) => (await call(t.app, tok, 'POST', url, body)).body.data;
  const company = await post('/api/v1/records/companies', { name: 'Acme', employees: 10, industry: 'software' });
  const contact = await post('/api/v1/records/contacts', { first_name: 'Ada', email: 'ada@example.com', company: company.id });
  const deal = await post('/api/v1/records/opportunities', { name: 'Deal', amount: 1000, close_date: '2025-01-31' });
  const task = await post('/api/v1/tasks', { title: 'Call Ada', due_at: '2025-01-01T10:00:00Z', contact: contact.id });
  await post('/api/v1/schema', {
    name: 'gadgets',
    fields: [
      { name: 'title', type: 'TEXT' },
      { name: 'qty', type: 'INTEGER' },
      { name: 'ratio', type: 'FLOAT' },
      { name: 'price', type: 'CURRENCY' },
      { name: 'day', type: 'DATE' },
      { name: 'at', type: 'DATETIME' },
      { name: 'on', type: 'BOOLEAN' },
      { name: 'kind', type: 'SELECT', options: ['a', 'b'] },
      { name: 'tags', type: 'MULTI_SELECT', options: ['x', 'y'] },
      { name: 'site', type: 'URL' },
      { name: 'mail', type: 'EMAIL' },
      { name: 'tel', type: 'PHONE' },
      { name: 'owner', type: 'RELATION', target: 'users' },
      { name: 'company', type: 'RELATION', target: 'companies' },
    ],
  });
  ids = { contact: contact.id, company: company.id, deal: deal.id, task: task.id };
  client = await memoryClient(t.db, t.a);
  tools = (await client.listTools()).tools;
}, 60_000);

/** FUZZ_STATS=1 prints how the answers spread (a fuzz that only ever hits the first check proves little). */
const stats = new Map<string, number>();
const tally = (k: string) => stats.set(k, (stats.get(k) ?? 0) + 1);

afterAll(async () => {
  if (process.env.FUZZ_STATS)
    console.log(
      [...stats]
        .sort()
        .map(([k, n]) => `${k}: ${n}`)
        .join('\n'),
    );
  await client?.close();
  await t?.close();
});

// ---------------------------------------------------------------------------------------------
// Hostile material.

const FIELD_NAMES = [
  'first_name',
  'email',
  'status',
  'tags',
  'company',
  'company.industry',
  'owner.name',
  'created_at',
  'close_date',
  'amount',
  'employees',
  'qty',
  'ratio',
  'price',
  'day',
  'at',
  'on',
  'kind',
  'site',
  'mail',
  'tel',
  'owner',
  'due_at',
  'title',
  'nope',
  'a.b.c',
  'company.',
  '.x',
  '',
  ' ',
  'id',
  'seq',
  'workspace_id',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'first_name; DROP TABLE contacts',
  '"email"',
  "x' OR '1'='1",
  'sqlite_master',
  'Ω',
  'x'.repeat(300),
  'a\u0000b',
  '\ud800',
];
const OPERATORS = ['eq', 'equals', 'neq', 'gt', 'gte', 'lt', 'lte', 'between', 'in', 'not_in', 'contains', 'not_contains', 'starts_with', 'is_null', 'is_not_null', 'like', 'EQ', '', '$where'];

const hostileString = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      '\u0000',
      'a\u0000b',
      '\ud800',
      'x\udfffy',
      '\udc00\ud800',
      "'; DROP TABLE contacts; --",
      '" OR 1=1 --',
      "') OR ('1'='1",
      '%',
      '_',
      '\\',
      '%_\\',
      '0x10',
      '0b11',
      '0o7',
      '1_000',
      '1e309',
      '-1e309',
      'Infinity',
      'NaN',
      '',
      ' ',
      '\t',
      '+',
      '-',
      '.',
      '1.',
      '.5',
      '1e',
      '9007199254740993',
      '-0',
      '2024-13-01',
      '2024-02-30',
      '2023-02-29',
      '2024-02-29',
      '2024-01-01T25:00:00Z',
      '2024-01-01T23:60:00Z',
      '2024-01-01T00:00:00+25:00',
      '0000-01-01',
      '9999-12-31',
      '9999-12-31T23:59:59-14:00',
      '10000-01-01',
      '2024-1-1',
      '2024-01-01T',
      '1e20',
      'today',
      'me',
      'last_7_days',
      'last_0_days',
      'last_99999999999999999999_days',
      'next_N_days',
      'this_week',
      '__proto__',
      'constructor',
      'true',
      'null',
      '[]',
      '{}',
      '😀',
      'Zoë',
      '\u202e',
      'x'.repeat(70_000),
    ),
  },
);
const hostileNumber = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(0, -0, 1, -1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53) - 2, 1e308, -1e308, 5e-324, 1e20, 8.64e15 + 1, 0.1, 1.005),
);
/** Nested arrays as JSON text, far past any limit; parsed only where an object is needed (MCP). */
const deepText = (n: number) => '['.repeat(n) + '1' + ']'.repeat(n);

const { value: hostileValue } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { weight: 5, arbitrary: hostileString },
    { weight: 3, arbitrary: hostileNumber },
    { weight: 1, arbitrary: fc.boolean() },
    { weight: 1, arbitrary: fc.constant(null) },
    { weight: 2, arbitrary: fc.array(tie('value'), { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.dictionary(fc.constantFrom('__proto__', 'constructor', 'value', 'a', 'prototype'), tie('value'), { maxKeys: 3 }) },
  ),
}));

// Percent-encoding that keeps lone surrogates as their raw three bytes (encodeURIComponent throws on them).
const pct = (s: string) =>
  // biome-ignore lint/correctness/noEmptyCharacterClassInRegex: [^] is any code point, surrogates included
  s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|[^]/gu, (c) => {
    const u = c.charCodeAt(0);
    if (c.length === 1 && u >= 0xd800 && u <= 0xdfff) return [0xe0 | (u >> 12), 0x80 | ((u >> 6) & 0x3f), 0x80 | (u & 0x3f)].map((b) => `%${b.toString(16).toUpperCase()}`).join('');
    return encodeURIComponent(c);
  });

/** The real fields of each object, so values reach the field types instead of stopping at "unknown field". */
const OBJECT_FIELDS: Record<string, string[]> = {
  contacts: ['first_name', 'last_name', 'email', 'phone', 'status', 'tags', 'company', 'owner', 'do_not_contact', 'last_contacted_at', 'linkedin_url'],
  companies: ['name', 'domain', 'website', 'industry', 'employees', 'annual_revenue', 'phone', 'owner'],
  opportunities: ['name', 'amount', 'status', 'close_date', 'probability', 'company', 'contact', 'priority'],
  tasks: ['title', 'description', 'status', 'priority', 'due_at', 'assignee', 'time_estimate', 'completed_at', 'contact'],
  gadgets: ['title', 'qty', 'ratio', 'price', 'day', 'at', 'on', 'kind', 'tags', 'site', 'mail', 'tel', 'owner', 'company'],
};

/** A JSON text of an object with these entries: keys such as __proto__ go on the wire as they are. */
const objectText = (entries: [string, unknown][]) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`;

/** Filters in both spellings, wide and (a little) deep, with wrong types anywhere. */
const { filter: filterArb } = fc.letrec<{ filter: unknown; condition: unknown; cognite: unknown }>((tie) => ({
  condition: fc.oneof(
    fc.record({ field: fc.constantFrom(...FIELD_NAMES), operator: fc.constantFrom(...OPERATORS), value: hostileValue }, { requiredKeys: ['field', 'operator'] }),
    fc.record({ field: hostileValue, operator: hostileValue, value: hostileValue, extra: hostileValue }, { requiredKeys: [] }),
  ),
  cognite: fc.oneof(
    { depthSize: 'small' },
    fc.record({ equals: fc.record({ property: fc.oneof(fc.constantFrom(...FIELD_NAMES), fc.array(fc.constantFrom(...FIELD_NAMES), { maxLength: 3 }), hostileValue), value: hostileValue }) }),
    fc.record({ in: fc.record({ property: fc.constantFrom(...FIELD_NAMES), values: hostileValue }) }),
    fc.record({ range: fc.record({ property: fc.constantFrom(...FIELD_NAMES), gt: hostileValue, lte: hostileValue }, { requiredKeys: ['property'] }) }),
    fc.record({ prefix: fc.record({ property: fc.constantFrom(...FIELD_NAMES), value: hostileValue }) }),
    fc.record({ containsAll: fc.record({ property: fc.constantFrom(...FIELD_NAMES), values: hostileValue }) }),
    fc.record({ exists: fc.record({ property: fc.constantFrom(...FIELD_NAMES) }) }),
    fc.record({ and: fc.array(tie('cognite'), { maxLength: 3 }) }),
    fc.record({ or: fc.array(tie('cognite'), { maxLength: 3 }) }),
    fc.record({ not: tie('cognite') }),
  ),
  filter: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { weight: 4, arbitrary: fc.record({ operator: fc.constantFrom('and', 'or', 'not', 'xor', 'AND'), conditions: fc.array(fc.oneof(tie('condition'), tie('filter')), { maxLength: 4 }) }) },
    { weight: 3, arbitrary: tie('cognite') },
    { weight: 1, arbitrary: fc.dictionary(fc.constantFrom(...FIELD_NAMES), hostileValue, { maxKeys: 3 }) },
    { weight: 1, arbitrary: hostileValue },
  ),
}));

/** A filter as JSON text: generated, or nested hundreds to thousands deep, or very wide. */
const filterText = fc.oneof(
  { weight: 8, arbitrary: filterArb.map((f) => JSON.stringify(f) ?? 'null') },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.integer({ min: 15, max: 5000 }), fc.boolean())
      .map(([n, cognite]) =>
        cognite
          ? '{"or":['.repeat(n) + '{"equals":{"property":"first_name","value":"x"}}' + ']}'.repeat(n)
          : '{"operator":"and","conditions":['.repeat(n) + '{"field":"first_name","operator":"eq","value":"x"}' + ']}'.repeat(n),
      ),
  },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 150, max: 3000 })
      .map((n) => JSON.stringify({ operator: 'or', conditions: Array.from({ length: n }, (_, i) => ({ field: 'first_name', operator: 'eq', value: `n${i}` })) })),
  },
);

// ---------------------------------------------------------------------------------------------
// The invariants.

async function checkRest(method: string, url: string, body?: string, token: string | null = t.a.adminToken) {
  const before = await dbDigest(t.db);
  const r = await call(t.app, token, method, url, body);
  const what = `${method} ${url.slice(0, 200)} ${body?.slice(0, 300) ?? ''} -> ${r.status} ${r.raw.slice(0, 300)}`;
  tally(`rest ${r.status} ${r.status >= 400 ? r.body?.code : ''}`);
  expect(r.status, what).toBeLessThan(500);
  if (r.status >= 400) {
    expect(r.body, what).toMatchObject({ error: true, code: expect.any(String), message: expect.any(String) });
    expect(CODES, what).toContain(r.body.code);
    expect(r.body.message.length, what).toBeGreaterThan(0);
    expect(ERROR_STATUS[r.body.code as keyof typeof ERROR_STATUS], what).toBe(r.status);
    expect(await dbDigest(t.db), `${what}: a refused request wrote`).toBe(before);
  }
  return r;
}

describe('fuzz: no 5xx, the contract shape, nothing written when refused', () => {
  test(
    'filters on search, aggregate, aggregate tree, export and bulk',
    async () => {
      await fc.assert(
        fc.asyncProperty(filterText, fc.constantFrom('contacts', 'companies', 'opportunities', 'tasks', 'gadgets', 'nope'), fc.nat(5), async (f, object, which) => {
          switch (which) {
            case 0:
              await checkRest('POST', `/api/v1/records/${object}/search`, `{"filter":${f},"limit":5}`);
              break;
            case 1:
              await checkRest('POST', `/api/v1/aggregate/${object}`, `{"filter":${f},"groupBy":["created_at"],"aggregate":[{"field":"id","function":"count"}]}`);
              break;
            case 2:
              await checkRest('POST', `/api/v1/aggregate/${object}/tree`, `{"filter":${f},"aggregates":{"n":{"count":{}}}}`);
              break;
            case 3:
              await checkRest('GET', `/api/v1/export/${object}?format=json&filters=${encodeURIComponent(f)}`);
              break;
            case 4:
              await checkRest('POST', '/api/v1/bulk', `{"object":"${object}","action":"update","values":{"title":"t"},"dry_run":true,"filter":${f}}`);
              break;
            default:
              await checkRest('GET', `/api/v1/records/${object}?filters=${encodeURIComponent(f)}`);
          }
        }),
        opts,
      );
    },
    TIMEOUT,
  );

  test(
    'field names and values on create, update, batch and new fields',
    async () => {
      const objectAndEntries = fc.constantFrom('contacts', 'companies', 'opportunities', 'tasks', 'gadgets').chain((object) =>
        fc.tuple(
          fc.constant(object),
          fc.oneof(
            fc.array(fc.tuple(fc.constantFrom(...FIELD_NAMES), hostileValue), { maxLength: 5 }),
            // Real fields only: the values reach the field types.
            fc.array(fc.tuple(fc.constantFrom(...OBJECT_FIELDS[object]!), hostileValue), { minLength: 1, maxLength: 3 }),
          ),
        ),
      );
      await fc.assert(
        fc.asyncProperty(objectAndEntries, fc.nat(4), fc.integer({ min: 65, max: 3000 }), async ([object, kv], which, depth) => {
          const body = objectText(kv);
          const id = { contacts: ids.contact, companies: ids.company, opportunities: ids.deal, tasks: ids.task, gadgets: 'missing' }[object];
          switch (which) {
            case 0:
              await checkRest('POST', `/api/v1/records/${object}`, body);
              break;
            case 1:
              await checkRest('PATCH', `/api/v1/records/${object}/${id}`, body);
              break;
            case 2:
              await checkRest('POST', `/api/v1/records/${object}/batch/upsert`, `{"key":"email","records":[${body},${body}]}`);
              break;
            case 3: {
              const [name, type] = [kv[0]?.[0] ?? 'x', kv[0]?.[1]];
              await checkRest('POST', `/api/v1/schema/${object}/fields`, objectText([['name', name], ['type', type], ...kv.slice(1)]));
              break;
            }
            default:
              await checkRest('POST', `/api/v1/records/${object}`, `{"first_name":"Deep","name":"Deep","title":"Deep","tags":${deepText(depth)}}`);
          }
        }),
        opts,
      );
    },
    TIMEOUT,
  );

  test(
    'the other bodies: notes, tasks, workspace, inbox, pipelines, import, duplicates, batches, associations',
    async () => {
      const KEYS = [
        'body',
        'object',
        'record_id',
        'visibility',
        'title',
        'description',
        'status',
        'priority',
        'due_at',
        'assignee',
        'contact',
        'company',
        'opportunity',
        'name',
        'time_zone',
        'subject',
        'messages',
        'direction',
        'sent_at',
        'from_email',
        'from_name',
        'to',
        'text',
        'unread',
        'contact_id',
        'company_id',
        'steps',
        'key',
        'field',
        'won',
        'lost',
        'probability',
        'defaults',
        'step',
        'records',
        'action',
        'limit',
        'ids',
        'primary_id',
        'duplicate_ids',
        'merge_id',
        'record_ids',
        'dry_run',
        'first_name',
        'email',
        '__proto__',
        'constructor',
      ];
      const { obj: bodyArb } = fc.letrec<{ obj: unknown }>((tie) => ({
        obj: fc.dictionary(
          fc.constantFrom(...KEYS),
          fc.oneof({ depthSize: 'small' }, hostileValue, fc.array(tie('obj'), { maxLength: 2 }), fc.constantFrom(ids.contact, ids.company, ids.task, 'opportunities', 'contacts')),
          { maxKeys: 6 },
        ),
      }));
      // Valid bodies to start from; one to three keys then get a hostile value (or a hostile body replaces it all).
      const bases = (): [string, string, Record<string, unknown>][] => [
        ['POST', '/api/v1/notes', { body: 'A note', object: 'contacts', record_id: ids.contact }],
        ['PUT', '/api/v1/notes/NOTE', { body: 'Edited', visibility: 'workspace' }],
        ['POST', '/api/v1/tasks', { title: 'T', due_at: '2030-01-01T10:00:00Z', priority: 'high', contact: ids.contact }],
        ['PUT', '/api/v1/tasks/TASK', { title: 'T2', status: 'in_progress' }],
        ['PUT', '/api/v1/tasks/TASK/complete', {}],
        ['PATCH', '/api/v1/workspace', { time_zone: 'Europe/Paris' }],
        [
          'POST',
          '/api/v1/inbox/threads',
          { subject: 'Hi', contact_id: ids.contact, messages: [{ direction: 'inbound', from_email: 'a@b.co', to: ['me@example.com'], body: 'Hello', sent_at: '2024-01-01T10:00:00Z' }] },
        ],
        ['PUT', '/api/v1/inbox/threads/nope', { unread: false }],
        [
          'POST',
          '/api/v1/pipelines',
          {
            object: 'gadgets',
            name: 'P',
            field: 'kind',
            steps: [
              { key: 'a', name: 'A' },
              { key: 'b', name: 'B', won: true },
            ],
          },
        ],
        ['PUT', '/api/v1/pipelines/opportunities/DEAL/move', { step: 'proposal' }],
        ['POST', '/api/v1/import/contacts', { records: [{ first_name: 'Imp', email: 'imp@example.com', last_contacted_at: '2024-01-01' }] }],
        ['POST', '/api/v1/import/gadgets', { records: [{ title: 'G', qty: 1, day: '2024-01-01', at: '2024-01-01T00:00:00Z', price: '1.50', tags: ['x'] }] }],
        ['POST', '/api/v1/duplicates', { action: 'detect', object: 'contacts', limit: 5 }],
        ['POST', '/api/v1/records/contacts/batch/create', { records: [{ first_name: 'B' }] }],
        ['POST', '/api/v1/records/contacts/batch/update', { records: [{ id: ids.contact, job_title: 'CTO' }] }],
        ['PUT', '/api/v1/records/contacts/CONTACT/associations/companies/COMPANY', {}],
        ['POST', '/api/v1/schema', { name: 'things', fields: [{ name: 'title', type: 'TEXT' }] }],
        ['POST', '/api/v1/bulk', { object: 'contacts', action: 'update', ids: [ids.contact], values: { source: 'event' }, dry_run: true }],
      ];
      const targetArb = fc.nat(17).chain((i) => {
        const [method, path, base] = bases()[i]!;
        const keys = [...Object.keys(base), ...KEYS];
        return fc.oneof(
          {
            weight: 4,
            arbitrary: fc.array(fc.tuple(fc.constantFrom(...keys), fc.oneof(hostileValue, bodyArb)), { minLength: 1, maxLength: 3 }).map((kv) => {
              const body: [string, unknown][] = Object.entries(base).filter(([k]) => !kv.some(([k2]) => k2 === k));
              return [method, path, [...body, ...kv]] as const;
            }),
          },
          { weight: 1, arbitrary: bodyArb.map((b) => [method, path, Object.entries(b as object)] as const) },
        );
      });
      let note: string | undefined;
      if (process.env.FUZZ_STATS)
        for (const [method, path, base] of bases()) {
          note ??= (await call(t.app, t.a.adminToken, 'POST', '/api/v1/notes', { body: 'fuzz', object: 'contacts', record_id: ids.contact })).body?.data?.id ?? 'none';
          const url = path.replace('NOTE', note!).replace('TASK', ids.task).replace('DEAL', ids.deal).replace('CONTACT', ids.contact).replace('COMPANY', ids.company);
          const r = await call(t.app, t.a.adminToken, method, url, base);
          if (r.status >= 400) console.log('base fails', method, url, r.raw.slice(0, 300));
        }
      await fc.assert(
        fc.asyncProperty(targetArb, fc.nat(9), async ([method, path, entries], who) => {
          note ??= (await call(t.app, t.a.adminToken, 'POST', '/api/v1/notes', { body: 'fuzz', object: 'contacts', record_id: ids.contact })).body?.data?.id ?? 'none';
          const url = path.replace('NOTE', note!).replace('TASK', ids.task).replace('DEAL', ids.deal).replace('CONTACT', ids.contact).replace('COMPANY', ids.company);
          await checkRest(method, url, objectText(entries as [string, unknown][]), who === 0 ? t.a.memberToken : t.a.adminToken);
        }),
        opts,
      );
    },
    TIMEOUT,
  );

  test(
    'aggregate bodies: hostile dimensions, metrics, intervals, zones, sizes and trees',
    async () => {
      const fieldOrHostile = fc.oneof(fc.constantFrom(...FIELD_NAMES), hostileValue);
      const zone = fc.oneof(fc.constantFrom('UTC', 'Europe/Paris', 'America/Santiago', 'Mars/Olympus', '+25:00', 'Etc/GMT+14', '', 'utc', '\u0000', '../../etc/passwd'), hostileValue);
      const num = fc.oneof(hostileNumber, hostileString, fc.constantFrom(0, -1, 1e9, 1001, 5));
      const dim = fc.oneof(
        fieldOrHostile,
        fc.record(
          { field: fieldOrHostile, interval: fc.oneof(fc.constantFrom('day', 'week', 'month', 'quarter', 'year', 'hour', 'decade'), hostileValue), histogram: num, timeZone: zone },
          { requiredKeys: ['field'] },
        ),
      );
      const metric = fc.record({ field: fieldOrHostile, function: fc.oneof(fc.constantFrom('count', 'sum', 'avg', 'min', 'max', 'count_distinct', 'median', 'DROP'), hostileValue) });
      const groupBody = fc.record(
        {
          aggregate: fc.array(metric, { maxLength: 4 }),
          groupBy: fc.oneof(fc.array(dim, { maxLength: 6 }), dim),
          order: fc.record({ by: fc.oneof(fc.constantFrom('count', 'group'), metric, hostileValue), dir: fc.oneof(fc.constantFrom('asc', 'desc'), hostileValue) }),
          limit: num,
        },
        { requiredKeys: [] },
      );
      const { node: treeNode } = fc.letrec<{ node: unknown; level: unknown }>((tie) => ({
        level: fc.dictionary(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', '__proto__', 'constructor'), tie('node'), { maxKeys: 6 }),
        node: fc.oneof(
          { depthSize: 'small' },
          fc.record({ count: fc.constant({}) }),
          fc.record({ sum: fc.record({ property: fieldOrHostile }) }),
          fc.record({ avg: fc.record({ property: fieldOrHostile }) }),
          fc.record({ uniqueValues: fc.record({ property: fieldOrHostile, size: num, aggregates: tie('level') }, { requiredKeys: ['property'] }) }),
          fc.record({ numberHistogram: fc.record({ property: fieldOrHostile, interval: num, aggregates: tie('level') }, { requiredKeys: ['property'] }) }),
          fc.record({
            timeHistogram: fc.record(
              { property: fieldOrHostile, calendarInterval: fc.oneof(fc.constantFrom('1d', '1w', '1M', '1q', '1y', '1h'), hostileValue), aggregates: tie('level') },
              { requiredKeys: ['property'] },
            ),
          }),
          hostileValue,
        ),
      }));
      const kasarQuery = fc.record(
        {
          field: fieldOrHostile,
          function: fc.constantFrom('count', 'sum', 'avg', 'min', 'max', 'x'),
          group_by: fieldOrHostile,
          interval: fc.constantFrom('day', 'week', 'month', 'x'),
          tz: zone,
          order: fc.constantFrom('count_desc', 'value_asc', 'group_desc', 'x'),
          limit: num,
        },
        { requiredKeys: [] },
      );
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom('contacts', 'companies', 'opportunities', 'tasks', 'gadgets'),
          groupBody,
          fc.dictionary(fc.constantFrom('a', 'b', 'c', 'd'), treeNode, { maxKeys: 5 }),
          kasarQuery,
          fc.nat(2),
          async (object, body, tree, q, which) => {
            if (which === 0) await checkRest('POST', `/api/v1/aggregate/${object}`, JSON.stringify(body));
            else if (which === 1) await checkRest('POST', `/api/v1/aggregate/${object}/tree`, JSON.stringify({ aggregates: tree }));
            else {
              const qs = Object.entries(q)
                .map(([k, v]) => `${k}=${pct(typeof v === 'string' ? v : (JSON.stringify(v) ?? ''))}`)
                .join('&');
              await checkRest('GET', `/api/v1/aggregate/${object}?${qs}`);
            }
          },
        ),
        opts,
      );
    },
    TIMEOUT,
  );

  test(
    'query strings: bad dates, bad numbers, repeated parameters, arrays, broken escapes',
    async () => {
      const PARAMS = [
        'limit',
        'cursor',
        'sort_by',
        'sort_dir',
        'fields',
        'include_total',
        'filter_field',
        'filter_operator',
        'filter_value',
        'filters',
        'due_from',
        'due_to',
        'tz',
        'mode',
        'status',
        'priority',
        'q',
        'object',
        'record_id',
        'from',
        'to',
        'actions',
        'format',
        'field',
        'function',
        'group_by',
        'interval',
        'order',
        'unread',
        'visibility',
        'nope',
        '__proto__',
        'limit[]',
        'a[b]',
      ];
      const raw = fc.constantFrom('%00', '%ED%A0%80', '%zz', '%', '%E0%A4', '%C0%AF', '%2e%2e%2f', '+', '&&', '==', '%FF');
      const valueText = fc.oneof(
        hostileString.map((s) => pct(s.slice(0, 2000))),
        raw,
        hostileNumber.map(String),
      );
      const pair = fc.tuple(fc.constantFrom(...PARAMS), valueText).map(([k, v]) => `${encodeURIComponent(k)}=${v}`);
      const paths = fc.constantFrom(
        '/api/v1/records/contacts',
        '/api/v1/records/gadgets',
        '/api/v1/tasks',
        '/api/v1/notes',
        '/api/v1/search',
        '/api/v1/changes',
        '/api/v1/aggregate/contacts',
        '/api/v1/aggregate/gadgets',
        '/api/v1/export/contacts',
        '/api/v1/inbox/threads',
        '/api/v1/users',
        '/api/v1/tasks/stats',
        `/api/v1/activity/contacts/ID`,
        '/api/v1/records/contacts/ID',
        '/api/v1/records/contacts/%00',
        '/api/v1/records/contacts/a%2Fb',
        // Not here yet: a path segment that is not UTF-8 ('/api/v1/records/%ED%A0%80') is refused by Fastify's router
        // (FST_ERR_BAD_URL) before any hook, in Fastify's own shape; its error handler is the HTTP hygiene part of issue 13.
      );
      await fc.assert(
        fc.asyncProperty(
          paths,
          fc.array(pair, { maxLength: 6 }),
          fc.constantFrom<'admin' | 'member' | 'bad' | 'none'>('admin', 'admin', 'admin', 'admin', 'admin', 'member', 'bad', 'none'),
          async (path, pairs, who) => {
            const token = who === 'admin' ? t.a.adminToken : who === 'member' ? t.a.memberToken : who === 'bad' ? 'ksr_nope' : null;
            await checkRest('GET', `${path.replace('ID', ids.contact)}?${pairs.join('&')}`, undefined, token);
          },
        ),
        opts,
      );
    },
    TIMEOUT,
  );

  test(
    'MCP tool arguments over the real tool list',
    async () => {
      const names = tools.map((x) => x.name);
      const propsOf = new Map(tools.map((x) => [x.name, Object.keys((x.inputSchema as { properties?: object }).properties ?? {})]));
      // Valid calls to start from: a hostile value in one or two places then reaches the services, not only the SDK's checks.
      const BASES: Record<string, Record<string, unknown>> = {
        crm_search: { object: 'contacts', filter: { operator: 'and', conditions: [{ field: 'first_name', operator: 'eq', value: 'Ada' }] }, limit: 5 },
        crm_aggregate: { object: 'opportunities', aggregate: [{ field: 'amount', function: 'sum' }], groupBy: ['status'] },
        crm_create_record: { object: 'contacts', values: { first_name: 'Fuzz' }, dry_run: true },
        crm_update_record: { object: 'contacts', id: ids.contact, values: { job_title: 'CTO' }, dry_run: true },
        crm_batch_write: { object: 'contacts', mode: 'create', records: [{ first_name: 'A' }], dry_run: true },
        crm_create_task: { title: 'Fuzz task', due_at: '2030-01-01T10:00:00Z', dry_run: true },
        crm_list_tasks: { mode: 'all', due_from: '2024-01-01', due_to: '2024-12-31' },
        crm_update_task: { id: ids.task, priority: 'high', dry_run: true },
        crm_create_note: { body: 'Fuzz note', object: 'contacts', record_id: ids.contact, dry_run: true },
        crm_export: { object: 'contacts', fields: ['first_name'], filter: { operator: 'and', conditions: [] } },
        crm_bulk_update: { object: 'contacts', action: 'update', ids: [ids.contact], values: { source: 'event' }, dry_run: true },
        crm_import: { object: 'contacts', records: [{ first_name: 'Imp', email: 'imp@example.com' }], dry_run: true },
        crm_create_field: { object: 'gadgets', name: 'extra', type: 'TEXT', dry_run: true },
        crm_full_text_search: { q: 'ada', limit: 5 },
        crm_list_changes: { object: 'contacts', limit: 5 },
        crm_get_activity: { object: 'contacts', id: ids.contact, from: '2024-01-01' },
        crm_get_record: { object: 'contacts', id: ids.contact },
      };
      if (process.env.FUZZ_STATS)
        for (const [n, a] of Object.entries(BASES)) {
          const r = (await client.callTool({ name: n, arguments: a })) as CallToolResult;
          if (r.isError) console.log('base fails', n, JSON.stringify(r.content).slice(0, 300));
        }
      const valueKeys = ['values', 'records'];
      const mutated = fc.constantFrom(...Object.keys(BASES).filter((n) => names.includes(n))).chain((name) => {
        const base = BASES[name]!;
        const keys = Object.keys(base);
        return fc
          .tuple(
            fc.constant(name),
            fc.array(
              fc.oneof(
                { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...keys), fc.oneof(hostileValue, filterArb)) },
                { weight: 2, arbitrary: fc.tuple(fc.constant('filter'), filterArb) },
                // A hostile value under a real field name inside values / records.
                { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...valueKeys.map((k) => `${k}.`)), fc.tuple(fc.constantFrom(...OBJECT_FIELDS.contacts!, 'nope', '__proto__'), hostileValue)) },
              ),
              { minLength: 1, maxLength: 2 },
            ),
          )
          .map(([n, changes]): [string, [string, unknown][]] => {
            const args: Record<string, unknown> = structuredClone(base);
            for (const [k, v] of changes) {
              if (k.endsWith('.')) {
                const [field, value] = v as [string, unknown];
                const target = k === 'records.' ? (Array.isArray(args.records) ? args.records[0] : undefined) : args.values;
                if (typeof target === 'object' && target !== null) Object.defineProperty(target, field, { value, enumerable: true, writable: true, configurable: true });
              } else if (k !== 'filter' || 'filter' in base || propsOf.get(n)?.includes('filter')) args[k] = v;
            }
            return [n, Object.entries(args)];
          });
      });
      const argArb = fc.oneof(
        { weight: 4, arbitrary: mutated },
        {
          weight: 1,
          arbitrary: fc.constantFrom(...names).chain((name) => {
            const keys = [...(propsOf.get(name) ?? []), 'nope', '__proto__', 'constructor'];
            const value = fc.oneof(
              { weight: 6, arbitrary: hostileValue },
              { weight: 2, arbitrary: filterArb },
              { weight: 1, arbitrary: fc.constantFrom('contacts', 'gadgets', ids.contact, ids.company, 'me', 'opportunities') },
              { weight: 1, arbitrary: fc.integer({ min: 65, max: 2000 }).map((n) => JSON.parse(deepText(n)) as unknown) },
            );
            return fc.tuple(fc.constant(name), fc.array(fc.tuple(fc.constantFrom(...keys), value), { maxLength: 5 }));
          }),
        },
      );
      await fc.assert(
        fc.asyncProperty(argArb, async ([name, kv]) => {
          // Own properties, __proto__ included, as a JSON-RPC message parsed by the server would carry them.
          const args: Record<string, unknown> = {};
          for (const [k, v] of kv) Object.defineProperty(args, k, { value: v, enumerable: true, writable: true, configurable: true });
          if (!('object' in args) && propsOf.get(name)?.includes('object')) args.object = 'contacts';
          const before = await dbDigest(t.db);
          const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
          const text = (r.content?.[0] as { text?: string } | undefined)?.text ?? '';
          const what = `${name} ${text.slice(0, 300)}`;
          tally(`mcp ${r.isError ? (/^[A-Z_]+:/.exec(text)?.[0] ?? text.slice(0, 40)) : 'ok'}`);
          if (process.env.FUZZ_STATS === '2' && r.isError) console.log('MCPERR', name, text.slice(0, 200));
          expect(text, what).not.toMatch(/Internal error|INTERNAL_ERROR|Maximum call stack/);
          if (r.isError) {
            expect(text.length, what).toBeGreaterThan(0);
            expect(await dbDigest(t.db), `${what}: a refused call wrote`).toBe(before);
          }
        }),
        opts,
      );
    },
    TIMEOUT,
  );
});
