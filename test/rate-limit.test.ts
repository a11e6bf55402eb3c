import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';
import { call, freshDb, makeWorkspace, type TestWorkspace } from './helpers.js';

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

describe('rate limit counted in Redis: shared by every process that uses it', () => {
  const redis = () => new Redis('redis://127.0.0.1:6379', { connectTimeout: 500, maxRetriesPerRequest: 1 });
  let db: Db;
  let apps: FastifyInstance[];
  let a: TestWorkspace;
  beforeAll(async () => {
    db = await freshDb();
    // Two servers (as two processes behind a load balancer would be), each with its own connection.
    apps = await Promise.all([0, 1].map(() => buildApp({ db, log: pino({ level: 'silent' }), rateLimitPerMinute: 4, rateLimitRedis: redis() })));
    a = await makeWorkspace(db, 'shared-limit');
  });
  afterAll(async () => {
    for (const app of apps) await app.close();
    await db.close();
  });

  it('four requests through two servers use up the budget of four; the fifth, through either, is 429', async () => {
    for (let i = 0; i < 4; i++) expect((await call(apps[i % 2]!, a.adminToken, 'GET', '/api/v1/me')).status).toBe(200);
    for (const app of apps) {
      const over = await call(app, a.adminToken, 'GET', '/api/v1/me');
      expect(over.status).toBe(429);
      expect(over.body).toMatchObject({ error: true, code: 'RATE_LIMITED' });
    }
  });

  it('with Redis unreachable, requests are answered (not counted), never failed', async () => {
    const down = new Redis('redis://127.0.0.1:1', { connectTimeout: 200, maxRetriesPerRequest: 0, enableOfflineQueue: false, lazyConnect: true, retryStrategy: () => null });
    down.on('error', () => {});
    const app = await buildApp({ db, log: pino({ level: 'silent' }), rateLimitPerMinute: 1, rateLimitRedis: down });
    try {
      for (let i = 0; i < 3; i++) expect((await call(app, a.memberToken, 'GET', '/api/v1/me')).status).toBe(200);
    } finally {
      await app.close();
    }
  });
});
