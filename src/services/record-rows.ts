import { CrmError } from './errors.js';
import { DECODED_TYPES, decodeValue, type FieldDef } from './field-types.js';
import { type ObjectDef, resolveField } from './schema.js';

/** Records as the services hand them out, from a record table's rows: the ground shared by reading, writing and associations. */

export type RecordData = Record<string, unknown> & { id: string };

export const DEFAULT_LIMIT = 20;
export const MAX_LIMIT = 100;
export const MAX_BATCH = 100;

// ---------------------------------------------------------------------------------------------
// Row <-> record

export function toRecord(obj: ObjectDef, row: Record<string, unknown>, fields?: FieldDef[]): RecordData {
  return decoderOf(obj, fields ?? obj.fields)(row);
}

type Decoder = (row: Record<string, unknown>) => RecordData;

/**
 * Row -> record, one function per object (so per schema: a change to the schema loads new objects)
 * and projection, written for its fields: an object literal of the record's fields, each read by
 * its column's name. Built field by field in a loop, a record took a page of 50 opportunities about
 * 70 µs (every store a new hidden class, every read a keyed lookup by a name the engine cannot
 * foresee); as a literal, about 5 µs. The source holds names and columns only as JSON string
 * literals (field names are checked identifiers besides: NAME_RE); values are read from the row.
 */
const decoders = new WeakMap<ObjectDef, Map<string, Decoder>>();
function decoderOf(obj: ObjectDef, fields: FieldDef[]): Decoder {
  let mine = decoders.get(obj);
  if (!mine) decoders.set(obj, (mine = new Map()));
  const key = fields === obj.fields ? '' : fields.map((f) => f.name).join(',');
  let decode = mine.get(key);
  if (!decode) {
    // A literal's "__proto__" key would set the prototype, not a field: written by assignment then.
    if (fields.some((f) => f.name === '__proto__')) {
      decode = (row) => {
        const out: Record<string, unknown> = {};
        for (const f of fields) out[f.name] = decodeValue(f, row[f.column]);
        return out as RecordData;
      };
    } else {
      const q = JSON.stringify;
      const body = fields.map((f, i) => `${q(f.name)}: ${DECODED_TYPES.has(f.type) ? `decode(fields[${i}], row[${q(f.column)}])` : `row[${q(f.column)}] ?? null`}`).join(',\n');
      decode = new Function('decode', 'fields', `return (row) => ({\n${body}\n});`)(decodeValue, fields) as Decoder;
    }
    if (mine.size >= 64) mine.clear();
    mine.set(key, decode);
  }
  return decode;
}

export function projection(obj: ObjectDef, fields?: string[]): FieldDef[] {
  if (!fields || fields.length === 0) return obj.fields;
  const set = new Set(['id', ...fields]);
  return [...set].map((n) => resolveField(obj, n));
}

export function notFound(obj: ObjectDef, id: string): CrmError {
  return new CrmError('RECORD_NOT_FOUND', `No ${obj.name} record with id '${id}'`);
}
