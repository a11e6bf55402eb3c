import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ERROR_STATUS } from '../src/services/errors.js';
import { createRecord } from '../src/services/records.js';
import { createField, MAX_FIELDS_PER_OBJECT } from '../src/services/schema.js';
import { call, onPostgres, sqlRun, type TestApp, testApp } from './helpers.js';
import { dbDigest, memoryClient } from './mcp-helpers.js';

/**
 * Issue 13, items 4 and 6: every bad input answers 400 in the contract's shape, names the limit or
 * the expected format, and writes nothing. Hostile values are built as JSON text: JSON.stringify
 * itself recurses and cannot write a value 10,000 deep.
 */

const kasarDeep = (n: number) => '{"operator":"and","conditions":['.repeat(n) + '{"field":"first_name","operator":"eq","value":"x"}' + ']}'.repeat(n);
const cogniteDeep = (n: number) => '{"or":['.repeat(n) + '{"equals":{"property":"first_name","value":"x"}}' + ']}'.repeat(n);
const notDeep = (n: number) => '{"not":'.repeat(n) + '{"equals":{"property":"first_name","value":"x"}}' + '}'.repeat(n);
const arrayDeep = (n: number) => '['.repeat(n) + '"x"' + ']'.repeat(n);

let t: TestApp;
let client: Client;
beforeAll(async () => {
  t = await testApp();
  client = await memoryClient(t.db, t.a);
  await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts', { first_name: 'Ada', email: 'ada@example.com' });
});
afterAll(async () => {
  await client.close();
  await t.close();
});

/** A refusal in the contract's shape, with nothing written. */
async function refused(method: string, url: string, body: unknown, message: RegExp, status = 400) {
  const before = await dbDigest(t.db);
  const r = await call(t.app, t.a.adminToken, method, url, body);
  expect(r.status, `${method} ${url}: ${r.raw.slice(0, 300)}`).toBe(status);
  expect(r.body.error).toBe(true);
  expect(Object.keys(ERROR_STATUS)).toContain(r.body.code);
  expect(r.body.message).toMatch(message);
  expect(await dbDigest(t.db), `${method} ${url} wrote nothing`).toBe(before);
  return r.body;
}

async function toolRefused(name: string, args: Record<string, unknown>, message: RegExp) {
  const before = await dbDigest(t.db);
  const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
  const text = (r.content[0] as { text: string }).text;
  expect(r.isError, `${name}: ${text.slice(0, 300)}`).toBe(true);
  expect(text).not.toMatch(/Internal error/);
  expect(text).toMatch(message);
  expect(await dbDigest(t.db)).toBe(before);
  return text;
}

describe('depth and size limits', () => {
  const filterBodies: [string, string, (f: string) => string][] = [
    ['search', '/api/v1/records/contacts/search', (f) => `{"filter":${f}}`],
    ['aggregate', '/api/v1/aggregate/contacts', (f) => `{"filter":${f}}`],
    ['aggregate tree', '/api/v1/aggregate/contacts/tree', (f) => `{"aggregates":{"n":{"count":{}}},"filter":${f}}`],
    ['bulk', '/api/v1/bulk', (f) => `{"object":"contacts","action":"update","values":{"source":"event"},"filter":${f}}`],
  ];

  test.each(filterBodies)('%s: a filter nested 10,000 deep answers 400 naming the limit', async (_name, url, body) => {
    await refused('POST', url, body(kasarDeep(10_000)), /nesting is 200\d\d levels deep; the limit is 64/);
    // Cognite spellings (search takes only Kasar groups, and says so).
    if (!url.endsWith('/search')) {
      await refused('POST', url, body(cogniteDeep(10_000)), /levels deep; the limit is 64/);
      await refused('POST', url, body(notDeep(10_000)), /levels deep; the limit is 64/);
    }
  });

  test.each(filterBodies)('%s: within the body limit, the filter limit names itself', async (_name, url, body) => {
    await refused('POST', url, body(kasarDeep(17)), /Filter nesting is 17 levels deep; the limit is 16/);
    if (!url.endsWith('/search')) await refused('POST', url, body(cogniteDeep(20)), /Filter nesting is 20 levels deep; the limit is 16/);
  });

  test('a filter at the depth limit is served', async () => {
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts/search', `{"filter":${kasarDeep(15)}}`);
    expect(r.status, r.raw).toBe(200);
    const c = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/contacts', `{"filter":${cogniteDeep(15)}}`);
    expect(c.status, c.raw).toBe(200);
  });

  test('too many conditions answer 400 naming the limit', async () => {
    const conditions = Array.from({ length: 201 }, (_, i) => ({ field: 'first_name', operator: 'eq', value: `n${i}` }));
    await refused('POST', '/api/v1/records/contacts/search', { filter: { operator: 'or', conditions } }, /201 conditions; the limit is 200/);
  });

  test("many long 'in' lists: 400 naming the limit on all values together, never SQLite's 'too many SQL variables' 500", async () => {
    const lists = (n: number, each: number) => ({
      operator: 'or',
      conditions: Array.from({ length: n }, (_, i) => ({ field: 'first_name', operator: 'in', value: Array.from({ length: each }, (_, j) => `v${i}-${j}`) })),
    });
    const cognite = { or: Array.from({ length: 40 }, (_, i) => ({ in: { property: 'first_name', values: Array.from({ length: 1000 }, (_, j) => `v${i}-${j}`) } })) };
    await refused('POST', '/api/v1/records/contacts/search', { filter: lists(40, 1000) }, /lists hold 40000 values in all; the limit is 10000/);
    await refused('POST', '/api/v1/aggregate/contacts', { groupBy: ['status'], filter: lists(40, 1000) }, /the limit is 10000/);
    await refused('POST', '/api/v1/aggregate/contacts', { filter: cognite }, /lists hold 40000 values in all; the limit is 10000/);
    await refused('POST', '/api/v1/aggregate/contacts/tree', { aggregates: { n: { count: {} } }, filter: lists(40, 1000) }, /the limit is 10000/);
    await toolRefused('crm_search', { object: 'contacts', filter: lists(40, 1000) }, /the limit is 10000/);
    // Up to the limit, served.
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts/search', { filter: lists(10, 1000) });
    expect(r.status, r.raw.slice(0, 300)).toBe(200);
  });

  test('a filter in the query string, 10,000 deep', async () => {
    await refused('GET', `/api/v1/records/contacts?filters=${encodeURIComponent(kasarDeep(10_000))}`, undefined, /Filter nesting is 10000 levels deep; the limit is 16/);
    await refused('GET', `/api/v1/aggregate/contacts?function=count&field=id&filters=${encodeURIComponent(kasarDeep(10_000))}`, undefined, /Filter nesting is 10000/);
  });

  test('a JSON value 10,000, 100,000 and 1,000,000 deep answers 400 (JSON.parse copes; the limit is checked before anything recurses)', async () => {
    for (const n of [10_000, 100_000, 1_000_000]) {
      await refused('POST', '/api/v1/records/contacts', `{"first_name":"Deep","tags":${arrayDeep(n)}}`, new RegExp(`JSON body: nesting is ${n + 1} levels deep; the limit is 64`));
      await refused('POST', '/api/v1/tasks', `{"title":${arrayDeep(n)}}`, /the limit is 64/);
    }
  });

  test('MCP: deep filters and arguments answer isError with the limit, never an internal error', async () => {
    const deep = JSON.parse(kasarDeep(10_000));
    const cognite = JSON.parse(cogniteDeep(10_000));
    await toolRefused('crm_search', { object: 'contacts', filter: deep }, /Arguments: nesting is 200\d\d levels deep; the limit is 64/);
    await toolRefused('crm_aggregate', { object: 'contacts', filter: cognite }, /the limit is 64/);
    await toolRefused('crm_bulk_update', { object: 'contacts', action: 'update', filter: deep, values: { source: 'event' } }, /the limit is 64/);
    await toolRefused('crm_export', { object: 'contacts', filter: deep }, /the limit is 64/);
    await toolRefused('crm_search', { object: 'contacts', filter: JSON.parse(kasarDeep(17)) }, /Filter nesting is 17 levels deep; the limit is 16/);
    await toolRefused('crm_aggregate', { object: 'contacts', filter: JSON.parse(cogniteDeep(20)) }, /Filter nesting is 20 levels deep; the limit is 16/);
    // Arguments the SDK validates itself (values take scalars or a list of strings) are refused there, shallowly.
    await toolRefused('crm_create_record', { object: 'contacts', values: { first_name: JSON.parse(arrayDeep(100_000)) } }, /Input validation error/);
  });

  test('MCP: an export link carrying a deep filter is refused as a bad link', async () => {
    const token = Buffer.from(`{"limit":10,"filter":${kasarDeep(10_000)}}`).toString('base64url');
    await expect(client.readResource({ uri: `crm://export/contacts/${token}` })).rejects.toThrow(/Not an export link/);
  });
});

describe('strict dates', () => {
  test('query parameters: month 13 and February 30 are refused, naming the parameter and the format', async () => {
    await refused('GET', '/api/v1/tasks?due_from=2024-13-01', undefined, /'due_from' must be a calendar date in the form YYYY-MM-DD, got "2024-13-01"/);
    await refused('GET', '/api/v1/tasks?due_to=2024-02-30', undefined, /'due_to' must be a calendar date in the form YYYY-MM-DD/);
    await refused('GET', '/api/v1/tasks?due_to=2023-02-29', undefined, /'due_to'/);
    await refused('GET', '/api/v1/tasks?due_from=2024-01-01T25:00:00Z', undefined, /'due_from' must be a valid ISO 8601 date-time/);
    await refused('GET', '/api/v1/tasks?due_from=tomorrowish', undefined, /'due_from'/);
    for (const bad of ['due_to=0000-01-01', 'due_from=10000-01-01', 'due_from=0000-12-31T23:00:00Z', 'due_from=0001-01-01T00:00:00%2B01:00'])
      await refused('GET', `/api/v1/tasks?${bad}`, undefined, /'due_(from|to)'/);
    for (const ok of ['due_to=2024-02-29', 'due_from=2024-01-01T23:59:59Z', 'due_from=9999-12-31', 'due_to=9999-12-31', 'due_to=0001-01-01', 'due_from=0001-01-01&tz=America/New_York'])
      expect((await call(t.app, t.a.adminToken, 'GET', `/api/v1/tasks?${ok}`)).status, ok).toBe(200);
  });

  test('filters: DATE and DATETIME operands are calendar-valid, with a valid time and offset', async () => {
    const cond = (_object: string, field: string, value: unknown) => ({ filter: { operator: 'and', conditions: [{ field, operator: 'gt', value }] } });
    for (const bad of ['2024-01-01T25:00:00Z', '2024-13-01', '2024-02-30', '2024-01-01T10:60:00Z', '2024-01-01T10:00:61Z', '2024-01-01T10:00:00+25:00', '2024-01-01T10:00:00+05:75', '2024-1-1', ''])
      for (const [object, field] of [
        ['opportunities', 'close_date'],
        ['contacts', 'last_contacted_at'],
        ['contacts', 'created_at'],
      ] as const)
        await refused('POST', `/api/v1/records/${object}/search`, cond(object, field, bad), new RegExp(`'${field}' must be`));
    for (const good of ['2024-02-29', '2024-02-29T23:59:59.999+14:00', '2024-01-01 10:00', 'last_7_days'])
      expect((await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/opportunities/search', cond('opportunities', 'close_date', good))).status, good).toBe(200);
  });

  test('values: dates and date-times are stored only when valid', async () => {
    await refused('POST', '/api/v1/records/opportunities', { name: 'Deal', close_date: '2024-02-30' }, /'close_date' must be a calendar date in the form YYYY-MM-DD/);
    await refused('POST', '/api/v1/records/contacts', { first_name: 'X', last_contacted_at: '2024-01-01T24:00:00Z' }, /'last_contacted_at' must be a valid ISO 8601 date-time/);
    await refused('POST', '/api/v1/tasks', { title: 'T', due_at: '2024-04-31T10:00:00Z' }, /'due_at'/);
    // An epoch number beyond what Date can hold used to throw RangeError (a 500).
    await refused('POST', '/api/v1/tasks', { title: 'T', due_at: 1e20 }, /'due_at'/);
    const ok = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts', { first_name: 'Leap', last_contacted_at: '2024-02-29T23:30:00-02:00' });
    expect(ok.status, ok.raw).toBe(201);
    expect(ok.body.data.last_contacted_at).toBe('2024-03-01T01:30:00.000Z');
  });

  test('MCP: the same dates are refused as tool errors', async () => {
    await toolRefused('crm_list_tasks', { due_from: '2024-13-01' }, /'due_from' must be a calendar date/);
    await toolRefused(
      'crm_search',
      { object: 'opportunities', filter: { operator: 'and', conditions: [{ field: 'close_date', operator: 'eq', value: '2024-01-01T25:00:00Z' }] } },
      /'close_date' must be a valid ISO 8601/,
    );
  });
});

describe('strict numbers', () => {
  // '' and whitespace alone mean "no value" in a record (they empty the field); in a filter they are refused below.
  const notDecimal = ['0x10', '0X10', '0b1', '0o7', 'Infinity', '-Infinity', 'NaN', '1_000', '1,000', '12abc', '--1', '.', 'e5', ' 0x1 '];

  test('an INTEGER field takes decimal digits only, integral and within the safe range', async () => {
    for (const v of [...notDecimal, '1.5', 1.5, '1e3', 2 ** 53, '9007199254740993'])
      await refused('POST', '/api/v1/records/companies', { name: 'Acme', employees: v }, /'employees' must be an integer: a whole number in decimal digits/);
    for (const [v, stored] of [
      ['16', 16],
      [' 42 ', 42],
      ['+7', 7],
      [0, 0],
      ['9007199254740991', 9007199254740991],
    ] as const) {
      const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/companies', { name: `Acme ${v}`, employees: v });
      expect(r.status, `${JSON.stringify(v)}: ${r.raw}`).toBe(201);
      expect(r.body.data.employees).toBe(stored);
    }
  });

  test('decimal fields take sign, decimal point and exponent, nothing else', async () => {
    for (const v of notDecimal) await refused('POST', '/api/v1/records/opportunities', { name: 'Deal', probability: v }, /'probability' must be a number in decimal notation/);
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/opportunities', { name: 'Deal', probability: '2.5e1' });
    expect(r.body.data.probability).toBe(25);
    for (const v of ['0x10', 'Infinity', '1e3']) await refused('POST', '/api/v1/records/opportunities', { name: 'Deal', amount: v }, /'amount' must be a decimal amount/);
  });

  test('filter operands and query parameters: the same', async () => {
    for (const v of ['0x10', 'Infinity', '', ' ', '1_0'])
      await refused('POST', '/api/v1/records/companies/search', { filter: { operator: 'and', conditions: [{ field: 'employees', operator: 'gt', value: v }] } }, /needs a number in decimal notation/);
    await refused('GET', '/api/v1/records/companies?filter_field=employees&filter_operator=gt&filter_value=0x10', undefined, /needs a number in decimal notation/);
    for (const q of ['limit=0x10', 'limit=', 'limit=1e1', 'limit=Infinity', 'limit=10&limit=20']) await refused('GET', `/api/v1/records/companies?${q}`, undefined, /limit/);
    await refused('GET', '/api/v1/tasks?limit=0b11', undefined, /limit/);
    await refused('GET', '/api/v1/aggregate/companies?function=count&field=id&group_by=industry&limit=0x10', undefined, /limit/);
    expect((await call(t.app, t.a.adminToken, 'GET', '/api/v1/records/companies?limit=10')).status).toBe(200);
    // Aggregate tree sizes and intervals read as numbers too.
    await refused('POST', '/api/v1/aggregate/companies/tree', { aggregates: { s: { uniqueValues: { property: 'industry', size: '0x10' } } } }, /size' must be 1 to/);
    await refused(
      'POST',
      '/api/v1/aggregate/companies/tree',
      { aggregates: { h: { numberHistogram: { property: 'employees', interval: 'Infinity' } } } },
      /histogram interval must be a positive number/,
    );
    const ok = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/companies/tree', { aggregates: { s: { uniqueValues: { property: 'industry', size: '16' } } } });
    expect(ok.status, ok.raw).toBe(200);
  });

  test('MCP: hex in a value is a tool error', async () => {
    await toolRefused('crm_create_record', { object: 'companies', values: { name: 'Hex', employees: '0x10' } }, /'employees' must be an integer/);
  });
});

describe('text: NUL and lone surrogates', () => {
  test('a NUL byte is refused everywhere, not stored and not stripped', async () => {
    await refused('POST', '/api/v1/records/contacts', { first_name: 'Eve', email: 'eve\u0000@example.com' }, /'email' contains a NUL character/);
    await refused('POST', '/api/v1/records/contacts', { first_name: 'Ev\u0000e' }, /'first_name' contains a NUL character/);
    await refused('POST', '/api/v1/tasks', { title: 'Call\u0000' }, /'title' contains a NUL/);
    await refused('POST', '/api/v1/notes', { body: 'hello\u0000world' }, /'body' contains a NUL/);
    await refused('PATCH', '/api/v1/workspace', { name: 'W\u0000' }, /'name' contains a NUL/);
    await refused('POST', '/api/v1/records/contacts', { 'first\u0000name': 'Eve' }, /a key contains a NUL/);
    await refused('GET', '/api/v1/search?q=ada%00', undefined, /Query string at 'q' contains a NUL/);
    await refused('GET', '/api/v1/records/contacts/abc%00def', undefined, /Path at 'id' contains a NUL/);
  });

  test('a lone surrogate is refused, escaped or sent raw, instead of being stored as U+FFFD', async () => {
    await refused('POST', '/api/v1/records/contacts', '{"first_name":"\\ud800"}', /'first_name' contains a lone UTF-16 surrogate/);
    await refused('POST', '/api/v1/records/contacts', '{"first_name":"a\\udfffb"}', /lone UTF-16 surrogate/);
    // The same code point as raw bytes (ED A0 80): decoding would make three U+FFFD of it.
    const before = await dbDigest(t.db);
    const raw = Buffer.concat([Buffer.from('{"first_name":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]);
    const r = await t.app.inject({ method: 'POST', url: '/api/v1/records/contacts', headers: { authorization: `Bearer ${t.a.adminToken}`, 'content-type': 'application/json' }, payload: raw });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ error: true, code: 'VALIDATION_ERROR', message: expect.stringMatching(/not valid UTF-8/) });
    await refused('GET', '/api/v1/search?q=%ED%A0%80', undefined, /not UTF-8/);
    expect(await dbDigest(t.db)).toBe(before);
  });

  test('well-formed text outside the BMP round-trips unchanged', async () => {
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts', { first_name: 'Zoë 😀 𝒜' });
    expect(r.status).toBe(201);
    expect((await call(t.app, t.a.adminToken, 'GET', `/api/v1/records/contacts/${r.body.data.id}`)).body.data.first_name).toBe('Zoë 😀 𝒜');
  });

  test('MCP: NUL and lone surrogates in any argument are tool errors', async () => {
    await toolRefused('crm_create_record', { object: 'contacts', values: { first_name: 'Eve', email: 'eve\u0000@example.com' } }, /Arguments at 'values.email' contains a NUL/);
    await toolRefused('crm_create_task', { title: 'Call \ud800' }, /lone UTF-16 surrogate/);
    await toolRefused('crm_create_note', { body: 'x\u0000' }, /NUL/);
  });

  test('services refuse them too (the CLI importer and any other caller go through the field types)', async () => {
    await expect(createRecord(t.a.ctx, 'contacts', { first_name: 'Bad\u0000' })).rejects.toThrow(/'first_name' contains a NUL/);
    await expect(createRecord(t.a.ctx, 'contacts', { first_name: 'Bad\udc00' })).rejects.toThrow(/lone UTF-16 surrogate/);
  });
});

describe('fields per object', () => {
  test("the default leaves room below the database's columns per table (SQLite 2,000, PostgreSQL 1,600), and the table holds it", async () => {
    expect(MAX_FIELDS_PER_OBJECT).toBe(500);
    // The widest possible table, built as createField builds it: seq + 4 built-in columns + the limit.
    // (Plain tables, not TEMP: on PostgreSQL each statement may run on another pooled connection.)
    const cols = Array.from({ length: MAX_FIELDS_PER_OBJECT }, (_, i) => `f${i} TEXT`).join(', ');
    await sqlRun(t.db, `CREATE TABLE widest (seq INTEGER PRIMARY KEY, id TEXT, created_at TEXT, updated_at TEXT, created_by TEXT, ${cols})`);
    await sqlRun(t.db, 'DROP TABLE widest');
    // And the database's own limit is where the issue met it (SQLite's): well above ours.
    const tooWide = Array.from({ length: 2000 }, (_, i) => `f${i} TEXT`).join(', ');
    await expect(sqlRun(t.db, `CREATE TABLE too_wide (seq INTEGER PRIMARY KEY, ${tooWide})`)).rejects.toThrow(onPostgres ? /at most 1600 columns/ : /too many columns/);
  });

  test('the field past the limit answers 400 naming it, before any DDL (a lowered limit keeps the test fast)', async () => {
    const spec = { name: 'widgets', fields: Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, type: 'TEXT' })) };
    expect((await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', spec)).status).toBe(201);
    await createField(t.a.ctx, 'widgets', { name: 'f10', type: 'TEXT' }, { maxFields: 11 });
    const before = await dbDigest(t.db);
    await expect(createField(t.a.ctx, 'widgets', { name: 'f11', type: 'TEXT' }, { maxFields: 11 })).rejects.toThrow(/widgets has 11 fields; the limit is 11 fields per object/);
    expect(await dbDigest(t.db)).toBe(before);
  });

  test('through REST, at the real default: 500 fields, then 400', async () => {
    // 200 in one object definition, the rest one by one.
    const spec = { name: 'wide', fields: Array.from({ length: 200 }, (_, i) => ({ name: `f${i}`, type: 'INTEGER' })) };
    expect((await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', spec)).status).toBe(201);
    for (let i = 200; i < MAX_FIELDS_PER_OBJECT; i++) {
      const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema/wide/fields', { name: `f${i}`, type: 'INTEGER' });
      expect(r.status, r.raw).toBe(201);
    }
    await refused('POST', '/api/v1/schema/wide/fields', { name: 'one_more', type: 'TEXT' }, /wide has 500 fields; the limit is 500 fields per object/);
    const rec = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/wide', { f0: 1, f499: 499 });
    expect(rec.status, rec.raw).toBe(201);
    expect(rec.body.data.f499).toBe(499);
  }, 60_000);
});

describe('MCP over HTTP', () => {
  /** One JSON-RPC message to the stateless /mcp endpoint, as text: the client SDK would JSON.stringify (and overflow) first. */
  async function rpc(app: TestApp['app'], text: string) {
    const r = await app.inject({
      method: 'POST',
      url: '/mcp',
      headers: { authorization: `Bearer ${t.a.adminToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      payload: text,
    });
    return { status: r.statusCode, body: r.body };
  }

  test('a deep filter or value in a tool call answers a tool error with the limit, not a 500 or a crash', async () => {
    const { buildApp } = await import('../src/http/app.js');
    const { silent } = await import('./helpers.js');
    const app = await buildApp({ db: t.db, log: silent, mcp: true });
    try {
      const before = await dbDigest(t.db);
      const calls: [string, string, RegExp][] = [
        ['crm_search', `{"object":"contacts","filter":${kasarDeep(10_000)}}`, /Arguments: nesting is 20002 levels deep; the limit is 64/],
        ['crm_aggregate', `{"object":"contacts","filter":${cogniteDeep(100_000)}}`, /Arguments: nesting is 200003 levels deep; the limit is 64/],
        // values are checked by the SDK against the tool's schema first, one level at a time.
        ['crm_create_record', `{"object":"contacts","values":{"first_name":${arrayDeep(100_000)}}}`, /Input validation error/],
      ];
      for (const [name, args, message] of calls) {
        const r = await rpc(app, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"${name}","arguments":${args}}}`);
        expect(r.status, r.body.slice(0, 300)).toBe(200);
        expect(r.body).toMatch(/"isError":true/);
        expect(r.body).toMatch(message);
      }
      // Deep params outside the arguments, on a method that takes none.
      const r = await rpc(app, `{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"_meta":{"x":${arrayDeep(100_000)}}}}`);
      expect(r.status, r.body.slice(0, 300)).toBeLessThan(500);
      expect(await dbDigest(t.db)).toBe(before);
    } finally {
      await app.close();
    }
  });
});
