import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken, revokeToken } from '../src/services/users.js';
import { call, type TestApp, testApp } from './helpers.js';

/** Every error of the contract: status, code and the body {error: true, code, message}. */

let t: TestApp;
const api = (method: string, url: string, body?: unknown, token: string | null = t.a.adminToken) => call(t.app, token, method, `/api/v1${url}`, body);

function expectError(r: { status: number; body: any }, status: number, code: string, message?: RegExp | string) {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body).toEqual(expect.objectContaining({ error: true, code, message: expect.any(String) }));
  expect(Object.keys(r.body).every((k) => ['error', 'code', 'message', 'details'].includes(k))).toBe(true);
  expect(r.body.message.length).toBeGreaterThan(0);
  if (typeof message === 'string') expect(r.body.message).toBe(message);
  else if (message) expect(r.body.message).toMatch(message);
  return r.body as { error: true; code: string; message: string; details?: Record<string, unknown> };
}

beforeAll(async () => {
  t = await testApp();
});
afterAll(() => t.close());

describe('INVALID_OBJECT (400)', () => {
  it('names the valid objects, on every records route', async () => {
    const list = expectError(await api('GET', '/records/widgets'), 400, 'INVALID_OBJECT');
    for (const o of ['contacts', 'companies', 'opportunities']) expect(list.message).toContain(o);
    expect(list.message).toContain("'widgets'");
    expectError(await api('POST', '/records/widgets', { name: 'x' }), 400, 'INVALID_OBJECT');
    expectError(await api('GET', '/records/widgets/some-id'), 400, 'INVALID_OBJECT');
    expectError(await api('POST', '/records/widgets/search', {}), 400, 'INVALID_OBJECT');
    expectError(await api('DELETE', '/records/widgets', { ids: ['a'] }), 400, 'INVALID_OBJECT');
    expectError(await api('GET', '/schema/widgets'), 400, 'INVALID_OBJECT');
  });
});

describe('MISSING_REQUIRED_FIELD (400)', () => {
  it('on create without a required field, and on clearing one', async () => {
    const e = expectError(await api('POST', '/records/contacts', { last_name: 'NoFirst' }), 400, 'MISSING_REQUIRED_FIELD');
    expect(e.message).toContain('first_name');
    expectError(await api('POST', '/records/contacts', { first_name: '   ' }), 400, 'MISSING_REQUIRED_FIELD', /first_name/);
    expectError(await api('POST', '/records/opportunities', { amount: 10 }), 400, 'MISSING_REQUIRED_FIELD', /name/);
    const c = (await api('POST', '/records/contacts', { first_name: 'Has' })).body.data;
    expectError(await api('PATCH', `/records/contacts/${c.id}`, { first_name: null }), 400, 'MISSING_REQUIRED_FIELD', /first_name/);
    expect((await api('GET', `/records/contacts/${c.id}`)).body.data.first_name).toBe('Has');
  });
});

describe('VALIDATION_ERROR (400)', () => {
  it('bad email: "Field \'email\' must be a valid email address"', async () => {
    expectError(await api('POST', '/records/contacts', { first_name: 'A', email: 'not-an-email' }), 400, 'VALIDATION_ERROR', "Field 'email' must be a valid email address");
    expectError(await api('POST', '/records/contacts', { first_name: 'A', email: 'a@b' }), 400, 'VALIDATION_ERROR', "Field 'email' must be a valid email address");
  });

  it('bad select value lists the allowed values', async () => {
    const e = expectError(await api('POST', '/records/contacts', { first_name: 'A', status: 'zombie' }), 400, 'VALIDATION_ERROR');
    expect(e.message).toContain('status');
    for (const v of ['lead', 'qualified', 'customer', 'churned']) expect(e.message).toContain(v);
    const m = expectError(await api('POST', '/records/contacts', { first_name: 'A', tags: ['vip', 'gold'] }), 400, 'VALIDATION_ERROR');
    expect(m.message).toContain('newsletter');
  });

  it('unknown field lists the valid fields (in a body, a sort, a projection and a filter)', async () => {
    const e = expectError(await api('POST', '/records/contacts', { first_name: 'A', favourite_color: 'blue' }), 400, 'VALIDATION_ERROR');
    expect(e.message).toContain('favourite_color');
    for (const f of ['first_name', 'last_name', 'email', 'status']) expect(e.message).toContain(f);
    expectError(await api('GET', '/records/contacts?sort_by=favourite_color'), 400, 'VALIDATION_ERROR', /favourite_color.*first_name/s);
    expectError(await api('GET', '/records/contacts?fields=first_name,favourite_color'), 400, 'VALIDATION_ERROR', /favourite_color.*first_name/s);
    expectError(await api('GET', '/records/contacts?filter_field=favourite_color&filter_operator=eq&filter_value=1'), 400, 'VALIDATION_ERROR', /Valid fields/);
    expectError(
      await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'favourite_color', operator: 'eq', value: 'x' }] }),
      400,
      'VALIDATION_ERROR',
      /favourite_color.*first_name/s,
    );
  });

  it('writing a read-only field is refused', async () => {
    expectError(await api('POST', '/records/contacts', { first_name: 'A', created_at: '2020-01-01T00:00:00Z' }), 400, 'VALIDATION_ERROR', /read-only/);
  });

  it('bad numbers, currency amounts, percentages out of range', async () => {
    expectError(await api('POST', '/records/companies', { name: 'A', employees: 'many' }), 400, 'VALIDATION_ERROR', /employees.*number/);
    expectError(await api('POST', '/records/companies', { name: 'A', employees: 2.5 }), 400, 'VALIDATION_ERROR', /employees.*integer/);
    expectError(await api('POST', '/records/companies', { name: 'A', employees: -1 }), 400, 'VALIDATION_ERROR', /employees.*at least 0/);
    expectError(await api('POST', '/records/opportunities', { name: 'A', amount: '12,50' }), 400, 'VALIDATION_ERROR', /amount/);
    expectError(await api('POST', '/records/opportunities', { name: 'A', amount: 1.005 }), 400, 'VALIDATION_ERROR', /decimal places/);
    expectError(await api('POST', '/records/opportunities', { name: 'A', probability: 150 }), 400, 'VALIDATION_ERROR', /probability.*at most 100/);
    expectError(await api('GET', '/records/opportunities?filter_field=amount&filter_operator=gt&filter_value=lots'), 400, 'VALIDATION_ERROR', /amount/);
  });

  it('bad dates and date-times', async () => {
    expectError(await api('POST', '/records/opportunities', { name: 'A', close_date: '2024-13-45' }), 400, 'VALIDATION_ERROR', /close_date.*YYYY-MM-DD/);
    expectError(await api('POST', '/records/opportunities', { name: 'A', close_date: '2023-02-29' }), 400, 'VALIDATION_ERROR', /close_date/);
    expectError(await api('POST', '/records/opportunities', { name: 'A', close_date: 'next friday' }), 400, 'VALIDATION_ERROR', /close_date/);
    expectError(await api('POST', '/records/contacts', { first_name: 'A', last_contacted_at: 'yesterday' }), 400, 'VALIDATION_ERROR', /last_contacted_at.*ISO 8601/);
    expectError(await api('GET', '/records/opportunities?filter_field=close_date&filter_operator=lt&filter_value=soon'), 400, 'VALIDATION_ERROR', /close_date/);
  });

  it('bad booleans, phones, URLs and relation ids', async () => {
    expectError(await api('POST', '/records/contacts', { first_name: 'A', do_not_contact: 'maybe' }), 400, 'VALIDATION_ERROR', /do_not_contact/);
    expectError(await api('POST', '/records/contacts', { first_name: 'A', phone: 'call me' }), 400, 'VALIDATION_ERROR', /phone/);
    // 5 to 20 digits, with separators and an extension.
    expectError(await api('POST', '/records/contacts', { first_name: 'A', phone: '12-34' }), 400, 'VALIDATION_ERROR', /phone/);
    expectError(await api('POST', '/records/contacts', { first_name: 'A', phone: '+1 415 555 0123 4567 890123' }), 400, 'VALIDATION_ERROR', /phone/);
    expect((await api('POST', '/records/contacts', { first_name: 'A', phone: '+1 (415) 555-0123 ext. 45' })).status).toBe(201);
    expectError(await api('POST', '/records/contacts', { first_name: 'A', linkedin_url: 'not a url' }), 400, 'VALIDATION_ERROR', /linkedin_url/);
    expectError(await api('POST', '/records/contacts', { first_name: 'A', company: 42 }), 400, 'VALIDATION_ERROR', /company/);
  });

  it('a relation to a record that does not exist is refused, and nothing is written', async () => {
    const before = (await api('GET', '/records/contacts?limit=1')).body.total;
    expectError(await api('POST', '/records/contacts', { first_name: 'A', company: 'no-such-company' }), 400, 'VALIDATION_ERROR', /company.*no-such-company/);
    expectError(await api('POST', '/records/opportunities', { name: 'A', owner: 'no-such-user' }), 400, 'VALIDATION_ERROR', /owner/);
    expect((await api('GET', '/records/contacts?limit=1')).body.total).toBe(before);
    const c = (await api('POST', '/records/contacts', { first_name: 'B' })).body.data;
    expectError(await api('PUT', `/records/contacts/${c.id}`, { company: 'no-such-company' }), 400, 'VALIDATION_ERROR', /company/);
    // A relation must point at its target object: a contact id is not a company.
    expectError(await api('PUT', `/records/contacts/${c.id}`, { company: c.id }), 400, 'VALIDATION_ERROR', /company/);
  });

  it('unknown filter operator, and operators that do not apply to the field type', async () => {
    const e = expectError(await api('GET', '/records/contacts?filter_field=first_name&filter_operator=like&filter_value=a'), 400, 'VALIDATION_ERROR');
    for (const op of ['eq', 'neq', 'contains', 'starts_with', 'is_null']) expect(e.message).toContain(op);
    expectError(await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'first_name', operator: 'like', value: 'a' }] }), 400, 'VALIDATION_ERROR', /operator/);
    expectError(await api('POST', '/records/contacts/search', { operator: 'xor', conditions: [] }), 400, 'VALIDATION_ERROR');
    const na = expectError(await api('POST', '/records/opportunities/search', { operator: 'and', conditions: [{ field: 'amount', operator: 'contains', value: '5' }] }), 400, 'VALIDATION_ERROR');
    expect(na.message).toMatch(/contains.*amount/);
    expect(na.message).toMatch(/Valid operators for amount \(CURRENCY\): .*gt/);
    expectError(await api('GET', '/records/contacts?filter_field=do_not_contact&filter_operator=gt&filter_value=true'), 400, 'VALIDATION_ERROR', /does not apply/);
    expectError(await api('GET', '/records/contacts?filter_field=first_name&filter_operator=eq'), 400, 'VALIDATION_ERROR', /filter_value/);
    expectError(await api('GET', '/records/contacts?filters=%7Bnot%20json'), 400, 'VALIDATION_ERROR', /filters/);
    expectError(await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'status', operator: 'between', value: ['a'] }] }), 400, 'VALIDATION_ERROR');
    expectError(await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'age', operator: 'eq', value: 1, extra: true }] }), 400, 'VALIDATION_ERROR');
    expectError(await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'status', operator: 'eq', value: 'zombie' }] }), 400, 'VALIDATION_ERROR', /lead/);
  });

  it('malformed JSON body', async () => {
    const r = await t.app.inject({
      method: 'POST',
      url: '/api/v1/records/contacts',
      headers: { authorization: `Bearer ${t.a.adminToken}`, 'content-type': 'application/json' },
      payload: '{"first_name": "A",',
    });
    expectError({ status: r.statusCode, body: r.json() }, 400, 'VALIDATION_ERROR', /Malformed JSON/);
    const arr = await api('POST', '/records/contacts', '[1, 2');
    expectError(arr, 400, 'VALIDATION_ERROR', /Malformed JSON/);
    // A JSON value that is not an object is a validation error too, not a crash.
    expectError(await api('POST', '/records/contacts', '"just a string"'), 400, 'VALIDATION_ERROR');
    expectError(await api('POST', '/records/contacts', '[{"first_name":"A"}]'), 400, 'VALIDATION_ERROR');
    expectError(await api('POST', '/records/contacts/batch/create', { rows: [] }), 400, 'VALIDATION_ERROR', /records/);
    expectError(await api('POST', '/records/contacts/batch/create', { records: [] }), 400, 'VALIDATION_ERROR');
  });

  it('bad cursor, and a cursor reused with another sort', async () => {
    expectError(await api('GET', '/records/contacts?cursor=garbage!!'), 400, 'VALIDATION_ERROR', /cursor/);
    expectError(await api('GET', `/records/contacts?cursor=${Buffer.from('{"x":1}').toString('base64url')}`), 400, 'VALIDATION_ERROR', /cursor/);
    await api('POST', '/records/contacts/batch/create', { records: [{ first_name: 'C1' }, { first_name: 'C2' }, { first_name: 'C3' }] });
    const page = await api('GET', '/records/contacts?limit=1&sort_by=first_name&sort_dir=asc');
    expect(page.body.nextCursor).toEqual(expect.any(String));
    expectError(await api('GET', `/records/contacts?limit=1&sort_by=last_name&cursor=${page.body.nextCursor}`), 400, 'VALIDATION_ERROR', /sort/);
  });

  it('limit out of range, and unknown query parameters', async () => {
    for (const limit of ['0', '101', '-5', 'abc', '2.5']) expectError(await api('GET', `/records/contacts?limit=${limit}`), 400, 'VALIDATION_ERROR', /limit/);
    expectError(await api('POST', '/records/contacts/search', { limit: 1000 }), 400, 'VALIDATION_ERROR', /limit/);
    expectError(await api('GET', '/records/contacts?sort_dir=sideways'), 400, 'VALIDATION_ERROR', /sort_dir/);
    expectError(await api('GET', '/records/contacts?colour=red'), 400, 'VALIDATION_ERROR', /colour/);
    expectError(await api('GET', '/records/contacts?sort_by=tags'), 400, 'VALIDATION_ERROR', /MULTI_SELECT/);
  });
});

describe('PERMISSION_DENIED (403)', () => {
  it('a member may not create custom objects or fields', async () => {
    const o = await api('POST', '/schema', { name: 'projects', fields: [{ name: 'title', type: 'TEXT' }] }, t.a.memberToken);
    expectError(o, 403, 'PERMISSION_DENIED', /admin/);
    const f = await api('POST', '/schema/contacts/fields', { name: 'tier', type: 'TEXT' }, t.a.memberToken);
    expectError(f, 403, 'PERMISSION_DENIED', /admin/);
    // Nothing was created.
    expectError(await api('GET', '/schema/projects'), 400, 'INVALID_OBJECT');
    const fields = (await api('GET', '/schema/contacts')).body.data.fields.map((x: { name: string }) => x.name);
    expect(fields).not.toContain('tier');
    // A member still works with records.
    expect((await api('POST', '/records/contacts', { first_name: 'By member' }, t.a.memberToken)).status).toBe(201);
  });
});

describe('RECORD_NOT_FOUND (404)', () => {
  it('get, update, patch and delete of a missing id', async () => {
    for (const [method, body] of [['GET'], ['PUT', { first_name: 'X' }], ['PATCH', { first_name: 'X' }], ['DELETE']] as const) {
      const e = expectError(await api(method, '/records/contacts/00000000-0000-0000-0000-000000000000', body), 404, 'RECORD_NOT_FOUND');
      expect(e.message).toContain('00000000-0000-0000-0000-000000000000');
    }
  });
});

describe('DUPLICATE_RECORD (409)', () => {
  it('the same contact email twice, whatever its case', async () => {
    expect((await api('POST', '/records/contacts', { first_name: 'A', email: 'Same@Example.com' })).status).toBe(201);
    const e = expectError(await api('POST', '/records/contacts', { first_name: 'B', email: 'same@EXAMPLE.com' }), 409, 'DUPLICATE_RECORD');
    expect(e.message).toContain('email');
    // Updating another contact onto a taken email is a duplicate too.
    const other = (await api('POST', '/records/contacts', { first_name: 'C', email: 'other@example.com' })).body.data;
    expectError(await api('PATCH', `/records/contacts/${other.id}`, { email: 'SAME@example.com' }), 409, 'DUPLICATE_RECORD');
    expect((await api('GET', `/records/contacts/${other.id}`)).body.data.email).toBe('other@example.com');
    // Empty emails never collide.
    expect((await api('POST', '/records/contacts', { first_name: 'D' })).status).toBe(201);
    expect((await api('POST', '/records/contacts', { first_name: 'E', email: '' })).status).toBe(201);
  });
});

describe('UNAUTHORIZED (401)', () => {
  const routes: [string, string][] = [
    ['GET', '/records/contacts'],
    ['GET', '/me'],
    ['POST', '/records/contacts'],
    ['GET', '/schema'],
  ];

  function expectUnauthorized(r: { status: number; body: any; headers: Record<string, unknown> }) {
    expectError(r, 401, 'UNAUTHORIZED');
    expect(String(r.headers['www-authenticate'])).toMatch(/^Bearer/);
  }

  it('missing token', async () => {
    for (const [m, u] of routes) expectUnauthorized(await api(m, u, m === 'POST' ? { first_name: 'X' } : undefined, null));
    const r = await api('GET', '/me', undefined, null);
    expect(r.body.message).toMatch(/Bearer/);
  });

  it('unknown token, a token without the ksr_ prefix, and a non-Bearer scheme', async () => {
    for (const [m, u] of routes) expectUnauthorized(await api(m, u, m === 'POST' ? { first_name: 'X' } : undefined, 'ksr_doesnotexist0000000000000000'));
    expectUnauthorized(await api('GET', '/me', undefined, 'abc'));
    const basic = await t.app.inject({ method: 'GET', url: '/api/v1/me', headers: { authorization: `Basic ${t.a.adminToken}` } });
    expectUnauthorized({ status: basic.statusCode, body: basic.json(), headers: basic.headers });
  });

  it('a revoked token stops working at once; other tokens keep working', async () => {
    const tok = await createToken(t.db, t.a.workspace.id, t.a.member.id, 'to revoke');
    expect((await api('GET', '/me', undefined, tok.token)).status).toBe(200);
    expect(await revokeToken(t.db, t.a.workspace.id, tok.id)).toBe(1);
    const before = (await api('GET', '/records/contacts?limit=1')).body.total;
    expectUnauthorized(await api('GET', '/me', undefined, tok.token));
    expectUnauthorized(await api('POST', '/records/contacts', { first_name: 'After revoke' }, tok.token));
    expect((await api('GET', '/records/contacts?limit=1')).body.total).toBe(before);
    expect((await api('GET', '/me', undefined, t.a.memberToken)).status).toBe(200);
    // Revoking by prefix works too; a token of another workspace cannot be revoked from here.
    const tok2 = await createToken(t.db, t.a.workspace.id, t.a.admin.id, 'by prefix');
    expect(await revokeToken(t.db, t.b.workspace.id, tok2.prefix)).toBe(0);
    expect((await api('GET', '/me', undefined, tok2.token)).status).toBe(200);
    expect(await revokeToken(t.db, t.a.workspace.id, tok2.prefix)).toBe(1);
    expectUnauthorized(await api('GET', '/me', undefined, tok2.token));
  });
});

describe('PAYLOAD_TOO_LARGE (413)', () => {
  it('a body over the size limit, in the same shape', async () => {
    expectError(await api('POST', '/records/contacts', { first_name: 'x'.repeat(6 * 1024 * 1024) }), 413, 'PAYLOAD_TOO_LARGE');
  });
});

describe('unknown routes (404) in the same shape', () => {
  it('inside and outside the API, with or without a token', async () => {
    expectError(await api('GET', '/nothing-here'), 404, 'NOT_FOUND', /nothing-here/);
    expectError(await call(t.app, null, 'GET', '/nothing-here'), 404, 'NOT_FOUND');
    expectError(await api('POST', '/records/contacts/some-id/unknown'), 404, 'NOT_FOUND');
  });
});
