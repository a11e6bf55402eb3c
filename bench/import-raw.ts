/**
 * Raw-SQL import baseline: the ceiling of this machine for the writes an import makes.
 *
 * It replays, on a fresh database with the same schema, exactly the rows that `crm-mcp import` wrote
 * (records, search documents, duplicate-match keys, activity entries), read back from the imported
 * database before the clock starts; then, per batch and in one transaction, it does what a
 * hand-written loader must do: look up the batch's email, phone and name keys (duplicate detection,
 * 500 keys a query) and insert the records and their derived rows with prepared multi-row
 * better-sqlite3 statements (500 rows each; the batch's search text in one, as FTS5 wants it). No
 * validation, no parsing, no normalising: what is left is the storage cost. `skip` leaves parts out,
 * to see what each costs. `background`: its checkpoints on a thread of their own, as the product's
 * bulk load now does (src/db/sqlite/checkpointer.ts), instead of SQLite's own on the loading thread
 * every 16,384 pages.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { Checkpointer } from '../src/db/sqlite/checkpointer.js';
import Database from '../src/db/sqlite/driver.js';

export interface RawImportResult {
  rows: number;
  seconds: number;
  rowsPerSecond: number;
}

type Row = Record<string, unknown>;

/** `src`: a database an import filled; `dst`: a fresh database with the same workspace and schema. */
export async function rawImportReplay(
  src: string,
  dst: string,
  object: string,
  batch: number,
  skip: ReadonlySet<'lookups' | 'search' | 'keys' | 'activity'> = new Set(),
  opts: { background?: boolean } = {},
): Promise<RawImportResult> {
  const from = new Database(src, { readonly: true });
  const ws = (from.prepare(`SELECT id FROM workspaces ORDER BY id LIMIT 1`).get() as { id: number }).id;
  const objectId = (from.prepare(`SELECT id FROM objects WHERE workspace_id = ? AND name = ?`).get(ws, object) as { id: number }).id;
  const table = `w${ws}_${object}`;
  const records = from.prepare(`SELECT * FROM ${table} ORDER BY seq`).all() as Row[];
  const columns = Object.keys(records[0]!).filter((c) => c !== 'seq');
  const docs = new Map<string, Row>();
  // The index keeps no text (contentless): each document's words, read from the index in order, stand for it.
  from.exec(`CREATE VIRTUAL TABLE temp.words USING fts5vocab(main, search_index, 'instance')`);
  const words = new Map<number, Row>();
  for (const w of from.prepare(`SELECT doc, col, group_concat(term, ' ' ORDER BY offset) AS text FROM temp.words GROUP BY doc, col`).iterate() as Iterable<{ doc: number; col: string; text: string }>)
    words.set(w.doc, { ...words.get(w.doc), [w.col]: w.text });
  for (const d of from.prepare(`SELECT doc_id, record_id FROM search_docs WHERE object_id = ?`).iterate(objectId) as Iterable<{ doc_id: number; record_id: string }>) {
    const w = words.get(d.doc_id) ?? {};
    docs.set(d.record_id, { record_id: d.record_id, scope: '', name: w.name ?? '', body: w.body ?? '', exact: w.exact ?? '' });
  }
  const keys = new Map<string, Row[]>();
  for (const k of from.prepare(`SELECT k.kind, k.key, r.id AS record_id FROM dedupe_keys k JOIN ${table} r ON r.seq = k.record_seq WHERE k.object_id = ?`).iterate(objectId) as Iterable<Row>) {
    const list = keys.get(k.record_id as string);
    if (list) list.push(k);
    else keys.set(k.record_id as string, [k]);
  }
  // Activity entries of a record: its own, and those it wrote on related records (payload.id).
  const activity = new Map<string, Row[]>();
  for (const a of from.prepare(`SELECT * FROM activity WHERE workspace_id = ? ORDER BY id`).iterate(ws) as Iterable<Row>) {
    const owner = a.object === object ? (a.record_id as string) : ((JSON.parse((a.payload as string) ?? 'null') as { id?: string } | null)?.id ?? '');
    const list = activity.get(owner);
    if (list) list.push(a);
    else activity.set(owner, [a]);
  }
  from.close();

  const db = new Database(dst);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('cache_size = -262144');
  db.pragma('wal_autocheckpoint = 16384');
  const statements = new Map<string, BetterSqlite3.Statement>();
  /** INSERT of `rows` (arrays in `cols` order), at most `per` rows a statement. */
  const insert = (into: string, cols: string[], rows: unknown[][], per = 500) => {
    for (let i = 0; i < rows.length; i += per) {
      const part = rows.slice(i, i + per);
      const key = `${into}|${part.length}`;
      let st = statements.get(key);
      if (!st) statements.set(key, (st = db.prepare(`INSERT INTO ${into} (${cols.join(', ')}) VALUES ${part.map(() => `(${cols.map(() => '?').join(', ')})`).join(', ')}`)));
      st.run(part.flat());
    }
  };
  const activityCols = ['workspace_id', 'object', 'record_id', 'action', 'payload', 'user_id', 'via', 'created_at'];
  let found = 0;
  let nextDoc = 1;
  const load = db.transaction((part: Row[]) => {
    if (!skip.has('lookups')) {
      const byKind = new Map<string, string[]>();
      for (const r of part)
        for (const k of keys.get(r.id as string) ?? []) if (k.kind !== 'block') (byKind.get(k.kind as string) ?? byKind.set(k.kind as string, []).get(k.kind as string)!).push(k.key as string);
      for (const [kind, list] of byKind)
        for (let i = 0; i < list.length; i += 500) {
          const chunk = list.slice(i, i + 500);
          const key = `lookup|${chunk.length}`;
          let st = statements.get(key);
          if (!st) statements.set(key, (st = db.prepare(`SELECT record_seq FROM dedupe_keys WHERE workspace_id = ? AND object_id = ? AND kind = ? AND key IN (${chunk.map(() => '?').join(', ')})`)));
          found += st.all(ws, objectId, kind, ...chunk).length;
        }
    }
    insert(
      table,
      columns,
      part.map((r) => columns.map((c) => r[c])),
      Math.floor(30000 / columns.length),
    );
    if (!skip.has('search')) {
      const withDoc = part.filter((r) => docs.has(r.id as string));
      insert(
        'search_docs',
        ['doc_id', 'workspace_id', 'object_id', 'record_id'],
        withDoc.map((r, j) => [nextDoc + j, ws, objectId, r.id]),
      );
      insert(
        'search_index',
        ['rowid', 'scope', 'name', 'body', 'exact'],
        withDoc.map((r, j) => {
          const d = docs.get(r.id as string)!;
          return [nextDoc + j, d.scope, d.name, d.body, d.exact];
        }),
        6000,
      );
      nextDoc += withDoc.length;
    }
    if (!skip.has('keys'))
      insert(
        'dedupe_keys',
        ['workspace_id', 'object_id', 'kind', 'key', 'record_seq'],
        // The target is fresh and takes the records in seq order: each gets the seq it had.
        part.flatMap((r) => (keys.get(r.id as string) ?? []).map((k) => [ws, objectId, k.kind, k.key, r.seq])),
      );
    if (!skip.has('activity'))
      insert(
        'activity',
        activityCols,
        part.flatMap((r) => (activity.get(r.id as string) ?? []).map((a) => activityCols.map((c) => a[c]))),
      );
  });
  const checkpointer = opts.background ? new Checkpointer(dst, db) : undefined;
  const t0 = performance.now();
  checkpointer?.start();
  for (let i = 0; i < records.length; i += batch) load(records.slice(i, i + batch));
  db.pragma('wal_checkpoint(PASSIVE)');
  const seconds = (performance.now() - t0) / 1000;
  await checkpointer?.close();
  db.close();
  if (found) throw new Error(`raw replay: ${found} keys already present: the target database was not fresh`);
  return { rows: records.length, seconds, rowsPerSecond: records.length / seconds };
}
