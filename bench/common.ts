import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import type { Db } from '../src/db/database.js';
import { numberTypes as pgNumberTypes, workspaceSchema } from '../src/db/postgres/open.js';
import { type Ctx, contextFor } from '../src/services/context.js';
import { createUser, createWorkspace } from '../src/services/users.js';

/** Pieces the benchmarks share: settings from the environment, number formats, the table of results. */

/** A directory of this run under the system's temp dir, removed when the process exits. */
export function scratchDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const envInt = (name: string, dflt: number) => {
  const v = process.env[name];
  const n = v === undefined || v === '' ? dflt : Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got '${v}'`);
  return n;
};

export const log = (...a: unknown[]) => console.log(...a);
export const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
export const ms = (n: number) => `${n < 1 ? n.toFixed(3) : n < 10 ? n.toFixed(2) : n.toFixed(1)} ms`;

/** 1-minute load average at each phase: other processes on the machine skew every figure. */
export const loads: Record<string, number> = {};
export const load1 = (phase: string) => {
  loads[phase] = Math.round(os.loadavg()[0]! * 100) / 100;
  return `(load average ${loads[phase]!.toFixed(2)})`;
};
/** The load average of every phase, one line. */
export const loadsLine = () =>
  `1-minute load average at each phase: ${Object.entries(loads)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}`;

/** A row of the printed table: the service's figure beside the hand-written baseline. */
export interface Row {
  figure: string;
  service: string;
  baseline: string;
  ratio: string;
  target: string;
  ok: '✓' | '✗' | '';
}
export const check = (pass: boolean): Row['ok'] => (pass ? '✓' : '✗');

/**
 * Drops a bench's PostgreSQL schema (`url` names its database), a hundred tables a statement:
 * dropping thousands at once runs out of lock slots (max_locks_per_transaction).
 */
export async function dropBenchSchema(url: string, schema: string): Promise<void> {
  const u = new URL(url);
  u.searchParams.delete('schema');
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  const id = (name: string) => `"${name.replace(/"/g, '""')}"`;
  try {
    // The shared schema and its workspaces' (<schema>_w<id>).
    const all = (await c.query<{ s: string }>('SELECT nspname AS s FROM pg_namespace WHERE nspname ~ $1', [`^${schema}(_w[0-9]+)?$`])).rows.map((r) => r.s);
    for (;;) {
      const some = (await c.query<{ s: string; t: string }>('SELECT schemaname AS s, tablename AS t FROM pg_tables WHERE schemaname = ANY($1) LIMIT 100', [all])).rows;
      if (!some.length) break;
      await c.query(`DROP TABLE ${some.map((r) => `${id(r.s)}.${id(r.t)}`).join(', ')} CASCADE`);
    }
    for (const s of all) await c.query(`DROP SCHEMA IF EXISTS ${id(s)} CASCADE`);
  } finally {
    await c.end();
  }
}

/**
 * The PostgreSQL database a bench runs on (`--db postgres://...`), and a schema of its own in it
 * (`<prefix>_<pid>`): `location` is the URL the service opens (with ?schema=), `rawUrl` the one
 * without, `pool()` a plain node-postgres pool with the service's session settings (UTC, the schema
 * first on the path, int8/numeric read as numbers). `drop()` drops the schema once; SIGINT and
 * SIGTERM drop it too.
 */
export function pgBenchTarget(prefix: string, usage: string) {
  const arg = process.argv.indexOf('--db');
  const url = arg > 0 ? process.argv[arg + 1] : undefined;
  if (!url || !/^postgres(ql)?:\/\//i.test(url)) {
    console.error(`usage: ${usage} -- --db postgres://user@host:port/database`);
    process.exit(2);
  }
  const schema = `${prefix}_${process.pid}`;
  const rawUrl = new URL(url);
  rawUrl.searchParams.delete('schema');
  const locate = (s: string) => `${url}${url.includes('?') ? '&' : '?'}schema=${s}`;
  const schemas = new Set([schema]);
  let dropped = false;
  const drop = async () => {
    if (dropped) return;
    dropped = true;
    for (const s of schemas) await dropBenchSchema(url, s);
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.on(sig, () => {
      drop().finally(() => process.exit(130));
    });
  return {
    url,
    schema,
    rawUrl,
    location: locate(schema),
    /** Another schema of this run (`<schema>_<suffix>`), dropped with the first. */
    another(suffix: string) {
      const s = `${schema}_${suffix}`;
      schemas.add(s);
      return { schema: s, location: locate(s) };
    },
    /** A plain pool whose path is the service's for the bench's workspace (the first of a fresh schema): its schema, the shared one, public. */
    pool(max = 4, inSchema = schema) {
      const pool = new pg.Pool({ connectionString: rawUrl.toString(), max, types: pgNumberTypes, options: `-c TimeZone=UTC -c search_path=${workspaceSchema(inSchema, 1)},${inSchema},public` });
      pool.on('error', () => {});
      return pool;
    },
    drop,
  };
}

/** Median of a list (the upper one of an even count). */
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Prints the rows as a table under `headers`. */
export function printTable(headers: Row, rows: Row[]): void {
  const keys = Object.keys(headers) as (keyof Row)[];
  const widths = keys.map((k) => Math.max(...[headers, ...rows].map((r) => r[k].length)));
  const line = (r: Row) => keys.map((k, i) => r[k].padEnd(widths[i]!)).join(' | ');
  log(line(headers));
  log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const r of rows) log(line(r));
}

/**
 * The contacts file the import benches read: `rows` people (email, phone, job title, status, city)
 * at 500 companies named in a Company column (import with --map Company=company_name).
 */
export function writeContactsCsv(file: string, rows: number, opts: { company?: boolean } = {}): void {
  const company = opts.company ?? true;
  const lines = [`First name,Last name,E-mail,Phone,Job title,Status,City${company ? ',Company' : ''}`];
  const firsts = ['Alice', 'Bob', 'Chloé', 'David', 'Emma', 'François', 'Grace', 'Hugo', 'Inès', 'Jack'];
  const lasts = ['Martin', 'Dupont', 'Müller', 'Smith', 'García', 'Rossi', 'Nowak', 'Jensen', 'Silva', 'Kowalski'];
  for (let i = 0; i < rows; i++)
    lines.push(
      [
        firsts[i % 10],
        // Without a company, a name repeated every 10,090 rows would be a duplicate: numbered whole.
        `${lasts[(i * 7) % 10]}-${company ? i % 1009 : i}`,
        `person${i}@import${i % 97}.example.com`,
        `+1 (415) ${String(2000000 + i).slice(0, 3)}-${String(i).padStart(7, '0').slice(-4)}`,
        'Buyer',
        ['lead', 'qualified', 'customer'][i % 3],
        'Lyon',
        ...(company ? [`Company ${i % 500}`] : []),
      ].join(','),
    );
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** `crm-mcp <args>` from source, to its end: its stdout and how long the process took. */
export function runCli(args: string[]): { seconds: number; stdout: string } {
  const t = performance.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli.ts'), ...args], { cwd: root, encoding: 'utf8', env: process.env, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`crm-mcp ${args.join(' ')} failed:\n${r.stderr}`);
  return { seconds: (performance.now() - t) / 1000, stdout: r.stdout };
}

/** The JSON summary `crm-mcp import` prints. */
export type ImportSummary = { rows: number; created: number; duplicates: number; failed: number; seconds: number; rows_per_second: number };

/** The bench's workspace 'bench' with its admin, and a service context acting as that admin (on the workspace's view of `db`). */
export async function benchWorkspace(db: Db, via = 'cli') {
  const ws = await createWorkspace(db, 'bench');
  const admin = await createUser(db, ws.id, { email: 'admin@bench.example.com', name: 'Bench Admin', role: 'admin' });
  const ctx: Ctx = contextFor(db, pino({ level: 'silent' }), { workspaceId: ws.id, userId: admin.id, role: 'admin', via });
  return { ws, admin, ctx };
}
