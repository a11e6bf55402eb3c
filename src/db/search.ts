import { type Kysely, type RawBuilder, sql } from 'kysely';
import { bulkInsert } from './bulk-insert.js';

/**
 * Full-text search, as the services see it: documents in, hits out, a query as a structure. Each
 * dialect implements the backend (sqlite/search.ts: FTS5; postgres/search.ts: tsvector), and both
 * split and fold words the same way (wordsOf, termsOf), so a search finds the same records on both.
 */

/** A word of the query: matched whole, or as the beginning of a word (`prefix`). */
export interface SearchTerm {
  term: string;
  prefix: boolean;
}

/**
 * Where a clause looks: `text` is the name, the other text fields and the identifiers; `exact`
 * the identifiers alone (email addresses, phone digits, domains).
 */
export interface SearchClause {
  in: 'text' | 'exact';
  /** Every group must match, by any of its terms. */
  all: SearchTerm[][];
}

/** A document matches when any clause does. */
export interface SearchQuery {
  any: SearchClause[];
}

export interface SearchDoc {
  workspaceId: number;
  objectId: number;
  recordId: string;
  /** The record's display name: weighs most. */
  name: string;
  /** The other text fields. */
  body: string;
  /** Normalised identifiers: email parts, phone digits, domains. */
  exact: string;
  /**
   * Made from the text above once, by prepareDocs ahead of the write or by upsert: the words for
   * the word list (wordsOfDoc), and the backend's own form of the document where it has one
   * (PostgreSQL: its tsvector text).
   */
  words?: string[];
  indexed?: string;
}

export interface SearchHit {
  object_id: number;
  record_id: string;
  rank: number;
  /** Absent when the backend keeps no text (SQLite's contentless index): the service builds it from the record (snippetOf). */
  snippet?: string;
}

export interface SearchBackend {
  createTables(db: Kysely<any>): Promise<void>;
  /**
   * `fresh`: the records are new (created in this transaction): none has a document yet. `words`:
   * the documents whose words go into the word list (default `docs`; a rewrite lists only what changed).
   */
  upsert(db: Kysely<any>, docs: SearchDoc[], fresh?: boolean, words?: SearchDoc[]): Promise<void>;
  remove(db: Kysely<any>, workspaceId: number, objectId: number, recordIds: string[]): Promise<void>;
  removeWorkspaceObject(db: Kysely<any>, workspaceId: number, objectId: number): Promise<void>;
  /** Documents of the workspace (of `objectIds`, or all) that match, best first, but those of `exclude`. */
  query(db: Kysely<any>, workspaceId: number, objectIds: number[], match: SearchQuery, limit: number, exclude: string[]): Promise<SearchHit[]>;
  /**
   * A workspace's indexed words (without digits) in [from, to), for typo-tolerant matching: its
   * own only, so that what another workspace writes never changes which near words it is offered.
   */
  terms(db: Kysely<any>, from: string, to: string, max: number, workspaceId: number): Promise<string[]>;
  /** Whether a document of the workspace still holds the word (the word list keeps words of deleted records). */
  hasTerm(db: Kysely<any>, workspaceId: number, term: string): Promise<boolean>;
  /**
   * Removes from the workspace's word list those of `terms` that no document of it holds any more,
   * in the caller's (write) transaction; returns the words removed.
   */
  pruneTerms(db: Kysely<any>, workspaceId: number, terms: string[]): Promise<string[]>;
  /** Migration: the per-workspace word list, filled from the documents already indexed. */
  createTermTable(db: Kysely<any>): Promise<void>;
  /** Migration: the index without a copy of the documents' text, where it kept one (SQLite's FTS5 content table). */
  dropText?(db: Kysely<any>): Promise<void>;
  /**
   * The work on documents that needs no database (PostgreSQL: each one's tsvector text), done
   * ahead of upsert when the caller can (an import prepares its next batch while the previous one
   * is written), so that the write transaction spends its time in the database; the words too
   * (wordsOfDoc). Optional.
   */
  prepare?(docs: SearchDoc[]): void;
}

/**
 * A document's terms (termsOf its name, its body and its identifiers), split and folded once: its
 * words for the word list and, on PostgreSQL, its tsvector are both made from them (the caller keeps
 * them while it needs them: an import's documents once held them all in a WeakMap, whose entries
 * cost every garbage collection).
 */
export function termsOfDoc(d: SearchDoc): [name: string[], body: string[], exact: string[]] {
  return [termsOf(d.name), termsOf(d.body), termsOf(d.exact)];
}

/** A document's words for the word list, from its terms; kept on the document (prepareDocs may make them ahead of the write). */
export function wordsOfDoc(d: SearchDoc, terms?: string[][]): string[] {
  if (d.words) return d.words;
  const words: string[] = [];
  for (const list of terms ?? termsOfDoc(d)) for (const w of list) if (isWord(w) && w.length <= MAX_TERM_LENGTH) words.push(w);
  return (d.words = words);
}

/**
 * Everything about `docs` that upsert computes but needs no database, ahead of the write
 * transaction, where the backend has such work (PostgreSQL: made while the database writes the batch
 * before). Elsewhere the words are made at the write: made ahead, each document's list of words
 * would only wait in memory (an import's batch of them, copied by every garbage collection meanwhile)
 * for the same thread to read it.
 */
export function prepareDocs(backend: SearchBackend, docs: SearchDoc[]): void {
  backend.prepare?.(docs);
}

/**
 * The words of a text as the index's tokenizer (unicode61, diacritics removed) splits and folds
 * them, without words holding digits (ids, codes, phone numbers: typo tolerance ignores them) or of
 * one character.
 */
export function wordsOf(text: string): string[] {
  return termsOf(text).filter(isWord);
}
const isWord = (term: string) => term.length > 1 && !/\d/.test(term);

/**
 * The words of a text as the index's tokenizer (unicode61, diacritics removed) splits and folds
 * them, digits included: what a document is indexed by and a query word is matched against.
 */
export function termsOf(text: string): string[] {
  // Most text is ASCII: nothing to decompose (normalising costs more than the rest of the split),
  // and its letters and digits are [a-z0-9] once lowercased: split without Unicode classes (a
  // third of the split's cost in an import's profile).
  if (!/[^\x00-\x7f]/.test(text))
    return text
      .toLowerCase()
      .split(/[^a-z0-9]+/)
      .filter(Boolean);
  return text
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean);
}

/**
 * Each workspace's words go into search_terms (workspace, word), in the write's transaction, so a
 * workspace's vocabulary is read by index, apart from every other workspace's (a shared vocabulary
 * let 34 near names written in one workspace crowd the near words of another out of its
 * typo-tolerant search). Words of deleted (or rewritten) records stay until a typo-tolerant search
 * finds them crowding its near words, and prunes them (hasTerm, pruneTerms: counting each word's
 * documents would cost every write a read of the text it replaces).
 */
/** The longest word the typo-tolerant vocabulary keeps: typo tolerance never offers a longer one (and PostgreSQL's index of the list holds about 2,700 bytes). */
const MAX_TERM_LENGTH = 100;

export async function writeTerms(db: Kysely<any>, docs: SearchDoc[]): Promise<void> {
  // Each workspace's words once (a batch's documents share most of theirs: its 5,000 contacts hold
  // a few dozen distinct words), without a joined string made per word of every document.
  const seen = new Map<number, Set<string>>();
  const rows: [number, string][] = [];
  for (const d of docs) {
    let words = seen.get(d.workspaceId);
    if (!words) seen.set(d.workspaceId, (words = new Set()));
    for (const w of wordsOfDoc(d)) {
      if (words.has(w)) continue;
      words.add(w);
      rows.push([d.workspaceId, w]);
    }
  }
  await bulkInsert(db, 'search_terms', ['workspace_id', 'term'], rows, { ignoreConflicts: true, perStatement: 5000 });
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

/**
 * A hit's snippet, as both backends give it: of the column that matched (the name if it did, else
 * the other text, else the name), highlighted.
 */
export function snippetOf(name: string, body: string, q: SearchQuery): string {
  const n = snippet(name, q);
  const b = n.hit ? n : snippet(body, q);
  return highlight((b.hit ? b : n).text);
}

/** Record text is escaped (a client may render snippets as HTML); only our <mark> tags (\u0002, \u0003) are markup. */
export function highlight(s: string): string {
  return s
    .replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!)
    .replace(/\u0002/g, '<mark>')
    .replace(/\u0003/g, '</mark>');
}

/**
 * The word list's part of a backend, the same on both dialects but for `liveDoc`: the query that
 * finds a document of the workspace still holding a word (FTS5 MATCH, or a tsvector).
 */
export function termMethods(
  liveDoc: (workspaceId: number, term: string) => RawBuilder<unknown>,
  /**
   * Takes the right to prune the workspace's words in the caller's transaction, without waiting:
   * false while a write that may hold them is uncommitted (PostgreSQL: a write's INSERT of a word
   * already listed takes no lock, so a prune's check could miss its uncommitted document and delete
   * the word it needs). Absent where writes are serialised anyway (SQLite's one writer).
   */
  mayPrune?: (db: Kysely<any>, workspaceId: number) => Promise<boolean>,
): Pick<SearchBackend, 'terms' | 'hasTerm' | 'pruneTerms'> {
  return {
    async terms(db, from, to, max, workspaceId) {
      // search_terms.term compares in byte order on both (SQLite's BINARY, PostgreSQL's "C" column).
      const r = await sql<{ term: string }>`
        SELECT term FROM search_terms WHERE workspace_id = ${workspaceId} AND term >= ${from} AND term < ${to} ORDER BY term LIMIT ${max}`.execute(db);
      return r.rows.map((x) => x.term);
    },
    async hasTerm(db, workspaceId, term) {
      return (await liveDoc(workspaceId, term).execute(db)).rows.length > 0;
    },
    async pruneTerms(db, workspaceId, terms) {
      const removed: string[] = [];
      if (!terms.length || (mayPrune && !(await mayPrune(db, workspaceId)))) return removed;
      // Checked again here, in the write transaction: a record written since the caller's check may hold the word.
      for (const term of terms) {
        const r = await sql`DELETE FROM search_terms WHERE workspace_id = ${workspaceId} AND term = ${term} AND NOT EXISTS (${liveDoc(workspaceId, term)})`.execute(db);
        if (Number(r.numAffectedRows ?? 0) > 0) removed.push(term);
      }
      return removed;
    },
  };
}
