/**
 * npm run bench:workspaces: the cost of many workspaces, on SQLite and (with a postgres:// URL) on
 * PostgreSQL. Creates N workspaces through the product (createWorkspace: on PostgreSQL a schema of
 * its own with its tables; each: its system objects' record tables with their indexes, its default
 * pipelines), then migrates them all through the product's runner (migrateWorkspaces) with one more
 * step of the kind a new system field needs: a column and an index on the workspace's contacts
 * table (`each`), and on PostgreSQL a column on its notes table (`space`); one transaction per
 * workspace.
 *
 *   BENCH_WORKSPACES=1000 npm run bench:workspaces -- [--db postgres://postgres@127.0.0.1:5432/test]
 *
 * On PostgreSQL the run uses a schema of its own (dropped at the end).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Kysely, sql } from 'kysely';
import { openDatabase } from '../src/db/database.js';
import { layoutSteps, migrate, migrateWorkspaces } from '../src/db/migrations.js';
import { createWorkspace } from '../src/services/users.js';
import { dropBenchSchema } from './common.js';

const N = Number(process.env.BENCH_WORKSPACES ?? 1000);
const arg = process.argv.indexOf('--db');
const url = arg > 0 ? process.argv[arg + 1]! : undefined;
const schema = `bench_ws_${process.pid}`;
const location = url ? `${url}${url.includes('?') ? '&' : '?'}schema=${schema}` : path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'crm-bench-ws-')), 'crm.db');
const db = openDatabase({ file: location });
await migrate(db);

const ms = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;
let t = process.hrtime.bigint();
for (let i = 0; i < N; i++) await createWorkspace(db, `ws${i}`);
const created = ms(t);

const steps = {
  ...layoutSteps(db),
  '9999_bench_field': {
    space: async (k: Kysely<any>) => {
      await sql`ALTER TABLE notes ADD COLUMN bench_col text`.execute(k);
    },
    each: async (k: Kysely<any>, ws: number) => {
      const table = `w${ws}_contacts`;
      await sql`ALTER TABLE ${sql.table(table)} ADD COLUMN bench_col text`.execute(k);
      await sql`CREATE INDEX ${sql.id(`${table}__bench_col`)} ON ${sql.table(table)} (bench_col)`.execute(k);
    },
  },
};
t = process.hrtime.bigint();
const done = await migrateWorkspaces(db, { steps });
if (done !== N) throw new Error(`migrated ${done} of ${N} workspaces`);
const migrated = ms(t);

// The shared schema and its workspaces'.
const mine = `^${schema}(_w[0-9]+)?$`;
const size = url
  ? Number(
      (await sql<{ n: string }>`SELECT sum(pg_total_relation_size(c.oid)) AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname ~ ${mine}`.execute(db.kysely)).rows[0]!.n,
    )
  : fs.statSync(location).size;
const tableCount = url
  ? Number((await sql<{ n: string }>`SELECT count(*) AS n FROM pg_tables WHERE schemaname ~ ${mine}`.execute(db.kysely)).rows[0]!.n)
  : Number((await sql<{ n: number }>`SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'`.execute(db.kysely)).rows[0]!.n);
console.log(
  JSON.stringify(
    {
      dialect: url ? 'postgres' : 'sqlite',
      workspaces: N,
      createMsPerWorkspace: +(created / N).toFixed(2),
      createTotalS: +(created / 1000).toFixed(1),
      migrateMsPerWorkspace: +(migrated / N).toFixed(2),
      migrateTotalS: +(migrated / 1000).toFixed(1),
      tables: tableCount,
      bytes: size,
    },
    null,
    2,
  ),
);
await db.close();
if (url) await dropBenchSchema(url, schema);
if (!url) fs.rmSync(path.dirname(location), { recursive: true, force: true });
