import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { seedWorkspace } from '../src/services/seed.js';
import { makeWorkspace } from './helpers.js';
import { cleanEnv, SERVE_START_MS, startServe } from './process-helpers.js';

/**
 * A heavy read that fails midway (its time limit, a client that hangs up) inside a real `serve`
 * process: an aggregate starts its total count beside the main query, and a rejection nobody had
 * awaited yet ended the process (Node exits on an unhandled rejection). Only a real process shows
 * that: vitest's own workers report such a rejection without dying the way the server did.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-heavy-'));
const dbFile = path.join(tmp, 'crm.db');
let child: ChildProcess;
let base = '';
let token = '';
let stderr = () => '';

beforeAll(async () => {
  const db = openDatabase({ file: dbFile });
  await migrate(db);
  const w = await makeWorkspace(db, 'alpha');
  await seedWorkspace(w.ctx, { contacts: 20_000, companies: 300, opportunities: 0, activity: false, searchIndex: false, matchKeys: false });
  token = w.memberToken;
  await db.close();
  const served = await startServe(
    { ...cleanEnv, CRM_DB: dbFile, CRM_WORKSPACE: 'alpha', CRM_DEMO_DATA: 'false', CRM_RATE_LIMIT: '0', LOG_LEVEL: 'error', CRM_READ_WORKERS: '2', CRM_QUERY_TIMEOUT_MS: '100' },
    tmp,
  );
  ({ child, base, stderr } = served);
}, SERVE_START_MS + 30_000);

afterAll(() => {
  child?.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

// Slow enough to pass a 100 ms limit: twenty 'contains' on the related company's name (the most a filter takes), grouped.
const filter = { operator: 'or', conditions: Array.from({ length: 20 }, (_, i) => ({ field: 'company.name', operator: 'contains', value: `zz${i}` })) };
const aggregate = (signal?: AbortSignal) =>
  fetch(`${base}/api/v1/aggregate/contacts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ groupBy: ['status'], filter }),
    ...(signal ? { signal } : {}),
  });

async function stillServing() {
  await new Promise((r) => setTimeout(r, 1000));
  expect(child.exitCode, stderr()).toBeNull();
  expect((await fetch(`${base}/health`)).status).toBe(200);
}

describe('a heavy read that fails midway leaves the server running', () => {
  it('past its time limit: 422 QUERY_TOO_EXPENSIVE, and the process goes on', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await aggregate();
      expect(r.status).toBe(422);
      expect(((await r.json()) as { code: string }).code).toBe('QUERY_TOO_EXPENSIVE');
    }
    await stillServing();
  });

  it('when its client hangs up', async () => {
    for (let i = 0; i < 3; i++) {
      const ac = new AbortController();
      const p = aggregate(ac.signal).catch((e: unknown) => e);
      setTimeout(() => ac.abort(), 30);
      await p;
    }
    await stillServing();
  });
});
