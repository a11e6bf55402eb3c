import type { Kysely } from 'kysely';
import { bulkInsert } from '../db/bulk-insert.js';
import type { Db } from '../db/database.js';
import { phoneKey } from './phone.js';
import { rowBatches } from './record-tables.js';
import type { ObjectDef, WorkspaceSchema } from './schema.js';
import { fold } from './search.js';

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
  const words = fold(s)
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean);
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

export function keysOf(obj: ObjectDef, row: Record<string, unknown>): MatchKey[] {
  const keys: MatchKey[] = [];
  for (const f of obj.fields) {
    if (f.readOnly) continue;
    const v = row[f.column];
    if (typeof v !== 'string' || !v) continue;
    if (f.type === 'EMAIL') keys.push({ kind: 'email', key: v.trim().toLowerCase(), field: f.name });
    else if (f.type === 'PHONE') {
      const p = normalPhone(v);
      if (p) keys.push({ kind: 'phone', key: p, field: f.name });
    } else if (f.type === 'URL' || (f.type === 'TEXT' && /domain/.test(f.name))) {
      // A person's URL (a LinkedIn profile) is theirs by its path; its host is shared by everyone.
      const h = f.type === 'URL' && isPerson(obj) ? normalProfile(v) : normalHost(v);
      if (h) keys.push({ kind: 'domain', key: h, field: f.name });
    }
  }
  const nameParts = obj.displayFields.map((n) => row[obj.byName.get(n)!.column]).filter((v): v is string => typeof v === 'string' && v.trim() !== '');
  if (nameParts.length) {
    const person = isPerson(obj);
    const name = normalName(nameParts.join(' '), !person);
    if (name) {
      const company = obj.byName.get('company')?.type === 'RELATION' ? ((row[obj.byName.get('company')!.column] as string | null) ?? '') : '';
      keys.push({ kind: 'name', key: `${name}|${company}`, field: obj.displayFields.join('+') });
      const words = name.split(' ');
      const block = person && words.length > 1 ? `${words[words.length - 1]!.slice(0, 3)}|${words[0]!.slice(0, 1)}` : name.replace(/ /g, '').slice(0, 4);
      keys.push({ kind: 'block', key: block, field: obj.displayFields.join('+') });
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

/**
 * Replace the keys of these rows (stored form, with id). Runs in the caller's transaction. `keys`:
 * the rows' keys when the caller computed them already (keysOf of the same values).
 */
export async function writeKeys(trx: AnyDb, obj: ObjectDef, workspaceId: number, rows: Record<string, unknown>[], fresh = false, keys?: MatchKey[][]): Promise<void> {
  if (!rows.length) return;
  // New records have no keys yet; changed ones get theirs replaced.
  if (!fresh)
    await removeKeys(
      trx,
      obj,
      workspaceId,
      rows.map((r) => r.id as string),
    );
  const values = rows.flatMap((r, i) => keyRows(workspaceId, obj.id, r.id as string, keys?.[i] ?? keysOf(obj, r)));
  await bulkInsert(trx, 'dedupe_keys', KEY_COLUMNS, values);
}

/** A record's rows of dedupe_keys: each (kind, key) once (the table's primary key), though two fields may give it. */
function keyRows(workspaceId: number, objectId: number, recordId: string, keys: MatchKey[]): KeyRow[] {
  const seen = new Set<string>();
  const out: KeyRow[] = [];
  for (const k of keys) {
    const id = `${k.kind}\u0000${k.key}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push({ workspace_id: workspaceId, object_id: objectId, kind: k.kind, key: k.key, record_id: recordId });
  }
  return out;
}
type KeyRow = { workspace_id: number; object_id: number; kind: string; key: string; record_id: string };
const KEY_COLUMNS = ['workspace_id', 'object_id', 'kind', 'key', 'record_id'];

export async function removeKeys(trx: AnyDb, obj: ObjectDef, workspaceId: number, ids: string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += 500)
    await trx
      .deleteFrom('dedupe_keys')
      .where('workspace_id', '=', workspaceId)
      .where('object_id', '=', obj.id)
      .where('record_id', 'in', ids.slice(i, i + 500))
      .execute();
}

export function rebuildDedupeKeys(db: Db, workspaceId: number, schema: WorkspaceSchema, objects?: string[]): Promise<number> {
  return db.bulk(() => rebuildKeys(db, workspaceId, schema, objects));
}

async function rebuildKeys(db: Db, workspaceId: number, schema: WorkspaceSchema, objects?: string[]): Promise<number> {
  const k = db.kysely as unknown as AnyDb;
  let written = 0;
  for (const obj of schema.objects.values()) {
    if (objects && !objects.includes(obj.name)) continue;
    await k.deleteFrom('dedupe_keys').where('workspace_id', '=', workspaceId).where('object_id', '=', obj.id).execute();
    const cols = [...new Set(['seq', 'id', ...obj.fields.filter((f) => !f.readOnly && ['EMAIL', 'PHONE', 'URL', 'TEXT', 'RELATION'].includes(f.type)).map((f) => f.column)])];
    for await (const rows of rowBatches(k, obj, cols, { batch: 5000 })) {
      const values = rows.flatMap((r) => keyRows(workspaceId, obj.id, r.id as string, keysOf(obj, r)));
      await k.transaction().execute((trx) => bulkInsert(trx, 'dedupe_keys', KEY_COLUMNS, values));
      written += rows.length;
    }
  }
  return written;
}
