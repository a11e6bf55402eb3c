import net from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { type AppDeps, buildApp } from '../src/http/app.js';
import { AuthThrottle } from '../src/http/auth-throttle.js';
import { fromDatabaseError } from '../src/services/errors.js';
import { freshDb, makeWorkspace, silent, type TestWorkspace } from './helpers.js';

/**
 * The HTTP server as a client sees it through a real port: every status Fastify or Node can produce
 * in the contract's shape, timeouts on slow clients, security headers, CORS, failed-auth throttling,
 * the access log, and the SSE session caps.
 */

let db: Db;
let w: TestWorkspace;
const apps: FastifyInstance[] = [];

const ORIGIN = 'https://app.example';
const LIMITS = { requestTimeoutMs: 1000, headersTimeoutMs: 800, keepAliveTimeoutMs: 500, connectionTimeoutMs: 0 };

async function serve(extra: Partial<AppDeps> = {}): Promise<{ app: FastifyInstance; base: string; port: number }> {
  const app = await buildApp({ db, log: silent, mcp: true, corsOrigin: [ORIGIN], timeouts: LIMITS, ...extra });
  apps.push(app);
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, base, port: Number(new URL(base).port) };
}

/** Raw bytes over a socket: what a slow or broken client sends. Resolves when the server ends the connection. */
function rawExchange(port: number, chunks: { data: string; afterMs?: number }[]): Promise<{ text: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    const timers: NodeJS.Timeout[] = [];
    socket.on('data', (d) => (text += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      for (const t of timers) clearTimeout(t);
      resolve({ text, ms: Date.now() - started });
    });
    socket.on('connect', () => {
      let at = 0;
      for (const c of chunks) {
        at += c.afterMs ?? 0;
        timers.push(setTimeout(() => socket.writable && socket.write(c.data), at));
      }
    });
  });
}

function parseRaw(text: string): { status: number; headers: Record<string, string>; body: any } {
  const [head, ...rest] = text.split('\r\n\r\n');
  const lines = head!.split('\r\n');
  const status = Number(lines[0]!.split(' ')[1]);
  const headers = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  let body: any = null;
  try {
    body = JSON.parse(rest.join('\r\n\r\n'));
  } catch {
    body = rest.join('\r\n\r\n');
  }
  return { status, headers, body };
}

function expectShape(body: any, code: string) {
  expect(body).toMatchObject({ error: true, code });
  expect(typeof body.message).toBe('string');
  expect(body.message.length).toBeGreaterThan(10);
  expect(body).not.toHaveProperty('statusCode');
}

let main: { app: FastifyInstance; base: string; port: number };
beforeAll(async () => {
  db = await freshDb({ file: true });
  w = await makeWorkspace(db, 'alpha');
  main = await serve();
});
afterAll(async () => {
  for (const app of apps) await app.close();
  await db.close();
});

const auth = () => ({ authorization: `Bearer ${w.adminToken}` });

describe('every status in the contract shape, through a real port', () => {
  const cases: { name: string; status: number; code: string; send: () => Promise<{ status: number; body: any; headers: Record<string, string> }> }[] = [
    {
      name: '404 unknown route',
      status: 404,
      code: 'NOT_FOUND',
      send: async () => {
        const r = await fetch(`${main.base}/nope`);
        return { status: r.status, body: await r.json(), headers: Object.fromEntries(r.headers) };
      },
    },
    {
      name: '414 an id over 100 characters',
      status: 414,
      code: 'URI_TOO_LONG',
      send: async () => {
        const r = await fetch(`${main.base}/api/v1/records/contacts/${'a'.repeat(101)}`, { headers: auth() });
        return { status: r.status, body: await r.json(), headers: Object.fromEntries(r.headers) };
      },
    },
    {
      name: '400 a malformed percent-encoding in the path',
      status: 400,
      code: 'VALIDATION_ERROR',
      send: async () => {
        const r = await fetch(`${main.base}/api/v1/records/contacts/%E0%A4%A`, { headers: auth() });
        return { status: r.status, body: await r.json(), headers: Object.fromEntries(r.headers) };
      },
    },
    {
      name: '415 a body that is not JSON',
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
      send: async () => {
        const r = await fetch(`${main.base}/api/v1/records/contacts`, { method: 'POST', headers: { ...auth(), 'content-type': 'text/plain' }, body: 'first_name=A' });
        return { status: r.status, body: await r.json(), headers: Object.fromEntries(r.headers) };
      },
    },
    {
      name: '413 a body over the limit',
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
      send: async () => {
        const big = `{"first_name":"${'x'.repeat(5 * 1024 * 1024 + 10)}"}`;
        const r = await rawExchange(main.port, [
          {
            data: `POST /api/v1/records/contacts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${w.adminToken}\r\nContent-Type: application/json\r\nContent-Length: ${big.length}\r\nConnection: close\r\n\r\n`,
          },
        ]);
        return parseRaw(r.text);
      },
    },
    {
      name: '431 headers over the limit (answered by Node before Fastify)',
      status: 431,
      code: 'HEADERS_TOO_LARGE',
      send: async () => {
        const r = await rawExchange(main.port, [{ data: `GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n` }]);
        return parseRaw(r.text);
      },
    },
    {
      name: '417 an expectation other than 100-continue (answered by Node before Fastify)',
      status: 417,
      code: 'EXPECTATION_FAILED',
      send: async () =>
        parseRaw(
          (
            await rawExchange(main.port, [
              {
                data: `POST /api/v1/records/contacts HTTP/1.1\r\nHost: localhost\r\n${`Authorization: Bearer ${w.adminToken}`}\r\nContent-Type: application/json\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}`,
              },
            ])
          ).text,
        ),
    },
    {
      name: '400 bytes that are not HTTP (answered by Node before Fastify)',
      status: 400,
      code: 'VALIDATION_ERROR',
      send: async () => parseRaw((await rawExchange(main.port, [{ data: 'GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n' }])).text),
    },
    {
      name: '408 a body sent one byte at a time (answered by Node before Fastify)',
      status: 408,
      code: 'REQUEST_TIMEOUT',
      send: async () => {
        const head = `POST /api/v1/records/contacts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${w.adminToken}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`;
        const r = await rawExchange(main.port, [{ data: head }, ...Array.from({ length: 30 }, () => ({ data: ' ', afterMs: 200 }))]);
        // Cut off near the 1 s request limit, not after the 6 s the client would take.
        expect(r.ms).toBeLessThan(4000);
        return parseRaw(r.text);
      },
    },
  ];
  for (const c of cases)
    it(c.name, async () => {
      const r = await c.send();
      expect(r.status).toBe(c.status);
      expectShape(r.body, c.code);
      expect(r.headers['content-type']).toMatch(/application\/json/);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
    });

  it('a request whose headers never finish is cut off near the header timeout', async () => {
    const r = await rawExchange(main.port, [{ data: 'GET /health HTTP/1.1\r\nHost: localhost\r\n' }, ...Array.from({ length: 30 }, () => ({ data: 'X-A: b\r\n', afterMs: 200 }))]);
    expect(r.ms).toBeLessThan(4000);
    const p = parseRaw(r.text);
    expect(p.status).toBe(408);
    expectShape(p.body, 'REQUEST_TIMEOUT');
  });

  it('an idle keep-alive connection is closed after the keep-alive timeout', async () => {
    const r = await rawExchange(main.port, [{ data: 'GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n' }]);
    expect(r.text).toMatch(/^HTTP\/1.1 200/);
    expect(r.ms).toBeLessThan(3000);
  });

  it('503 while the server closes, with Retry-After', async () => {
    const app = await buildApp({ db, log: silent, mcp: true, timeouts: LIMITS });
    // While close() runs its preClose hooks (closing SSE streams), the port still accepts: hold that window open.
    let inWindow!: () => void;
    const reached = new Promise<void>((r) => (inWindow = r));
    app.addHook('preClose', async () => {
      inWindow();
      await new Promise((r) => setTimeout(r, 300));
    });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const closing = app.close();
    await reached;
    const r = await fetch(`${base}/health`);
    await closing;
    expect(r.status).toBe(503);
    expectShape(await r.json(), 'SERVICE_UNAVAILABLE');
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(r.headers.get('connection')).toBe('close');
  });

  it('close() waits for an MCP call in flight, then does not wait for its kept-alive connection', async () => {
    const app = await buildApp({ db, log: silent, mcp: true, timeouts: { ...LIMITS, keepAliveTimeoutMs: 20_000 } });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const port = Number(new URL(base).port);
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    const head = `POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${w.adminToken}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${body.length}\r\n\r\n`;
    // Headers and half the body now; the rest once close() has started.
    const exchange = rawExchange(port, [{ data: head + body.slice(0, 10) }, { data: body.slice(10), afterMs: 300 }]);
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    await app.close();
    const r = await exchange;
    expect(r.text).toMatch(/^HTTP\/1.1 200/);
    expect(r.text).toContain('crm_search');
    // Not the 20 s keep-alive timeout.
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe('security headers and CORS', () => {
  it('nosniff and no-store on answers and errors, REST and MCP', async () => {
    for (const [url, init] of [
      [`${main.base}/api/v1/me`, { headers: auth() }],
      [`${main.base}/api/v1/me`, {}],
      [`${main.base}/health`, {}],
      [`${main.base}/api/v1/records/nope`, { headers: auth() }],
      [
        `${main.base}/mcp`,
        { method: 'POST', headers: { ...auth(), 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }) },
      ],
    ] as const) {
      const r = await fetch(url, init as RequestInit);
      expect(r.headers.get('x-content-type-options'), url).toBe('nosniff');
      expect(r.headers.get('cache-control'), url).toMatch(/no-store/);
      expect(r.headers.get('x-frame-options'), url).toBe('DENY');
      await r.arrayBuffer();
    }
  });

  it('the preflight for PATCH (and PUT, DELETE) from an allowed origin passes, with the headers the API uses', async () => {
    for (const method of ['PATCH', 'PUT', 'DELETE']) {
      const r = await fetch(`${main.base}/api/v1/records/contacts/x`, {
        method: 'OPTIONS',
        headers: { origin: ORIGIN, 'access-control-request-method': method, 'access-control-request-headers': 'authorization,content-type' },
      });
      expect(r.status).toBe(204);
      expect(r.headers.get('access-control-allow-origin')).toBe(ORIGIN);
      expect(r.headers.get('access-control-allow-methods')).toContain(method);
      const allowed = r.headers.get('access-control-allow-headers')!.toLowerCase();
      for (const h of ['authorization', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']) expect(allowed).toContain(h);
    }
    const other = await fetch(`${main.base}/api/v1/me`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'PATCH' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('failed authentication is throttled per client address', () => {
  it('bad tokens from one address get 429 well before 70; a good token from another address still works', async () => {
    // Two addresses on one machine: the server listens on all interfaces; the client picks its source address.
    const { base, port } = await serve({ authFailuresPerMinute: 20 });
    let first429 = -1;
    let retryAfter: string | null = null;
    for (let i = 0; i < 70; i++) {
      const r = await fetch(`${base}/api/v1/me`, { headers: { authorization: `Bearer ksr_wrong${i}` } });
      const body = await r.json();
      if (r.status === 429) {
        if (first429 < 0) {
          first429 = i;
          retryAfter = r.headers.get('retry-after');
          expectShape(body, 'RATE_LIMITED');
        }
      } else expect(r.status).toBe(401);
    }
    expect(first429).toBeGreaterThanOrEqual(20);
    expect(first429).toBeLessThan(25);
    expect(Number(retryAfter)).toBeGreaterThan(0);
    // The throttled address is refused before its token is checked, even a good one; MCP alike.
    expect((await fetch(`${base}/api/v1/me`, { headers: auth() })).status).toBe(429);
    const mcp = await fetch(`${base}/mcp`, {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
    });
    expect(mcp.status).toBe(429);
    // Another address is unaffected.
    const other = await new Promise<number>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () =>
        s.write(`GET /api/v1/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${w.adminToken}\r\nConnection: close\r\n\r\n`),
      );
      let t = '';
      s.on('data', (d) => (t += d));
      s.on('end', () => resolve(parseRaw(t).status));
      s.on('error', reject);
    });
    expect(other).toBe(200);
  });
});

describe('failed authentication behind a trusted proxy', () => {
  it('counts per forwarded client address (CRM_TRUST_PROXY), not per proxy', async () => {
    const { base } = await serve({ authFailuresPerMinute: 3, trustProxy: true });
    const me = (token: string, client: string) => fetch(`${base}/api/v1/me`, { headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': client } });
    for (let i = 0; i < 3; i++) expect((await me('ksr_wrong', '203.0.113.7')).status).toBe(401);
    expect((await me('ksr_wrong', '203.0.113.7')).status).toBe(429);
    expect((await me(w.adminToken, '203.0.113.8')).status).toBe(200);
  });
});

describe('the failed-auth throttle cannot be sidestepped', () => {
  it('an IPv6 client is counted by its /64, and an IPv4-mapped address as the IPv4 one', async () => {
    const { app } = await serve({ authFailuresPerMinute: 3 });
    const me = (remoteAddress: string, token = 'ksr_wrong') => app.inject({ method: 'GET', url: '/api/v1/me', remoteAddress, headers: { authorization: `Bearer ${token}` } });
    // Each guess from a new address of one /64.
    for (let i = 1; i <= 3; i++) expect((await me(`2001:db8:1:2::${i.toString(16)}`)).statusCode).toBe(401);
    const blocked = await me('2001:db8:1:2:ffff::99', w.adminToken);
    expect(blocked.statusCode).toBe(429);
    expectShape(blocked.json(), 'RATE_LIMITED');
    // Another /64 is another client.
    expect((await me('2001:db8:1:3::1', w.adminToken)).statusCode).toBe(200);
    for (let i = 0; i < 3; i++) await me('198.51.100.4');
    expect((await me('::ffff:198.51.100.4', w.adminToken)).statusCode).toBe(429);
  });

  it('a blocked address stays blocked however many other addresses fail, and no failure scans the whole table', () => {
    let t = 1_000_000;
    const throttle = new AuthThrottle(3, () => t);
    for (let i = 0; i < 3; i++) throttle.fail('203.0.113.9');
    expect(throttle.blockedFor('203.0.113.9')).toBeGreaterThan(0);
    // 30,000 other addresses fail once each (three times the table of counts).
    for (let i = 0; i < 30_000; i++) throttle.fail(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    expect(throttle.blockedFor('203.0.113.9')).toBe(60);
    expect(throttle.size.counting).toBeLessThanOrEqual(10_000);
    // The block ends after its minute, and the expired entries are gone.
    t += 60_001;
    expect(throttle.blockedFor('203.0.113.9')).toBe(0);
    expect(throttle.size).toEqual({ counting: 0, blocked: 0 });
  });

  it('behind a proxy, a client cannot pick its address by sending X-Forwarded-For (true means one hop)', async () => {
    const { base } = await serve({ authFailuresPerMinute: 5, trustProxy: true });
    // What a proxy forwards: the client's own header, then the address the proxy saw.
    const me = (token: string, forwarded: string) => fetch(`${base}/api/v1/me`, { headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': forwarded } });
    let refused = 0;
    for (let i = 0; i < 20; i++) if ((await me(`ksr_bad${i}`, `10.0.${i}.1, 198.51.100.20`)).status === 429) refused++;
    expect(refused).toBeGreaterThanOrEqual(14);
    // Failures sent in a victim's name count against the sender, not the victim.
    for (let i = 0; i < 6; i++) await me('ksr_bad', '203.0.113.7, 198.51.100.21');
    expect((await me(w.adminToken, '203.0.113.7')).status).toBe(200);
    // Two proxies (a hop count, which Fastify alone would ignore): the entry the outer proxy wrote.
    const two = await serve({ authFailuresPerMinute: 2, trustProxy: 2 });
    const via2 = (token: string, forwarded: string) => fetch(`${two.base}/api/v1/me`, { headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': forwarded } });
    for (let i = 0; i < 2; i++) await via2('ksr_bad', `10.9.${i}.1, 203.0.113.30, 10.0.0.2`);
    expect((await via2(w.adminToken, '203.0.113.30, 10.0.0.2')).status).toBe(429);
    expect((await via2(w.adminToken, '203.0.113.31, 10.0.0.2')).status).toBe(200);
  });
});

describe('access log', () => {
  it('one line per request with id, method, route, status, duration, workspace and token prefix; never the token or query values', async () => {
    const lines: any[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const log = pino({ level: 'info' }, sink);
    const app = await buildApp({ db, log, mcp: true });
    apps.push(app);
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const created = await fetch(`${base}/api/v1/records/contacts`, {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json' },
      body: JSON.stringify({ first_name: 'Secretvalue', email: 'secret@example.com' }),
    });
    const id = ((await created.json()) as any).data.id;
    await (await fetch(`${base}/api/v1/records/contacts/${id}?fields=first_name&q=hiddenquery`, { headers: auth() })).arrayBuffer();
    await (await fetch(`${base}/api/v1/me`, { headers: { authorization: 'Bearer ksr_notavalidtoken_123456' } })).arrayBuffer();
    await (
      await fetch(`${base}/mcp`, {
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      })
    ).arrayBuffer();
    await new Promise((r) => setTimeout(r, 50));
    const access = lines.filter((l) => l.msg === 'request');
    expect(access).toHaveLength(4);
    const get = access[1];
    expect(get).toMatchObject({ level: 30, method: 'GET', route: '/api/v1/records/:object/:id', status: 200, workspace: w.workspace.id, token: w.adminToken.slice(0, 12) });
    expect(typeof get.reqId).toBe('string');
    expect(typeof get.ms).toBe('number');
    expect(access[0]).toMatchObject({ method: 'POST', status: 201 });
    expect(access[2]).toMatchObject({ status: 401, route: '/api/v1/me' });
    expect(access[3]).toMatchObject({ method: 'POST', route: '/mcp', status: 200, workspace: w.workspace.id });
    const all = JSON.stringify(lines);
    expect(all).not.toContain(w.adminToken);
    expect(all).not.toContain('ksr_notavalidtoken_123456');
    expect(all).not.toContain('hiddenquery');
    expect(all).not.toContain('Secretvalue');
    expect(all).not.toContain('secret@example.com');
  });
});

describe('access log of requests refused before Fastify', () => {
  it('a 431, a 408 (slow headers or body), a 400 and a 417 each leave one line with status, code and client address', async () => {
    const lines: any[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const { port } = await serve({ log: pino({ level: 'info' }, sink) });
    await rawExchange(port, [{ data: `GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n` }]);
    await rawExchange(port, [{ data: 'GET /health HTTP/1.1\r\nHost: localhost\r\n' }, ...Array.from({ length: 10 }, () => ({ data: 'X-A: b\r\n', afterMs: 200 }))]);
    await rawExchange(port, [{ data: 'GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n' }]);
    await rawExchange(port, [{ data: 'POST /health HTTP/1.1\r\nHost: localhost\r\nExpect: 200-ok\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' }]);
    // A body too slow: Fastify has the request, and its own line reports the 408 (one line, not two).
    const head = `POST /api/v1/records/contacts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${w.adminToken}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`;
    await rawExchange(port, [{ data: head }]);
    await new Promise((r) => setTimeout(r, 50));
    const access = lines.filter((l) => l.msg === 'request');
    expect(access.map((l) => l.status)).toEqual([431, 408, 400, 417, 408]);
    expect(access.slice(0, 4).map((l) => l.code)).toEqual(['HEADERS_TOO_LARGE', 'REQUEST_TIMEOUT', 'VALIDATION_ERROR', 'EXPECTATION_FAILED']);
    for (const l of access.slice(0, 4)) expect(l.remote).toBe('127.0.0.1');
    expect(access[3]).toMatchObject({ method: 'POST', route: '/health' });
    expect(access[4]).toMatchObject({ method: 'POST', route: '/api/v1/records/:object', aborted: true });
  });
});

describe('unique violations', () => {
  it('a duplicate in a record or metadata table is a 409; one in an internal table is a bug (500, logged), not a 409', async () => {
    const { app } = await serve();
    expect((await app.inject({ method: 'POST', url: '/api/v1/records/contacts', headers: auth(), payload: { first_name: 'Dup' } })).statusCode).toBe(201);
    const { table_name } = await w.ctx.db.kysely.selectFrom('objects').select('table_name').where('name', '=', 'contacts').where('workspace_id', '=', w.workspace.id).executeTakeFirstOrThrow();
    /** A real error from the real database: a row of `table` inserted again as it is (same keys). */
    const again = async (table: string, change: Record<string, unknown> = {}) => {
      const row = (await sql<Record<string, unknown>>`SELECT * FROM ${sql.table(table)} LIMIT 1`.execute(w.ctx.db.kysely)).rows[0]!;
      return w.ctx.db.kysely
        .insertInto(table as never)
        .values({ ...row, ...change } as never)
        .execute()
        .then(
          () => expect.unreachable(`no unique violation on ${table}`),
          (e: unknown) => e,
        );
    };
    expect(fromDatabaseError(await again(table_name))).toMatchObject({ code: 'DUPLICATE_RECORD' });
    expect(fromDatabaseError(await again('workspaces', { id: 999_999 }))).toMatchObject({ code: 'DUPLICATE_RECORD' });
    // A token hash taken twice can only be a bug in the server: not the client's 409.
    expect(fromDatabaseError(await again('api_tokens', { id: 'tok-copy' }))).toBeNull();
  });
});

describe('legacy SSE sessions are capped', () => {
  /** Opens GET /sse and resolves with the status once headers arrive (the stream stays open until aborted). */
  async function openSse(base: string, token: string, ctl: AbortController) {
    const r = await fetch(`${base}/sse`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, signal: ctl.signal });
    if (r.status !== 200) return { status: r.status, body: (await r.json()) as any, retryAfter: r.headers.get('retry-after') };
    return { status: 200, body: null as any, retryAfter: null };
  }

  it('per token and in total; a closed session frees its place', async () => {
    const { base } = await serve({ mcp: { sseMaxPerToken: 3, sseMaxTotal: 5 } });
    const ctls: AbortController[] = [];
    const open = async (token: string) => {
      const c = new AbortController();
      ctls.push(c);
      return openSse(base, token, c);
    };
    for (let i = 0; i < 3; i++) expect((await open(w.adminToken)).status).toBe(200);
    const over = await open(w.adminToken);
    expect(over.status).toBe(429);
    expect(over.body.error.message).toMatch(/3 open SSE sessions/);
    expect(Number(over.retryAfter)).toBeGreaterThan(0);
    // Another token still has room, up to the total.
    expect((await open(w.memberToken)).status).toBe(200);
    expect((await open(w.memberToken)).status).toBe(200);
    const full = await open(w.memberToken);
    expect(full.status).toBe(503);
    // Closing one of the admin's sessions frees a place for it.
    // (Freed when the server sees the connection close: asked again until then, refused meanwhile.)
    ctls[0]!.abort();
    await expect.poll(async () => (await open(w.adminToken)).status, { timeout: 10_000, interval: 50 }).toBe(200);
    for (const c of ctls) c.abort();
  });
  it('counted in Redis, the caps hold across servers (as processes behind a load balancer)', async () => {
    const redis = () => new Redis('redis://127.0.0.1:6379', { connectTimeout: 500, maxRetriesPerRequest: 1 });
    const one = await serve({ mcp: { sseMaxPerToken: 1, sseMaxTotal: 100, sseRedis: redis() } });
    const two = await serve({ mcp: { sseMaxPerToken: 1, sseMaxTotal: 100, sseRedis: redis() } });
    const first = new AbortController();
    expect((await openSse(one.base, w.adminToken, first)).status).toBe(200);
    // The token's one place is taken on the other server.
    const other = new AbortController();
    const over = await openSse(two.base, w.adminToken, other);
    expect(over.status).toBe(429);
    expect(over.body.error.message).toMatch(/1 open SSE sessions/);
    // Closed on the first server, the place is free on the second.
    first.abort();
    await expect.poll(async () => (await openSse(two.base, w.adminToken, other)).status, { timeout: 10_000 }).toBe(200);
    other.abort();
  });
});

describe('configuration', () => {
  it('reads the HTTP limits from the environment, with documented defaults, and refuses bad values', async () => {
    const { httpTimeouts, loadConfig, trustProxy } = await import('../src/config.js');
    const d = loadConfig({});
    expect(httpTimeouts(d)).toEqual({ requestTimeoutMs: 60_000, headersTimeoutMs: 10_000, keepAliveTimeoutMs: 72_000, connectionTimeoutMs: 0 });
    expect([d.CRM_SHUTDOWN_GRACE_MS, d.CRM_SSE_MAX_PER_TOKEN, d.CRM_SSE_MAX_TOTAL, d.CRM_AUTH_FAILURES_PER_MINUTE]).toEqual([10_000, 20, 500, 20]);
    expect(trustProxy(d)).toBe(false);
    expect(trustProxy(loadConfig({ CRM_TRUST_PROXY: 'true' }))).toBe(1);
    expect(trustProxy(loadConfig({ CRM_TRUST_PROXY: '2' }))).toBe(2);
    expect(trustProxy(loadConfig({ CRM_TRUST_PROXY: '10.0.0.0/8, 127.0.0.1' }))).toEqual(['10.0.0.0/8', '127.0.0.1']);
    expect(() => loadConfig({ CRM_REQUEST_TIMEOUT_MS: 'soon' })).toThrow(/CRM_REQUEST_TIMEOUT_MS/);
    expect(() => loadConfig({ CRM_SSE_MAX_PER_TOKEN: '0' })).toThrow(/CRM_SSE_MAX_PER_TOKEN/);
  });

  it('a header limit above the request limit is capped to it (Node would refuse to start)', async () => {
    const app = await buildApp({ db, log: silent, timeouts: { requestTimeoutMs: 1000, headersTimeoutMs: 5000 } });
    apps.push(app);
    await app.listen({ port: 0, host: '127.0.0.1' });
    expect(app.server.headersTimeout).toBe(1000);
    expect(app.server.requestTimeout).toBe(1000);
  });
});
