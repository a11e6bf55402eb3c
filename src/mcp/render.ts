/**
 * Text for a model's context: compact, empty fields dropped. structuredContent keeps every field
 * (it is what programs read and what the outputSchema describes); the text is what most clients
 * show the model, so it carries the same facts in fewer tokens.
 */
function isEmpty(v: unknown): boolean {
  if (v === null || v === undefined || v === '') return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === 'object' && Object.keys(v as object).length === 0;
}

/** One JSON.stringify pass with a replacer: no intermediate copies (this runs on every record of every page). */
const dropEmpty = (_key: string, v: unknown) => (isEmpty(v) ? undefined : v);

export const compactJson = (value: unknown): string => JSON.stringify(value, dropEmpty) ?? '{}';

/** A flat record without its empty fields; a copy and a plain stringify beat a replacer on every value. */
function compactRecord(rec: Record<string, unknown>): string {
  const out: Record<string, unknown> = {};
  for (const k in rec) {
    const v = rec[k];
    if (!isEmpty(v)) out[k] = typeof v === 'object' && !Array.isArray(v) ? JSON.parse(compactJson(v)) : v;
  }
  return JSON.stringify(out);
}

/** One record per line: easy for a model to scan and to quote ids from. */
export function recordLines(records: readonly Record<string, unknown>[]): string {
  return records.map(compactRecord).join('\n');
}
