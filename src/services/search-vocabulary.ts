import type { Kysely } from 'kysely';
import type { Db } from '../db/database.js';
import type { SearchDoc } from '../db/search-sqlite.js';

/**
 * The index's words by first letter, for typo tolerance ("Jhon" finds John). Reading them from the
 * index (FTS5's vocabulary) walks every term with that letter: 30 ms at 300,000 contacts, 100–300 ms
 * at a million, on every typo-tolerant query. So they are kept in memory once read:
 * - words this process indexes are added as they are written (noteIndexed);
 * - a commit by another connection (a CLI import, another server on the same file: SQLite's
 *   data_version changes) drops them all, to be read again when next needed;
 * - words of deleted records stay until then, which is harmless: a candidate that matches nothing.
 * Words holding digits are left out, as the typo-tolerant search ignores them (ids, codes, tags).
 */

const MAX_WORDS = 200_000;

interface Vocabulary {
  /** data_version of the connection when the words were read */
  version: number;
  byLetter: Map<string, Set<string>>;
}

const vocabularies = new WeakMap<Db, Vocabulary>();
const hasDigit = /\d/;

/** What another connection committed is seen through data_version (null: not SQLite, nothing cached). */
function dataVersion(db: Db): number | null {
  return db.sqlite ? (db.sqlite.pragma('data_version', { simple: true }) as number) : null;
}

function current(db: Db): Vocabulary | null {
  const version = dataVersion(db);
  if (version === null) return null;
  let v = vocabularies.get(db);
  if (!v || v.version !== version) vocabularies.set(db, (v = { version, byLetter: new Map() }));
  return v;
}

/** The index's words (without digits) that start with `letter`, at most 200,000. */
export async function wordsStartingWith(db: Db, k: Kysely<any>, letter: string): Promise<Iterable<string>> {
  const next = String.fromCodePoint(letter.codePointAt(0)! + 1);
  const v = current(db);
  const cached = v?.byLetter.get(letter);
  if (cached) return cached;
  const words = new Set((await db.search.terms(k, letter, next, MAX_WORDS)).filter((t) => !hasDigit.test(t)));
  // Read after the scan: a commit by another connection meanwhile must not be cached as seen.
  if (v && dataVersion(db) === v.version) v.byLetter.set(letter, words);
  return words;
}

/** Words of documents just written by this process, for the letters already read. */
export function noteIndexed(db: Db, docs: SearchDoc[], fold: (s: string) => string): void {
  const v = vocabularies.get(db);
  if (!v || v.byLetter.size === 0) return;
  for (const d of docs)
    for (const text of [d.name, d.body, d.exact])
      for (const w of fold(text).split(/[^\p{L}\p{N}]+/u)) {
        if (!w || hasDigit.test(w)) continue;
        const set = v.byLetter.get(String.fromCodePoint(w.codePointAt(0)!));
        if (set && set.size < MAX_WORDS) set.add(w);
      }
}
