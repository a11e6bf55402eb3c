import { z } from 'zod';

/** What a write changed (or would change) on one record: field -> {from, to}. */
export const changesOut = z.record(z.string(), z.object({ from: z.unknown(), to: z.unknown() })).describe('Changed fields: field -> {from, to}');

export type Changes = z.infer<typeof changesOut>;

/** Bookkeeping columns change on every write; they are not news to the caller. */
const IGNORED = new Set(['updated_at']);

export function diffRecords(before: Record<string, unknown>, after: Record<string, unknown>): Changes {
  const out: Changes = {};
  for (const [k, to] of Object.entries(after)) {
    if (IGNORED.has(k) || k === 'associations') continue;
    const from = before[k] ?? null;
    if (JSON.stringify(from) !== JSON.stringify(to ?? null)) out[k] = { from, to: to ?? null };
  }
  return out;
}

export function renderChanges(c: Changes): string {
  const parts = Object.entries(c).map(([k, v]) => `${k}: ${JSON.stringify(v.from)} -> ${JSON.stringify(v.to)}`);
  return parts.length ? parts.join('; ') : 'no field changes';
}
