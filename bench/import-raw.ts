/**
 * Raw-SQL import baseline: the ceiling of this machine for the writes an import makes.
 *
 * It replays, on a fresh database with the same schema, exactly the rows that `crm-mcp import` wrote
 * (records, search documents, duplicate-match keys, activity entries), read back from the imported
 * database before the clock starts; then, per batch and in one transaction, it does what a
 * hand-written loader must do: look up each row's email, phone and name keys (duplicate detection)
 * and insert the record and its derived rows with prepared better-sqlite3 statements. No
 * validation, no parsing, no normalising: what is left is the storage cost. `skip` leaves parts out,
 * to see what each costs.
 */
import Database from 'better-sqlite3';

export interface RawImportResult {
  rows: number;
  seconds: number;
  rowsPerSecond: number;
}

type Row = Record<string, unknown>;

/** `src`: a database an import filled; `dst`: a fresh database with the same workspace and schema. */
export function rawImportReplay(src: string, dst: string, object: string, batch: number, skip: ReadonlySet<'lookups' | 'search' | 'keys' | 'activity'> = new Set()): RawImportResult {
  const from = new Database(src, { readonly: true });
  const ws = (from.prepare(`SELECT id FROM workspaces ORDER BY id LIMIT 1`).get() as { id: number }).id;
  const objectId = (from.prepare(`SELECT id FROM objects WHERE workspace_id = ? AND name = ?`).get(ws, object) as { id: number }).id;
  const table = `w${ws}_${object}`;
  const records = from.prepare(`SELECT * FROM ${table} ORDER BY seq`).all() as Row[];
  const columns = Object.keys(records[0]!).filter((c) => c !== 'seq');
  const docs = new Map<string, Row>();
  for (const d of from.prepare(`SELECT d.record_id, s.scope, s.name, s.body, s.exact FROM search_docs d JOIN search_index s ON s.rowid = d.doc_id WHERE d.object_id = ?`).iterate(objectId) as Iterable<Row>)
    docs.set(d.record_id as string, d);
  const keys = new Map<string, Row[]>();
  for (const k of from.prepare(`SELECT kind, key, record_id FROM dedupe_keys WHERE object_id = ?`).iterate(objectId) as Iterable<Row>) {
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
  db.pragma('cache_size = -65536');
  db.pragma('wal_autocheckpoint = 16384');
  const lookup = db.prepare(`SELECT record_id FROM dedupe_keys WHERE workspace_id = ? AND object_id = ? AND kind = ? AND key = ?`);
  const insertRecord = db.prepare(`INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`);
  const insertDoc = db.prepare(`INSERT INTO search_docs (workspace_id, object_id, record_id) VALUES (?, ?, ?) RETURNING doc_id`);
  const insertText = db.prepare(`INSERT INTO search_index (rowid, scope, name, body, exact) VALUES (?, ?, ?, ?, ?)`);
  const insertKey = db.prepare(`INSERT INTO dedupe_keys (workspace_id, object_id, kind, key, record_id) VALUES (?, ?, ?, ?, ?)`);
  const activityCols = ['workspace_id', 'object', 'record_id', 'action', 'payload', 'user_id', 'via', 'created_at'];
  const insertActivity = db.prepare(`INSERT INTO activity (${activityCols.join(', ')}) VALUES (${activityCols.map(() => '?').join(', ')})`);
  let found = 0;
  const load = db.transaction((part: Row[]) => {
    for (const r of part) {
      const id = r.id as string;
      const ks = keys.get(id) ?? [];
      if (!skip.has('lookups')) for (const k of ks) if (k.kind !== 'block' && lookup.get(ws, objectId, k.kind, k.key)) found++;
      insertRecord.run(columns.map((c) => r[c]));
      const d = docs.get(id);
      if (d && !skip.has('search')) {
        const { doc_id } = insertDoc.get(ws, objectId, id) as { doc_id: number };
        insertText.run(doc_id, d.scope, d.name, d.body, d.exact);
      }
      if (!skip.has('keys')) for (const k of ks) insertKey.run(ws, objectId, k.kind, k.key, id);
      if (!skip.has('activity')) for (const a of activity.get(id) ?? []) insertActivity.run(activityCols.map((c) => a[c]));
    }
  });
  const t0 = performance.now();
  for (let i = 0; i < records.length; i += batch) load(records.slice(i, i + batch));
  db.pragma('wal_checkpoint(PASSIVE)');
  const seconds = (performance.now() - t0) / 1000;
  db.close();
  if (found) throw new Error(`raw replay: ${found} keys already present: the target database was not fresh`);
  return { rows: records.length, seconds, rowsPerSecond: records.length / seconds };
}
