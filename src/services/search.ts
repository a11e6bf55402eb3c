import type { Kysely } from 'kysely';
import type { Db } from '../db/database.js';
import { prepareDocs, type SearchDoc, type SearchHit, type SearchQuery, type SearchTerm, snippetOf } from '../db/search.js';
import type { Ctx } from './context.js';
import { displayColumns, displayNameOfRow, relationTargetNames, withRelationNames } from './display-names.js';
import { validationError } from './errors.js';
import { decodeValue, type FieldDef } from './field-types.js';
import { phoneSearchForms } from './phone.js';
import { rowBatches } from './record-tables.js';
import { getSchema, type ObjectDef, resolveObject, type WorkspaceSchema } from './schema.js';
import { forgetWords, noteIndexed, wordsStartingWith } from './search-vocabulary.js';
import { nextTurn, TURN_ROWS } from './work.js';

/**
 * Full-text search across objects: one ranked list of hits, each with its object, id, display
 * name and a highlighted snippet. Prefix matching ("alic" finds Alice), typo tolerance ("Jhon"
 * finds John: terms one or two edits away, tried when exact and prefix matches run short),
 * diacritics folded ("muller" finds Müller), emails, phone numbers in any formatting and domains.
 * The index is written in the same transaction as every record write.
 */

export const MAX_SEARCH_LIMIT = 100;

/** Lower-case, diacritics removed: the same folding as the index tokenizer. */
export function fold(s: string): string {
  return s
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase();
}

/** Domains repeat (everyone at one company, every gmail.com address): each parsed once (a URL costs microseconds). */
const hostCache = new Map<string, string[]>();

function hostForms(value: string): string[] {
  let forms = hostCache.get(value);
  if (!forms) {
    if (hostCache.size >= 10_000) hostCache.clear();
    hostCache.set(value, (forms = parseHostForms(value)));
  }
  return forms;
}

function parseHostForms(value: string): string[] {
  let host = value.trim().toLowerCase();
  try {
    host = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(host) ? host : `https://${host}`).hostname;
  } catch {
    return [];
  }
  host = host.replace(/^www\./, '');
  // "acme.com" is indexed whole (as one token, "acmecom") so a domain query matches it exactly.
  return [host.replace(/[^a-z0-9]/g, '')];
}

const TEXTUAL = new Set(['TEXT', 'EMAIL', 'PHONE', 'URL']);

/**
 * Relation fields pointing at these objects put the related record's name into the record's
 * document: a contact is found by its company's name. Only companies: a name that many records
 * share and people search by; each rename rewrites the documents of the records linked to it.
 */
const NAMED_TARGETS = new Set(['companies']);

const namedRelations = (obj: ObjectDef) => obj.fields.filter((f) => f.type === 'RELATION' && NAMED_TARGETS.has(f.target!));

/** The columns docOf reads: a write that changes none of them leaves the record's document as it was. */
export const docColumns = (obj: ObjectDef) => obj.fields.filter((f) => f.name === 'id' || (!f.readOnly && TEXTUAL.has(f.type)) || NAMED_TARGETS.has(f.target!)).map((f) => f.column);

/**
 * The search document of a record, from its stored row. `related`: names of the records its
 * relation fields point at (by id), written into the body.
 */
export function docOf(obj: ObjectDef, workspaceId: number, row: Record<string, unknown>, related?: Map<string, string>): SearchDoc {
  const plan = docPlan(obj);
  const name = displayNameOfRow(obj, row, { stored: true, ifEmpty: '' });
  const body: string[] = [];
  const exact: string[] = [];
  for (const f of plan.textual) {
    const v = row[f.column];
    if (typeof v !== 'string' || v === '') continue;
    if (f.inBody) body.push(v);
    if (f.type === 'PHONE') exact.push(...phoneSearchForms(v));
    else if (f.type === 'EMAIL') exact.push(...hostForms(v.split('@')[1] ?? ''), v.replace(/[^a-z0-9]/gi, '').toLowerCase());
    else if (f.type === 'URL' || f.domain) exact.push(...hostForms(v));
  }
  if (related)
    for (const f of plan.named) {
      const n = related.get(row[f.column] as string);
      if (n) body.push(n);
    }
  return { workspaceId, objectId: obj.id, recordId: row.id as string, name, body: body.join(' \n '), exact: exact.join(' ') };
}

const isDomainField = (f: FieldDef) => f.type === 'TEXT' && /domain/.test(f.name);

/** What docOf reads of an object's fields, worked out once an object (a schema change makes new ObjectDefs), not once a row. */
const docPlans = new WeakMap<ObjectDef, { textual: { column: string; type: string; inBody: boolean; domain: boolean }[]; named: FieldDef[] }>();
function docPlan(obj: ObjectDef) {
  let plan = docPlans.get(obj);
  if (!plan) {
    const display = new Set(obj.displayFields);
    const textual = obj.fields.filter((f) => !f.readOnly && TEXTUAL.has(f.type)).map((f) => ({ column: f.column, type: f.type, inBody: !display.has(f.name), domain: isDomainField(f) }));
    docPlans.set(obj, (plan = { textual, named: namedRelations(obj) }));
  }
  return plan;
}

/** Names of the records that rows' named relation fields point at (stored rows: by column), by id. */
async function relatedNames(k: Kysely<any>, workspaceId: number, schema: WorkspaceSchema | undefined, obj: ObjectDef, rows: Record<string, unknown>[]): Promise<Map<string, string> | undefined> {
  const fields = namedRelations(obj);
  if (!schema || fields.length === 0) return undefined;
  const byTarget = await relationTargetNames(k, workspaceId, schema, fields, rows, (f) => f.column);
  return new Map([...byTarget.values()].flatMap((m) => [...m]));
}

/**
 * Called by the records service inside its write transaction; `docs`: the rows' documents when the
 * caller made them ahead (documentsOf). `changed`: when the rows' documents are rewritten because
 * these columns (and no others) changed: only their words can be new to the workspace's word list
 * (every word of a stored document is listed, and a prune keeps the words a document holds), so
 * only theirs are listed again. Where they make the name or a related record's name, the whole
 * documents' words are (a name's words depend on its other parts).
 */
export async function indexRows(
  trx: Kysely<any>,
  db: Db,
  obj: ObjectDef,
  workspaceId: number,
  rows: Record<string, unknown>[],
  fresh = false,
  schema?: WorkspaceSchema,
  docs?: SearchDoc[],
  changed?: Set<string>,
): Promise<void> {
  if (!rows.length) return;
  if (!docs) {
    const related = await relatedNames(trx, workspaceId, schema, obj, rows);
    docs = rows.map((r) => docOf(obj, workspaceId, r, related));
  }
  await db.search.upsert(trx, docs, fresh, changed && wordsOfChanged(obj, workspaceId, rows, changed));
  noteIndexed(db, docs, fold);
}

/** Documents of only the changed columns' values (see indexRows), or undefined where the whole documents' words are needed. */
function wordsOfChanged(obj: ObjectDef, workspaceId: number, rows: Record<string, unknown>[], changed: Set<string>): SearchDoc[] | undefined {
  const whole = [...displayColumns(obj), ...namedRelations(obj).map((f) => f.column)];
  if (whole.some((c) => c !== 'id' && changed.has(c))) return undefined;
  const seen = new Set<string>();
  const out: SearchDoc[] = [];
  for (const r of rows) {
    const part: Record<string, unknown> = { id: r.id };
    for (const c of changed) part[c] = r[c];
    const d = docOf(obj, workspaceId, part);
    // A bulk update sets the same values on every record: their words once.
    const key = `${d.body}\u0000${d.exact}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(d);
  }
  return out;
}

/**
 * The search documents of rows about to be written (stored form, with their ids), made ahead of
 * the write's transaction with everything upsert computes that needs no database: an import
 * prepares its next batch so while the previous one is written. A turn of the event loop every
 * TURN_ROWS rows, so the write in progress goes on between them.
 */
export async function documentsOf(k: Kysely<any>, db: Db, obj: ObjectDef, workspaceId: number, rows: Record<string, unknown>[], schema: WorkspaceSchema): Promise<SearchDoc[]> {
  const related = await relatedNames(k, workspaceId, schema, obj, rows);
  const docs: SearchDoc[] = [];
  for (let i = 0; i < rows.length; i += TURN_ROWS) {
    if (i) await nextTurn();
    const part = rows.slice(i, i + TURN_ROWS).map((r) => docOf(obj, workspaceId, r, related));
    prepareDocs(db.search, part);
    docs.push(...part);
  }
  return docs;
}

/**
 * Rewrite the documents of the records whose relation fields point at `ids` of `target` (its name
 * changed), in the caller's transaction, a batch at a time through the relation's index.
 */
export async function indexReferrers(trx: Kysely<any>, db: Db, schema: WorkspaceSchema, workspaceId: number, target: ObjectDef, ids: string[]): Promise<number> {
  if (!NAMED_TARGETS.has(target.name) || !ids.length) return 0;
  let written = 0;
  for (const o of schema.objects.values()) {
    for (const f of namedRelations(o)) {
      if (f.target !== target.name) continue;
      for await (const rows of rowBatches(trx, o, docColumns(o), { batch: 2000, where: { column: f.column, ids } })) {
        await indexRows(trx, db, o, workspaceId, rows, false, schema);
        written += rows.length;
      }
    }
  }
  return written;
}

export async function unindexRecords(trx: Kysely<any>, db: Db, obj: ObjectDef, workspaceId: number, ids: string[]): Promise<void> {
  if (ids.length) await db.search.remove(trx, workspaceId, obj.id, ids);
}

/** (Re)build the index of one workspace, object by object, in batches; returns documents written. */
export async function rebuildSearchIndex(
  db: Db,
  workspaceId: number,
  schema: WorkspaceSchema,
  opts: { objects?: string[]; onProgress?: (p: { object: string; done: number }) => void } = {},
): Promise<number> {
  return db.bulk(() => rebuild(db, workspaceId, schema, opts));
}

/**
 * Documents a rebuild writes per transaction. SQLite's index writes the documents of a transaction
 * as one segment (up to its pending limit, raised in bulk mode), and merges segments as they pile
 * up: 5,000 a transaction made 200 segments for a million contacts, each merged several times over.
 */
const REBUILD_BATCH = 50_000;

async function rebuild(db: Db, workspaceId: number, schema: WorkspaceSchema, opts: { objects?: string[]; onProgress?: (p: { object: string; done: number }) => void }): Promise<number> {
  let written = 0;
  const k = db.kysely as unknown as Kysely<any>;
  for (const obj of schema.objects.values()) {
    if (opts.objects && !opts.objects.includes(obj.name)) continue;
    const cols = ['seq', ...docColumns(obj)];
    await k.transaction().execute((trx) => db.search.removeWorkspaceObject(trx, workspaceId, obj.id));
    for await (const rows of rowBatches(k, obj, cols, { batch: REBUILD_BATCH })) {
      const related = await relatedNames(k, workspaceId, schema, obj, rows);
      const docs = rows.map((r) => docOf(obj, workspaceId, r, related));
      await k.transaction().execute((trx) => db.search.upsert(trx, docs, true));
      noteIndexed(db, docs, fold);
      written += rows.length;
      opts.onProgress?.({ object: obj.name, done: written });
    }
  }
  return written;
}

// ---------------------------------------------------------------------------------------------
// Querying

/** Near words offered per query word, at most: each is one more term in the typo-tolerant match. */
const MAX_NEAR = 30;
/** Candidates checked for a live document per query word, at most (the words of deleted records are pruned as found). */
const MAX_CHECKED = 4 * MAX_NEAR;

/**
 * The near words a query word is offered: all of them when they are few. When there are more than
 * MAX_NEAR, the nearest (fewest edits, then its own letters swapped, then the same length), each checked for a
 * document still holding it: the word list keeps the words of deleted records, and 34 deleted near
 * names once crowded a live "john" out of "Jhon"'s words. Those found dead are pruned from the list
 * (best effort: a search does not fail because the prune could not take the write lock).
 */
async function nearestLive(ctx: Ctx, k: Kysely<any>, word: string, candidates: { term: string; d: number }[]): Promise<string[]> {
  if (candidates.length <= MAX_NEAR) return candidates.map((c) => c.term);
  // Among words as near, the same letters in another order first: swapped letters are the commonest typo.
  const letters = (w: string) => [...w].sort().join('');
  const mine = letters(word);
  const rank = (c: { term: string; d: number }) => c.d * 4 + (letters(c.term) === mine ? 0 : 2) + (c.term.length === word.length ? 0 : 1);
  candidates.sort((x, y) => rank(x) - rank(y) || (x.term < y.term ? -1 : 1));
  const ws = ctx.actor.workspaceId;
  const live: string[] = [];
  const dead: string[] = [];
  for (const c of candidates.slice(0, MAX_CHECKED)) {
    if (live.length >= MAX_NEAR) break;
    if (await ctx.db.search.hasTerm(k, ws, c.term)) live.push(c.term);
    else dead.push(c.term);
  }
  if (dead.length) {
    try {
      // Forgotten inside the transaction: no write of this process can add a word back meanwhile.
      await k.transaction().execute(async (trx) => forgetWords(ctx.db, ws, await ctx.db.search.pruneTerms(trx, ws, dead)));
    } catch (e) {
      ctx.log.warn({ err: e }, 'pruning deleted words from the search vocabulary failed; retried by a later search');
    }
  }
  return live;
}

/** Optimal string alignment distance (Damerau-Levenshtein with adjacent transpositions), capped. */
export function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) > cap) return cap + 1;
  const m = a.length;
  const n = b.length;
  let prev2 = new Array<number>(n + 1).fill(0);
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  for (let i = 1; i <= m; i++) {
    const cur = new Array<number>(n + 1);
    cur[0] = i;
    let best = cur[0];
    for (let j = 1; j <= n; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, prev2[j - 2]! + 1);
      cur[j] = v;
      if (v < best) best = v;
    }
    if (best > cap) return cap + 1;
    prev2 = prev;
    prev = cur;
  }
  return prev[n]!;
}

/**
 * Fields a hit carries, where its object has them, so that hits with the same name can be told
 * apart: a contact's company and job title, a deal's amount, stage and company, a company's
 * domain and industry.
 */
export const HIT_FIELDS = ['company', 'job_title', 'amount', 'status', 'domain', 'industry'];

export interface SearchHitOut {
  object: string;
  id: string;
  name: string;
  /** With hitFields: HIT_FIELDS of the record that are not empty; RELATION values as {id, name}. */
  fields?: Record<string, unknown>;
  snippet: string;
  score: number;
  /** 'exact' for exact and prefix matches, 'fuzzy' for matches found with typo tolerance. */
  match: 'exact' | 'fuzzy';
}

export interface SearchOptions {
  q: string;
  objects?: string[] | undefined;
  limit?: number | undefined;
  /** Hits carry `fields` (HIT_FIELDS); agents' surfaces ask for it, REST's contract has no such key. */
  hitFields?: boolean | undefined;
}

export async function searchAll(ctx: Ctx, opts: SearchOptions): Promise<{ data: SearchHitOut[]; query: { q: string; objects: string[]; fuzzy: boolean } }> {
  const q = (opts.q ?? '').trim();
  if (!q) throw validationError('Give a search text: ?q=alice');
  if (q.length > 200) throw validationError('The search text is at most 200 characters');
  const limit = opts.limit ?? 20;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_SEARCH_LIMIT) throw validationError(`limit must be an integer from 1 to ${MAX_SEARCH_LIMIT}`);
  const schema = await getSchema(ctx);
  const objects = opts.objects?.length ? await Promise.all(opts.objects.map((o) => resolveObject(ctx, o))) : [...schema.objects.values()];
  const objectIds = opts.objects?.length ? objects.map((o) => o.id) : [];
  const k = ctx.db.kysely as unknown as Kysely<any>;
  const byId = new Map([...schema.objects.values()].map((o) => [o.id, o]));

  const tokens = fold(q)
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean)
    .slice(0, 10);
  const digits = q.replace(/\D/g, '');
  const phoneLike = /^[+\d\s().\-/]+$/.test(q) && digits.length >= 5;
  const prefix = (term: string): SearchTerm[] => [{ term, prefix: true }];
  let exact: SearchQuery;
  // Digits with separators are a phone number (matched by its digits, in the identifiers); a bare
  // number may also be written in the text (an order number, a postcode, a code in a name).
  if (phoneLike) exact = { any: [{ in: 'exact', all: [prefix(digits)] }, ...(tokens.length === 1 ? [{ in: 'text' as const, all: [prefix(tokens[0]!)] }] : [])] };
  else if (q.includes('@') || (tokens.length > 1 && /^[\p{L}\p{N}.-]+\.[a-z]{2,}$/iu.test(q)))
    // An email or a domain: indexed whole, as one identifier (the phrase of its parts would read the
    // doclists of words every address shares, like "com").
    exact = {
      any: [
        {
          in: 'exact',
          all: [
            prefix(
              fold(q)
                .replace(/^www\./, '')
                .replace(/[^\p{L}\p{N}]/gu, ''),
            ),
          ],
        },
      ],
    };
  else if (!tokens.length) return { data: [], query: { q, objects: objects.map((o) => o.name), fuzzy: false } };
  else exact = { any: [{ in: 'text', all: tokens.map(prefix) }] };

  const hits = await ctx.db.search.query(k, ctx.actor.workspaceId, objectIds, exact, limit, []);
  const found: (SearchHit & { match: 'exact' | 'fuzzy'; by: SearchQuery })[] = hits.map((h) => ({ ...h, match: 'exact' as const, by: exact }));
  let fuzzy = false;
  // Typo tolerance when exact and prefix matching found little (not for emails, domains, phones).
  const identifier = exact.any[0]!.in === 'exact';
  if (found.length < Math.min(limit, 5) && !identifier && tokens.some((t) => t.length >= 4)) {
    const expanded: SearchTerm[][] = [];
    for (const t of tokens) {
      if (t.length < 4) {
        expanded.push(prefix(t));
        continue;
      }
      const cap = t.length >= 8 ? 2 : 1;
      // Candidates share the first letter; words only (tokens with digits are ids, codes, emails' tags).
      const candidates: { term: string; d: number }[] = [];
      for (const term of await wordsStartingWith(ctx.db, k, ctx.actor.workspaceId, String.fromCodePoint(t.codePointAt(0)!))) {
        if (Math.abs(term.length - t.length) > cap || term === t) continue;
        const d = editDistance(t, term, cap);
        if (d <= cap) candidates.push({ term, d });
      }
      const near = await nearestLive(ctx, k, t, candidates);
      expanded.push([...prefix(t), ...near.map((term) => ({ term, prefix: false }))]);
      if (near.length) fuzzy = true;
    }
    if (fuzzy) {
      const by: SearchQuery = { any: [{ in: 'text', all: expanded }] };
      const more = await ctx.db.search.query(
        k,
        ctx.actor.workspaceId,
        objectIds,
        by,
        limit - found.length,
        found.map((h) => h.record_id),
      );
      found.push(...more.map((h) => ({ ...h, match: 'fuzzy' as const, by })));
    }
    fuzzy = found.some((h) => h.match === 'fuzzy');
  }
  // Display names and the fields that tell records apart, read from the records themselves (the
  // index may hold older text for custom fields): one query per object hit, one per related object.
  // Where the index keeps no text (SQLite), the snippets too: from each hit's document, made again.
  const needText = found.some((h) => h.snippet === undefined);
  const shown = new Map<string, { name: string; fields: Record<string, unknown>; doc?: SearchDoc }>();
  const groups = new Map<number, string[]>();
  for (const h of found) groups.set(h.object_id, [...(groups.get(h.object_id) ?? []), h.record_id]);
  for (const [oid, ids] of groups) {
    const o = byId.get(oid);
    if (!o) continue;
    const extra = opts.hitFields ? o.fields.filter((f) => HIT_FIELDS.includes(f.name) && !o.displayFields.includes(f.name)) : [];
    const rows = (await k
      .selectFrom(o.table)
      .select([...new Set([...displayColumns(o), ...extra.map((f) => f.column), ...(needText ? docColumns(o) : [])])])
      .where('id', 'in', ids)
      .execute()) as Record<string, unknown>[];
    const recs = rows.map((r) => {
      const rec: Record<string, unknown> = {};
      for (const f of extra) if (r[f.column] !== null && r[f.column] !== undefined && r[f.column] !== '') rec[f.name] = decodeValue(f, r[f.column]);
      return rec;
    });
    const named = await withRelationNames(k, ctx.actor.workspaceId, schema, o, recs);
    const related = needText ? await relatedNames(k, ctx.actor.workspaceId, schema, o, rows) : undefined;
    rows.forEach((r, i) => shown.set(`${oid}:${r.id as string}`, { name: displayNameOfRow(o, r), fields: named[i]!, ...(needText ? { doc: docOf(o, ctx.actor.workspaceId, r, related) } : {}) }));
  }
  const data = found
    .filter((h) => byId.has(h.object_id) && shown.has(`${h.object_id}:${h.record_id}`))
    .map((h) => {
      const s = shown.get(`${h.object_id}:${h.record_id}`)!;
      return {
        object: byId.get(h.object_id)!.name,
        id: h.record_id,
        name: s.name,
        ...(opts.hitFields ? { fields: s.fields } : {}),
        snippet: h.snippet ?? snippetOf(s.doc!.name, s.doc!.body, h.by),
        score: Math.round(-h.rank * 1000) / 1000,
        match: h.match,
      };
    });
  return { data, query: { q, objects: objects.map((o) => o.name), fuzzy } };
}
