import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { bulkOperation, bulkSchema } from '../../services/bulk.js';
import { findDuplicates, mergeRecords, unmergeRecords } from '../../services/duplicates.js';
import { validationError } from '../../services/errors.js';
import { filterFromQuery } from '../../services/filters.js';
import { type ExportStream, IMPORT_BATCH, importRecords, planExport } from '../../services/import-export.js';
import { queryInteger } from '../../services/input-limits.js';
import { parseWith } from '../../services/schema.js';
import { refuseUnknownKeys } from '../../services/suggest.js';
import { cancelledError } from '../../services/work.js';
import { cursorOf, cursorParams } from '../cursor-param.js';
import { Bulk, DuplicatesResult, Exported, Imported } from '../openapi/schemas.js';

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
    ...cursorParams,
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

const docs = {
  // The body is read by hand and by importRecords: this describes it.
  import: {
    schema: {
      summary: 'Import records in batch: rows matching an existing record are skipped, failures listed',
      body: z.object({ records: z.array(z.record(z.string(), z.unknown())).min(1).max(IMPORT_BATCH).describe('Records: field values by name') }).strict(),
      response: { 200: Imported },
      errors: [403, 404],
    },
  },
  export: {
    schema: {
      summary: 'Export records as JSON or CSV (streamed)',
      querystring: exportQuery,
      response: {
        200: {
          description: 'format=json: {format, records, total}; format=csv: a CSV file with a header row',
          content: { 'application/json': { schema: Exported }, 'text/csv': { schema: z.string() } },
        },
      },
      errors: [404, 422],
    },
  },
  bulk: { schema: { summary: 'Bulk update, add relation, or remove relation (by ids or filter; dry_run previews)', body: bulkSchema, response: { 200: Bulk }, errors: [403, 404, 409, 422] } },
  duplicates: {
    schema: {
      summary: 'Detect, merge or unmerge duplicates',
      description: 'action=detect answers clusters {object, data, total}; merge and unmerge answer {data}. A merge can be previewed with dry_run and undone with its merge_id.',
      body: duplicatesBody,
      response: { 200: DuplicatesResult },
      errors: [403, 404, 409, 422],
    },
  },
};

/** Import, export, bulk operations and duplicates. */
export async function dataRoutes(app: FastifyInstance) {
  app.post<{ Params: { object: string } }>('/import/:object', docs.import, async (req) => {
    const body = req.body as { records?: unknown } | undefined;
    if (body && typeof body === 'object' && !Array.isArray(body)) refuseUnknownKeys(body as Record<string, unknown>, ['records']);
    return importRecords(req.ctx, req.params.object, body?.records);
  });

  app.get<{ Params: { object: string } }>('/export/:object', docs.export, async (req, reply) => {
    const q = parseWith(exportQuery, req.query, 'export parameters');
    // A client that hangs up stops its export and gives its place in the heavy lane back, also
    // while it waits for that place.
    const ac = new AbortController();
    let out: ExportStream | undefined;
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) ac.abort();
      out?.close();
    });
    const ctx = { ...req.ctx, work: { ...req.ctx.work, signal: ac.signal } };
    const plan = await planExport(ctx, req.params.object, {
      fields: q.fields
        ?.split(',')
        .map((s) => s.trim())
        .filter(Boolean),
      filter: filterFromQuery(q),
      sortBy: q.sort_by,
      sortDir: q.sort_dir,
      limit: q.limit,
      cursor: cursorOf(q),
    });
    // The lane's place is taken before the first byte, so a full lane still answers 503 / 429.
    const stream = (out = await plan.open(q.format));
    if (ac.signal.aborted) {
      // Gone while the place was granted: nobody to write to.
      stream.close();
      throw cancelledError();
    }
    // Pulled as the socket drains: backpressure keeps memory flat.
    const body = Readable.from(stream.chunks);
    // Out of time while the client reads slowly (or not at all): the answer ends there, cut short.
    stream.stopped.addEventListener('abort', () => body.destroy(stream.reason()), { once: true });
    if (q.format === 'csv') return reply.type('text/csv; charset=utf-8').header('Content-Disposition', `attachment; filename="${plan.object.name}_export.csv"`).send(body);
    return reply.type('application/json; charset=utf-8').send(body);
  });

  app.post('/bulk', docs.bulk, async (req) => ({ data: await bulkOperation(req.ctx, req.body) }));

  app.post('/duplicates', docs.duplicates, async (req) => {
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
