import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type Db, openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { buildApp } from '../src/http/app.js';
import { createToken, revokeToken } from '../src/services/users.js';
import { call, dropSchemaOf, makeWorkspace, onPostgres, schemaUrl, silent, sqlRun, TEST_DATABASE_URL, type TestWorkspace } from './helpers.js';
import { cleanEnv, SERVE_START_MS, type Served, startServe } from './process-helpers.js';

/**
 * Tokens are cached per process on PostgreSQL (services/users.ts TokenCache, db/postgres/token-version.ts).
 * Two apps on two handles of one database stand for two processes (each its own pool and cache;
 * on SQLite, two connections to one file): a token revoked, its user demoted or deleted through one
 * is refused by the other from the next request on, however warm its cache.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-tokens-'));
const location = TEST_DATABASE_URL ? schemaUrl(TEST_DATABASE_URL, 't_tokens_') : path.join(tmp, 'crm.db');

let one: Db;
let two: Db;
let app1: Awaited<ReturnType<typeof buildApp>>;
let app2: Awaited<ReturnType<typeof buildApp>>;
let ws: TestWorkspace;

beforeAll(async () => {
  one = openDatabase({ file: location });
  await migrate(one);
  two = openDatabase({ file: location });
  app1 = await buildApp({ db: one, log: silent, authFailuresPerMinute: 0 });
  app2 = await buildApp({ db: two, log: silent, authFailuresPerMinute: 0 });
  ws = await makeWorkspace(one, 'alpha');
}, 30_000);

afterAll(async () => {
  await app1?.close();
  await app2?.close();
  await one?.close();
  await two?.close();
  if (TEST_DATABASE_URL) await dropSchemaOf(location);
});

/** A new token of the workspace's member (or admin), already cached by both apps. */
async function warmToken(admin = false): Promise<{ id: string; token: string }> {
  const t = await createToken(one, ws.workspace.id, admin ? ws.admin.id : ws.member.id, 'cached');
  for (const app of [app1, app2]) for (let i = 0; i < 3; i++) expect((await call(app, t.token, 'GET', '/api/v1/records/contacts?limit=1')).status).toBe(200);
  return t;
}

const expectRefused = (r: { status: number; body: any }) => {
  expect(r.status).toBe(401);
  expect(r.body).toMatchObject({ error: true, code: 'UNAUTHORIZED' });
  expect(r.body.data).toBeUndefined();
};

describe(`a token cached by another process (${onPostgres ? 'PostgreSQL' : 'SQLite'})`, () => {
  it('revoked through one app, is refused by the other at once: reads, writes, and the errors of both', async () => {
    for (let i = 0; i < 5; i++) {
      const t = await warmToken();
      expect(await revokeToken(one, ws.workspace.id, t.id)).toBe(1);
      expectRefused(await call(app2, t.token, 'GET', '/api/v1/records/contacts?limit=5'));
      expectRefused(await call(app2, t.token, 'GET', '/api/v1/me'));
      // A read that would fail (an unknown object) does not tell the revoked token so.
      expectRefused(await call(app2, t.token, 'GET', '/api/v1/records/no_such_object'));
      expectRefused(await call(app2, t.token, 'POST', '/api/v1/records/contacts', { first_name: `After revoke ${i}` }));
      expectRefused(await call(app1, t.token, 'GET', '/api/v1/records/contacts?limit=5'));
    }
    const written = await call(app1, ws.adminToken, 'GET', '/api/v1/records/contacts?limit=100');
    expect(written.body.data.filter((r: any) => String(r.first_name).startsWith('After revoke'))).toEqual([]);
    // Other tokens keep working in both.
    for (const app of [app1, app2]) expect((await call(app, ws.memberToken, 'GET', '/api/v1/me')).status).toBe(200);
  });

  it('while one app is read without pause, every request sent after the revocation has answered is refused', async () => {
    const t = await warmToken();
    let revokedAt = Number.POSITIVE_INFINITY;
    let stop = false;
    const answers: { sent: number; answered: number; status: number; rows: number | undefined }[] = [];
    const started = performance.now();
    const reader = async () => {
      while (!stop && performance.now() - started < 20_000) {
        // SQLite answers without leaving the microtask queue: let the revocation's timer run.
        await new Promise((r) => setImmediate(r));
        const sent = performance.now();
        const r = await call(app2, t.token, 'GET', '/api/v1/records/contacts?limit=5&include_total=false');
        answers.push({ sent, answered: performance.now(), status: r.status, rows: r.body?.data?.length });
        if (sent > revokedAt + 50) stop = true;
      }
    };
    const readers = Array.from({ length: 6 }, reader);
    // Revoked once the readers are under way (a few answers in).
    await vi.waitFor(() => expect(answers.length).toBeGreaterThanOrEqual(12), { timeout: 15_000, interval: 10 });
    const revokeStart = performance.now();
    expect(await revokeToken(one, ws.workspace.id, t.id)).toBe(1);
    revokedAt = performance.now();
    await Promise.all(readers);
    const after = answers.filter((a) => a.sent > revokedAt);
    expect(after.length).toBeGreaterThan(0);
    expect(after.filter((a) => a.status !== 401)).toEqual([]);
    expect(after.every((a) => a.rows === undefined)).toBe(true);
    // Before the revocation began, the token was good: every request answered by then was served.
    // (One sent before but answered after may have read the token's version after the commit, and
    // rightly been refused: under load that takes any time.)
    const before = answers.filter((a) => a.answered < revokeStart);
    expect(before.length).toBeGreaterThan(0);
    expect(before.filter((a) => a.status !== 200)).toEqual([]);
  });

  it("a user demoted through one app acts as a member in the other at once; deleted, the user's token is refused", async () => {
    const t = await warmToken(true);
    // Admin only: the export (a GET, run on the cached actor while it is confirmed).
    expect((await call(app2, t.token, 'GET', '/api/v1/export/contacts?format=json')).status).toBe(200);
    await sqlRun(one, sql`UPDATE users SET role = 'member' WHERE id = ${ws.admin.id}`);
    // The request that ran on the cached admin learns of the change before it answers: nothing of it
    // is sent, the client is asked to send it again (503, Retry-After), and then it acts as a member.
    const raced = await call(app2, t.token, 'GET', '/api/v1/export/contacts?format=json');
    expect(raced.status).toBe(onPostgres ? 503 : 403);
    expect(raced.headers['retry-after']).toBe(onPostgres ? '1' : undefined);
    expect(raced.body.data).toBeUndefined();
    const demoted = await call(app2, t.token, 'GET', '/api/v1/export/contacts?format=json');
    expect(demoted.status).toBe(403);
    expect(demoted.body).toMatchObject({ error: true, code: 'PERMISSION_DENIED' });
    expect((await call(app2, t.token, 'GET', '/api/v1/me')).body.data.role).toBe('member');
    // Promoted again, it may export from the next request on (a request between may answer 503 once).
    await sqlRun(one, sql`UPDATE users SET role = 'admin' WHERE id = ${ws.admin.id}`);
    expect([200, 503]).toContain((await call(app2, t.token, 'GET', '/api/v1/export/contacts?format=json')).status);
    expect((await call(app2, t.token, 'GET', '/api/v1/export/contacts?format=json')).status).toBe(200);

    const gone = await makeWorkspace(one, 'gone');
    const member = (await createToken(one, gone.workspace.id, gone.member.id, 'cached')).token;
    for (const app of [app1, app2]) expect((await call(app, member, 'GET', '/api/v1/me')).status).toBe(200);
    await sqlRun(one, sql`DELETE FROM api_tokens WHERE user_id = ${gone.member.id}`);
    await sqlRun(one, sql`DELETE FROM users WHERE id = ${gone.member.id}`);
    expectRefused(await call(app2, member, 'GET', '/api/v1/me'));
    // The workspace removed: its admin's token (cached) is refused at once.
    for (const app of [app1, app2]) expect((await call(app, gone.adminToken, 'GET', '/api/v1/records/contacts?limit=1')).status).toBe(200);
    await sqlRun(one, sql`DELETE FROM api_tokens WHERE workspace_id = ${gone.workspace.id}`);
    await sqlRun(one, sql`DELETE FROM users WHERE workspace_id = ${gone.workspace.id}`);
    await sqlRun(one, sql`DELETE FROM workspaces WHERE id = ${gone.workspace.id}`);
    expectRefused(await call(app2, gone.adminToken, 'GET', '/api/v1/records/contacts?limit=1'));
  });
});

describe.runIf(onPostgres)('the token version (PostgreSQL)', () => {
  it('advances with every change to tokens and users; a read is never one sent before the caller asked', async () => {
    const version = () => two.tokenVersion!();
    for (let i = 0; i < 10; i++) {
      const before = await version();
      // Reads under way and queued while another process's change commits.
      const early = [version(), version()];
      await sqlRun(one, sql`UPDATE users SET name = name WHERE id = ${ws.member.id}`);
      const late = [version(), version()];
      for (const v of await Promise.all(early)) expect([before, before + 1]).toContain(v);
      expect(await Promise.all(late)).toEqual([before + 1, before + 1]);
    }
    const before = await version();
    await sqlRun(one, sql`UPDATE api_tokens SET name = name WHERE false`);
    await sqlRun(one, sql`DELETE FROM users WHERE false`);
    // Creating tokens, users and workspaces changes no one's actor: the version stays.
    await createToken(one, ws.workspace.id, ws.member.id, 'new');
    expect(await version()).toBe(before + 2);
  });
});

describe(`MCP over HTTP and the Bitrix24 routes share the cache (${onPostgres ? 'PostgreSQL' : 'SQLite'})`, () => {
  it('a token revoked through one process is refused by the other at once on /mcp and /v1/tasks/aggregate', async () => {
    const mcpApp = await buildApp({ db: two, log: silent, authFailuresPerMinute: 0, mcp: true });
    try {
      const rpc = (token: string) =>
        mcpApp.inject({
          method: 'POST',
          url: '/mcp',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          payload: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
        });
      const bitrix = (token: string) =>
        mcpApp.inject({
          method: 'POST',
          url: '/v1/tasks/aggregate',
          headers: { 'x-api-key': token, 'content-type': 'application/json' },
          payload: JSON.stringify({ aggregate: [{ field: 'timeEstimate', function: 'sum' }], groupBy: 'status' }),
        });
      for (let i = 0; i < 3; i++) {
        const t = await createToken(one, ws.workspace.id, ws.member.id, `mcp ${i}`);
        for (let k = 0; k < 3; k++) {
          expect((await rpc(t.token)).statusCode).toBe(200);
          expect((await bitrix(t.token)).statusCode).toBe(200);
        }
        expect(await revokeToken(one, ws.workspace.id, t.id)).toBe(1);
        const refused = await rpc(t.token);
        expect(refused.statusCode).toBe(401);
        expect(refused.json().error.message).toMatch(/revoked/);
        expect((await bitrix(t.token)).statusCode).toBe(401);
      }
    } finally {
      await mcpApp.close();
    }
  });
});

describe(`two serve processes on one ${onPostgres ? 'PostgreSQL schema' : 'SQLite file'}`, () => {
  const served: Served[] = [];
  afterAll(() => {
    for (const s of served) if (s.child.exitCode === null) s.child.kill('SIGKILL');
  });

  it(
    'a token revoked through one process is refused by the other on its next request',
    async () => {
      const env = { ...cleanEnv, CRM_DATABASE_URL: location, CRM_WORKSPACE: 'alpha', CRM_DEMO_DATA: 'false', CRM_RATE_LIMIT: '0', LOG_LEVEL: 'error', CRM_READ_WORKERS: '0' };
      served.push(...(await Promise.all([startServe(env, tmp), startServe(env, tmp)])));
      const get = (base: string, token: string) => fetch(`${base}/api/v1/records/contacts?limit=3&include_total=false`, { headers: { authorization: `Bearer ${token}` } });
      for (let i = 0; i < 10; i++) {
        const t = await createToken(one, ws.workspace.id, ws.member.id, `process ${i}`);
        for (const s of served) for (let k = 0; k < 3; k++) expect((await get(s.base, t.token)).status).toBe(200);
        expect(await revokeToken(one, ws.workspace.id, t.id)).toBe(1);
        const [a, b] = await Promise.all(served.map((s) => get(s.base, t.token)));
        expect([a!.status, b!.status]).toEqual([401, 401]);
      }
    },
    SERVE_START_MS + 30_000,
  );
});
