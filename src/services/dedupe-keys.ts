import type { Kysely } from 'kysely';
import { bulkInsert } from '../db/bulk-insert.js';
import type { Db } from '../db/database.js';
import { termsOf } from '../db/search.js';
import { phoneKey } from './phone.js';
import { rowBatches, rowsByIds } from './record-tables.js';
import type { ObjectDef, WorkspaceSchema } from './schema.js';

/**
 * Match keys for duplicate detection, kept in their own indexed table and written in the same
 * transaction as every record write (like the search index): normalised email, phone (last ten
 * digits), domain, name (with the company for people), and a coarse "block" key that groups
 * records whose names may be spelled differently, for fuzzy comparison.
 */

export type KeyKind = 'email' | 'phone' | 'domain' | 'name' | 'block';
export interface MatchKey {
  kind: KeyKind;
  key: string;
  /** The field the key came from (evidence shown to users). */
  field: string;
}

const COMPANY_SUFFIXES = new Set(['inc', 'incorporated', 'llc', 'ltd', 'limited', 'corp', 'corporation', 'co', 'company', 'gmbh', 'sa', 'sas', 'bv', 'ag', 'plc', 'group', 'holdings']);

export function normalName(s: string, company: boolean): string {
  // The name's words as the search index folds and splits them (ASCII without Unicode classes).
  const words = termsOf(s);
  const kept = company ? words.filter((w, i) => i === 0 || !COMPANY_SUFFIXES.has(w)) : words;
  return kept.join(' ');
}

/** Phones compare by their E.164 form (or last ten digits when they do not parse). */
export const normalPhone = phoneKey;

export function normalHost(v: string): string | null {
  let host = v.trim().toLowerCase();
  if (!host) return null;
  try {
    host = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(host) ? host : `https://${host}`).hostname;
  } catch {
    return null;
  }
  host = host.replace(/^www\./, '');
  return host.includes('.') ? host : null;
}

/** "https://www.LinkedIn.com/in/ada/" -> "linkedin.com/in/ada"; null without a path. */
export function normalProfile(v: string): string | null {
  const host = normalHost(v);
  if (!host) return null;
  const s = v.trim();
  const path = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `https://${s}`).pathname.toLowerCase().replace(/\/+$/, '');
  return path ? `${host}${path}` : null;
}

/** Whether an object's records are people (first and last name) or named things. */
export const isPerson = (obj: ObjectDef) => obj.displayFields.length >= 2;

/** What keysOf reads of an object's fields, worked out once an object (a schema change makes new ObjectDefs), not once a row. */
interface KeyPlan {
  /** Fields that give a key by their value: email, phone, a URL or a domain. */
  valued: { column: string; name: string; kind: 'email' | 'phone' | 'profile' | 'host' }[];
  /** The display fields' columns (the name), and the name's evidence label. */
  nameColumns: string[];
  nameField: string;
  person: boolean;
  /** A person's (or a deal's) company column: part of its name key. */
  company: string | undefined;
}
const keyPlans = new WeakMap<ObjectDef, KeyPlan>();
function keyPlan(obj: ObjectDef): KeyPlan {
  let plan = keyPlans.get(obj);
  if (!plan) {
    const person = isPerson(obj);
    const valued: KeyPlan['valued'] = [];
    for (const f of obj.fields) {
      if (f.readOnly) continue;
      if (f.type === 'EMAIL') valued.push({ column: f.column, name: f.name, kind: 'email' });
      else if (f.type === 'PHONE') valued.push({ column: f.column, name: f.name, kind: 'phone' });
      // A person's URL (a LinkedIn profile) is theirs by its path; its host is shared by everyone.
      else if (f.type === 'URL' || (f.type === 'TEXT' && /domain/.test(f.name))) valued.push({ column: f.column, name: f.name, kind: f.type === 'URL' && person ? 'profile' : 'host' });
    }
    const company = obj.byName.get('company');
    plan = {
      valued,
      nameColumns: obj.displayFields.map((n) => obj.byName.get(n)!.column),
      nameField: obj.displayFields.join('+'),
      person,
      company: company?.type === 'RELATION' ? company.column : undefined,
    };
    keyPlans.set(obj, plan);
  }
  return plan;
}

export function keysOf(obj: ObjectDef, row: Record<string, unknown>): MatchKey[] {
  const plan = keyPlan(obj);
  const keys: MatchKey[] = [];
  for (const f of plan.valued) {
    const v = row[f.column];
    if (typeof v !== 'string' || !v) continue;
    if (f.kind === 'email') keys.push({ kind: 'email', key: v.trim().toLowerCase(), field: f.name });
    else if (f.kind === 'phone') {
      const p = normalPhone(v);
      if (p) keys.push({ kind: 'phone', key: p, field: f.name });
    } else {
      const h = f.kind === 'profile' ? normalProfile(v) : normalHost(v);
      if (h) keys.push({ kind: 'domain', key: h, field: f.name });
    }
  }
  let joined = '';
  for (const c of plan.nameColumns) {
    const v = row[c];
    if (typeof v === 'string' && v.trim() !== '') joined = joined ? `${joined} ${v}` : v;
  }
  if (joined) {
    const name = normalName(joined, !plan.person);
    if (name) {
      const company = plan.company !== undefined ? ((row[plan.company] as string | null | undefined) ?? '') : '';
      keys.push({ kind: 'name', key: `${name}|${company}`, field: plan.nameField });
      const words = name.split(' ');
      const block = plan.person && words.length > 1 ? `${words[words.length - 1]!.slice(0, 3)}|${words[0]!.slice(0, 1)}` : name.replace(/ /g, '').slice(0, 4);
      keys.push({ kind: 'block', key: block, field: plan.nameField });
    }
  }
  return keys;
}

/** The columns keysOf reads: a write that changes none of them leaves the record's keys as they were. */
export function keyColumns(obj: ObjectDef): Set<string> {
  const cols = new Set<string>();
  for (const f of obj.fields) if (!f.readOnly && (f.type === 'EMAIL' || f.type === 'PHONE' || f.type === 'URL' || (f.type === 'TEXT' && /domain/.test(f.name)))) cols.add(f.column);
  for (const n of obj.displayFields) cols.add(obj.byName.get(n)!.column);
  const company = obj.byName.get('company');
  if (company?.type === 'RELATION') cols.add(company.column);
  return cols;
}

type AnyDb = Kysely<any>;
type Stored = Record<string, unknown>;

const KEY_COLUMNS = ['workspace_id', 'object_id', 'kind', 'key', 'record_seq'];

/**
 * Replace the keys of these rows (stored form, with id; seq is read when missing) in the caller's
 * transaction. A key names its record by seq, the record table's integer key (readers join the
 * table for its id). A record's keys are found from its stored values, not by an index on the record
 * (a copy of every key): `before[i]` is row i as stored before this write (every column keysOf reads),
 * undefined for a new record; the keys it gives that the new values do not are removed, and only
 * the new ones are added. This holds as long as the stored keys are exactly keysOf of the stored
 * values: every write of a column in keyColumns goes through here (or removeKeys), and a change of
 * how keys are made comes with a migration that rebuilds them (rebuildKeysIn). `keys`: the rows'
 * keys when the caller computed them already (keysOf of the same values).
 */
export async function writeKeys(trx: AnyDb, obj: ObjectDef, workspaceId: number, rows: Stored[], before?: (Stored | undefined)[], keys?: MatchKey[][]): Promise<void> {
  if (!rows.length) return;
  const seqs = await seqsOf(trx, obj, rows);
  const added: (string | number)[][] = [];
  const gone: (string | number)[][] = [];
  for (const [i, r] of rows.entries()) {
    const now = keyRows(workspaceId, obj.id, seqs[i]!, keys?.[i] ?? keysOf(obj, r));
    const old = before?.[i];
    if (!old) {
      added.push(...now);
      continue;
    }
    const was = keyRows(workspaceId, obj.id, seqs[i]!, keysOf(obj, old));
    const id = (k: (string | number)[]) => `${k[2]}\u0000${k[3]}`;
    const kept = new Set(was.map(id));
    const still = new Set(now.map(id));
    gone.push(...was.filter((k) => !still.has(id(k))));
    added.push(...now.filter((k) => !kept.has(id(k))));
  }
  await deleteKeyRows(trx, workspaceId, obj.id, gone);
  // A key already there (a new record's keys never are) is left as it is.
  await bulkInsert(trx, 'dedupe_keys', KEY_COLUMNS, added, before ? { ignoreConflicts: true } : {});
}

/** The rows' seqs: their own, or read for those written without it (new records: the table gave it). */
async function seqsOf(trx: AnyDb, obj: ObjectDef, rows: Stored[]): Promise<(string | number)[]> {
  const missing = rows.filter((r) => r.seq === undefined || r.seq === null).map((r) => r.id as string);
  const read = missing.length ? await rowsByIds(trx, obj, missing, ['seq']) : undefined;
  return rows.map((r) => (r.seq ?? read?.get(r.id as string)?.seq) as string | number);
}

/** A record's rows of dedupe_keys: each (kind, key) once (the table's primary key), though two fields may give it. */
function keyRows(workspaceId: number, objectId: number, recordSeq: string | number, keys: MatchKey[]): (string | number)[][] {
  const seen = new Set<string>();
  const out: (string | number)[][] = [];
  for (const k of keys) {
    const id = `${k.kind}\u0000${k.key}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push([workspaceId, objectId, k.kind, k.key, recordSeq]);
  }
  return out;
}

/** The keys of records about to be deleted (their rows as stored, with id and seq), found from their values. */
export async function removeKeys(trx: AnyDb, obj: ObjectDef, workspaceId: number, rows: Stored[]): Promise<void> {
  const seqs = await seqsOf(trx, obj, rows);
  await deleteKeyRows(
    trx,
    workspaceId,
    obj.id,
    rows.flatMap((r, i) => keyRows(workspaceId, obj.id, seqs[i]!, keysOf(obj, r))),
  );
}

/** Exact rows of dedupe_keys by their primary key: one probe each, 300 to a statement. */
async function deleteKeyRows(trx: AnyDb, workspaceId: number, objectId: number, keys: (string | number)[][]): Promise<void> {
  for (let i = 0; i < keys.length; i += 300)
    await trx
      .deleteFrom('dedupe_keys')
      .where('workspace_id', '=', workspaceId)
      .where('object_id', '=', objectId)
      .where((eb) => eb.or(keys.slice(i, i + 300).map((k) => eb.and({ kind: k[2], key: k[3], record_seq: k[4] }))))
      .execute();
}

/** The match keys of `obj` (aliased `k`) joined to their records (`r`: `r.id` is a key's record id). */
export function keysWithRecords(db: AnyDb, workspaceId: number, obj: ObjectDef) {
  return db.selectFrom('dedupe_keys as k').innerJoin(`${obj.table} as r`, 'r.seq', 'k.record_seq').where('k.workspace_id', '=', workspaceId).where('k.object_id', '=', obj.id);
}

export function rebuildDedupeKeys(db: Db, workspaceId: number, schema: WorkspaceSchema, objects?: string[]): Promise<number> {
  const k = db.kysely as unknown as AnyDb;
  return db.bulk(() => rebuildKeysIn(k, workspaceId, schema, objects, (write) => k.transaction().execute(write)));
}

/**
 * Every key of these objects (all by default) made again from the records' values, in `k`: a
 * transaction the caller holds (a migration's), or a transaction per batch through `batch`.
 */
export async function rebuildKeysIn(k: AnyDb, workspaceId: number, schema: WorkspaceSchema, objects?: string[], batch = (write: (trx: AnyDb) => Promise<void>) => write(k)): Promise<number> {
  let written = 0;
  for (const obj of schema.objects.values()) {
    if (objects && !objects.includes(obj.name)) continue;
    await k.deleteFrom('dedupe_keys').where('workspace_id', '=', workspaceId).where('object_id', '=', obj.id).execute();
    for await (const rows of rowBatches(k, obj, ['id', ...keyColumns(obj)], { batch: 5000 })) {
      const values = rows.flatMap((r) => keyRows(workspaceId, obj.id, r.seq as number, keysOf(obj, r)));
      await batch(async (trx) => void (await bulkInsert(trx, 'dedupe_keys', KEY_COLUMNS, values)));
      written += rows.length;
    }
  }
  return written;
}
