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

/** One record per line: easy for a model to scan and to quote ids from. */
export function recordLines(records: readonly unknown[]): string {
  return records.map(compactJson).join('\n');
}
