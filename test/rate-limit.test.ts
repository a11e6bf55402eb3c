import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/http/app.js';
import { call, freshDb, makeWorkspace, type TestWorkspace } from './helpers.js';
import type { FastifyInstance } from 'fastify';
import type { Db } from '../src/db/database.js';

describe('rate limit (contract: 429 with Retry-After)', () => {
  let db: Db;
  let app: FastifyInstance;
  let a: TestWorkspace;
  beforeAll(async () => {
    db = await freshDb();
    app = await buildApp({ db, log: pino({ level: 'silent' }), rateLimitPerMinute: 3 });
    a = await makeWorkspace(db, 'limited');
  });
  afterAll(async () => {
    await app.close();
    await db.close();
  });

  it('answers 429 RATE_LIMITED with Retry-After once a token exceeds its budget, per token', async () => {
    for (let i = 0; i < 3; i++) expect((await call(app, a.adminToken, 'GET', '/api/v1/me')).status).toBe(200);
    const over = await call(app, a.adminToken, 'GET', '/api/v1/me');
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({ error: true, code: 'RATE_LIMITED' });
    expect(Number(over.headers['retry-after'])).toBeGreaterThan(0);
    // Another token has its own budget; /health is outside the API and never limited.
    expect((await call(app, a.memberToken, 'GET', '/api/v1/me')).status).toBe(200);
    expect((await call(app, null, 'GET', '/health')).status).toBe(200);
  });
});
