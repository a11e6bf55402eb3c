import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli } from '../src/cli.js';
import { type Db, openDatabase } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';
import { type Ctx, contextFor } from '../src/services/context.js';
import { listRecords } from '../src/services/records.js';
import { seedWorkspace } from '../src/services/seed.js';
import { createUser, createWorkspace, findWorkspace, firstUserWithRole, listUsers } from '../src/services/users.js';
import { call, freshDb, tableNames } from './helpers.js';

/**
 * The built CLI (dist/src/cli.js), spawned as a user runs it, against temporary database files.
 * The spawns are started together in beforeAll (each chain in order) so the file stays fast.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(root, 'dist/src/cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-cli-'));
const silent = pino({ level: 'silent' });

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of a clean shell: no CRM_* settings leak in from the one running the tests. */
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CRM_') && !['PORT', 'HOST', 'LOG_LEVEL'].includes(k))) as Record<string, string>;

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    // cwd is the temp dir, so a default ./data/crm.db could never touch the repository's data.
    const child = spawn(process.execPath, [CLI, ...args], { cwd: tmp, env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const dbMain = path.join(tmp, 'main', 'crm.db');
const dbMigrate = path.join(tmp, 'migrate', 'crm.db');
const dbSeeds = path.join(tmp, 'seeds', 'crm.db');
const SEED_ARGS = ['--contacts', '50', '--companies', '10', '--opportunities', '30'];

/** Spawned with --help; every other command's help is checked in-process below (a spawn costs about a second). */
const HELP: { cmd: string[]; options: string[] }[] = [
  { cmd: [], options: ['serve', 'stdio', 'seed', 'token', 'migrate', 'workspace'] },
  { cmd: ['migrate'], options: ['--db'] },
  { cmd: ['seed'], options: ['--contacts', '--companies', '--opportunities', '--workspace', '--seed', '--db'] },
  { cmd: ['token', 'create'], options: ['--role', '--workspace', '--name', '--db'] },
];

let runs: {
  seed: Run;
  adminToken: Run;
  memberToken: Run;
  unknownWorkspace: Run;
  migrate1: Run;
  migrate2: Run;
  help: Run[];
  badFlag: Run;
  seedA: Run;
  seedB: Run;
};

beforeAll(async () => {
  const main = (async () => {
    const seed = await cli(['seed', ...SEED_ARGS, '--workspace', 'w1'], { CRM_DB: dbMain });
    const [adminToken, memberToken, unknownWorkspace] = await Promise.all([
      cli(['token', 'create', '--role', 'admin', '--workspace', 'w1'], { CRM_DB: dbMain }),
      // The same settings as flags instead of environment variables.
      cli(['token', 'create', '--role', 'member', '--workspace', 'w1', '--db', dbMain, '--name', 'member label']),
      cli(['token', 'create', '--role', 'admin', '--workspace', 'nope'], { CRM_DB: dbMain }),
    ]);
    return { seed, adminToken, memberToken, unknownWorkspace };
  })();
  const migrating = (async () => {
    const migrate1 = await cli(['migrate'], { CRM_DB: dbMigrate });
    const migrate2 = await cli(['migrate', '--db', dbMigrate]);
    return { migrate1, migrate2 };
  })();
  const seeds = (async () => {
    // Two fresh workspaces in one database, seeded alike.
    const seedA = await cli(['seed', ...SEED_ARGS, '--workspace', 'same-a'], { CRM_DB: dbSeeds });
    const seedB = await cli(['seed', ...SEED_ARGS, '--workspace', 'same-b'], { CRM_DB: dbSeeds });
    return { seedA, seedB };
  })();
  const help = Promise.all(HELP.map((h) => cli([...h.cmd, '--help'])));
  const badFlag = cli(['seed', '--contacts', 'many', '--workspace', 'w9'], { CRM_DB: path.join(tmp, 'bad', 'crm.db') });
  runs = { ...(await main), ...(await migrating), ...(await seeds), help: await help, badFlag: await badFlag };
}, 240_000);

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('crm-mcp seed', () => {
  it('exits 0, prints progress on stderr and nothing on stdout', () => {
    const r = runs.seed;
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    for (const object of ['companies 10/10', 'contacts 50/50', 'opportunities 30/30']) expect(r.stderr).toContain(`seed: ${object}`);
    expect(r.stderr).toMatch(/seed: done, 90 rows/);
  });

  it('refuses a bad number with a message on stderr', () => {
    expect(runs.badFlag.status).not.toBe(0);
    expect(runs.badFlag.stdout).toBe('');
    expect(runs.badFlag.stderr).toMatch(/contacts/);
  });
});

describe('crm-mcp token create', () => {
  it('prints only the token: one line, ksr_ and URL-safe characters', () => {
    for (const r of [runs.adminToken, runs.memberToken]) {
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.endsWith('\n')).toBe(true);
      const lines = r.stdout.split('\n').filter((l) => l !== '');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^ksr_[A-Za-z0-9_-]+$/);
    }
    expect(runs.adminToken.stdout).not.toBe(runs.memberToken.stdout);
  });

  it('fails on stderr, with nothing on stdout, for a workspace that does not exist', () => {
    const r = runs.unknownWorkspace;
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/nope/);
    expect(r.stderr).toMatch(/w1/);
  });

  it('the tokens work against buildApp on the same database file, with their roles', async () => {
    const db = openDatabase({ file: dbMain });
    const app = await buildApp({ db, log: silent });
    try {
      const admin = runs.adminToken.stdout.trim();
      const member = runs.memberToken.stdout.trim();
      const me = await call(app, admin, 'GET', '/api/v1/me');
      expect(me.status, JSON.stringify(me.body)).toBe(200);
      expect(me.body.data).toMatchObject({ role: 'admin', workspace: 'w1' });
      const meMember = await call(app, member, 'GET', '/api/v1/me');
      expect(meMember.body.data).toMatchObject({ role: 'member', workspace: 'w1' });

      const counts: Record<string, number> = {};
      for (const object of ['contacts', 'companies', 'opportunities']) {
        const r = await call(app, admin, 'GET', `/api/v1/records/${object}?limit=1`);
        expect(r.status).toBe(200);
        counts[object] = r.body.total;
      }
      expect(counts).toEqual({ contacts: 50, companies: 10, opportunities: 30 });

      // Realistic and linked: contacts at companies, deals with owners among the workspace users.
      const users = (await call(app, admin, 'GET', '/api/v1/users')).body.data.map((u: { id: string }) => u.id);
      expect(users.length).toBeGreaterThan(1);
      const linked = await call(app, admin, 'GET', '/api/v1/records/contacts?filter_field=company&filter_operator=is_not_null&limit=1');
      expect(linked.body.total).toBeGreaterThan(25);
      const opps = (await call(app, admin, 'GET', '/api/v1/records/opportunities?limit=30')).body.data as Record<string, any>[];
      for (const o of opps) {
        expect(users).toContain(o.owner);
        expect(o.name).toEqual(expect.any(String));
        expect(o.amount).toBeGreaterThan(0);
      }
      expect(new Set(opps.map((o) => o.status)).size).toBeGreaterThan(2);
      const company = opps.find((o) => o.company)!;
      const enriched = await call(app, admin, 'GET', `/api/v1/records/companies/${company.company}`);
      expect(enriched.body.data.associations.opportunities.total).toBeGreaterThan(0);

      // The member may read and write records but not change the schema.
      expect((await call(app, member, 'POST', '/api/v1/records/contacts', { first_name: 'From member' })).status).toBe(201);
      expect((await call(app, member, 'POST', '/api/v1/schema', { name: 'things', fields: [{ name: 'a', type: 'TEXT' }] })).status).toBe(403);
    } finally {
      await app.close();
      await db.close();
    }
  });
});

describe('crm-mcp migrate', () => {
  it('migrates a new database file, then reports it up to date; nothing on stdout', async () => {
    expect(runs.migrate1.status, runs.migrate1.stderr).toBe(0);
    expect(runs.migrate1.stdout).toBe('');
    expect(runs.migrate1.stderr).toMatch(/applied: /);
    expect(runs.migrate2.status, runs.migrate2.stderr).toBe(0);
    expect(runs.migrate2.stdout).toBe('');
    expect(runs.migrate2.stderr).toMatch(/up to date/);
    const db = openDatabase({ file: dbMigrate });
    try {
      expect(await tableNames(db)).toEqual(expect.arrayContaining(['workspaces', 'users', 'api_tokens', 'objects', 'fields']));
    } finally {
      await db.close();
    }
  });
});

describe('--help', () => {
  it.each(HELP.map((h, i) => [h.cmd.join(' ') || '(none)', i] as const))('crm-mcp %s --help', (_name, i) => {
    const h = HELP[i]!;
    const r = runs.help[i]!;
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Usage: crm-mcp${h.cmd.length ? ` ${h.cmd.join(' ')}` : ''}`);
    for (const o of h.options) expect(r.stdout).toContain(o);
  });
});

describe('--help, in-process, on every command and subcommand', () => {
  it('each command describes itself and its options', () => {
    const visit = (cmd: Command, trail: string[]): string[] => {
      const names = [trail.join(' ')];
      for (const sub of cmd.commands) names.push(...visit(sub, [...trail, sub.name()]));
      return names;
    };
    const program = buildCli();
    const all = visit(program, []).filter(Boolean);
    expect(all).toEqual(expect.arrayContaining(['serve', 'stdio', 'migrate', 'seed', 'token create', 'token list', 'token revoke', 'workspace create', 'workspace list']));
    for (const name of all) {
      let cmd: Command = program;
      for (const part of name.split(' ')) cmd = cmd.commands.find((c) => c.name() === part)!;
      const help = cmd.helpInformation();
      expect(help, name).toContain(`Usage: crm-mcp ${name}`);
      expect(cmd.description().length, name).toBeGreaterThan(10);
      expect(help, name).toContain('--help');
      // Every command that opens the database takes --db.
      if (cmd.commands.length === 0) expect(help, name).toContain('--db');
    }
    const serve = program.commands.find((c) => c.name() === 'serve')!.helpInformation();
    for (const o of ['--port', '--host', '--workspace']) expect(serve).toContain(o);
  });
});

describe('seed determinism', () => {
  type Row = Record<string, unknown>;

  /** A workspace's seeded data without ids and clock-derived values, relations replaced by names. */
  async function canonical(db: Db, workspace: string) {
    const ws = (await findWorkspace(db, workspace))!;
    expect(ws).toBeDefined();
    const admin = (await firstUserWithRole(db, ws.id, 'admin'))!;
    const ctx: Ctx = contextFor(db, silent, { workspaceId: ws.id, userId: admin.id, role: 'admin', via: 'test' });
    const all = async (object: string) => {
      const out: Row[] = [];
      let cursor: string | undefined;
      do {
        // Seeded records arrive at rising times, so created_at order is the order they were generated in.
        const page = await listRecords(ctx, object, { limit: 100, cursor, sortBy: 'created_at', sortDir: 'asc', includeTotal: false });
        out.push(...page.data);
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      return out;
    };
    const users = new Map((await listUsers(ctx)).map((u) => [u.id, u.email]));
    const companies = await all('companies');
    const contacts = await all('contacts');
    const opportunities = await all('opportunities');
    const companyName = new Map(companies.map((c) => [c.id, c.name]));
    const contactName = new Map(contacts.map((c) => [c.id, `${c.first_name} ${c.last_name}`]));
    const strip = (r: Row) => {
      const { id, created_at, updated_at, created_by, last_contacted_at, close_date, ...rest } = r;
      void [id, created_at, updated_at, created_by, last_contacted_at, close_date];
      const out: Row = { ...rest };
      if ('owner' in out) out.owner = users.get(out.owner as string) ?? out.owner;
      if ('company' in out && out.company) out.company = companyName.get(out.company as string) ?? 'dangling';
      if ('contact' in out && out.contact) out.contact = contactName.get(out.contact as string) ?? 'dangling';
      // Seeded emails carry a per-run tag before the '@' so that a second seed into the same workspace
      // does not collide on the unique email; that tag comes from the clock, the rest must match.
      if (typeof out.email === 'string') out.email = out.email.replace(/\.[^.@]+@/, '.<run>@');
      return out;
    };
    return {
      users: [...users.values()].sort(),
      companies: companies.map(strip),
      contacts: contacts.map(strip),
      opportunities: opportunities.map(strip),
    };
  }

  it('the same seed into two fresh workspaces gives the same data; another seed does not', async () => {
    for (const r of [runs.seedA, runs.seedB]) {
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe('');
    }
    const db = openDatabase({ file: dbSeeds });
    // The comparison must be able to fail: the same sizes from another seed (in-process) differ.
    const otherDb = await freshDb();
    try {
      const a = await canonical(db, 'same-a');
      const b = await canonical(db, 'same-b');
      expect(a.companies).toHaveLength(10);
      expect(a.contacts).toHaveLength(50);
      expect(a.opportunities).toHaveLength(30);
      expect(b).toEqual(a);

      const ws = await createWorkspace(otherDb, 'other');
      const admin = await createUser(otherDb, ws.id, { email: 'admin@example.com', name: 'Admin', role: 'admin' });
      await seedWorkspace(contextFor(otherDb, silent, { workspaceId: ws.id, userId: admin.id, role: 'admin', via: 'test' }), { companies: 10, contacts: 50, opportunities: 30, seed: 7 });
      const other = await canonical(otherDb, 'other');
      expect(other.contacts).toHaveLength(50);
      expect(other.contacts).not.toEqual(a.contacts);
      expect(other.companies.map((c) => c.name)).not.toEqual(a.companies.map((c) => c.name));
    } finally {
      await db.close();
      await otherDb.close();
    }
  });
});
