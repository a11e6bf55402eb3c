import { CrmError } from './errors.js';
import { decodeValue, type FieldDef } from './field-types.js';
import { type ObjectDef, resolveField } from './schema.js';

/** Records as the services hand them out, from a record table's rows: the ground shared by reading, writing and associations. */

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
