import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { refuseUnknownKeys } from '../../services/suggest.js';
import { queryInteger } from '../../services/input-limits.js';
import { stringify } from 'csv-stringify';
import { z } from 'zod';
import { validationError } from '../../services/errors.js';
import { filterFromQuery } from '../../services/filters.js';
import { parseWith } from '../../services/schema.js';
import { importRecords, planExport } from '../../services/import-export.js';
import { bulkOperation } from '../../services/bulk.js';
import { findDuplicates, mergeRecords, unmergeRecords } from '../../services/duplicates.js';

const exportQuery = z
  .object({
    format: z.enum(['json', 'csv']).default('json'),
    fields: z.string().optional(),
    filter_field: z.string().optional(),
    filter_operator: z.string().optional(),
    filter_value: z.string().optional(),
    filters: z.string().optional(),
    sort_by: z.string().optional(),
    sort_dir: z.enum(['asc', 'desc']).optional(),
    limit: queryInteger.optional(),
  })
  .strict();

const duplicatesBody = z.discriminatedUnion('action', [
  z.object({ action: z.literal('detect'), object: z.string(), record_id: z.string().optional(), limit: z.number().int().optional(), min_score: z.number().min(0).max(1).optional() }).strict(),
  z
    .object({
      action: z.literal('merge'),
      object: z.string(),
      primary_id: z.string(),
      duplicate_ids: z.array(z.string()).min(1),
      overrides: z.record(z.string(), z.unknown()).optional(),
      dry_run: z.boolean().optional(),
    })
    .strict(),
  z.object({ action: z.literal('unmerge'), merge_id: z.string() }).strict(),
]);

/** Import, export, bulk operations and duplicates. */
export async function dataRoutes(app: FastifyInstance) {
  app.post<{ Params: { object: string } }>('/import/:object', async (req) => {
    const body = req.body as { records?: unknown } | undefined;
    if (body && typeof body === 'object' && !Array.isArray(body)) refuseUnknownKeys(body as Record<string, unknown>, ['records']);
    return importRecords(req.ctx, req.params.object, body?.records);
  });

  app.get<{ Params: { object: string } }>('/export/:object', async (req, reply) => {
    const q = parseWith(exportQuery, req.query, 'export parameters');
    const plan = await planExport(req.ctx, req.params.object, {
      fields: q.fields?.split(',').map((s) => s.trim()).filter(Boolean),
      filter: filterFromQuery(q),
      sortBy: q.sort_by,
      sortDir: q.sort_dir,
      limit: q.limit,
    });
    if (q.format === 'csv') {
      // RFC 4180: a value holding any line break (a lone CR or LF too) is quoted, not only one holding CRLF.
      const csv = stringify({ header: true, columns: plan.csvColumns, record_delimiter: '\r\n', quoted_match: /[\r\n]/ });
      // Pull records as the socket drains: backpressure keeps memory flat.
      const source = Readable.from(plan.csvRows());
      source.on('error', (e) => csv.destroy(e));
      source.pipe(csv);
      return reply
        .type('text/csv; charset=utf-8')
        .header('Content-Disposition', `attachment; filename="${plan.object.name}_export.csv"`)
        .send(csv);
    }
    const body = Readable.from(
      (async function* () {
        yield '{"format":"json","records":[';
        let n = 0;
        for await (const r of plan.rows()) {
          yield `${n ? ',' : ''}${JSON.stringify(Object.fromEntries(plan.fields.map((f) => [f, r[f] ?? null])))}`;
          n++;
        }
        yield `],"total":${n}}`;
      })(),
    );
    return reply.type('application/json; charset=utf-8').send(body);
  });

  app.post('/bulk', async (req) => ({ data: await bulkOperation(req.ctx, req.body) }));

  app.post('/duplicates', async (req) => {
    const b = parseWith(duplicatesBody, req.body ?? {}, 'duplicates request');
    if (b.action === 'detect') return findDuplicates(req.ctx, b.object, { limit: b.limit, recordId: b.record_id, minScore: b.min_score });
    if (b.action === 'merge') {
      return { data: await mergeRecords(req.ctx, b.object, { primary_id: b.primary_id, duplicate_ids: b.duplicate_ids, overrides: b.overrides ?? {}, dry_run: b.dry_run ?? false }) };
    }
    if (b.action === 'unmerge') {
      return { data: await unmergeRecords(req.ctx, b.merge_id) };
    }
    throw validationError("action is 'detect', 'merge' or 'unmerge'");
  });
}
