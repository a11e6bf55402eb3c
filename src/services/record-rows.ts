import type { Kysely } from 'kysely';
import type { Tables } from '../db/tables.js';
import { CrmError } from './errors.js';
import { decodeValue, type FieldDef } from './field-types.js';
import { resolveField, type ObjectDef } from './schema.js';

/** A record table's rows as records: the ground shared by reading, writing and associations. */

type AnyDb = Kysely<any>;
const dyn = (db: Kysely<Tables>) => db as unknown as AnyDb;

export type RecordData = Record<string, unknown> & { id: string };

export const DEFAULT_LIMIT = 20;
export const MAX_LIMIT = 100;
export const MAX_BATCH = 100;

// ---------------------------------------------------------------------------------------------
// Row <-> record

export function toRecord(obj: ObjectDef, row: Record<string, unknown>, fields?: FieldDef[]): RecordData {
  const out: Record<string, unknown> = {};
  for (const f of fields ?? obj.fields) out[f.name] = decodeValue(f, row[f.column]);
  return out as RecordData;
}

export function projection(obj: ObjectDef, fields?: string[]): FieldDef[] {
  if (!fields || fields.length === 0) return obj.fields;
  const set = new Set(['id', ...fields]);
  return [...set].map((n) => resolveField(obj, n));
}

export function notFound(obj: ObjectDef, id: string): CrmError {
  return new CrmError('RECORD_NOT_FOUND', `No ${obj.name} record with id '${id}'`);
}

export async function fetchRows(trx: Kysely<Tables>, obj: ObjectDef, ids: string[]): Promise<Map<string, Record<string, unknown>>> {
  const out = new Map<string, Record<string, unknown>>();
  for (let i = 0; i < ids.length; i += 500) {
    const rows = (await dyn(trx).selectFrom(obj.table).selectAll().where('id', 'in', ids.slice(i, i + 500)).execute()) as Record<string, unknown>[];
    for (const r of rows) out.set(r.id as string, r);
  }
  return out;
}
