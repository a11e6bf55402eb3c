/**
 * npm run bench:pg-import -- --db postgres://postgres@127.0.0.1:5432/test
 *
 * Import on PostgreSQL beside a raw loader, in the same run: `crm-mcp import contacts file.csv
 * --map Company=company_name` (the CLI, from source: validation, duplicate detection, the companies
 * named, search index, match keys, activity) into a fresh workspace; then the same rows replayed by
 * hand (import-raw-pg.ts: one json_populate_recordset INSERT a table a batch, the key lookups by
 * `= ANY`), and the records alone into the same table without anything derived (the plain table).
 *
 *   BENCH_IMPORT=20000   rows in the CSV (bench/common.ts writeContactsCsv, as bench:data)
 *   BENCH_BATCH=5000     rows a transaction, on both sides (the CLI's default --batch)
 *   BENCH_REPEAT=3       rounds of (import, raw replay, raw records only); medians reported,
 *                        the ratio as the median of each round's ratio
 *
 * The import's figure is its own (the summary's seconds: reading, parsing, writing, and the ANALYZE
 * after a large import), not the process's start. Target (issue 14): 0.8x of raw or more. Every
 * schema of the run (bench_pgimp_<pid>_*) is dropped as soon as its round is done.
 */
import path from 'node:path';
import pg from 'pg';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { createUser, createWorkspace } from '../src/services/users.js';
import { check, dropBenchSchema, envInt, fmt, type ImportSummary, load1, loadsLine, log, median, pgBenchTarget, printTable, type Row, runCli, scratchDir, writeContactsCsv } from './common.js';
import type { RawImportResult } from './import-raw.js';
import { type RawPart, rawImportReplayPg } from './import-raw-pg.js';

const target = pgBenchTarget('bench_pgimp', 'npm run bench:pg-import');
const ROWS = envInt('BENCH_IMPORT', 20_000);
const BATCH = envInt('BENCH_BATCH', 5000);
const REPEAT = envInt('BENCH_REPEAT', 3);
const dir = scratchDir('crm-bench-pgimp-');
const csv = path.join(dir, 'contacts.csv');
writeContactsCsv(csv, ROWS);

/** A schema of this run with the product's tables and an empty workspace 'bench' with an admin. */
async function freshWorkspace(suffix: string) {
  const s = target.another(suffix);
  const db = openDatabase({ file: s.location });
  try {
    await migrate(db);
    const ws = await createWorkspace(db, 'bench');
    await createUser(db, ws.id, { email: 'admin@bench.example.com', name: 'Bench Admin', role: 'admin' });
  } finally {
    await db.close();
  }
  return s;
}

const ALL: ReadonlySet<RawPart> = new Set(['lookups', 'search', 'keys', 'activity']);
const client = new pg.Client({ connectionString: target.rawUrl.toString() });
await client.connect();
const rounds: { s: ImportSummary; wall: number; raw: RawImportResult; plain: RawImportResult }[] = [];
try {
  log(`crm-mcp bench:pg-import: ${fmt(ROWS)} contacts (CSV, 500 companies named), batches of ${fmt(BATCH)}, ${REPEAT} rounds; ${target.rawUrl.host}${target.rawUrl.pathname}; node ${process.version}`);
  for (let r = 0; r < REPEAT; r++) {
    const imp = await freshWorkspace(`i${r}`);
    const raw = await freshWorkspace(`r${r}`);
    const plain = await freshWorkspace(`p${r}`);
    const at = load1(`round ${r + 1}`);
    const run = runCli(['import', 'contacts', csv, '--db', imp.location, '--workspace', 'bench', '--map', 'Company=company_name', '--batch', String(BATCH)]);
    const s = JSON.parse(run.stdout) as ImportSummary;
    if (s.created !== ROWS) throw new Error(`the import created ${s.created} of ${ROWS} rows`);
    const replay = await rawImportReplayPg(client, imp.schema, raw.schema, 'contacts', BATCH);
    const records = await rawImportReplayPg(client, imp.schema, plain.schema, 'contacts', BATCH, ALL);
    rounds.push({ s, wall: run.seconds, raw: replay, plain: records });
    log(
      `  round ${r + 1} ${at}: import ${fmt(s.rows_per_second)} rows/s (${s.seconds} s; process ${run.seconds.toFixed(1)} s), ` +
        `raw replay ${fmt(replay.rowsPerSecond)} rows/s (${replay.seconds.toFixed(2)} s): ${(s.rows_per_second / replay.rowsPerSecond).toFixed(2)}x; ` +
        `records alone ${fmt(records.rowsPerSecond)} rows/s (${records.seconds.toFixed(2)} s)`,
    );
    for (const x of [imp, raw, plain]) await dropBenchSchema(target.url, x.schema);
  }

  const imported = median(rounds.map((x) => x.s.rows_per_second));
  const table: Row[] = [
    {
      figure: `import ${fmt(ROWS)} contacts (CLI) vs the same writes by hand`,
      service: `${fmt(imported)} rows/s`,
      baseline: `${fmt(median(rounds.map((x) => x.raw.rowsPerSecond)))} rows/s`,
      ratio: `${median(rounds.map((x) => x.s.rows_per_second / x.raw.rowsPerSecond)).toFixed(2)}x`,
      target: '>= 0.8x of raw',
      ok: check(median(rounds.map((x) => x.s.rows_per_second / x.raw.rowsPerSecond)) >= 0.8),
    },
    {
      figure: `import vs the records alone into the plain table (no index, keys, activity)`,
      service: `${fmt(imported)} rows/s`,
      baseline: `${fmt(median(rounds.map((x) => x.plain.rowsPerSecond)))} rows/s`,
      ratio: `${median(rounds.map((x) => x.s.rows_per_second / x.plain.rowsPerSecond)).toFixed(2)}x`,
      target: '',
      ok: '',
    },
  ];
  load1('end');
  log(`\n=== crm-mcp bench:pg-import: ${fmt(ROWS)} contacts, medians of ${REPEAT} rounds ===`);
  log(loadsLine());
  log('ratio: import rows/s / raw rows/s (higher is better)');
  printTable({ figure: 'figure', service: 'crm-mcp import', baseline: 'raw pg', ratio: 'ratio', target: 'target', ok: '' }, table);
} finally {
  await client.end();
  await target.drop();
}
