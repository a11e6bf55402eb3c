import { z } from 'zod';
import type { Ctx } from '../services/context.js';
import { validationError } from '../services/errors.js';
import { type FilterGroup, filterGroupSchema } from '../services/filters.js';
import { planExport } from '../services/import-export.js';

/**
 * Exports for agents. A model's context is no place for 10,000 rows: crm_export answers a short
 * preview and a resource link, `crm://export/{object}/{request}`, whose last segment is the export
 * request itself (base64url JSON). Reading the resource runs the export then, as the reading
 * session's user: nothing is stored between calls, so it works as well on stateless HTTP.
 */

export interface ExportRequest {
  fields?: string[] | undefined;
  filter?: FilterGroup | undefined;
  sort_by?: string | undefined;
  sort_dir?: 'asc' | 'desc' | undefined;
  limit: number;
}

const requestSchema = z
  .object({
    fields: z.array(z.string()).optional(),
    filter: filterGroupSchema.optional(),
    sort_by: z.string().optional(),
    sort_dir: z.enum(['asc', 'desc']).optional(),
    // The row limit is the budget's (CRM_EXPORT_MAX_ROWS): planExport refuses more, naming it.
    limit: z.number().int().min(1),
  })
  .strict();

export const EXPORT_URI_TEMPLATE = 'crm://export/{object}/{request}';

export function exportUri(object: string, req: ExportRequest): string {
  const compact = Object.fromEntries(Object.entries(req).filter(([, v]) => v !== undefined));
  return `crm://export/${encodeURIComponent(object)}/${Buffer.from(JSON.stringify(compact)).toString('base64url')}`;
}

export function parseExportRequest(token: string): ExportRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw validationError('Not an export link: use the uri crm_export returned, unchanged');
  }
  const r = requestSchema.safeParse(raw);
  if (!r.success) throw validationError('Not an export link: use the uri crm_export returned, unchanged');
  return r.data;
}

/**
 * The whole export as CSV text (RFC 4180, formula cells neutralized), exactly as GET /export/{object}?format=csv
 * writes it, made in the heavy lane under its time and size limits.
 */
export async function exportCsv(ctx: Ctx, object: string, req: ExportRequest): Promise<{ csv: string }> {
  const plan = await planExport(ctx, object, { fields: req.fields, filter: req.filter, sortBy: req.sort_by, sortDir: req.sort_dir, limit: req.limit });
  const out = await plan.open('csv');
  const parts: string[] = [];
  try {
    for await (const chunk of out.chunks) parts.push(chunk);
  } finally {
    out.close();
  }
  return { csv: parts.join('') };
}
