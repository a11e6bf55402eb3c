import { validationError } from './errors.js';

/**
 * Cursors of lists read newest first by (time, id) (notes, inbox threads): the last row's pair,
 * opaque to clients (base64url JSON).
 */
export interface TimeCursor {
  t: string;
  i: string;
}

export function encodeTimeCursor(t: string, i: string): string {
  return Buffer.from(JSON.stringify({ t, i })).toString('base64url');
}

export function decodeTimeCursor(raw: string): TimeCursor {
  let c: TimeCursor;
  try {
    c = JSON.parse(Buffer.from(raw, 'base64url').toString()) as TimeCursor;
  } catch {
    throw validationError('Invalid cursor: pass nextCursor back unchanged');
  }
  // Parseable is not enough: a cursor of another shape would reach SQL as null or garbage.
  if (typeof c?.t !== 'string' || typeof c.i !== 'string') throw validationError('Invalid cursor: pass nextCursor back unchanged');
  return c;
}
