/**
 * npm run bench:bulk: a bulk update of one field on BENCH_BULK_ROWS contacts (default 9,000 of
 * 10,000) chosen by a filter, through the service (bulkOperation, as POST /bulk runs it; and its
 * dry run, as REST and the crm_bulk_update tool run it) beside raw SQL (better-sqlite3 directly)
 * doing the same writes the best way it can: one UPDATE of the records, one INSERT ... SELECT of
 * their timeline entries, and for a field in the search document one INSERT OR REPLACE ... SELECT
 * of their documents' text (plus the new value's words in the vocabulary).
 *
 * Two fields: job_title (part of the search document) and source (a SELECT: neither searched nor
 * a match key). Every run starts from a fresh copy of the seeded file; the service is warmed first
 * by an update and a dry run of twenty other contacts; the sides alternate, each round in the other
 * order; medians of BENCH_ROUNDS (default 3).
 *
 *   npm run bench:bulk
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import Database from '../src/db/sqlite/driver.js';
import { bulkOperation } from '../src/services/bulk.js';
import { contextFor } from '../src/services/context.js';
import { getSchema } from '../src/services/schema.js';
import { docOf } from '../src/services/search.js';
import { seedWorkspace } from '../src/services/seed.js';
import bulkTool from '../tools/bulk-update.js';
import { benchWorkspace, envInt, fmt, load1, loadsLine, log, median, scratchDir } from './common.js';

const CONTACTS = envInt('BENCH_CONTACTS', 10_000);
const ROWS = envInt('BENCH_BULK_ROWS', 9_000);
const ROUNDS = envInt('BENCH_ROUNDS', 3);
const dir = scratchDir('crm-bench-bulk-');
const template = path.join(dir, 'template.db');

// The seeded file: contacts with their search documents and match keys, as the product writes them.
const seeded = openDatabase({ file: template });
await migrate(seeded);
const { ws, admin, ctx: seedCtx } = await benchWorkspace(seeded);
await seedWorkspace(seedCtx, { companies: 500, contacts: CONTACTS, opportunities: 0, seed: 7, activity: false });
const contactsDef = (await getSchema(seedCtx)).objects.get('contacts')!;
await seeded.close();
const T = `w${ws.id}_contacts`;
{
  const raw = new Database(template);
  raw.pragma('wal_checkpoint(TRUNCATE)');
  raw.close();
}
// The first ROWS contacts by creation time: the seed's arrival times rise with each record.
const cut = (() => {
  const raw = new Database(template, { readonly: true });
  const r = raw.prepare(`SELECT created_at FROM ${T} ORDER BY created_at LIMIT 1 OFFSET ?`).get(ROWS) as { created_at: string };
  raw.close();
  return r.created_at;
})();
const filter = { operator: 'and', conditions: [{ field: 'created_at', operator: 'lt', value: cut }] };
// Twenty records outside the chosen ones: the service's warm-up writes them (JIT, schema, statement cache).
const others = (() => {
  const raw = new Database(template, { readonly: true });
  const r = (raw.prepare(`SELECT id FROM ${T} WHERE created_at >= ? ORDER BY seq LIMIT 20`).all(cut) as { id: string }[]).map((x) => x.id);
  raw.close();
  return r;
})();

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

/**
 * One run on a fresh copy: seconds for the update alone, and how many records it reported (the
 * service: updated = chosen, would_change = changing; raw SQL: rows changed). Rows/s are of the
 * ROWS records chosen, on every side.
 */
async function run(side: Side, c: Case, round: number): Promise<{ s: number; n: number }> {
  const file = freshCopy();
  const value = c.value(round);
  try {
    if (side === 'raw SQL') return rawUpdate(file, c.field, value);
    const db = openDatabase({ file });
    const ctx = contextFor(db, pino({ level: 'silent' }), { workspaceId: ws.id, userId: admin.id, role: 'admin', via: 'cli' });
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
    const s = (performance.now() - t) / 1000;
    await db.close();
    return { s, n };
  } finally {
    for (const ext of ['', '-wal', '-shm']) fs.rmSync(file + ext, { force: true });
  }
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
    LEFT JOIN w${ws.id}_companies co ON co.id = c.company
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

log(`bulk update bench: ${fmt(ROWS)} of ${fmt(CONTACTS)} contacts by filter, ${ROUNDS} rounds, fresh copy a run; node ${process.version}, ${os.cpus().length} CPUs ${load1('start')}`);
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
