/**
 * npm run bench:bulk: a bulk update of one field on BENCH_BULK_ROWS contacts (default 9,000 of
 * 10,000) chosen by a filter, through the service (bulkOperation, as POST /bulk runs it; and its
 * dry run, as REST and the crm_bulk_update tool run it) beside raw SQL (better-sqlite3 directly)
 * doing the same writes the best way it can: one UPDATE of the records, one INSERT ... SELECT of
 * their timeline entries, and for a field in the search document their documents rewritten by one
 * DELETE and one INSERT ... SELECT (plus the new value's words in the vocabulary).
 *
 * Two fields: job_title (part of the search document) and source (a SELECT: neither searched nor
 * a match key). Every run starts from a fresh copy of the seeded file; the service is warmed first
 * by an update and a dry run of twenty other contacts; the sides alternate, each round in the other
 * order; medians of BENCH_ROUNDS (default 3).
 *
 * With `-- --db postgres://…`: the same on PostgreSQL, in a schema of its own (dropped at the end).
 * A database has no file to copy: every run writes the one seeded workspace, each real update (the
 * service's and raw SQL's) a value the records do not hold yet, after one update that gave all the
 * chosen records the same value (so every run changes all of them). Raw SQL there (node-postgres)
 * rewrites the documents by one UPDATE of search_docs whose vector PostgreSQL builds
 * (to_tsvector('simple')): the service computes its vector in JavaScript (its own folding and
 * weights), so that side is close to the service's writes, not the same.
 *
 *   npm run bench:bulk
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { type Db, openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import Database from '../src/db/sqlite/driver.js';
import { bulkOperation } from '../src/services/bulk.js';
import { contextFor } from '../src/services/context.js';
import { getSchema } from '../src/services/schema.js';
import { docOf } from '../src/services/search.js';
import { seedWorkspace } from '../src/services/seed.js';
import bulkTool from '../tools/bulk-update.js';
import { benchWorkspace, envInt, fmt, load1, loadsLine, log, median, pgBenchTarget, scratchDir } from './common.js';

const CONTACTS = envInt('BENCH_CONTACTS', 10_000);
const ROWS = envInt('BENCH_BULK_ROWS', 9_000);
const ROUNDS = envInt('BENCH_ROUNDS', 3);
const pgTarget = process.argv.includes('--db') ? pgBenchTarget('bench_bulk', 'npm run bench:bulk') : undefined;
const dir = scratchDir('crm-bench-bulk-');
const template = path.join(dir, 'template.db');

// The seeded database: contacts with their search documents and match keys, as the product writes them.
const seeded = openDatabase({ file: pgTarget?.location ?? template });
await migrate(seeded);
const { ws, admin, ctx: seedCtx } = await benchWorkspace(seeded);
await seedWorkspace(seedCtx, { companies: 500, contacts: CONTACTS, opportunities: 0, seed: 7, activity: false });
const seededSchema = await getSchema(seedCtx);
const contactsDef = seededSchema.objects.get('contacts')!;
const T = contactsDef.table;
const companies = seededSchema.objects.get('companies')!.table;
const pool = pgTarget?.pool();
if (!pgTarget) {
  await seeded.close();
  const raw = new Database(template);
  raw.pragma('wal_checkpoint(TRUNCATE)');
  raw.close();
}
/** A read on the seeded database, before the runs (`?` for each parameter). */
async function read<R>(text: string, ...args: unknown[]): Promise<R[]> {
  let n = 0;
  if (pool)
    return (
      await pool.query(
        text.replace(/\?/g, () => `$${++n}`),
        args,
      )
    ).rows as R[];
  const raw = new Database(template, { readonly: true });
  const rows = raw.prepare(text).all(...args) as R[];
  raw.close();
  return rows;
}
// The first ROWS contacts by creation time: the seed's arrival times rise with each record.
const cut = (await read<{ created_at: string }>(`SELECT created_at FROM ${T} ORDER BY created_at LIMIT 1 OFFSET ?`, ROWS))[0]!.created_at;
const filter = { operator: 'and', conditions: [{ field: 'created_at', operator: 'lt', value: cut }] };
// Twenty records outside the chosen ones: the service's warm-up writes them (JIT, schema, statement cache).
const others = (await read<{ id: string }>(`SELECT id FROM ${T} WHERE created_at >= ? ORDER BY seq LIMIT 20`, cut)).map((x) => x.id);
const serviceCtx = (db: Db) => contextFor(db, pino({ level: 'silent' }), { workspaceId: ws.id, userId: admin.id, role: 'admin', via: 'cli' });

let copies = 0;
function freshCopy(): string {
  const f = path.join(dir, `run-${copies++}.db`);
  fs.copyFileSync(template, f);
  return f;
}

type Side = 'service' | 'service dry run' | 'tool dry run' | 'raw SQL';
const SIDES: Side[] = ['service', 'service dry run', 'tool dry run', 'raw SQL'];

interface Case {
  field: string;
  value: (round: number) => string;
}
const CASES: Case[] = [
  { field: 'job_title', value: (r) => `Procurement Lead ${r}` },
  { field: 'source', value: (r) => ['event', 'partner', 'referral'][r % 3]! },
];

/** PostgreSQL: the value each field's records hold now (every run writes another). */
const holds: Record<string, string> = {};
let writes = 0;

/**
 * One run on a fresh copy (PostgreSQL: on the seeded workspace, a value its records do not hold):
 * seconds for the update alone, and how many records it reported (the service: updated = chosen,
 * would_change = changing; raw SQL: rows changed). Rows/s are of the ROWS records chosen, on every side.
 */
async function run(side: Side, c: Case, round: number): Promise<{ s: number; n: number }> {
  let value = c.value(round);
  if (pgTarget) {
    for (let k = 0; value === holds[c.field]; k++) value = c.value(round + 1 + k);
    if (c.field === 'job_title') value = `Procurement Lead ${++writes}`;
    if (side === 'service' || side === 'raw SQL') holds[c.field] = value;
    if (side === 'raw SQL') return rawUpdatePg(c.field, value);
    return serviceUpdate(seeded, side, c, value, round);
  }
  const file = freshCopy();
  try {
    if (side === 'raw SQL') return rawUpdate(file, c.field, value);
    const db = openDatabase({ file });
    const r = await serviceUpdate(db, side, c, value, round);
    await db.close();
    return r;
  } finally {
    for (const ext of ['', '-wal', '-shm']) fs.rmSync(file + ext, { force: true });
  }
}

async function serviceUpdate(db: Db, side: Side, c: Case, value: string, round: number): Promise<{ s: number; n: number }> {
  const ctx = serviceCtx(db);
  const input = { action: 'update' as const, object: 'contacts', filter, values: { [c.field]: value } };
  // Warm: JIT, the schema, the statement cache; on records the measured update does not choose.
  const { filter: _f, ...warm } = input;
  await bulkOperation(ctx, { ...warm, ids: others, values: { [c.field]: c.value(round + 1) } });
  await bulkOperation(ctx, { ...warm, ids: others, values: { [c.field]: c.value(round + 2) }, dry_run: true });
  const t = performance.now();
  let n: number;
  if (side === 'service') n = ((await bulkOperation(ctx, input)) as { updated: number }).updated;
  else if (side === 'service dry run') n = ((await bulkOperation(ctx, { ...input, dry_run: true })) as { would_change: number }).would_change;
  else n = ((await bulkTool.handler(ctx, { ...input, dry_run: true } as never, undefined as never)) as { would_change: number }).would_change;
  return { s: (performance.now() - t) / 1000, n };
}

/**
 * PostgreSQL's raw side: the same statements as SQLite's (the feed's lock first, as every writer of
 * the timeline takes it), the documents rewritten in place: their body built in SQL, their name and
 * exact text kept (PostgreSQL stores them), their vector by to_tsvector.
 */
async function rawUpdatePg(field: string, value: string): Promise<{ s: number; n: number }> {
  const client = await pool!.connect();
  const now = new Date().toISOString();
  const chosen = `c.created_at < $1 AND c.${field} IS DISTINCT FROM $2`;
  const objectId = (await client.query("SELECT id FROM objects WHERE workspace_id = $1 AND name = 'contacts'", [ws.id])).rows[0].id as number;
  const t = performance.now();
  let n = 0;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [0x43524d, ws.id]);
    await client.query(
      `INSERT INTO activity (workspace_id, object, record_id, action, payload, user_id, via, created_at)
      SELECT $3, 'contacts', c.id, 'updated', json_build_object('changes', json_build_object('${field}', json_build_array(c.${field}, $2::text)))::text, $4, 'cli', $5
      FROM ${T} c WHERE ${chosen} ORDER BY c.seq`,
      [cut, value, ws.id, admin.id, now],
    );
    if (field === 'job_title') {
      await client.query(
        `UPDATE search_docs d SET body = b.body, tsv = setweight(to_tsvector('simple', d.name), 'A') || setweight(to_tsvector('simple', b.body), 'B') || setweight(to_tsvector('simple', d.exact), 'C')
        FROM (SELECT c.id, concat_ws(' \n ', nullif(c.email, ''), nullif(c.phone, ''), nullif($2, ''), nullif(c.city, ''), nullif(c.country, ''), nullif(c.linkedin_url, ''), co.name) AS body
          FROM ${T} c LEFT JOIN ${companies} co ON co.id = c.company WHERE ${chosen}) b
        WHERE d.workspace_id = $3 AND d.object_id = $4 AND d.record_id = b.id`,
        [cut, value, ws.id, objectId],
      );
      const words = value
        .toLowerCase()
        .split(/[^a-z]+/)
        .filter((w) => w.length > 1);
      await client.query('INSERT INTO search_terms (workspace_id, term) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING', [ws.id, words]);
    }
    n = (await client.query(`UPDATE ${T} AS c SET ${field} = $2, updated_at = $3 WHERE ${chosen}`, [cut, value, now])).rowCount ?? 0;
    await client.query('COMMIT');
  } finally {
    client.release();
  }
  return { s: (performance.now() - t) / 1000, n };
}

/**
 * The same writes in raw SQL, set-based: the timeline entries (before the update: they hold the
 * old values), the records, and for job_title the documents, rebuilt in SQL from the row as docOf
 * builds them (the name, the other text fields and the company's name; their identifiers kept).
 * The index keeps no copy of the text (contentless), so each document is written whole: the old
 * one deleted, the new inserted (DELETE then INSERT: INSERT OR REPLACE makes FTS5 write its pending
 * documents out before each row it replaces, 2-3 times as slow). Its exact column holds phone
 * numbers' forms by libphonenumber and hosts' forms: no SQL computes those, so a SQL function
 * (search_exact) calls the product's own code for them, as a hand-written application would.
 */
function rawUpdate(file: string, field: string, value: string): { s: number; n: number } {
  const raw = new Database(file);
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  raw.pragma('cache_size = -65536');
  const col = (name: string) => contactsDef.byName.get(name)!.column;
  raw.function('search_exact', { deterministic: true }, (phone, email, url) => docOf(contactsDef, ws.id, { [col('phone')]: phone, [col('email')]: email, [col('linkedin_url')]: url }).exact);
  const now = new Date().toISOString();
  const chosen = `c.created_at < @cut AND c.${field} IS NOT @value`;
  const activity = raw.prepare(`INSERT INTO activity (workspace_id, object, record_id, action, payload, user_id, via, created_at)
    SELECT @ws, 'contacts', c.id, 'updated', json_object('changes', json_object('${field}', json_array(c.${field}, @value))), @user, 'cli', @now
    FROM ${T} c WHERE ${chosen} ORDER BY c.seq`);
  const docIds = `SELECT d.doc_id FROM ${T} c JOIN search_docs d ON d.workspace_id = @ws AND d.object_id = @obj AND d.record_id = c.id WHERE ${chosen}`;
  const oldDocs = raw.prepare(`DELETE FROM search_index WHERE rowid IN (${docIds})`);
  const docs = raw.prepare(`INSERT INTO search_index (rowid, scope, name, body, exact)
    SELECT d.doc_id, '', coalesce(concat_ws(' ', nullif(c.first_name, ''), nullif(c.last_name, '')), ''),
      concat_ws(' \n ', nullif(c.email, ''), nullif(c.phone, ''), nullif(@value, ''), nullif(c.city, ''), nullif(c.country, ''), nullif(c.linkedin_url, ''), co.name),
      search_exact(nullif(c.phone, ''), nullif(c.email, ''), nullif(c.linkedin_url, ''))
    FROM ${T} c
    JOIN search_docs d ON d.workspace_id = @ws AND d.object_id = @obj AND d.record_id = c.id
    LEFT JOIN ${companies} co ON co.id = c.company
    WHERE ${chosen}`);
  const terms = raw.prepare('INSERT OR IGNORE INTO search_terms (workspace_id, term) VALUES (@ws, @term)');
  const update = raw.prepare(`UPDATE ${T} AS c SET ${field} = @value, updated_at = @now WHERE ${chosen}`);
  const objectId = (raw.prepare("SELECT id FROM objects WHERE workspace_id = ? AND name = 'contacts'").get(ws.id) as { id: number }).id;
  const args = { ws: ws.id, user: admin.id, now, cut, value, obj: objectId };
  const t = performance.now();
  const n = raw
    .transaction(() => {
      activity.run(args);
      if (field === 'job_title') {
        oldDocs.run(args);
        docs.run(args);
        for (const term of value
          .toLowerCase()
          .split(/[^a-z]+/)
          .filter((w) => w.length > 1))
          terms.run({ ws: ws.id, term });
      }
      return update.run(args).changes;
    })
    .immediate();
  const s = (performance.now() - t) / 1000;
  raw.close();
  return { s, n };
}

log(
  `bulk update bench: ${fmt(ROWS)} of ${fmt(CONTACTS)} contacts by filter, ${ROUNDS} rounds, ${pgTarget ? `PostgreSQL (${pgTarget.schema}), a new value a write` : 'SQLite, fresh copy a run'}; node ${process.version}, ${os.cpus().length} CPUs ${load1('start')}`,
);
// PostgreSQL: every chosen record the same value first, so that every measured write changes all of them.
if (pgTarget) for (const c of CASES) await run('service', c, 0);
const results: Record<string, { s: number[]; n: number }> = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const c of CASES) {
    const order = r % 2 ? [...SIDES].reverse() : SIDES;
    for (const side of order) {
      const x = await run(side, c, r);
      const k = `${c.field}|${side}`;
      (results[k] ??= { s: [], n: x.n }).s.push(x.s);
      log(`  round ${r + 1}, ${c.field}, ${side}: ${x.s.toFixed(3)} s = ${fmt(ROWS / x.s)} rows/s (${fmt(x.n)} reported)`);
    }
  }
}
log(`\nmedians of ${ROUNDS} (the ratio: the median of each round's) ${load1('end')}`);
for (const c of CASES) {
  const rawS = results[`${c.field}|raw SQL`]!.s;
  for (const side of SIDES) {
    const x = results[`${c.field}|${side}`]!;
    const s = median(x.s);
    const ratios = x.s.map((t, i) => rawS[i]! / t);
    log(
      `  ${c.field.padEnd(9)} ${side.padEnd(15)} ${s.toFixed(3)} s  ${fmt(ROWS / s).padStart(9)} rows/s  ${side === 'raw SQL' ? '' : `${median(ratios).toFixed(2)}x of raw SQL (rounds ${ratios.map((r) => r.toFixed(2)).join(', ')})`}`,
    );
  }
}
log(loadsLine());
if (pgTarget) {
  await seeded.close();
  await pool!.end();
  await pgTarget.drop();
}
