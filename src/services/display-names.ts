import type { Kysely } from 'kysely';
import type { Ctx } from './context.js';
import { decodeValue, type FieldDef } from './field-types.js';
import type { ObjectDef, WorkspaceSchema } from './schema.js';

/**
 * The display name of records (a contact's "first last", a company's name, a user's name), for
 * every place that shows a record next to its id: associations, relation values, search hits and
 * search documents. One query per target object and call, whatever the number of ids.
 */

/**
 * THE display-name rule, the one place that decides it: the object's display fields that hold a
 * value (null, undefined and '' do not), joined by one space (a person's "first last", a company's
 * name); `ifEmpty` when none does (by default the record's id). `rec` holds decoded values by
 * field name.
 */
export function displayName(obj: ObjectDef, rec: Record<string, unknown>, ifEmpty: string = String(rec.id ?? '')): string {
  const parts = obj.displayFields.map((n) => rec[n]).filter((v) => v !== null && v !== undefined && v !== '');
  return parts.length ? parts.join(' ') : ifEmpty;
}

export interface RowNameOptions {
  /** The stored values as they are, undecoded (search documents and duplicate matching compare what is stored). */
  stored?: boolean;
  /** The name when no display field holds a value (by default the row's id). */
  ifEmpty?: string;
}

/** The same from a stored row (column -> stored value). */
export function displayNameOfRow(obj: ObjectDef, row: Record<string, unknown>, opts: RowNameOptions = {}): string {
  const rec: Record<string, unknown> = { id: row.id };
  for (const n of obj.displayFields) {
    const f = obj.byName.get(n)!;
    rec[n] = opts.stored ? row[f.column] : decodeValue(f, row[f.column]);
  }
  return displayName(obj, rec, opts.ifEmpty);
}

/** Columns to select for displayNameOfRow. */
export const displayColumns = (obj: ObjectDef): string[] => ['id', ...obj.displayFields.map((n) => obj.byName.get(n)!.column)];

// SQLite allows 32,766 parameters per statement; pages are at most 500 records.
const CHUNK = 1000;

/**
 * Display names of records of `target` (an object name, or 'users'), by id. `db` may be a
 * transaction: code running inside one must not query through another connection. Ids that name
 * nothing (a deleted record) are absent from the map.
 */
export interface NamesOptions extends RowNameOptions {
  /** Ids per statement (default 1000). */
  chunk?: number;
  /** Called before each statement with the ids done and the total (a long scan's checkpoint). */
  beforeChunk?: (done: number, total: number) => Promise<void>;
}

export async function namesOf(db: Kysely<any>, workspaceId: number, schema: WorkspaceSchema, target: string, ids: Iterable<string>, opts: NamesOptions = {}): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const list = [...new Set(ids)];
  if (list.length === 0) return out;
  const obj = target === 'users' ? undefined : schema.objects.get(target);
  if (target !== 'users' && !obj) return out;
  const chunk = opts.chunk ?? CHUNK;
  for (let i = 0; i < list.length; i += chunk) {
    await opts.beforeChunk?.(i, list.length);
    const part = list.slice(i, i + chunk);
    if (!obj) {
      const rows = (await db.selectFrom('users').select(['id', 'name']).where('workspace_id', '=', workspaceId).where('id', 'in', part).execute()) as { id: string; name: string }[];
      for (const r of rows) out.set(r.id, r.name);
      continue;
    }
    const rows = (await db.selectFrom(obj.table).select(displayColumns(obj)).where('id', 'in', part).execute()) as Record<string, unknown>[];
    for (const r of rows) out.set(r.id as string, displayNameOfRow(obj, r, opts));
  }
  return out;
}

/** namesOf for service code holding a context: the context's connection and workspace. */
export function namesFor(ctx: Ctx, schema: WorkspaceSchema, target: string, ids: Iterable<string>, opts?: NamesOptions): Promise<Map<string, string>> {
  return namesOf(ctx.db.kysely as unknown as Kysely<any>, ctx.actor.workspaceId, schema, target, ids, opts);
}

/** A relation value as agents get it: the id with the related record's display name (null: it no longer exists). */
export interface NamedRef {
  id: string;
  name: string | null;
}

/**
 * Names of the records the RELATION `fields` of `rows` point at, by target object then id: one
 * query per target for the whole list. `key` reads a field's value from a row (by name for
 * records, by column for stored rows).
 */
export async function relationTargetNames(
  db: Kysely<any>,
  workspaceId: number,
  schema: WorkspaceSchema,
  fields: FieldDef[],
  rows: Record<string, unknown>[],
  key: (f: FieldDef) => string,
): Promise<Map<string, Map<string, string>>> {
  const byTarget = new Map<string, Set<string>>();
  for (const f of fields) {
    const ids = byTarget.get(f.target!) ?? new Set<string>();
    byTarget.set(f.target!, ids);
    for (const r of rows) if (typeof r[key(f)] === 'string') ids.add(r[key(f)] as string);
  }
  const names = new Map<string, Map<string, string>>();
  for (const [target, ids] of byTarget) names.set(target, await namesOf(db, workspaceId, schema, target, ids));
  return names;
}

/**
 * Replace the RELATION values of records (field name -> id) by {id, name}: one query per target
 * object for the whole list (a contact page's companies in one, its owners and creators in another).
 */
export async function withRelationNames<T extends Record<string, unknown>>(db: Kysely<any>, workspaceId: number, schema: WorkspaceSchema, obj: ObjectDef, records: T[]): Promise<T[]> {
  const fields = obj.fields.filter((f) => f.type === 'RELATION' && records.some((r) => typeof r[f.name] === 'string'));
  if (fields.length === 0) return records;
  const names = await relationTargetNames(db, workspaceId, schema, fields, records, (f) => f.name);
  return records.map((r) => {
    const out: Record<string, unknown> = { ...r };
    for (const f of fields) {
      const id = r[f.name];
      if (typeof id === 'string') out[f.name] = { id, name: names.get(f.target!)!.get(id) ?? null } satisfies NamedRef;
    }
    return out as T;
  });
}
