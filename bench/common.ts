import os from 'node:os';
import pg from 'pg';

/** Pieces the benchmarks share: settings from the environment, number formats, the table of results. */

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
