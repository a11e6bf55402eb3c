import pg from 'pg';
import { beforeAll } from 'vitest';
import { setClock } from '../src/services/clock.js';

/**
 * Run before each test file (vitest.config.ts setupFiles), in the file's worker. Files share a
 * worker's modules (isolate: false) and run two at a time (maxWorkers).
 */

// A clock one file pinned must not carry over into the next.
beforeAll(() => setClock(null));

/**
 * On PostgreSQL, each worker's files use a database of their own (`<database>_w<worker>`, made
 * once and kept; each file's schemas are dropped as before). Schemas alone do not keep two files
 * running at once apart: advisory locks belong to the database, keyed by workspace id, and every
 * file's first workspace is number 1, so one file's imports held the locks another file's test
 * was waiting on or trying (the deadlock test in write-conflicts.test.ts, the pruning of dead
 * search words). Files in one worker run one after the other, as the whole suite once did.
 */
const url = process.env.CRM_TEST_DATABASE_URL;
const worker = process.env.VITEST_POOL_ID;
if (url && worker && !process.env.CRM_TEST_DATABASE_OF_WORKER) {
  const u = new URL(url);
  const name = `${decodeURIComponent(u.pathname.slice(1)) || 'postgres'}_w${worker}`;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  let made = true;
  try {
    const exists = (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount;
    if (!exists)
      await c.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`).catch((e: { code?: string }) => {
        // Made by another run meanwhile.
        if (e.code === '42P04' || e.code === '23505') return;
        // A role that may not create databases: every worker stays on the given one.
        if (e.code !== '42501') throw e;
        made = false;
        console.warn(`CRM_TEST_DATABASE_URL: cannot create database ${name} (no CREATEDB): test files running at once share one database`);
      });
  } finally {
    await c.end();
  }
  if (made) u.pathname = `/${encodeURIComponent(name)}`;
  process.env.CRM_TEST_DATABASE_URL = u.toString();
  process.env.CRM_TEST_DATABASE_OF_WORKER = name;
}
