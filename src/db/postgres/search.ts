import { sql } from 'kysely';
import { jsonChunks } from '../bulk-insert.js';
import { highlight, type SearchBackend, type SearchClause, type SearchDoc, type SearchQuery, termMethods, termsOf, writeTerms } from '../search.js';

/**
 * Full-text search on PostgreSQL: one row per record in search_docs, its text and a tsvector of the
 * words wordsOf/termsOf split and fold in JavaScript (the same words FTS5's unicode61 tokenizer
 * makes on SQLite, so both dialects find the same records), under a GIN index. Weights: A the
 * name, B the other text, C the identifiers (email addresses, phone digits, domains), ranked like
 * SQLite's bm25 weights (10, 2, 6). Written in the record's transaction, as on SQLite.
 */

/**
 * A word as a lexeme: PostgreSQL refuses lexemes past 2,047 bytes (a text field may hold a word of
 * 65,535 characters), so longer words keep their first 2,047 bytes (whole characters), in the
 * document and in the query alike: such a word is still found by its beginning.
 */
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MAX_LEXEME_BYTES = 2047;
export function lexeme(word: string): string {
  if (word.length * 3 <= MAX_LEXEME_BYTES) return word;
  const bytes = encoder.encode(word);
  if (bytes.length <= MAX_LEXEME_BYTES) return word;
  // Cut at a character boundary (a UTF-8 continuation byte is 10xxxxxx).
  let end = MAX_LEXEME_BYTES;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return decoder.decode(bytes.subarray(0, end));
}

/** A tsvector is at most 1 MiB: a document's words stop short of it (the first ones are kept). */
const MAX_VECTOR_BYTES = 1_000_000;

/** A tsvector literal of words at one weight: 'word':1A 'other':2A (positions only to carry the weight). */
function vector(words: string[], weight: 'A' | 'B' | 'C', budget: { left: number }): string {
  const out: string[] = [];
  for (const w of words) {
    const item = `'${w.replace(/'/g, "''")}':${Math.min(out.length + 1, 16383)}${weight}`;
    // Stored: the lexeme, its position and an entry of 4 bytes (the literal's bytes, give or take).
    budget.left -= Buffer.byteLength(item) + 4;
    if (budget.left < 0) break;
    out.push(item);
  }
  return out.join(' ');
}

/** The document's tsvector: each column's words once, at its weight (a word in two columns carries both). */
function docVector(d: SearchDoc): string {
  const budget = { left: MAX_VECTOR_BYTES };
  const words = (text: string) => [...new Set(termsOf(text).map(lexeme))];
  return [vector(words(d.name), 'A', budget), vector(words(d.body), 'B', budget), vector(words(d.exact), 'C', budget)].filter(Boolean).join(' ');
}

/** Each document's tsvector text, computed once (prepare computes it ahead of the write transaction). */
const vectors = new WeakMap<SearchDoc, string>();
function vectorOf(d: SearchDoc): string {
  let v = vectors.get(d);
  if (v === undefined) vectors.set(d, (v = docVector(d)));
  return v;
}

/** The query as tsquery text: words quoted, prefixes with :*, the identifiers' weight C alone for `exact`. */
function tsquery(q: SearchQuery): string {
  const term = (c: SearchClause, t: { term: string; prefix: boolean }) => {
    const w = lexeme(termsOf(t.term).join(''));
    return `'${w.replace(/'/g, "''")}':${t.prefix ? '*' : ''}${c.in === 'exact' ? 'C' : ''}`;
  };
  const clause = (c: SearchClause) => c.all.map((g) => `(${g.map((t) => term(c, t)).join(' | ')})`).join(' & ');
  return q.any.map((c) => `(${clause(c)})`).join(' | ');
}

/**
 * A snippet of `text` around the words the query matched, marked with \u0002 and \u0003 as FTS5's
 * snippet() marks them: at most 12 words, '…' where the text was cut.
 */
function snippet(text: string, q: SearchQuery): { text: string; hit: boolean } {
  const terms = q.any.flatMap((c) => c.all.flat()).map((t) => ({ ...t, term: termsOf(t.term).join('') }));
  const parts = text.split(/([^\p{L}\p{N}]+)/u);
  const words: number[] = [];
  const hits: boolean[] = [];
  parts.forEach((p, i) => {
    if (i % 2 || !p) return;
    const w = termsOf(p).join('');
    words.push(i);
    hits.push(terms.some((t) => (t.prefix ? w.startsWith(t.term) : w === t.term)));
  });
  const first = hits.indexOf(true);
  if (first < 0) return { text: parts.slice(0, (words[11] ?? parts.length - 1) + 1).join('') + (words.length > 12 ? '…' : ''), hit: false };
  const from = Math.max(0, Math.min(first - 2, words.length - 12));
  const to = Math.min(words.length, from + 12);
  let out = from > 0 ? '…' : '';
  for (let j = from; j < to; j++) {
    const i = words[j]!;
    out += (hits[j] ? `\u0002${parts[i]!}\u0003` : parts[i]!) + (j < to - 1 ? parts[i + 1]! : '');
  }
  return { text: out + (to < words.length ? '…' : ''), hit: true };
}

/** A document of the workspace holding the word, in any column the search matches. */
const liveDoc = (workspaceId: number, term: string) => sql`
  SELECT 1 FROM search_docs WHERE workspace_id = ${workspaceId} AND tsv @@ CAST(${`'${term.replace(/'/g, "''")}'`} AS tsquery) LIMIT 1`;

export const postgresSearch: SearchBackend = {
  async createTables(db) {
    await sql`CREATE TABLE search_docs (
      doc_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      workspace_id bigint NOT NULL,
      object_id bigint NOT NULL,
      record_id text NOT NULL,
      name text NOT NULL,
      body text NOT NULL,
      exact text NOT NULL,
      tsv tsvector NOT NULL,
      UNIQUE (workspace_id, object_id, record_id))`.execute(db);
    await sql`CREATE INDEX search_docs_tsv ON search_docs USING gin (tsv)`.execute(db);
  },

  async upsert(db, docs) {
    await writeTerms(db, docs);
    // The documents as one JSON parameter (as bulkInsert sends rows): the tsvector literal is read
    // by the column's type, as CAST(text AS tsvector) reads it. A batch in one statement, up to
    // JSON_STATEMENT_BYTES of text (a document's vector alone may reach 1 MB).
    for (const json of jsonChunks(docs.map((d) => ({ workspace_id: d.workspaceId, object_id: d.objectId, record_id: d.recordId, name: d.name, body: d.body, exact: d.exact, tsv: vectorOf(d) }))))
      await sql`INSERT INTO search_docs (workspace_id, object_id, record_id, name, body, exact, tsv)
        SELECT workspace_id, object_id, record_id, name, body, exact, tsv FROM json_populate_recordset(NULL::search_docs, ${json}::json)
        ON CONFLICT (workspace_id, object_id, record_id) DO UPDATE
        SET name = excluded.name, body = excluded.body, exact = excluded.exact, tsv = excluded.tsv`.execute(db);
  },

  prepare(docs) {
    for (const d of docs) vectorOf(d);
  },

  async remove(db, workspaceId, objectId, recordIds) {
    for (let i = 0; i < recordIds.length; i += 500)
      await db
        .deleteFrom('search_docs')
        .where('workspace_id', '=', workspaceId)
        .where('object_id', '=', objectId)
        .where('record_id', 'in', recordIds.slice(i, i + 500))
        .execute();
  },

  async removeWorkspaceObject(db, workspaceId, objectId) {
    await db.deleteFrom('search_docs').where('workspace_id', '=', workspaceId).where('object_id', '=', objectId).execute();
  },

  async query(db, workspaceId, objectIds, match, limit, exclude) {
    // Rank normalisation 1 (divided by 1 + log of the document's length), as bm25 weighs length:
    // the whole name "Vortex" before one word of "Vortex Global Logistics …".
    const r = await sql<{ object_id: number; record_id: string; rank: number; name: string; body: string }>`
      SELECT object_id, record_id, -ts_rank('{0.0, 0.6, 0.2, 1.0}', tsv, q, 1) AS rank, name, body
      FROM search_docs, CAST(${tsquery(match)} AS tsquery) AS q
      WHERE tsv @@ q AND workspace_id = ${workspaceId}
        ${objectIds.length ? sql`AND object_id IN (${sql.join(objectIds)})` : sql``}
        ${exclude.length ? sql`AND record_id NOT IN (${sql.join(exclude)})` : sql``}
      ORDER BY rank, doc_id
      LIMIT ${limit}`.execute(db);
    // The snippet of the column that matched: the name if it did, else the other text, else the name.
    return r.rows.map(({ name, body, ...h }) => {
      const n = snippet(name, match);
      const b = n.hit ? n : snippet(body, match);
      return { ...h, snippet: highlight((b.hit ? b : n).text) };
    });
  },

  ...termMethods(liveDoc),

  async createTermTable(db) {
    await sql`CREATE TABLE search_terms (
      workspace_id bigint NOT NULL,
      term text COLLATE "C" NOT NULL,
      PRIMARY KEY (workspace_id, term))`.execute(db);
    // The words already indexed, by workspace (as SQLite fills it from FTS5's vocabulary): every
    // lexeme of every document, but words of one character or holding a digit (wordsOf leaves those out).
    await sql`INSERT INTO search_terms (workspace_id, term)
      SELECT DISTINCT d.workspace_id, w.term FROM search_docs d, unnest(tsvector_to_array(d.tsv)) AS w(term)
      WHERE length(w.term) > 1 AND w.term !~ '[0-9]'
      ON CONFLICT DO NOTHING`.execute(db);
  },
};
