import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/http/app.js';
import { call, freshDb, makeWorkspace, silent, type TestApp, testApp } from './helpers.js';

/**
 * The OpenAPI document against the server: it is a valid OpenAPI 3.1 document, it names every route
 * Fastify has (and nothing else), and real answers, successes and errors, match the schema it
 * declares for their route and status.
 */

type Json = Record<string, any>;
let t: TestApp;
let doc: Json;
const ajv = new Ajv2020({ strict: false, allErrors: true });
(addFormats as unknown as (a: Ajv2020) => void)(ajv);
const validators = new Map<string, ReturnType<typeof ajv.compile>>();
/** 'GET /api/v1/records/{object}' -> the statuses whose answers were checked against the document. */
const checked = new Map<string, Set<number>>();
let lastRoute: string | undefined;

const docPath = (fastifyUrl: string) => fastifyUrl.replace(/:(\w+)/g, '{$1}');

function watch(app: FastifyInstance) {
  app.addHook('onResponse', async (req) => {
    lastRoute = req.routeOptions.url ? `${req.method} ${docPath(req.routeOptions.url)}` : undefined;
  });
}

/** Sends a request (inject) and checks its answer against the document (conforms). */
async function hit(token: string | null, method: string, url: string, body?: unknown, opts: { headers?: Record<string, string>; route?: string; app?: FastifyInstance; payload?: string } = {}) {
  lastRoute = undefined;
  const res = await (opts.app ?? t.app).inject({
    method: method as 'GET',
    url,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...opts.headers,
    },
    ...(opts.payload !== undefined ? { payload: opts.payload } : body !== undefined ? { payload: JSON.stringify(body) } : {}),
  });
  const route = opts.route ?? lastRoute;
  const where = `${method} ${url} -> ${res.statusCode} ${res.body.slice(0, 400)}`;
  expect(route, `route of ${where}`).toBeDefined();
  const value = conforms(route!, res.statusCode, String(res.headers['content-type']), res.body, where);
  return { status: res.statusCode, body: value as Json | undefined, raw: res.body };
}

/** Checks an answer against the document: its route and status are declared, and the body matches that status's schema for its content type. */
function conforms(route: string, status: number, contentType: string, raw: string, where: string): unknown {
  const [m, path] = route.split(' ') as [string, string];
  const op = doc.paths[path]?.[m.toLowerCase()];
  expect(op, `${route} is in the document`).toBeDefined();
  const response = op.responses[String(status)];
  expect(response, `${route} declares ${status}: ${where}`).toBeDefined();
  const type = contentType.split(';')[0]!;
  const schema = response.content?.[type]?.schema;
  expect(schema, `${route} ${status} declares ${type}`).toBeDefined();
  const key = `${route} ${status} ${type}`;
  let validate = validators.get(key);
  if (!validate) {
    // The document's components beside the schema, so its #/components/... references resolve.
    validate = ajv.compile({ $id: `urn:test:${validators.size}`, allOf: [schema], components: doc.components });
    validators.set(key, validate);
  }
  const value = type === 'application/json' ? JSON.parse(raw) : raw;
  expect(validate(value), `${where}\n${JSON.stringify(validate.errors, null, 1)?.slice(0, 1500)}`).toBe(true);
  if (!checked.has(route)) checked.set(route, new Set());
  checked.get(route)!.add(status);
  return type === 'application/json' ? value : undefined;
}

/** Every route Fastify has, as 'METHOD /path' with parameters blanked (printRoutes' tree, flattened). */
function fastifyRoutes(app: FastifyInstance): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    stack.length = m[1]!.length / 4;
    stack.push(m[2]!);
    for (const method of m[3]?.split(', ') ?? []) out.push(`${method} ${stack.join('').replace(/:[^/]+/g, '{}')}`);
  }
  return out;
}

const operations = () =>
  Object.entries(doc.paths as Json).flatMap(([path, ops]) => Object.entries(ops as Json).map(([method, op]) => ({ key: `${method.toUpperCase()} ${path}`, path, method, op: op as Json })));

beforeAll(async () => {
  t = await testApp();
  watch(t.app);
  doc = (await call(t.app, null, 'GET', '/api/v1/openapi.json')).body;
});
afterAll(() => t?.close());

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document, served without a token', async () => {
    expect(doc.openapi).toBe('3.1.0');
    const v = new Validator();
    const r = await v.validate(doc);
    expect(r.errors ?? [], JSON.stringify(r.errors, null, 1)?.slice(0, 2000)).toEqual([]);
    expect(r.valid).toBe(true);
    expect(v.version).toBe('3.1');
  });

  it('names every route Fastify has (REST and compatibility), MCP and the docs page aside, and each has a summary, a success schema and its errors', async () => {
    // With MCP mounted, so its routes are there to be left out.
    const db = await freshDb();
    const full = await buildApp({ db, log: silent, mcp: true });
    await full.ready();
    const notApi = /^(HEAD|OPTIONS) |^\w+ \/(docs|mcp|sse|messages)\b/;
    const routes = fastifyRoutes(full).filter((r) => !notApi.test(r));
    expect(routes.some((r) => r.startsWith('POST /mcp'))).toBe(false);
    expect(fastifyRoutes(full).some((r) => r.startsWith('POST /mcp'))).toBe(true);
    const documented = operations().map((o) => o.key.replace(/\{[^}]+\}/g, '{}'));
    expect([...new Set(routes)].sort()).toEqual([...new Set(documented)].sort());
    await full.close();
    await db.close();
    for (const { key, op } of operations()) {
      expect(op.summary, key).toBeTruthy();
      expect(
        doc.tags.map((t: Json) => t.name),
        key,
      ).toContain(op.tags[0]);
      const ok = Object.keys(op.responses).filter((s) => s.startsWith('2'));
      expect(ok.length, key).toBe(1);
      expect(op.responses[ok[0]!].content, key).toBeDefined();
      expect(Object.keys(op.responses), key).toContain('500');
      if (op.security?.length !== 0) expect(Object.keys(op.responses), key).toContain('401');
    }
  });

  it('describes auth as security schemes: Bearer for /api/v1, X-Api-Key (or Bearer) for the Bitrix24 route, none for the description itself', () => {
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: 'apiKey', in: 'header', name: 'X-Api-Key' });
    expect(doc.security).toEqual([{ bearerAuth: [] }]);
    expect(doc.paths['/v1/tasks/aggregate'].post.security).toEqual([{ apiKey: [] }, { bearerAuth: [] }]);
    expect(doc.paths['/api/v1/openapi.json'].get.security).toEqual([]);
    expect(doc.paths['/health'].get.security).toEqual([]);
  });

  it('takes request schemas from the zod schemas the handlers parse with', () => {
    const list = doc.paths['/api/v1/records/{object}'].get.parameters.map((p: Json) => p.name);
    expect(list).toEqual(expect.arrayContaining(['object', 'limit', 'cursor', 'sort_by', 'sort_dir', 'filters', 'include_total']));
    const createObject = doc.paths['/api/v1/schema'].post.requestBody.content['application/json'].schema;
    expect(createObject.required).toEqual(['name', 'fields']);
    expect(createObject.additionalProperties).toBe(false);
    const dup = doc.paths['/api/v1/duplicates'].post.requestBody.content['application/json'].schema;
    expect(JSON.stringify(dup)).toMatch(/"detect".*"merge".*"unmerge"/);
  });

  it('/docs is a reference page whose assets come from this server (no CDN)', async () => {
    const page = await t.app.inject({ method: 'GET', url: '/docs/' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.body).not.toMatch(/https?:\/\/(?!localhost)/);
    expect(page.headers['content-security-policy']).toMatch(/^default-src 'self';/);
    expect(page.headers['content-security-policy']).not.toMatch(/https:|upgrade-insecure-requests/);
    const init = await t.app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' });
    expect(init.statusCode).toBe(200);
    expect(init.body).toContain("resolveUrl('./json')");
    expect((await t.app.inject({ method: 'GET', url: '/docs/json' })).json()).toEqual(doc);
    const js = await t.app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' });
    expect(js.statusCode).toBe(200);
    expect(js.body.length).toBeGreaterThan(100_000);
  });
});

describe('real answers match the document', () => {
  const ids: Json = {};

  it('every route, on its happy path', async () => {
    const a = t.a.adminToken;
    ids.company = (await hit(a, 'POST', '/api/v1/records/companies', { name: 'Acme', domain: 'acme.com' })).body!.data.id;
    ids.contact = (await hit(a, 'POST', '/api/v1/records/contacts', { first_name: 'Ada', last_name: 'L', email: 'ada@acme.com', company: ids.company })).body!.data.id;
    ids.twin = (await hit(a, 'POST', '/api/v1/records/contacts', { first_name: 'Ada', last_name: 'L', email: 'ada2@acme.com' })).body!.data.id;
    ids.deal = (await hit(a, 'POST', '/api/v1/records/opportunities', { name: 'Big', amount: 100, contact: ids.contact })).body!.data.id;
    await hit(a, 'GET', '/api/v1/records/contacts?limit=1');
    await hit(a, 'GET', '/api/v1/records/contacts?fields=first_name&include_total=false');
    await hit(a, 'POST', '/api/v1/records/contacts/search', { operator: 'and', conditions: [{ field: 'first_name', operator: 'eq', value: 'Ada' }] });
    await hit(a, 'GET', `/api/v1/records/contacts/${ids.contact}`);
    await hit(a, 'GET', `/api/v1/records/contacts/${ids.contact}?fields=email`);
    await hit(a, 'PUT', `/api/v1/records/contacts/${ids.contact}`, { job_title: 'CTO' });
    await hit(a, 'PATCH', `/api/v1/records/contacts/${ids.contact}`, { city: 'Paris' });
    await hit(a, 'PUT', `/api/v1/records/contacts/${ids.contact}/associations/companies/${ids.company}`);
    await hit(a, 'DELETE', `/api/v1/records/contacts/${ids.contact}/associations/companies/${ids.company}`);
    const batch = (await hit(a, 'POST', '/api/v1/records/contacts/batch/create', { records: [{ first_name: 'B' }, { first_name: 'C' }] })).body!.data;
    await hit(a, 'POST', '/api/v1/records/contacts/batch/update', { records: [{ id: batch[0].id, job_title: 'X' }] });
    await hit(a, 'POST', '/api/v1/records/contacts/batch/upsert', { key: 'email', records: [{ first_name: 'U', email: 'u@x.co' }] });
    await hit(a, 'DELETE', `/api/v1/records/contacts/${batch[1].id}`);
    await hit(a, 'DELETE', '/api/v1/records/contacts', { ids: [batch[0].id, 'nope'] });

    await hit(a, 'GET', '/api/v1/schema');
    await hit(a, 'GET', '/api/v1/schema/contacts');
    await hit(a, 'POST', '/api/v1/schema', {
      name: 'gadgets',
      fields: [
        { name: 'title', type: 'TEXT' },
        { name: 'kind', type: 'SELECT', options: ['a', 'b'] },
      ],
    });
    await hit(a, 'POST', '/api/v1/schema/gadgets/fields', { name: 'qty', type: 'INTEGER' });
    await hit(a, 'POST', '/api/v1/records/gadgets', { title: 'G1', kind: 'a', qty: 3 });

    await hit(a, 'GET', '/api/v1/me');
    await hit(a, 'GET', '/api/v1/workspace');
    await hit(a, 'PATCH', '/api/v1/workspace', { time_zone: 'Europe/Paris' });
    await hit(a, 'GET', '/api/v1/users');

    await hit(a, 'GET', '/api/v1/aggregate/opportunities?function=sum&field=amount&group_by=status');
    await hit(a, 'GET', '/api/v1/aggregate/opportunities?function=count&field=id');
    await hit(a, 'GET', '/api/v1/aggregate/opportunities?function=count&field=id&group_by=created_at&interval=month');
    await hit(a, 'POST', '/api/v1/aggregate/opportunities', { aggregate: [{ field: 'amount', function: 'sum' }], groupBy: ['status', 'contact'] });
    await hit(a, 'POST', '/api/v1/aggregate/opportunities', { aggregate: [{ field: 'amount', function: 'avg' }] });
    await hit(a, 'POST', '/api/v1/aggregate/opportunities/tree', { aggregates: { s: { uniqueValues: { property: 'status', aggregates: { a: { sum: { property: 'amount' } } } } }, n: { count: {} } } });
    await hit(a, 'POST', '/api/v1/streams/opportunities/records/aggregate', { aggregates: { n: { count: {} }, s: { uniqueValues: { property: ['a', 'b', 'status'] } } } });
    await hit(a, 'POST', '/api/v1/projects/demo/streams/opportunities/records/aggregate', { aggregates: { m: { avg: { property: ['a', 'b', 'amount'] } } }, lastUpdatedTime: { gt: 0 } });

    ids.task = (await hit(a, 'POST', '/api/v1/tasks', { title: 'T', due_at: '2030-01-01T10:00:00Z', contact: ids.contact })).body!.data.id;
    await hit(a, 'GET', '/api/v1/tasks?mode=all');
    await hit(a, 'GET', '/api/v1/tasks/stats');
    await hit(a, 'GET', `/api/v1/tasks/${ids.task}`);
    await hit(a, 'PUT', `/api/v1/tasks/${ids.task}`, { title: 'T2' });
    await hit(a, 'PUT', `/api/v1/tasks/${ids.task}/complete`, {});
    await hit(null, 'POST', '/v1/tasks/aggregate', { aggregate: [{ field: 'timeEstimate', function: 'sum' }], groupBy: 'status' }, { headers: { 'x-api-key': a } });
    await hit(a, 'DELETE', `/api/v1/tasks/${ids.task}`);

    ids.note = (await hit(a, 'POST', '/api/v1/notes', { body: 'A note', object: 'contacts', record_id: ids.contact })).body!.data.id;
    await hit(a, 'GET', '/api/v1/notes');
    await hit(a, 'GET', `/api/v1/notes/${ids.note}`);
    await hit(a, 'PUT', `/api/v1/notes/${ids.note}`, { body: 'Edited' });
    await hit(a, 'DELETE', `/api/v1/notes/${ids.note}`);
    await hit(a, 'GET', `/api/v1/activity/contacts/${ids.contact}`);
    await hit(a, 'GET', '/api/v1/changes?limit=2');

    const thread = (
      await hit(a, 'POST', '/api/v1/inbox/threads', {
        subject: 'Hi',
        contact_id: ids.contact,
        messages: [{ direction: 'inbound', from_email: 'a@b.co', to: ['me@example.com'], body: 'Hello', sent_at: '2024-01-01T10:00:00Z' }],
      })
    ).body!.data;
    await hit(a, 'GET', '/api/v1/inbox/threads');
    await hit(a, 'GET', `/api/v1/inbox/threads/${thread.id}`);
    await hit(a, 'PUT', `/api/v1/inbox/threads/${thread.id}`, { read: true });
    await hit(a, 'GET', `/api/v1/interactions/${thread.messages[0].id}`);
    await hit(a, 'GET', '/api/v1/integrations/status');

    const pipelines = (await hit(a, 'GET', '/api/v1/pipelines')).body!.data;
    await hit(a, 'POST', '/api/v1/pipelines', {
      object: 'gadgets',
      name: 'P',
      field: 'kind',
      steps: [
        { key: 'a', name: 'A' },
        { key: 'b', name: 'B', won: true },
      ],
    });
    await hit(a, 'GET', `/api/v1/pipelines/${pipelines[0].id}`);
    await hit(a, 'GET', `/api/v1/pipelines/${pipelines[0].id}/stats`);
    await hit(a, 'PUT', `/api/v1/pipelines/opportunities/${ids.deal}/move`, { step: 'qualified' });

    await hit(a, 'GET', '/api/v1/search?q=ada');
    await hit(a, 'POST', '/api/v1/import/contacts', { records: [{ first_name: 'Imp', email: 'imp@example.com' }, { first_name: 'Imp2', email: 'imp@example.com' }, { email: 'bad' }] });
    await hit(a, 'GET', '/api/v1/export/contacts?limit=2');
    await hit(a, 'GET', '/api/v1/export/contacts?format=csv&fields=first_name,email');
    await hit(a, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'update', ids: [ids.contact], values: { source: 'event' }, dry_run: true });
    await hit(a, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'update', ids: [ids.contact], values: { source: 'event' } });
    await hit(a, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'add_relation', ids: [ids.twin], relation: { object: 'companies', id: ids.company }, dry_run: true });
    await hit(a, 'POST', '/api/v1/duplicates', { action: 'detect', object: 'contacts' });
    await hit(a, 'POST', '/api/v1/duplicates', { action: 'merge', object: 'contacts', primary_id: ids.contact, duplicate_ids: [ids.twin], dry_run: true });
    const merged = (await hit(a, 'POST', '/api/v1/duplicates', { action: 'merge', object: 'contacts', primary_id: ids.contact, duplicate_ids: [ids.twin] })).body!.data;
    await hit(a, 'POST', '/api/v1/duplicates', { action: 'unmerge', merge_id: merged.merge_id });

    await hit(null, 'GET', '/health');
    await hit(null, 'GET', '/api/v1/openapi.json');

    const missing = operations()
      .filter(({ key }) => ![...(checked.get(key) ?? [])].some((s) => s >= 200 && s < 300))
      .map((o) => o.key);
    expect(missing, 'routes never answered 2xx in this test').toEqual([]);
  });

  it('401 on every route that takes a token, in its own error shape', async () => {
    for (const { key, path, method, op } of operations()) {
      if (op.security?.length === 0) continue;
      const url = path
        .replace('{object}', 'contacts')
        .replace('{streamId}', 'contacts')
        .replace(/\{\w+\}/g, 'x');
      const r = await hit(null, method.toUpperCase(), url);
      expect(r.status, key).toBe(401);
    }
  });

  it('representative errors: 400, 403, 404, 409, 413, 414, 415, 422', async () => {
    const a = t.a.adminToken;
    const expectStatus = async (status: number, ...args: Parameters<typeof hit>) => expect((await hit(...args)).status, `${args[1]} ${args[2]}`).toBe(status);
    await expectStatus(400, a, 'GET', '/api/v1/records/contacts?limt=5');
    await expectStatus(400, a, 'POST', '/api/v1/records/contacts/search', { operator: 'xor' });
    await expectStatus(400, a, 'POST', '/api/v1/aggregate/opportunities', { groupBy: 5 });
    await expectStatus(400, a, 'POST', '/api/v1/schema', { name: 'Bad Name', fields: [] });
    await expectStatus(400, a, 'POST', '/api/v1/records/contacts', { first_name: 'X', email: 'not an email' });
    await expectStatus(400, a, 'GET', '/api/v1/tasks?mode=sometimes');
    await expectStatus(400, a, 'POST', '/api/v1/duplicates', { action: 'guess' });
    await expectStatus(400, null, 'POST', '/v1/tasks/aggregate', { aggregate: [{ field: 'nope', function: 'sum' }] }, { headers: { 'x-api-key': a } });
    await expectStatus(400, a, 'POST', '/api/v1/streams/contacts/records/aggregate', { aggregates: 5 });
    await expectStatus(403, t.a.memberToken, 'POST', '/api/v1/schema', { name: 'things', fields: [{ name: 'a', type: 'TEXT' }] });
    await expectStatus(403, t.a.memberToken, 'PATCH', '/api/v1/workspace', { time_zone: 'UTC' });
    await expectStatus(400, a, 'GET', '/api/v1/records/nope');
    await expectStatus(404, a, 'GET', '/api/v1/records/contacts/01a22bc1-0000-7000-8000-000000000000');
    await expectStatus(404, a, 'GET', '/api/v1/notes/missing');
    await expectStatus(404, a, 'POST', '/api/v1/streams/nope/records/aggregate', { aggregates: { n: { count: {} } } });
    await expectStatus(409, a, 'POST', '/api/v1/records/contacts', { first_name: 'Ada', email: 'ada@acme.com' });
    await expectStatus(409, a, 'POST', '/api/v1/schema', { name: 'gadgets', fields: [{ name: 'title', type: 'TEXT' }] });
    await expectStatus(413, a, 'POST', '/api/v1/records/contacts', undefined, {
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ first_name: 'x'.repeat(6 * 1024 * 1024) }),
    });
    await expectStatus(414, a, 'GET', `/api/v1/records/contacts/${'x'.repeat(101)}`, undefined, { route: 'GET /api/v1/records/{object}/{id}' });
    await expectStatus(415, a, 'POST', '/api/v1/records/contacts', undefined, { headers: { 'content-type': 'text/plain' }, payload: 'first_name=Ada' });
    await expectStatus(422, a, 'GET', '/api/v1/export/contacts?limit=10001');
  });

  it('429 once the failed-authentication throttle trips; 503 while the server closes', async () => {
    const db = await freshDb();
    const app = await buildApp({ db, log: silent, authFailuresPerMinute: 1 });
    watch(app);
    // close() holds in its preClose hooks: a request then is refused (below).
    let inWindow!: () => void;
    const reached = new Promise<void>((r) => (inWindow = r));
    app.addHook('preClose', async () => {
      inWindow();
      await new Promise((r) => setTimeout(r, 200));
    });
    const ws = await makeWorkspace(db, 'gamma');
    expect((await hit('ksr_wrong', 'GET', '/api/v1/me', undefined, { app })).status).toBe(401);
    expect((await hit('ksr_wrong', 'GET', '/api/v1/me', undefined, { app })).status).toBe(429);
    expect((await hit(null, 'POST', '/v1/tasks/aggregate', {}, { app, headers: { 'x-api-key': ws.adminToken } })).status).toBe(429);
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const closing = app.close();
    await reached;
    const r = await fetch(`${base}/api/v1/me`, { headers: { authorization: `Bearer ${ws.adminToken}` } });
    expect(r.status).toBe(503);
    conforms('GET /api/v1/me', r.status, r.headers.get('content-type')!, await r.text(), 'GET /api/v1/me while closing');
    await closing;
    await db.close();
  });

  it('covered: every error status the brief names, on REST and compatibility routes', () => {
    const statuses = new Set([...checked.values()].flatMap((s) => [...s]));
    for (const s of [200, 201, 400, 401, 403, 404, 409, 413, 414, 415, 422, 429, 503]) expect(statuses.has(s), String(s)).toBe(true);
    const total = [...checked.values()].reduce((n, s) => n + s.size, 0);
    expect(total).toBeGreaterThan(operations().length * 2);
  });
});
