import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'csv-parse/sync';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import Database from '../src/db/sqlite/driver.js';
import { contextFor } from '../src/services/context.js';
import { planImport } from '../src/services/import-export.js';
import { phoneKey, phoneSearchForms } from '../src/services/phone.js';
import { searchAll } from '../src/services/search.js';
import { getTimeline } from '../src/services/timeline.js';
import { createUser, createWorkspace } from '../src/services/users.js';

/**
 * `crm-mcp import <object> <file>` as a user runs it: the built CLI (dist/src/cli.js) spawned
 * against temporary database files. Header mapping (names, labels, --map), the JSON summary on
 * stdout, progress on stderr, the rejects file (reasons, formulas neutralized), JSON and JSON Lines,
 * and an import killed mid-way then re-run: nothing is created twice.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(root, 'dist/src/cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-import-cli-'));

/** The environment of a clean shell: no CRM_* settings leak in from the one running the tests. */
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CRM_') && !['PORT', 'HOST', 'LOG_LEVEL'].includes(k))) as Record<string, string>;

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Spawn the CLI; `onStderr` may kill it (returns true to kill with SIGKILL). */
function cli(args: string[], onStderr?: (all: string) => boolean): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: tmp, env: baseEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!killed && onStderr?.(stderr)) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

/** A database file with workspace 'w' and its admin, made in-process (no spawn needed). */
async function makeDb(name: string): Promise<string> {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'crm.db');
  const db = openDatabase({ file });
  await migrate(db);
  const ws = await createWorkspace(db, 'w');
  await createUser(db, ws.id, { email: 'admin@example.com', name: 'Admin', role: 'admin' });
  await db.close();
  return file;
}

/** Rows of an object's table, read straight from the file. */
function readTable(dbFile: string, object: string): Record<string, any>[] {
  const db = new Database(dbFile, { readonly: true });
  try {
    const { table_name } = db.prepare("SELECT o.table_name FROM objects o JOIN workspaces w ON w.id = o.workspace_id WHERE w.name = 'w' AND o.name = ?").get(object) as { table_name: string };
    return db.prepare(`SELECT * FROM "${table_name}" ORDER BY seq`).all() as Record<string, any>[];
  } finally {
    db.close();
  }
}

const importArgs = (object: string, file: string, db: string, ...extra: string[]) => ['import', object, file, '--db', db, '--workspace', 'w', ...extra];
const write = (name: string, text: string) => {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, text);
  return p;
};

beforeAll(() => {}, 180_000);

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('import a CSV file', () => {
  let db: string;
  let file: string;
  let run: Run;

  beforeAll(async () => {
    db = await makeDb('csv');
    file = write(
      'people.csv',
      [
        'First name,Last Name,E-mail,Phone,Job title,Employer,Favourite colour',
        'Ada,Lovelace,ada@example.com,+44 20 7946 0000,Countess,Acme Inc,blue',
        'Grace,Hopper,GRACE@NAVY.MIL,,"Rear Admiral, USN",US Navy,green',
        '"=HYPERLINK(""http://evil.example"",""x"")",Mallory,not-an-email,,,,red',
        ',Nofirst,nofirst@example.com,,,,',
        'Ada,L.,Ada@Example.com,,,,',
        'Alan,Turing,alan@example.com,020 7946 0001,"Line one\nLine two",acme inc.,',
        '@evil,Bad,bad,,"multi\nline",,',
        '',
      ].join('\r\n'),
    );
    run = await cli(importArgs('contacts', file, db, '--map', 'Employer=company_name'));
  }, 30_000);

  it('prints a JSON summary on stdout and progress on stderr', () => {
    expect(run.status, run.stderr).toBe(0);
    const summary = JSON.parse(run.stdout);
    expect(summary).toMatchObject({
      object: 'contacts',
      file,
      rows: 7,
      created: 3,
      duplicates: 1,
      failed: 3,
      rejects_file: `${file}.rejected.csv`,
      ignored_columns: ['Favourite colour'],
    });
    expect(typeof summary.seconds).toBe('number');
    expect(typeof summary.rows_per_second).toBe('number');
    expect(run.stderr).toMatch(/^import: 7 rows, 3 created, 1 duplicates, 3 failed, \d+ rows\/s, 100%$/m);
    expect(run.stderr).toMatch(/ignored columns.*Favourite colour/);
  });

  it('maps headers by name or label ("First name", "Last Name", "E-mail", "Job title") and by --map (Employer=company_name)', () => {
    const contacts = readTable(db, 'contacts');
    const companies = readTable(db, 'companies');
    expect(companies.map((c) => c.name).sort()).toEqual(['Acme Inc', 'US Navy']);
    const acme = companies.find((c) => c.name === 'Acme Inc')!.id;
    const navy = companies.find((c) => c.name === 'US Navy')!.id;
    expect(contacts.map((c) => [c.first_name, c.last_name, c.email, c.phone, c.job_title, c.company])).toEqual([
      ['Ada', 'Lovelace', 'ada@example.com', '+44 20 7946 0000', 'Countess', acme],
      ['Grace', 'Hopper', 'grace@navy.mil', null, 'Rear Admiral, USN', navy],
      ['Alan', 'Turing', 'alan@example.com', '020 7946 0001', 'Line one\nLine two', acme],
    ]);
    // Written by the CLI.
    const adb = new Database(db, { readonly: true });
    const vias = adb.prepare("SELECT DISTINCT via FROM activity WHERE action = 'created'").all() as { via: string }[];
    adb.close();
    expect(vias).toEqual([{ via: 'cli' }]);
  });

  it('phone numbers parsed ahead on the reader thread give the match keys and search forms the service computes itself', () => {
    const adb = new Database(db, { readonly: true });
    const table = (adb.prepare("SELECT table_name FROM objects WHERE name = 'contacts'").get() as { table_name: string }).table_name;
    const withPhone = adb
      .prepare(
        `SELECT c.phone, k.key, d.doc_id FROM ${table} c JOIN dedupe_keys k ON k.record_seq = c.seq AND k.kind = 'phone'
         JOIN search_docs d ON d.record_id = c.id ORDER BY c.phone`,
      )
      .all() as { phone: string; key: string; doc_id: number }[];
    // The index keeps no text: each search form is found in the document's identifiers.
    const holding = (form: string) => (adb.prepare('SELECT rowid AS doc FROM search_index WHERE search_index MATCH ?').all(`exact : "${form}"`) as { doc: number }[]).map((r) => r.doc);
    expect(withPhone.map((r) => r.phone)).toEqual(['+44 20 7946 0000', '020 7946 0001']);
    for (const r of withPhone) {
      expect(r.key).toBe(phoneKey(r.phone));
      for (const form of phoneSearchForms(r.phone)) expect(holding(form)).toContain(r.doc_id);
    }
    adb.close();
    // The international number was read by libphonenumber (national significant number), the
    // other (not valid in the default region, US) kept as its digits.
    expect(withPhone.map((r) => r.key)).toEqual(['2079460000', '2079460001']);
  });

  it('writes the rejected rows, as read, with their reasons; formulas neutralized; values with line breaks quoted', () => {
    const rejectsPath = `${file}.rejected.csv`;
    const raw = fs.readFileSync(rejectsPath, 'utf8');
    const rows = parse(raw, { columns: true }) as Record<string, string>[];
    expect(Object.keys(rows[0]!)).toEqual(['First name', 'Last Name', 'E-mail', 'Phone', 'Job title', 'Employer', 'Favourite colour', '_error']);
    expect(rows).toEqual([
      {
        'First name': `'=HYPERLINK("http://evil.example","x")`,
        'Last Name': 'Mallory',
        'E-mail': 'not-an-email',
        Phone: '',
        'Job title': '',
        Employer: '',
        'Favourite colour': 'red',
        _error: "VALIDATION_ERROR: Field 'email' must be a valid email address",
      },
      {
        'First name': '',
        'Last Name': 'Nofirst',
        'E-mail': 'nofirst@example.com',
        Phone: '',
        'Job title': '',
        Employer: '',
        'Favourite colour': '',
        _error: "MISSING_REQUIRED_FIELD: Field 'first_name' is required",
      },
      {
        'First name': "'@evil",
        'Last Name': 'Bad',
        'E-mail': 'bad',
        Phone: '',
        'Job title': 'multi\nline',
        Employer: '',
        'Favourite colour': '',
        _error: "VALIDATION_ERROR: Field 'email' must be a valid email address",
      },
    ]);
    expect(raw).toContain('"multi\nline"');
    // Every line of the file is a whole record: no cell starts a formula.
    for (const r of rows) for (const v of Object.values(r)) expect(v).not.toMatch(/^[=+\-@\t\r]/);
  });

  it('re-running the same file creates nothing (duplicates skipped), and --map errors are reported', async () => {
    const again = await cli(importArgs('contacts', file, db, '--map', 'Employer=company_name', '--rejects', path.join(tmp, 'again.rejected.csv')));
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ rows: 7, created: 0, duplicates: 4, failed: 3, rejects_file: path.join(tmp, 'again.rejected.csv') });
    expect(readTable(db, 'contacts')).toHaveLength(3);
    expect(readTable(db, 'companies')).toHaveLength(2);
    const bad = await cli(importArgs('contacts', file, db, '--map', 'Employer=shoe_size'));
    expect(bad.status).not.toBe(0);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/shoe_size/);
  });
});

describe('import JSON and JSON Lines files', () => {
  let db: string;

  beforeAll(async () => {
    db = await makeDb('json');
  });

  it('a JSON array (keys by name or label) and {"records": [...]}', async () => {
    const file = write(
      'people.json',
      JSON.stringify([
        { 'First name': 'Hedy', 'Last name': 'Lamarr', 'E-mail': 'hedy@example.com', tags: 'vip;newsletter' },
        { first_name: 'Rosalind', last_name: 'Franklin', email: 'rosalind@example.com', phone: '+44 20 7946 1111' },
        { first_name: 'H.', last_name: 'Lamarr', email: 'HEDY@example.com' },
      ]),
    );
    const r = await cli(importArgs('contacts', file, db));
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ rows: 3, created: 2, duplicates: 1, failed: 0, rejects_file: null });
    const rows = readTable(db, 'contacts');
    expect(rows.map((x) => [x.first_name, x.email, x.phone, x.tags])).toEqual([
      ['Hedy', 'hedy@example.com', null, '["vip","newsletter"]'],
      ['Rosalind', 'rosalind@example.com', '+44 20 7946 1111', null],
    ]);
    const wrapped = write(
      'opps.json',
      JSON.stringify({
        records: [
          { name: 'Deal A', amount: '1200.50' },
          { name: 'Deal B', status: 'negotiation' },
        ],
      }),
    );
    const o = await cli(importArgs('opportunities', wrapped, db));
    expect(JSON.parse(o.stdout)).toMatchObject({ rows: 2, created: 2, failed: 0 });
    // Pipeline defaults, as through the API.
    expect(readTable(db, 'opportunities').map((x) => [x.name, x.status, x.probability, x.amount])).toEqual([
      ['Deal A', 'open', 10, 120050],
      ['Deal B', 'negotiation', 75, null],
    ]);
  });

  it('JSON Lines: blank lines skipped, a line that is not JSON rejected alone, later keys mapped too', async () => {
    const file = write(
      'people.jsonl',
      [
        '{"first_name": "Mary", "last_name": "Jackson", "email": "mary@nasa.gov"}',
        '{not json',
        '',
        '{"first_name": "Dorothy", "last_name": "Vaughan", "email": "dorothy@nasa.gov", "phone": "+1 757 555 0101"}',
        '{"first_name": "Bad", "last_name": "Row", "email": "nope"}',
        '{"first_name": "Mary", "last_name": "J.", "email": "MARY@nasa.gov"}',
        '',
      ].join('\n'),
    );
    const r = await cli(importArgs('contacts', file, db));
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ rows: 5, created: 2, duplicates: 1, failed: 2, rejects_file: `${file}.rejected.csv` });
    const rows = readTable(db, 'contacts').filter((x) => x.email?.endsWith('@nasa.gov'));
    expect(rows.map((x) => [x.first_name, x.email, x.phone])).toEqual([
      ['Mary', 'mary@nasa.gov', null],
      ['Dorothy', 'dorothy@nasa.gov', '+1 757 555 0101'],
    ]);
    const rejects = parse(fs.readFileSync(`${file}.rejected.csv`, 'utf8'), { columns: true, relax_column_count: true }) as Record<string, string>[];
    expect(rejects).toHaveLength(2);
    expect(rejects[0]!._error).toMatch(/line 2 is not valid JSON/);
    expect(rejects[1]).toMatchObject({ first_name: 'Bad', last_name: 'Row', email: 'nope', _error: "VALIDATION_ERROR: Field 'email' must be a valid email address" });
  });

  it('a JSON Lines file whose first line is broken still imports the rest', async () => {
    const file = write('broken-first.jsonl', ['{oops', '{"first_name": "Katherine", "last_name": "Johnson", "email": "katherine@nasa.gov"}'].join('\n'));
    const r = await cli(importArgs('contacts', file, db));
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ rows: 2, created: 1, failed: 1, ignored_columns: [] });
    expect(readTable(db, 'contacts').filter((x) => x.email === 'katherine@nasa.gov')).toHaveLength(1);
  });
});

describe('files that cannot be read', () => {
  it('an unsupported type, JSON that is not a list of records, broken JSON and a broken CSV: a clear error, exit 1, nothing written', async () => {
    const db = await makeDb('unreadable');
    const cases: [string, string, RegExp][] = [
      ['people.xlsx', 'PK...', /VALIDATION_ERROR: Unsupported file type '\.xlsx': use \.csv, \.json, \.jsonl or \.ndjson/],
      ['object.json', '{"first_name": "Ada"}', /VALIDATION_ERROR: .*object\.json: expected a JSON array of records \(or \{"records": \[\.\.\.\]\}\)/],
      ['broken.json', '[{"first_name": "Ada"', /VALIDATION_ERROR: .*broken\.json is not valid JSON/],
      ['quotes.csv', 'first_name,last_name\nAda,"Love"lace\n', /VALIDATION_ERROR: .*[Qq]uote/],
    ];
    for (const [name, text, message] of cases) {
      const r = await cli(importArgs('contacts', write(name, text), db));
      expect(r.status, name).toBe(1);
      expect(r.stdout, name).toBe('');
      expect(r.stderr, name).toMatch(message);
    }
    expect(readTable(db, 'contacts')).toEqual([]);
  });
});

/**
 * Each imported record's derived data, written in its batch's transaction: exactly the committed
 * records have a search document, match keys (email, phone, name) and a 'created' timeline entry;
 * the last of them is found by full-text search, matched as a duplicate by email, by phone and by
 * name, and shows its creation on its timeline.
 */
async function expectDerivedWhole(file: string, records: number) {
  const raw = new Database(file, { readonly: true });
  const count = (q: string) => Number((raw.prepare(q).get() as { n: number }).n);
  expect(count("SELECT count(*) AS n FROM search_docs d JOIN objects o ON o.id = d.object_id AND o.name = 'contacts'")).toBe(records);
  for (const kind of ['email', 'name']) expect(count(`SELECT count(DISTINCT record_seq) AS n FROM dedupe_keys WHERE kind = '${kind}'`)).toBe(records);
  expect(count("SELECT count(*) AS n FROM activity WHERE object = 'contacts' AND action = 'created'")).toBe(records);
  raw.close();
  const last = readTable(file, 'contacts').sort((a, b) => b.seq - a.seq)[0]!;
  const db = openDatabase({ file });
  try {
    const ws = (await db.kysely.selectFrom('workspaces').select('id').where('name', '=', 'w').executeTakeFirstOrThrow()).id;
    const admin = (await db.kysely.selectFrom('users').select('id').where('workspace_id', '=', ws).executeTakeFirstOrThrow()).id;
    const ctx = contextFor(db.forWorkspace(ws), pino({ level: 'silent' }), { workspaceId: ws, userId: admin, role: 'admin', via: 'cli' });
    expect((await searchAll(ctx, { q: last.last_name })).data.map((h) => h.id)).toContain(last.id);
    expect((await searchAll(ctx, { q: last.phone })).data.map((h) => h.id)).toContain(last.id);
    const timeline = await getTimeline(ctx, 'contacts', last.id);
    expect(timeline.data.map((e) => e.action)).toEqual(['created']);
    // Stored as field ids (createdPayload), shown by name.
    expect(timeline.data[0]!.details).toEqual({ fields: expect.arrayContaining(['first_name', 'last_name', 'email', 'phone']) });
    // Rows that repeat it by email (other case), by phone (other formatting), by name: each matched to it alone.
    for (const probe of [
      { first_name: 'Other', email: last.email.toUpperCase() },
      { first_name: 'Other', phone: last.phone.replace(/\D/g, '') },
      { first_name: last.first_name, last_name: last.last_name },
    ]) {
      const plan = await planImport(ctx, 'contacts', [probe]);
      expect([...new Set(plan.existing.values())], JSON.stringify([probe, plan.failed, plan.candidates.map((c) => c.keys)])).toEqual([last.id]);
    }
  } finally {
    await db.close();
  }
}

describe('an interrupted import, re-run', () => {
  it('killed mid-way, then run again on the whole file: every email exactly once, the counts add up; each committed record with its derived data, none of the next batch', async () => {
    const db = await makeDb('resume');
    const N = 24_000;
    const lines = ['first_name,last_name,email,phone'];
    const emails = new Set<string>();
    for (let i = 0; i < N; i++) {
      // Every 1000th row repeats the previous row's email: a duplicate inside the file.
      const n = i % 1000 === 999 ? i - 1 : i;
      emails.add(`u${n}@resume.test`);
      lines.push(`P${i},Resume${i},U${n}@Resume.test,${i % 1000 === 999 ? '' : `+1 415 ${String(2000000 + i).slice(0, 3)}-${String(i).padStart(4, '0').slice(-4)}`}`);
    }
    const file = write('resume.csv', `${lines.join('\n')}\n`);
    const U = emails.size;

    // Killed (SIGKILL, no chance to clean up) as soon as it reports progress short of the end.
    const first = await cli(importArgs('contacts', file, db, '--batch', '500'), (err) => /^import: \d+ rows.*, \d{1,2}%$/m.test(err));
    expect(first.signal).toBe('SIGKILL');
    expect(first.stdout).toBe('');
    const partial = readTable(db, 'contacts').length;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(U);
    // Whole batches were committed (one transaction each): the records are those of the first k batches of 500 rows.
    const uniqueIn = (rowsRead: number) => new Set(lines.slice(1, rowsRead + 1).map((l) => l.split(',')[2]!.toLowerCase())).size;
    const batches = Array.from({ length: N / 500 + 1 }, (_, k) => uniqueIn(k * 500));
    expect(batches).toContain(partial);
    await expectDerivedWhole(db, partial);

    // The whole file again.
    const second = await cli(importArgs('contacts', file, db, '--batch', '500'));
    expect(second.status, second.stderr).toBe(0);
    const s = JSON.parse(second.stdout);
    expect(s).toMatchObject({ rows: N, failed: 0, rejects_file: null });
    expect(s.created).toBe(U - partial);
    expect(s.duplicates).toBe(N - U + partial);
    expect(s.created + s.duplicates + s.failed).toBe(N);

    const rows = readTable(db, 'contacts');
    expect(rows).toHaveLength(U);
    const seen = new Map<string, number>();
    for (const r of rows) seen.set(r.email, (seen.get(r.email) ?? 0) + 1);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(new Set(seen.keys())).toEqual(emails);
    // Each record is the first row that carried its email.
    expect(rows.find((r) => r.email === 'u998@resume.test')!.first_name).toBe('P998');

    // A third run finds everything there.
    const third = await cli(importArgs('contacts', file, db, '--batch', '2000'));
    expect(JSON.parse(third.stdout)).toMatchObject({ rows: N, created: 0, duplicates: N, failed: 0 });
    expect(readTable(db, 'contacts')).toHaveLength(U);
  }, 60_000);
});
