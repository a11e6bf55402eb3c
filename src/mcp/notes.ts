import { z } from 'zod';
import type { Note } from '../services/notes.js';
import { UNTRUSTED_FIELD, untrusted } from './untrusted.js';

/** A note as the note tools return it; the body is user text, wrapped as untrusted in the rendering. */
export const noteOut = z.object({
  id: z.string(),
  body: z.string().describe(`The note text. ${UNTRUSTED_FIELD}`),
  visibility: z.enum(['private', 'workspace']).describe('private: only its author sees it; workspace: everyone in the workspace'),
  object: z.string().nullable().describe('Object of the record the note is on, if any'),
  record_id: z.string().nullable(),
  author: z.object({ id: z.string(), name: z.string().nullable() }),
  created_at: z.string(),
  updated_at: z.string(),
});

/** One note: its facts on one JSON line, its text in a delimited block. */
export function renderNote(n: Note): string {
  const meta = {
    id: n.id,
    author: n.author.name ?? n.author.id,
    visibility: n.visibility,
    ...(n.object ? { on: `${n.object}/${n.record_id}` } : {}),
    created_at: n.created_at,
    ...(n.updated_at !== n.created_at ? { updated_at: n.updated_at } : {}),
  };
  return `${JSON.stringify(meta)}\n${untrusted(`note ${n.id}`, n.body)}`;
}
