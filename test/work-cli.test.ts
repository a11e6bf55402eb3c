import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, openDatabase } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';
import { call, silent } from './helpers.js';

/**
 * Writes made by the CLI are recorded with via 'cli': the built CLI seeds a workspace (with email
 * threads, whose messages reach the contacts' and companies' timelines), then a token made by the
 * CLI reads those timelines over REST, and a REST write lands next to them with via 'rest'.
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist/src/cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-work-cli-'));
const dbFile = path.join(tmp, 'crm.db');

const run = (...args: string[]) => execFileSync('node', [cli, ...args, '--db', dbFile, '--workspace', 'w'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

let db: Db;
let app: FastifyInstance;
let token: string;

beforeAll(async () => {
  // The CLI runs from the build (test/global-setup.ts rebuilds it when stale).
  run('seed', '--companies', '2', '--contacts', '3', '--opportunities', '2', '--tasks', '2', '--threads', '1');
  token = run('token', 'create', '--role', 'admin').trim();
  db = openDatabase({ file: dbFile });
  app = await buildApp({ db, log: silent });
}, 180_000);

afterAll(async () => {
  await app?.close();
  await db?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('activity written by the CLI', () => {
  it("every entry the seed wrote has via 'cli' and the seeding admin as its user", async () => {
    const rows = await db.kysely
      .selectFrom('activity')
      .innerJoin('users', 'users.id', 'activity.user_id')
      .select(['activity.action', 'activity.object', 'activity.via', 'users.name', 'users.role'])
      .execute();
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) expect(r).toMatchObject({ via: 'cli', role: 'admin' });
    // Each seeded record is 'created'; one thread of 1-5 messages: each message is an email entry on the contact (and its company).
    expect(new Set(rows.map((r) => r.action))).toEqual(new Set(['created', 'email_received', ...(rows.some((r) => r.action === 'email_sent') ? ['email_sent'] : [])]));
    const messages = Number(
      (
        await db.kysely
          .selectFrom('messages')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
    expect(rows.filter((r) => r.object === 'contacts' && r.action.startsWith('email_'))).toHaveLength(messages);
  });

  it("GET /activity with a CLI-made token shows the CLI's entries, and a REST write beside them", async () => {
    const thread = await db.kysely.selectFrom('threads').selectAll().executeTakeFirstOrThrow();
    const before = await call(app, token, 'GET', `/api/v1/activity/contacts/${thread.contact_id}`);
    expect(before.status, JSON.stringify(before.body)).toBe(200);
    // The emails, and (oldest) the seeded 'created' entry.
    expect(before.body.data.length).toBe(thread.message_count + 1);
    expect(before.body.data.at(-1)).toMatchObject({ action: 'created', via: 'cli', user: { name: 'Admin' } });
    for (const e of before.body.data.slice(0, -1)) {
      expect(e).toMatchObject({ via: 'cli', user: { name: 'Admin' }, details: { thread_id: thread.id, subject: thread.subject } });
      expect(['email_received', 'email_sent']).toContain(e.action);
    }
    // The CLI's thread is in the inbox like any other.
    const listed = await call(app, token, 'GET', `/api/v1/inbox/threads?contact_id=${thread.contact_id}`);
    expect(listed.body.data.map((x: { id: string }) => x.id)).toContain(thread.id);

    const was = (await call(app, token, 'GET', `/api/v1/records/contacts/${thread.contact_id}`)).body.data.job_title;
    const upd = await call(app, token, 'PUT', `/api/v1/records/contacts/${thread.contact_id}`, { job_title: 'Head of Seeds' });
    expect(upd.status).toBe(200);
    const after = (await call(app, token, 'GET', `/api/v1/activity/contacts/${thread.contact_id}`)).body.data;
    expect(after).toHaveLength(thread.message_count + 2);
    expect(after[0]).toMatchObject({ action: 'updated', via: 'rest', details: { changes: { job_title: [was, 'Head of Seeds'] } } });
    expect(after.slice(1).every((e: { via: string }) => e.via === 'cli')).toBe(true);
  });

  it('the seeded tasks are listed; completing or reopening one is recorded with via rest', async () => {
    const tasks = await call(app, token, 'GET', '/api/v1/tasks?mode=all');
    expect(tasks.body.total).toBe(2);
    const task = tasks.body.data[0];
    const completed = task.status !== 'completed';
    const r = await call(app, token, 'PUT', `/api/v1/tasks/${task.id}/complete`, { completed });
    expect(r.body.data.status).toBe(completed ? 'completed' : 'open');
    const own = (await call(app, token, 'GET', `/api/v1/activity/tasks/${task.id}`)).body.data;
    expect(own).toHaveLength(2);
    expect(own[0]).toMatchObject({ action: 'updated', via: 'rest', details: { changes: { status: [task.status, completed ? 'completed' : 'open'] } } });
    expect(own[1]).toMatchObject({ action: 'created', via: 'cli' });
  });

  it("seeded records get a 'created' entry with via 'cli'", async () => {
    for (const object of ['companies', 'contacts', 'opportunities', 'tasks']) {
      const records = (await call(app, token, 'GET', `/api/v1/records/${object}?limit=100&fields=id`)).body.data as { id: string }[];
      expect(records.length).toBeGreaterThan(0);
      for (const r of records) {
        const created = (await call(app, token, 'GET', `/api/v1/activity/${object}/${r.id}?actions=created`)).body.data;
        expect(created, `${object} ${r.id}`).toHaveLength(1);
        expect(created[0]).toMatchObject({ action: 'created', via: 'cli', user: { name: 'Admin' } });
      }
    }
  });
});
