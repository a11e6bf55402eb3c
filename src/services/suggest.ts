import { distance } from 'fastest-levenshtein';
import { z } from 'zod';
import { CrmError } from './errors.js';

const norm = (s: string) => s.toLowerCase().replace(/[\s_-]+/g, '');

/** The valid name a misspelt one most likely meant ('dryrun' -> 'dry_run', 'filters' -> 'filter'), if any is close. */
export function closest(name: string, valid: readonly string[]): string | undefined {
  if (name.length > 64) return undefined;
  const n = norm(name);
  let best: string | undefined;
  let bestD = Infinity;
  for (const v of valid) {
    const m = norm(v);
    const d = m === n ? 0 : m.startsWith(n) || n.startsWith(m) ? 1 : distance(n, m);
    if (d < bestD) [best, bestD] = [v, d];
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(Math.min(n.length, norm(best).length) / 3)) ? best : undefined;
}

/** "Unknown argument 'dryrun' (did you mean 'dry_run'?). Valid arguments: object, id, dry_run" */
export function unknownKeysMessage(keys: readonly string[], valid: readonly string[], noun = 'argument'): string {
  // The message goes back into a model's context: a hostile or broken call must not make it large.
  const parts = keys.slice(0, 5).map((k) => {
    const c = closest(k, valid);
    const shown = k.length > 40 ? `${k.slice(0, 40)}…` : k;
    return `'${shown}'${c ? ` (did you mean '${c}'?)` : ''}`;
  });
  if (keys.length > 5) parts.push(`and ${keys.length - 5} more`);
  const plural = keys.length > 1 ? `${noun}s` : noun;
  return `Unknown ${plural} ${parts.join(', ')}: it would be ignored, so nothing was done. Valid ${noun}s: ${valid.join(', ')}`;
}

/** Refuse keys a body does not take, with the same message zod gives (for bodies read by hand). */
export function refuseUnknownKeys(body: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k));
  if (unknown.length) throw new CrmError('VALIDATION_ERROR', unknownKeysMessage(unknown, allowed, 'key'));
}

/**
 * zod's message for unknown keys of a strict object, process-wide: it names the closest valid key
 * and lists them all, on every surface (MCP tool arguments, REST bodies, nested objects alike).
 */
z.config({
  customError: (iss) => {
    if (iss.code !== 'unrecognized_keys') return undefined;
    const shape = (iss.inst as { _zod?: { def?: { shape?: Record<string, unknown> } } } | undefined)?._zod?.def?.shape;
    return shape ? unknownKeysMessage(iss.keys, Object.keys(shape), 'key') : undefined;
  },
});
