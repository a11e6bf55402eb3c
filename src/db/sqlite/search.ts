import { sql } from 'kysely';
import { bulkInsert } from '../bulk-insert.js';
import { type SearchBackend, type SearchClause, type SearchHit, type SearchQuery, termMethods, writeTerms } from '../search.js';

/**
 * Full-text search on SQLite: an FTS5 index (unicode61 tokenizer with diacritics folded, a prefix
 * index for 3 characters; contentless since migration 0012: it keeps no copy of the text) plus a plain table mapping each record to its FTS row, so a record's
 * entry is found by index when it changes (PostgreSQL: postgres/search.ts). The `scope` column is left empty: queries filter by workspace and object
 * through search_docs, and a token shared by every document made each merge rewrite a doclist as
 * long as the index (indexes built before hold such tokens, unused).
 */

const quote = (t: string) => `"${t.replace(/"/g, '""')}"`;
const clause = (c: SearchClause) =>
  `${c.in === 'exact' ? 'exact' : '{name body exact}'} : (${c.all.map((g) => `(${g.map((t) => quote(t.term) + (t.prefix ? '*' : '')).join(' OR ')})`).join(' AND ')})`;
/** The query as an FTS5 expression over the name, body and exact columns. */
export const fts5 = (q: SearchQuery) => q.any.map((c) => `(${clause(c)})`).join(' OR ');

/** A document of the workspace holding the word, in any column the search matches. */
const liveDoc = (workspaceId: number, term: string) => sql`
  SELECT 1 FROM search_index JOIN search_docs d ON d.doc_id = search_index.rowid
  WHERE search_index MATCH ${`{name body exact} : "${term.replace(/"/g, '""')}"`} AND d.workspace_id = ${workspaceId}
  LIMIT 1`;

export const sqliteSearch: SearchBackend = {
  async createTables(db) {
    await sql`CREATE TABLE search_docs (
      doc_id INTEGER PRIMARY KEY,
      workspace_id INTEGER NOT NULL,
      object_id INTEGER NOT NULL,
      record_id TEXT NOT NULL,
      UNIQUE (workspace_id, object_id, record_id))`.execute(db);
    await sql`CREATE VIRTUAL TABLE search_index USING fts5(
      scope, name, body, exact,
      tokenize = 'unicode61 remove_diacritics 2',
      prefix = '3')`.execute(db);
    await sql`CREATE VIRTUAL TABLE search_vocab USING fts5vocab(search_index, 'row')`.execute(db);
  },

  async dropText(db) {
    // The index without its copy of the text (FTS5's content table, about 40% of its bytes): the
    // text is the records' own, and a contentless-delete index still deletes and replaces rows.
    // Documents written before move over as they are indexed (their text read from the old copy),
    // without the scope tokens of old indexes. Reads the whole index once.
    const made = await sql<{ sql: string }>`SELECT sql FROM sqlite_schema WHERE name = 'search_index'`.execute(db);
    if (/contentless_delete/.test(made.rows[0]?.sql ?? '')) return;
    await sql`CREATE VIRTUAL TABLE search_index_new USING fts5(
      scope, name, body, exact,
      tokenize = 'unicode61 remove_diacritics 2',
      prefix = '3',
      content = '', contentless_delete = 1)`.execute(db);
    await sql`INSERT INTO search_index_new (rowid, scope, name, body, exact) SELECT id, '', c1, c2, c3 FROM search_index_content ORDER BY id`.execute(db);
    await sql`DROP TABLE search_vocab`.execute(db);
    await sql`DROP TABLE search_index`.execute(db);
    await sql`ALTER TABLE search_index_new RENAME TO search_index`.execute(db);
    await sql`CREATE VIRTUAL TABLE search_vocab USING fts5vocab(search_index, 'row')`.execute(db);
  },

  async upsert(db, docs, fresh = false, words = docs) {
    // The words first: a multi-row statement after the text would make FTS5 write its pending documents out early.
    await writeTerms(db, words);
    if (fresh && docs.length) {
      // New records: their documents take the next ids, given here rather than read back (RETURNING
      // costs more than the insert). The caller's transaction already holds the write lock.
      const { next } = (await sql<{ next: number }>`SELECT coalesce(max(doc_id), 0) + 1 AS next FROM search_docs`.execute(db)).rows[0]!;
      await bulkInsert(
        db,
        'search_docs',
        ['doc_id', 'workspace_id', 'object_id', 'record_id'],
        docs.map((d, j) => [next + j, d.workspaceId, d.objectId, d.recordId]),
      );
      // A stray index row at or past these ids (none should exist) must not block every create; not
      // INSERT OR REPLACE, which makes FTS5 write its pending documents out before each row. Looked
      // for in FTS5's own table of document sizes (by its primary key): through the index it costs a scan.
      if ((await sql`SELECT id FROM search_index_docsize WHERE id >= ${next} LIMIT 1`.execute(db)).rows.length) await sql`DELETE FROM search_index WHERE rowid >= ${next}`.execute(db);
      // The text goes in last and in as few statements as possible (6,000 documents each: 30,000
      // parameters). FTS5 writes its pending documents out as a new segment whenever a statement
      // that may roll back on its own begins (any multi-row statement, on any table): a segment per
      // 300 documents meant a million documents spent most of their time merging segments (index
      // builds fell from 16,000 to 1,000 documents/s on the way to a million).
      await bulkInsert(
        db,
        'search_index',
        ['rowid', 'scope', 'name', 'body', 'exact'],
        docs.map((d, j) => [next + j, '', d.name, d.body, d.exact]),
        { perStatement: 6000 },
      );
      return;
    }
    // Every record mapped to its document id first (300 a statement), then the old text deleted and
    // the new inserted, each in as few statements as possible. Not INSERT OR REPLACE: FTS5 writes
    // its pending documents out before each row it replaces (a bulk update of 9,000 records took 2-3
    // times as long), and before any multi-row statement (a mapping statement between two of text
    // cut a segment each time).
    const ids: number[] = [];
    for (let i = 0; i < docs.length; i += 300) {
      const part = docs.slice(i, i + 300);
      const rows = await sql<{ doc_id: number; object_id: number; record_id: string }>`
        INSERT INTO search_docs (workspace_id, object_id, record_id)
        VALUES ${sql.join(part.map((d) => sql`(${d.workspaceId}, ${d.objectId}, ${d.recordId})`))}
        ON CONFLICT (workspace_id, object_id, record_id) DO UPDATE SET record_id = excluded.record_id
        RETURNING doc_id, object_id, record_id`.execute(db);
      const idOf = new Map(rows.rows.map((r) => [`${r.object_id}:${r.record_id}`, r.doc_id]));
      for (const d of part) ids.push(idOf.get(`${d.objectId}:${d.recordId}`)!);
    }
    for (let i = 0; i < ids.length; i += 6000) await sql`DELETE FROM search_index WHERE rowid IN (${sql.join(ids.slice(i, i + 6000))})`.execute(db);
    await bulkInsert(
      db,
      'search_index',
      ['rowid', 'scope', 'name', 'body', 'exact'],
      docs.map((d, j) => [ids[j], '', d.name, d.body, d.exact]),
      { perStatement: 6000 },
    );
  },

  async remove(db, workspaceId, objectId, recordIds) {
    for (let i = 0; i < recordIds.length; i += 500) {
      const chunk = recordIds.slice(i, i + 500);
      const ids = (await db.selectFrom('search_docs').select('doc_id').where('workspace_id', '=', workspaceId).where('object_id', '=', objectId).where('record_id', 'in', chunk).execute()).map(
        (r: { doc_id: number }) => r.doc_id,
      );
      if (!ids.length) continue;
      await sql`DELETE FROM search_index WHERE rowid IN (${sql.join(ids)})`.execute(db);
      await db.deleteFrom('search_docs').where('doc_id', 'in', ids).execute();
    }
  },

  async removeWorkspaceObject(db, workspaceId, objectId) {
    await sql`DELETE FROM search_index WHERE rowid IN (SELECT doc_id FROM search_docs WHERE workspace_id = ${workspaceId} AND object_id = ${objectId})`.execute(db);
    await db.deleteFrom('search_docs').where('workspace_id', '=', workspaceId).where('object_id', '=', objectId).execute();
  },

  async query(db, workspaceId, objectIds, match, limit, exclude) {
    // The workspace and object filters apply to the matched documents (through search_docs), not
    // inside MATCH: a scope token would match every document of the workspace, and intersecting
    // with it costs as much as the whole index.
    // No snippets here: the index keeps no copy of the text (contentless); the service builds them
    // from the records it reads for the hits anyway (snippetOf).
    const r = await sql<SearchHit>`
      SELECT d.object_id, d.record_id, bm25(search_index, 0.0, 10.0, 2.0, 6.0) AS rank
      FROM search_index JOIN search_docs d ON d.doc_id = search_index.rowid
      WHERE search_index MATCH ${fts5(match)}
        AND d.workspace_id = ${workspaceId}
        ${objectIds.length ? sql`AND d.object_id IN (${sql.join(objectIds)})` : sql``}
        ${exclude.length ? sql`AND d.record_id NOT IN (${sql.join(exclude)})` : sql``}
      ORDER BY rank
      LIMIT ${limit}`.execute(db);
    return r.rows;
  },

  ...termMethods(liveDoc),

  async createTermTable(db) {
    await sql`CREATE TABLE search_terms (
      workspace_id INTEGER NOT NULL,
      term TEXT NOT NULL,
      PRIMARY KEY (workspace_id, term)) WITHOUT ROWID`.execute(db);
    // The words already indexed, by workspace: every occurrence in the index (fts5vocab 'instance')
    // joined to its document's workspace. Once, at the upgrade; it reads the whole index.
    await sql`CREATE VIRTUAL TABLE temp.search_vocab_instance USING fts5vocab(main, search_index, 'instance')`.execute(db);
    try {
      await sql`INSERT OR IGNORE INTO search_terms (workspace_id, term)
        SELECT d.workspace_id, v.term FROM temp.search_vocab_instance v JOIN search_docs d ON d.doc_id = v.doc
        WHERE length(v.term) > 1 AND v.term NOT GLOB '*[0-9]*'`.execute(db);
    } finally {
      await sql`DROP TABLE temp.search_vocab_instance`.execute(db);
    }
  },
};
