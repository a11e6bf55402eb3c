/**
 * Text for a model's context: compact, empty fields dropped. structuredContent keeps every field
 * (it is what programs read and what the outputSchema describes); the text is what most clients
 * show the model, so it carries the same facts in fewer tokens.
 */
export function dropEmpty(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropEmpty);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (v === null || v === undefined || v === '') continue;
    if (Array.isArray(v) && v.length === 0) continue;
    const c = dropEmpty(v);
    if (c !== null && typeof c === 'object' && !Array.isArray(c) && Object.keys(c).length === 0) continue;
    out[k] = c;
  }
  return out;
}

export const compactJson = (value: unknown) => JSON.stringify(dropEmpty(value));

/** One record per line: easy for a model to scan and to quote ids from. */
export function recordLines(records: readonly unknown[]): string {
  return records.map(compactJson).join('\n');
}
