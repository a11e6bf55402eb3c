import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { validationError } from '../../services/errors.js';
import { type FilterGroup, filterFromQuery } from '../../services/filters.js';
import { queryInteger } from '../../services/input-limits.js';
import {
  associate,
  createRecord,
  createRecords,
  deleteRecord,
  deleteRecords,
  dissociate,
  getRecord,
  type ListOptions,
  listRecords,
  MAX_BATCH,
  updateRecord,
  updateRecords,
  upsertRecords,
} from '../../services/records.js';
import { parseWith } from '../../services/schema.js';
import { refuseUnknownKeys } from '../../services/suggest.js';
import { cursorOf, cursorParams } from '../cursor-param.js';
import { Association, Deleted, DeletedMany, RecordBatch, RecordGet, RecordOne, RecordPage, Upserted } from '../openapi/schemas.js';

type P = { Params: { object: string; id: string; toObject: string; toId: string } };

const csv = (v: unknown) =>
  typeof v === 'string'
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : Array.isArray(v)
      ? v.map(String)
      : undefined;

const listQuery = z
  .object({
    limit: queryInteger.optional(),
    ...cursorParams,
    sort_by: z.string().optional(),
    sort_dir: z.enum(['asc', 'desc']).optional(),
    fields: z.union([z.string(), z.array(z.string())]).optional(),
    include_total: z.enum(['true', 'false']).optional(),
    filter_field: z.string().optional(),
    filter_operator: z.string().optional(),
    filter_value: z.string().optional(),
    filters: z.string().optional(),
  })
  .strict();

function listOptions(q: z.infer<typeof listQuery>, filter: FilterGroup | undefined): ListOptions {
  return {
    filter,
    limit: q.limit,
    cursor: cursorOf(q),
    sortBy: q.sort_by,
    sortDir: q.sort_dir,
    fields: csv(q.fields),
    includeTotal: q.include_total !== 'false',
  };
}

const searchBody = z
  .object({
    operator: z.enum(['and', 'or', 'not']).optional(),
    conditions: z.array(z.unknown()).optional(),
    filter: z.unknown().optional(),
    limit: z.number().int().optional(),
    cursor: z.string().optional(),
    sort_by: z.string().optional(),
    sort_dir: z.enum(['asc', 'desc']).optional(),
    fields: z.union([z.string(), z.array(z.string())]).optional(),
    include_total: z.boolean().optional(),
  })
  .strict();

/** Field values by name: the object's schema says which (GET /api/v1/schema/{object}). */
const values = z.record(z.string(), z.unknown()).describe('Field values by name, e.g. {"first_name": "Ada", "email": "ada@example.com"}');
/** Batch bodies are read by recordsOf (below): these describe them. */
const batch = (extra = {}) =>
  z
    .object({ records: z.array(values).min(1).max(MAX_BATCH), ...extra })
    .strict()
    .describe('A bare array of records is accepted too');
const write = (summary: string, body: z.ZodType, response: z.ZodType, status = 200) => ({ schema: { summary, body, response: { [status]: response }, errors: [403, 404, 409] } });
const assoc = (summary: string) => ({ schema: { summary, response: { 200: Association }, errors: [403, 404] } });
const docs = {
  list: { schema: { summary: 'List records with filters, sorting and pagination', querystring: listQuery, response: { 200: RecordPage }, errors: [404, 422] } },
  search: { schema: { summary: 'Search with a FilterGroup in the body', querystring: listQuery, body: searchBody, response: { 200: RecordPage }, errors: [404, 422] } },
  get: {
    schema: {
      summary: 'Get a record with its associations',
      querystring: z.object({ fields: z.string().optional().describe('Comma-separated fields to return (no associations then)') }),
      response: { 200: RecordGet },
      errors: [404],
    },
  },
  create: write('Create a record (defaults applied)', values, RecordOne, 201),
  put: write('Update a record (only the fields sent)', values, RecordOne),
  patch: write('Update a record (alias of PUT)', values, RecordOne),
  delete: { schema: { summary: 'Delete a record', response: { 200: Deleted }, errors: [403, 404] } },
  deleteMany: {
    schema: {
      summary: 'Delete records (batch)',
      description: 'The ids as {"ids": [...]} or ?ids=a,b; ids that do not exist come back in not_found.',
      querystring: z.object({ ids: z.string().optional().describe('Comma-separated ids') }),
      body: z.object({ ids: z.array(z.string()).max(MAX_BATCH) }).strict(),
      response: { 200: DeletedMany },
      errors: [403, 404],
    },
  },
  associate: assoc('Associate two records'),
  dissociate: assoc('Remove an association'),
  batchCreate: write('Batch create (all or none)', batch(), RecordBatch, 201),
  batchUpdate: write('Batch update (all or none); each record carries its id', batch(), RecordBatch),
  batchUpsert: {
    schema: {
      ...write('Batch create or update by id or a unique field (all or none)', batch({ key: z.string().optional().describe("Match on 'id' (default) or a unique field such as email") }), Upserted)
        .schema,
      querystring: z.object({ key: z.string().optional() }),
    },
  },
};

/** The records of a batch body; any other key is refused (a misspelt or unsupported "dry_run" must not write for real). */
function recordsOf(body: unknown, allowed: readonly string[] = ['records']): unknown[] {
  if (body && typeof body === 'object' && !Array.isArray(body)) refuseUnknownKeys(body as Record<string, unknown>, allowed);
  const list = Array.isArray(body) ? body : (body as { records?: unknown } | null)?.records;
  if (!Array.isArray(list)) throw validationError('Send {"records": [ ... ]}');
  return list;
}

export async function recordRoutes(app: FastifyInstance) {
  app.get<P>('/records/:object', docs.list, async (req) => {
    const q = parseWith(listQuery, req.query, 'query parameters');
    return listRecords(req.ctx, req.params.object, listOptions(q, filterFromQuery(q)));
  });

  app.post<P>('/records/:object/search', docs.search, async (req) => {
    const b = parseWith(searchBody, req.body ?? {}, 'search body');
    if (b.filter !== undefined && (b.operator || b.conditions)) throw validationError("Send the FilterGroup either as the body ({operator, conditions}) or under 'filter', not both");
    const filter = (b.filter ?? (b.operator || b.conditions ? { operator: b.operator ?? 'and', conditions: b.conditions ?? [] } : undefined)) as FilterGroup | undefined;
    const q = parseWith(listQuery, req.query, 'query parameters');
    return listRecords(req.ctx, req.params.object, {
      filter,
      limit: b.limit ?? q.limit,
      cursor: b.cursor ?? cursorOf(q),
      sortBy: b.sort_by ?? q.sort_by,
      sortDir: b.sort_dir ?? q.sort_dir,
      fields: csv(b.fields ?? q.fields),
      includeTotal: b.include_total ?? q.include_total !== 'false',
    });
  });

  app.get<P>('/records/:object/:id', docs.get, async (req) => {
    const q = req.query as { fields?: string };
    return { data: await getRecord(req.ctx, req.params.object, req.params.id, { fields: csv(q.fields) }) };
  });

  app.post<P>('/records/:object', docs.create, async (req, reply) => reply.status(201).send({ data: await createRecord(req.ctx, req.params.object, req.body) }));

  const update = async (req: { ctx: any; params: P['Params']; body: unknown }) => ({
    data: await updateRecord(req.ctx, req.params.object, req.params.id, req.body),
  });
  app.put<P>('/records/:object/:id', docs.put, update);
  app.patch<P>('/records/:object/:id', docs.patch, update);

  app.delete<P>('/records/:object/:id', docs.delete, async (req) => ({ data: await deleteRecord(req.ctx, req.params.object, req.params.id) }));

  app.delete<P>('/records/:object', docs.deleteMany, async (req) => {
    if (req.body && typeof req.body === 'object' && !Array.isArray(req.body)) refuseUnknownKeys(req.body as Record<string, unknown>, ['ids']);
    const fromBody = (req.body as { ids?: unknown } | undefined)?.ids;
    const ids = fromBody ?? csv((req.query as { ids?: string }).ids);
    if (!Array.isArray(ids)) throw validationError('Send the ids to delete as {"ids": [...]} or ?ids=a,b');
    return { data: await deleteRecords(req.ctx, req.params.object, ids as string[]) };
  });

  app.put<P>('/records/:object/:id/associations/:toObject/:toId', docs.associate, async (req) => ({
    data: await associate(req.ctx, req.params.object, req.params.id, req.params.toObject, req.params.toId),
  }));
  app.delete<P>('/records/:object/:id/associations/:toObject/:toId', docs.dissociate, async (req) => ({
    data: await dissociate(req.ctx, req.params.object, req.params.id, req.params.toObject, req.params.toId),
  }));

  app.post<P>('/records/:object/batch/create', docs.batchCreate, async (req, reply) => reply.status(201).send({ data: await createRecords(req.ctx, req.params.object, recordsOf(req.body)) }));
  app.post<P>('/records/:object/batch/update', docs.batchUpdate, async (req) => {
    const updates = recordsOf(req.body).map((r) => {
      const { id, ...values } = (r ?? {}) as Record<string, unknown>;
      return { id: id as string, values };
    });
    return { data: await updateRecords(req.ctx, req.params.object, updates) };
  });
  app.post<P>('/records/:object/batch/upsert', docs.batchUpsert, async (req) => {
    const key = (req.body as { key?: unknown } | null)?.key ?? (req.query as { key?: string }).key ?? 'id';
    if (typeof key !== 'string') throw validationError("'key' must be a field name");
    return upsertRecords(req.ctx, req.params.object, recordsOf(req.body, ['records', 'key']), key);
  });
}
