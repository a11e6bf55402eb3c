/**
 * Raw-SQL import baseline on PostgreSQL: the counterpart of import-raw.ts.
 *
 * It replays, into a fresh schema with the same workspace, exactly the rows `crm-mcp import` wrote
 * in another (the imported object's records, their search documents, match keys, stage history and
 * activity entries; the records the import made by name, such as companies, with theirs; the search
 * vocabulary), read back before the clock starts. Then, per batch and in one transaction, it does
 * what a hand-written loader must: look up the batch's keys (duplicate detection, one `= ANY($1)`
 * statement a kind, and the named companies) and write every table with one
 * `INSERT ... SELECT FROM json_populate_recordset($1)` statement of the whole batch. No validation,
 * no parsing, no normalising: what is left is the storage cost. `skip` leaves parts out.
 */
import type pg from 'pg';
import { workspaceSchema } from '../src/db/postgres/open.js';
import type { RawImportResult } from './import-raw.js';

type Row = Record<string, unknown>;
export type RawPart = 'lookups' | 'search' | 'keys' | 'activity';

/** The tables written per record, by the column naming the record; their identity columns are left to the database. */
const DERIVED = [
  { table: 'search_docs', part: 'search', skip: ['doc_id'] },
  { table: 'dedupe_keys', part: 'keys', skip: [] },
  { table: 'stage_history', part: 'activity', skip: ['id'] },
  { table: 'activity', part: 'activity', skip: ['id'] },
] as const;

const id = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** `client` may be on any schema: every name is qualified. `src` holds the import, `dst` a fresh workspace of the same schema. */
export async function rawImportReplayPg(client: pg.ClientBase, src: string, dst: string, object: string, batch: number, skip: ReadonlySet<RawPart> = new Set()): Promise<RawImportResult> {
  const q = async <T extends Row>(text: string, values: unknown[] = []) => (await client.query<T>(text, values)).rows;
  const ws = (await q<{ id: number }>(`SELECT id FROM ${id(src)}.workspaces ORDER BY id LIMIT 1`))[0]!.id;
  // From here on, the workspace's own tables: in its schema (`<shared>_w<id>`).
  src = workspaceSchema(src, ws);
  dst = workspaceSchema(dst, ws);
  const objects = await q<{ id: number; name: string; table_name: string }>(`SELECT id, name, table_name FROM ${id(src)}.objects WHERE workspace_id = $1`, [ws]);
  const same = await q<{ n: number }>(`SELECT count(*)::int AS n FROM ${id(dst)}.objects o JOIN ${id(src)}.objects s USING (id, name, table_name) WHERE s.workspace_id = $1`, [ws]);
  if (same[0]!.n !== objects.length) throw new Error('raw replay: the target schema does not hold the same workspace and objects');

  // Each table's columns but the identity ones, and the rows of each record (activity entries a
  // record wrote on related records belong to it too: payload.id).
  const columns = async (table: string, leave: readonly string[]) =>
    (await q<{ c: string }>(`SELECT column_name AS c FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`, [src, table]))
      .map((r) => r.c)
      .filter((c) => !leave.includes(c));
  const derived: { table: string; cols: string[]; byRecord: Map<string, Row[]> }[] = [];
  for (const d of DERIVED) {
    if (skip.has(d.part)) continue;
    const cols = await columns(d.table, d.skip);
    const byRecord = new Map<string, Row[]>();
    let rows: Row[] = [];
    if (d.table !== 'dedupe_keys') rows = await q(`SELECT ${cols.map(id).join(', ')} FROM ${id(src)}.${id(d.table)} WHERE workspace_id = $1 ORDER BY ${d.skip[0] ?? 'record_id'}`, [ws]);
    // A match key names its record by seq: each object's table joined for the id, one object at a
    // time (a pg client queues concurrent queries, and pg@9 will refuse them).
    else
      for (const o of objects)
        rows = rows.concat(
          await q(
            `SELECT ${cols.map((c) => `k.${id(c)}`).join(', ')}, r.id AS record_id FROM ${id(src)}.dedupe_keys k JOIN ${id(src)}.${id(o.table_name)} r ON r.seq = k.record_seq
             WHERE k.workspace_id = $1 AND k.object_id = $2 ORDER BY k.record_seq`,
            [ws, o.id],
          ),
        );
    for (const r of rows) {
      const owner = d.table === 'activity' && r.action !== 'created' ? ((JSON.parse((r.payload as string) ?? 'null') as { id?: string } | null)?.id ?? '') : (r.record_id as string);
      const list = byRecord.get(owner);
      if (list) list.push(r);
      else byRecord.set(owner, [r]);
    }
    derived.push({ table: d.table, cols, byRecord });
  }
  const target = objects.find((o) => o.name === object)!;
  const others: { table: string; cols: string[]; rows: Row[] }[] = [];
  let records: Row[] = [];
  let recordCols: string[] = [];
  for (const o of objects) {
    const cols = await columns(o.table_name, ['seq']);
    const rows = await q(`SELECT ${cols.map(id).join(', ')} FROM ${id(src)}.${id(o.table_name)} ORDER BY seq`);
    if (o === target) {
      records = rows;
      recordCols = cols;
    } else if (rows.length) others.push({ table: o.table_name, cols, rows });
  }
  const terms = skip.has('search') ? [] : await q(`SELECT workspace_id, term FROM ${id(src)}.search_terms WHERE workspace_id = $1`, [ws]);
  const keysOf = (ids: string[]) => ids.flatMap((r) => (derived.find((d) => d.table === 'dedupe_keys')?.byRecord.get(r) ?? []).filter((k) => k.kind !== 'block'));
  const companies = objects.find((o) => o.name === 'companies');

  /** One statement for all `rows` of `table`. */
  const insert = async (table: string, cols: string[], rows: Row[]) => {
    if (!rows.length) return;
    const list = cols.map(id).join(', ');
    await client.query(`INSERT INTO ${id(dst)}.${id(table)} (${list}) SELECT ${list} FROM json_populate_recordset(NULL::${id(dst)}.${id(table)}, $1::json)`, [JSON.stringify(rows)]);
  };
  /** A batch of records of one object, and their derived rows, in one transaction. */
  let found = 0;
  const load = async (table: string, cols: string[], part: Row[], objectId: number, lookups: boolean) => {
    await client.query('BEGIN');
    if (lookups) {
      const ids = part.map((r) => r.id as string);
      const byKind = new Map<string, string[]>();
      for (const k of keysOf(ids)) (byKind.get(k.kind as string) ?? byKind.set(k.kind as string, []).get(k.kind as string)!).push(k.key as string);
      for (const [kind, keys] of byKind)
        found += (
          await client.query(`SELECT key, record_seq FROM ${id(dst)}.dedupe_keys WHERE workspace_id = $1 AND object_id = $2 AND kind = $3 AND key = ANY($4::text[])`, [ws, objectId, kind, keys])
        ).rowCount!;
      // The companies the batch names (company_name), by their name keys.
      const named = [...new Set(part.map((r) => r.company).filter((c): c is string => typeof c === 'string'))];
      const names = keysOf(named)
        .filter((k) => k.kind === 'name')
        .map((k) => k.key as string);
      if (companies && names.length)
        await client.query(`SELECT key, record_seq FROM ${id(dst)}.dedupe_keys WHERE workspace_id = $1 AND object_id = $2 AND kind = 'name' AND key = ANY($3::text[])`, [ws, companies.id, names]);
    }
    await insert(table, cols, part);
    for (const d of derived)
      await insert(
        d.table,
        d.cols,
        part.flatMap((r) => d.byRecord.get(r.id as string) ?? []),
      );
    await client.query('COMMIT');
  };

  const t0 = performance.now();
  // The records the import made by name first (companies), as the import makes them before the batch that names them.
  for (const o of others) await load(o.table, o.cols, o.rows, objects.find((x) => x.table_name === o.table)!.id, false);
  await insert('search_terms', ['workspace_id', 'term'], terms);
  for (let i = 0; i < records.length; i += batch) await load(target.table_name, recordCols, records.slice(i, i + batch), target.id, !skip.has('lookups'));
  const seconds = (performance.now() - t0) / 1000;
  if (found) throw new Error(`raw replay: ${found} keys already present: the target schema was not fresh`);
  // Every row the import wrote, replayed: the same count in each table.
  for (const t of [target.table_name, ...others.map((o) => o.table), ...derived.map((d) => d.table)]) {
    const count = async (s: string) => (await q<{ n: number }>(`SELECT count(*)::int AS n FROM ${id(s)}.${id(t)}`))[0]!.n;
    const a = await count(src);
    const b = await count(dst);
    if (a !== b) throw new Error(`raw replay: ${t} holds ${b} rows, the import wrote ${a}`);
  }
  return { rows: records.length, seconds, rowsPerSecond: records.length / seconds };
}
