import { z } from 'zod';
import { validationError } from '../services/errors.js';

/**
 * The cursor of a paginated GET. The Kasar overview tells clients to send a page's `nextCursor`
 * back "as a query parameter", and they do, under that very name: `nextCursor` is accepted beside
 * our own name for it (`cursor`; `since` on the change feed). One place, so every list agrees.
 */
export const cursorParams = { cursor: z.string().optional(), nextCursor: z.string().optional() };

/** The one cursor the client sent, under either name; two different ones would leave us guessing. */
export function cursorOf(q: { cursor?: string | undefined; nextCursor?: string | undefined }, name = 'cursor'): string | undefined {
  if (q.cursor !== undefined && q.nextCursor !== undefined && q.cursor !== q.nextCursor)
    throw validationError(`'${name}' and 'nextCursor' are one parameter under two names, and the values sent differ; send one of them`, { fields: [name, 'nextCursor'] });
  return q.cursor ?? q.nextCursor;
}
