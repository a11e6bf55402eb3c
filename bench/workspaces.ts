/**
 * npm run bench:workspaces: the cost of many workspaces, on SQLite and (with a postgres:// URL) on
 * PostgreSQL. Creates N workspaces (each: its system objects' record tables with their indexes, its
 * default pipelines), then runs a per-workspace migration of the kind a new field of a system object
 * needs (a column and an index on every workspace's contacts table), one transaction per workspace.
 *
 *   BENCH_WORKSPACES=1000 npm run bench:workspaces -- [--db postgres://postgres@127.0.0.1:5432/test]
 *
 * On PostgreSQL the run uses a schema of its own (dropped at the end).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
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

const tables = (await db.kysely.selectFrom('objects').select(['table_name', 'workspace_id']).where('name', '=', 'contacts').execute()) as { table_name: string; workspace_id: number }[];
t = process.hrtime.bigint();
for (const { table_name } of tables)
  await db.kysely.transaction().execute(async (trx) => {
    await sql`ALTER TABLE ${sql.table(table_name)} ADD COLUMN bench_col text`.execute(trx);
    await sql`CREATE INDEX ${sql.id(`${table_name}__bench_col`)} ON ${sql.table(table_name)} (bench_col)`.execute(trx);
  });
const migrated = ms(t);

const size = url
  ? Number(
      (await sql<{ n: string }>`SELECT sum(pg_total_relation_size(c.oid)) AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = ${schema}`.execute(db.kysely)).rows[0]!
        .n,
    )
  : fs.statSync(location).size;
const tableCount = url
  ? Number((await sql<{ n: string }>`SELECT count(*) AS n FROM pg_tables WHERE schemaname = ${schema}`.execute(db.kysely)).rows[0]!.n)
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
