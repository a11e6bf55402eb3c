import type { Kysely } from 'kysely';
import type { Db } from '../db/database.js';
import type { SearchDoc } from '../db/search.js';

/**
 * Each workspace's indexed words by first letter, for typo tolerance ("Jhon" finds John). A
 * workspace's own words only (the search backend keeps them per workspace): with one vocabulary for
 * all, near names written in another workspace crowded a workspace's own word out of the near words
 * offered. Reading them walks every word of the workspace with that letter: tens of ms for a large
 * workspace, on every typo-tolerant query. So they are kept in memory once read, per workspace and
 * letter:
 * - words this process indexes are added as they are written (noteIndexed);
 * - a commit by another connection (a CLI import, another server on the same file: SQLite's
 *   data_version changes) drops them all, to be read again when next needed;
 * - words of deleted records stay until a search finds them among more near words than it offers
 *   (search.ts): then they are pruned, from the table and from here (forgetWords);
 * - at most 1,000,000 words are kept: the letters used longest ago go first.
 * Words holding digits are left out, as the typo-tolerant search ignores them (ids, codes, tags).
 */

/** Words read for one workspace and letter, at most (the first ones in order). */
const MAX_SCAN = 200_000;
const MAX_KEPT = 1_000_000;

interface Letter {
  words: Set<string>;
  /** When the scan stopped at MAX_SCAN: its last term; later words are not offered (as the scan would not). */
  bound: string | null;
}

interface Vocabulary {
  /** data_version of the connection when the words were read */
  version: number;
  /** By workspace and letter (`${workspaceId}:${letter}`), in use order, least recent first. */
  byLetter: Map<string, Letter>;
  kept: number;
  /** Documents noted so far: a scan during which some were written is not kept (it may miss them). */
  writes: number;
}

const vocabularies = new WeakMap<Db, Vocabulary>();
const hasDigit = /\d/;

function current(db: Db): Vocabulary | null {
  const version = db.dataVersion();
  if (version === null) return null;
  let v = vocabularies.get(db);
  if (!v || v.version !== version) vocabularies.set(db, (v = { version, byLetter: new Map(), kept: 0, writes: v?.writes ?? 0 }));
  return v;
}

/** The workspace's indexed words (without digits) that start with `letter`. */
export async function wordsStartingWith(db: Db, k: Kysely<any>, workspaceId: number, letter: string): Promise<Iterable<string>> {
  const v = current(db);
  const key = `${workspaceId}:${letter}`;
  const known = v?.byLetter.get(key);
  if (v && known) {
    // Most recently used last.
    v.byLetter.delete(key);
    v.byLetter.set(key, known);
    return known.words;
  }
  const writes = v?.writes;
  const terms = await db.search.terms(k, letter, String.fromCodePoint(letter.codePointAt(0)! + 1), MAX_SCAN, workspaceId);
  const words = new Set(terms.filter((t) => !hasDigit.test(t)));
  // Kept only if nothing changed meanwhile: no commit by another connection, no write noted here.
  if (v && vocabularies.get(db) === v && db.dataVersion() === v.version && v.writes === writes) {
    v.byLetter.set(key, { words, bound: terms.length >= MAX_SCAN ? terms[terms.length - 1]! : null });
    v.kept += words.size;
    for (const [l, old] of v.byLetter) {
      if (v.kept <= MAX_KEPT || l === key) break;
      v.byLetter.delete(l);
      v.kept -= old.words.size;
    }
  }
  return words;
}

/** Words of documents just written by this process, for the letters already read. */
export function noteIndexed(db: Db, docs: SearchDoc[], fold: (s: string) => string): void {
  const v = vocabularies.get(db);
  if (!v) return;
  v.writes += docs.length;
  if (v.byLetter.size === 0) return;
  for (const d of docs)
    for (const text of [d.name, d.body, d.exact])
      for (const w of fold(text).split(/[^\p{L}\p{N}]+/u)) {
        if (!w || hasDigit.test(w)) continue;
        const letter = v.byLetter.get(`${d.workspaceId}:${String.fromCodePoint(w.codePointAt(0)!)}`);
        if (!letter || (letter.bound !== null && w > letter.bound) || letter.words.has(w)) continue;
        letter.words.add(w);
        v.kept++;
      }
}

/** Words pruned from a workspace's list (no document holds them any more): no longer offered. */
export function forgetWords(db: Db, workspaceId: number, words: string[]): void {
  const v = vocabularies.get(db);
  if (!v) return;
  for (const w of words) {
    const letter = v.byLetter.get(`${workspaceId}:${String.fromCodePoint(w.codePointAt(0)!)}`);
    if (letter?.words.delete(w)) v.kept--;
  }
}
