import http from 'node:http';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';
import { type McpHttpOptions, mcpCallsInFlight } from '../src/mcp/http.js';
import { createThread } from '../src/services/inbox.js';
import { revokeToken } from '../src/services/users.js';
import { TOOLS } from '../tools/index.js';
import { freshDb, makeWorkspace, silent, type TestWorkspace } from './helpers.js';
import { callOk, exerciseAllTools } from './mcp-helpers.js';

let db: Db;
let w: TestWorkspace;
const apps: FastifyInstance[] = [];

async function serve(mcp: McpHttpOptions | true = true): Promise<string> {
  const app = await buildApp({ db, log: silent, mcp });
  apps.push(app);
  return app.listen({ port: 0, host: '127.0.0.1' });
}

const auth = (token: string) => ({ Authorization: `Bearer ${token}` });

async function streamable(base: string, token: string) {
  const client = new Client({ name: 'test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers: auth(token) } }));
  return client;
}

async function sse(base: string, token: string) {
  const client = new Client({ name: 'test', version: '1.0.0' });
  const transport = new SSEClientTransport(new URL(`${base}/sse`), {
    requestInit: { headers: auth(token) },
    eventSourceInit: { fetch: (url, init) => fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), ...auth(token) } }) },
  });
  await client.connect(transport);
  return client;
}

const initialize = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};
/** node:http, because fetch does not let a caller set Host. */
function rawPost(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(initialize));
  });
}

const post = (url: string, headers: Record<string, string>, body: unknown = initialize) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers }, body: JSON.stringify(body) });

let base: string;
beforeAll(async () => {
  db = await freshDb({ file: true });
  w = await makeWorkspace(db, 'alpha');
  // exerciseAllTools reads an email thread; threads arrive by the API, imports or the demo data.
  await createThread(w.ctx, { subject: 'Hello', messages: [{ direction: 'inbound', from_email: 'x@example.com', to: ['sales@alpha.test'], body: 'Hi there' }] });
  base = await serve();
});
afterAll(async () => {
  for (const app of apps) await app.close();
  await db.close();
});

describe('Streamable HTTP at /mcp', () => {
  it('lists and calls every tool', async () => {
    const client = await streamable(base, w.adminToken);
    const called = await exerciseAllTools(client);
    expect([...called].sort()).toEqual(TOOLS.map((t) => t.name).sort());
    await client.close();
  });

  it('answers 401 with WWW-Authenticate without a valid token', async () => {
    const none = await post(`${base}/mcp`, {});
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer realm="crm-mcp"/);
    expect(((await none.json()) as any).error.message).toMatch(/Missing API token/);
    const bad = await post(`${base}/mcp`, auth('ksr_not-a-token'));
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toContain('error="invalid_token"');
  });

  it('is stateless: GET and DELETE answer 405, no session id is issued', async () => {
    for (const method of ['GET', 'DELETE']) {
      const r = await fetch(`${base}/mcp`, { method, headers: { ...auth(w.adminToken), accept: 'text/event-stream' } });
      expect(r.status).toBe(405);
      expect(r.headers.get('allow')).toBe('POST');
    }
    const r = await post(`${base}/mcp`, auth(w.adminToken));
    expect(r.status).toBe(200);
    expect(r.headers.get('mcp-session-id')).toBeNull();
    await r.text();
  });

  it('works across server processes behind one load balancer', async () => {
    // Two independent app instances on one database; every request goes to the other one.
    const other = await serve();
    let n = 0;
    const roundRobin: typeof fetch = (url, init) => {
      const u = new URL(String(url));
      const target = new URL(n++ % 2 ? other : base);
      u.host = target.host;
      return fetch(u, init);
    };
    const client = new Client({ name: 'lb', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers: auth(w.adminToken) }, fetch: roundRobin }));
    const { tools } = await client.listTools();
    const made = await callOk(client, tools, 'crm_create_record', { object: 'contacts', values: { first_name: 'Balanced' } });
    const got = await callOk(client, tools, 'crm_get_record', { object: 'contacts', id: made.record.id });
    expect(got.record.first_name).toBe('Balanced');
    expect(n).toBeGreaterThanOrEqual(4);
    await client.close();
  });

  it('rejects a foreign Host or Origin (DNS rebinding), accepts localhost ones', async () => {
    const host = await rawPost(`${base}/mcp`, { ...auth(w.adminToken), host: 'evil.example.com' });
    expect(host.status).toBe(403);
    expect(JSON.parse(host.body).error.message).toMatch(/Invalid Host/);
    expect((await rawPost(`${base}/mcp`, { ...auth(w.adminToken), host: 'localhost' })).status).toBe(200);
    const origin = await post(`${base}/mcp`, { ...auth(w.adminToken), origin: 'http://evil.example.com' });
    expect(origin.status).toBe(403);
    const ok = await post(`${base}/mcp`, { ...auth(w.adminToken), origin: 'http://localhost:5173' });
    expect(ok.status).toBe(200);
    await ok.text();
    // A deployment names its host; '*' switches the check off.
    const named = await serve({ allowedHosts: ['crm.example.com'] });
    expect((await rawPost(`${named}/mcp`, { ...auth(w.adminToken), host: 'crm.example.com' })).status).toBe(200);
    expect((await rawPost(`${named}/mcp`, { ...auth(w.adminToken), host: 'evil.example.com' })).status).toBe(403);
    const any = await serve({ allowedHosts: '*' });
    expect((await rawPost(`${any}/mcp`, { ...auth(w.adminToken), host: 'evil.example.com' })).status).toBe(200);
  });

  it('serves the read-only mode', async () => {
    const ro = await serve({ readOnly: true });
    const client = await streamable(ro, w.adminToken);
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(
      TOOLS.filter((t) => t.kind === 'read')
        .map((t) => t.name)
        .sort(),
    );
    await client.close();
  });

  it('acts as the token user: a member is a member', async () => {
    const client = await streamable(base, w.memberToken);
    const { tools } = await client.listTools();
    expect((await callOk(client, tools, 'crm_whoami', {})).user.role).toBe('member');
    await client.close();
  });

  it('streams progress to the client, and a cancelled bulk update changes no row', async () => {
    const client = await streamable(base, w.adminToken);
    const { tools } = await client.listTools();
    const batch = Array.from({ length: 100 }, (_, i) => ({ first_name: 'Http', last_name: `Bulk ${i}` }));
    // Enough records that the update is still running when the cancellation arrives (it is set-based: a few hundred take milliseconds).
    for (let i = 0; i < 30; i++) await callOk(client, tools, 'crm_batch_write', { object: 'contacts', mode: 'create', records: batch });
    const ids = (
      await callOk(client, tools, 'crm_search', { object: 'contacts', filter: { operator: 'and', conditions: [{ field: 'first_name', operator: 'eq', value: 'Http' }] }, limit: 100, fields: ['id'] })
    ).total;
    expect(ids).toBe(3000);
    const filter = { operator: 'and', conditions: [{ field: 'first_name', operator: 'eq', value: 'Http' }] };

    const seen: number[] = [];
    const dry = await client.callTool({ name: 'crm_bulk_update', arguments: { object: 'contacts', action: 'update', filter, values: { job_title: 'X' }, dry_run: true } }, undefined, {
      onprogress: (p) => void seen.push(p.progress),
    });
    expect(dry.isError).toBeFalsy();
    expect(seen.length).toBeGreaterThan(0);

    const controller = new AbortController();
    const pending = client.callTool({ name: 'crm_bulk_update', arguments: { object: 'contacts', action: 'update', filter, values: { job_title: 'Cancelled over HTTP' } } }, undefined, {
      signal: controller.signal,
      onprogress: () => controller.abort('stop'),
    });
    await expect(pending).rejects.toThrow();
    // A later read waits for the one connection the cancelled transaction held.
    await new Promise((r) => setTimeout(r, 200));
    const changed = await callOk(client, tools, 'crm_search', {
      object: 'contacts',
      filter: { operator: 'and', conditions: [{ field: 'job_title', operator: 'eq', value: 'Cancelled over HTTP' }] },
      limit: 1,
    });
    expect(changed.total).toBe(0);
    // The cancelled call's POST ended: nothing of it is left in this process (once the server has
    // seen the connection close).
    await expect.poll(mcpCallsInFlight, { timeout: 10_000, interval: 20 }).toBe(0);
    await client.close();
  });

  it('two clients sharing a token: one cancelling does not stop the other', async () => {
    const [a, b] = [await streamable(base, w.adminToken), await streamable(base, w.adminToken)];
    const filter = { operator: 'and', conditions: [{ field: 'first_name', operator: 'eq', value: 'Http' }] };
    const controller = new AbortController();
    // Both clients number their first call alike: the shared key is ambiguous, so A's cancellation is not delivered to B.
    const pa = a.callTool({ name: 'crm_bulk_update', arguments: { object: 'contacts', action: 'update', filter, values: { job_title: 'A' }, dry_run: true } }, undefined, {
      signal: controller.signal,
      onprogress: () => controller.abort('stop'),
    });
    const pb = b.callTool({ name: 'crm_bulk_update', arguments: { object: 'contacts', action: 'update', filter, values: { job_title: 'B' }, dry_run: true } });
    await expect(pa).rejects.toThrow();
    const rb = await pb;
    expect(rb.isError).toBeFalsy();
    expect((rb.structuredContent as { matched: number }).matched).toBe(3000);
    await expect.poll(mcpCallsInFlight, { timeout: 10_000, interval: 20 }).toBe(0);
    await a.close();
    await b.close();
  });

  it('a schema change made over HTTP is announced on the same call: tools/list_changed', async () => {
    const client = await streamable(base, w.adminToken);
    let changed = 0;
    client.setNotificationHandler(ToolListChangedNotificationSchema, async () => void changed++);
    const { tools } = await client.listTools();
    await callOk(client, tools, 'crm_create_object', { name: 'http_projects', fields: [{ name: 'title', type: 'TEXT' }] });
    expect(changed).toBe(1);
    const search = (await client.listTools()).tools.find((x) => x.name === 'crm_search')!;
    expect((search.inputSchema.properties!.object as { enum: string[] }).enum).toContain('http_projects');
    await client.close();
  });
});

describe('legacy HTTP+SSE at /sse and /messages', () => {
  it('lists and calls every tool', async () => {
    const client = await sse(base, w.adminToken);
    const called = await exerciseAllTools(client);
    expect(called.size).toBe(TOOLS.length);
    await client.close();
  });

  it('needs a token, keeps sessions to their user, and honours revocation', async () => {
    expect((await fetch(`${base}/sse`)).status).toBe(401);
    expect((await post(`${base}/messages?sessionId=nope`, auth(w.adminToken))).status).toBe(404);

    // Catch the session id from the endpoint event.
    const res = await fetch(`${base}/sse`, { headers: auth(w.adminToken) });
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('sessionId=')) text += new TextDecoder().decode((await reader.read()).value);
    const endpoint = /data: (\S+)/.exec(text)![1]!;
    const other = await post(`${base}${endpoint}`, auth(w.memberToken));
    expect(other.status).toBe(403);
    await reader.cancel();

    const temp = await makeWorkspace(db, 'gamma');
    const client = await sse(base, temp.adminToken);
    const { tools } = await client.listTools();
    await callOk(client, tools, 'crm_whoami', {});
    expect(await revokeToken(db, temp.workspace.id, temp.adminToken.slice(0, 12))).toBe(1);
    // The next message of the open session is refused.
    await expect(client.callTool({ name: 'crm_whoami', arguments: {} })).rejects.toThrow(/401.*revoked/);
    await client.close();
  });
});
