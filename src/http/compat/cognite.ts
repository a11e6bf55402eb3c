import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { aggregateTree } from '../../services/aggregate-tree.js';
import type { Ctx } from '../../services/context.js';
import { CrmError, isCrmError, validationError } from '../../services/errors.js';
import { type FieldDef, NUMERIC_TYPES, parseDateTime } from '../../services/field-types.js';
import { getSchema, type ObjectDef } from '../../services/schema.js';
import { CogniteAggregate, CogniteError } from '../openapi/schemas.js';

/**
 * Cognite's records aggregate (cognite-records-aggregate.txt), translated onto the shared aggregate
 * tree service. All Cognite knowledge lives here:
 *  - path: POST /api/v1/projects/{project}/streams/{streamId}/records/aggregate (the document's base
 *    URL), and the same without /projects/{project}. The token picks the workspace; {project} is
 *    any name.
 *  - a stream is an object: streamId = the object's name ('contacts', 'deals', a custom object).
 *  - a property reference [space, container, property] names the field `property`; space and
 *    container are not ours to check (the document's own example mixes them). A camelCase
 *    property with no field of that name means its snake_case field (myProperty -> my_property).
 *  - lastUpdatedTime is a range on the records' updated_at, with the document's rules on bounds.
 *  - the answer is {"aggregates": {...}} as documented; errors are Cognite's {"error": {"code":
 *    <HTTP status>, "message"}} (the document names none; this is Cognite's API-wide shape).
 */

const STREAM_RE = /^[a-z]([a-z0-9_-]{0,98}[a-z0-9])?$/;
const BODY_KEYS = ['aggregates', 'lastUpdatedTime', 'filter'];
const BOUNDS = ['gt', 'gte', 'lt', 'lte'] as const;
const BUCKET_LISTS: Record<string, string> = {
  uniqueValues: 'uniqueValueBuckets',
  numberHistogram: 'numberHistogramBuckets',
  timeHistogram: 'timeHistogramBuckets',
};
const FILTER_KINDS = ['and', 'or', 'not', 'equals', 'in', 'range', 'prefix', 'exists', 'containsAny', 'containsAll'];
const REF_EXAMPLE = '["mySpace", "myContainer", "price"]';

type Json = Record<string, unknown>;
const isObj = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);

/** [space, container, property] -> the object's field name. */
function fieldName(obj: ObjectDef, ref: unknown, where: string): string {
  if (!Array.isArray(ref) || ref.length !== 3 || !ref.every((p) => typeof p === 'string' && p.length > 0 && p.length <= 255))
    throw validationError(`'${where}' must be a property reference [space, container, property], e.g. ${REF_EXAMPLE}`);
  const p = ref[2] as string;
  if (obj.fields.some((f) => f.name === p)) return p;
  const snake = p.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  // Unknown either way: the service names the valid fields.
  return obj.fields.some((f) => f.name === snake) ? snake : p;
}

const fieldOf = (obj: ObjectDef, name: string): FieldDef | undefined => obj.fields.find((f) => f.name === name);

/**
 * The aggregates dictionary with property references made field names. An avg of a property with
 * no numeric values (a text field, as the document's own example averages "manufacturer") is the
 * average of nothing: null. It is asked of the service as a count (one node all the same, so the
 * limits count it) and answered as {"avg": null}.
 */
function translateAggregates(obj: ObjectDef, level: unknown, path: string): unknown {
  if (!isObj(level)) return level;
  const out: Json = {};
  for (const [name, node] of Object.entries(level)) {
    if (!isObj(node) || Object.keys(node).length !== 1) {
      out[name] = node; // the service says what an aggregate looks like
      continue;
    }
    const [kind, spec] = Object.entries(node)[0]!;
    if (!isObj(spec)) {
      out[name] = node;
      continue;
    }
    const s: Json = { ...spec };
    const where = `${path}${name}.${kind}`;
    if (s.property !== undefined || kind !== 'count') s.property = fieldName(obj, spec.property, `${where}.property`);
    if (s.aggregates !== undefined) s.aggregates = translateAggregates(obj, s.aggregates, `${where}.aggregates.`);
    const f = typeof s.property === 'string' ? fieldOf(obj, s.property) : undefined;
    out[name] = kind === 'avg' && f && !NUMERIC_TYPES.has(f.type) ? { count: s } : { [kind]: s };
  }
  return out;
}

/** A Cognite filter with field names; numbers compared with SELECT options are their decimal text (options are text). */
function translateFilter(obj: ObjectDef, node: unknown, path: string): unknown {
  const kind = isObj(node) && Object.keys(node).length === 1 ? Object.keys(node)[0]! : undefined;
  // Only the Cognite spelling here (the shared normalizer would also take Kasar and Bitrix filters).
  if (!kind || !FILTER_KINDS.includes(kind)) throw validationError(`'${path}' must be an object with exactly one of: ${FILTER_KINDS.join(', ')}`);
  const spec = (node as Json)[kind];
  if ((kind === 'and' || kind === 'or') && Array.isArray(spec)) return { [kind]: spec.map((x, i) => translateFilter(obj, x, `${path}.${kind}[${i}]`)) };
  if (kind === 'not') return { not: translateFilter(obj, spec, `${path}.not`) };
  if (!isObj(spec)) return node;
  const field = fieldName(obj, spec.property, `${path}.${kind}.property`);
  const s: Json = { ...spec, property: field };
  const t = fieldOf(obj, field)?.type;
  if (t === 'SELECT' || t === 'MULTI_SELECT') {
    const text = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? String(v) : v);
    if (s.value !== undefined) s.value = text(s.value);
    if (Array.isArray(s.values)) s.values = s.values.map(text);
  }
  return { [kind]: s };
}

/** One bound of lastUpdatedTime: epoch milliseconds (an integer) or an ISO-8601 date-time. */
function instant(v: unknown, where: string): string {
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || Math.abs(v) > 8.64e15)
      throw validationError(`'${where}' must be an integer number of milliseconds since the Unix epoch (e.g. 1705341600000) or an ISO-8601 date-time; got ${v}`);
    return new Date(v).toISOString();
  }
  if (typeof v === 'string') {
    try {
      return parseDateTime(where, v);
    } catch (e) {
      if (!isCrmError(e)) throw e;
    }
  }
  throw validationError(`'${where}' must be an ISO-8601 date-time (e.g. 2030-05-15T18:00:00.00Z) or an integer number of milliseconds since the Unix epoch; got ${JSON.stringify(v)}`);
}

/** The document's rules: a left bound (gt or gte) is required; never two lower or two upper bounds. */
export function lastUpdatedRange(input: unknown): Json {
  if (!isObj(input)) throw validationError('"lastUpdatedTime" must be an object such as {"gt": 1705341600000, "lt": "2030-05-15T18:00:00.00Z"}');
  const extra = Object.keys(input).filter((k) => !(BOUNDS as readonly string[]).includes(k));
  if (extra.length) throw validationError(`"lastUpdatedTime" takes gt, gte, lt and lte; unknown: ${extra.join(', ')}`);
  const has = (k: string) => input[k] !== undefined;
  if (has('gt') && has('gte')) throw validationError('"lastUpdatedTime" has two lower bounds (gt and gte); give one');
  if (has('lt') && has('lte')) throw validationError('"lastUpdatedTime" has two upper bounds (lt and lte); give one');
  if (!has('gt') && !has('gte')) throw validationError('"lastUpdatedTime" must include a lower bound (gt or gte)');
  const range: Json = { property: 'updated_at' };
  for (const k of BOUNDS) if (has(k)) range[k] = instant(input[k], `lastUpdatedTime.${k}`);
  return { range };
}

/** The service's tree answer in the document's shape: only what the request named, no bookkeeping. */
function shapeLevel(level: Json, result: Json): Json {
  const out: Json = {};
  for (const [name, node] of Object.entries(level)) {
    const [kind, spec] = Object.entries(node as Json)[0] as [string, Json];
    const r = result[name] as Json;
    const list = BUCKET_LISTS[kind];
    if (!list) {
      out[name] = r;
      continue;
    }
    const sub = isObj(spec.aggregates) ? spec.aggregates : undefined;
    const buckets = (r[list] as Json[])
      // A record without the property has no value to count (as in the document's examples).
      .filter((b) => kind !== 'uniqueValues' || b.value !== null)
      .map((b) => ({
        ...(kind === 'uniqueValues' ? { value: b.value } : { start: b.start }),
        count: b.count,
        ...(sub ? { aggregates: shapeLevel(sub, b.aggregates as Json) } : {}),
      }));
    out[name] = { [list]: buckets };
  }
  return out;
}

/** Puts back {"avg": null} where the request's avg had no numeric values (see translateAggregates). */
function nullAvgs(asked: Json, sent: Json, result: Json): Json {
  for (const [name, node] of Object.entries(asked)) {
    if (!isObj(node)) continue;
    const [kind, spec] = Object.entries(node)[0] as [string, Json];
    const s = sent[name] as Json;
    if (kind === 'avg' && 'count' in s) result[name] = { avg: null };
    const list = BUCKET_LISTS[kind];
    if (list && isObj(spec.aggregates)) {
      const inner = Object.values(s)[0] as Json;
      for (const b of ((result[name] as Json)[list] as Json[]) ?? []) nullAvgs(spec.aggregates, inner.aggregates as Json, b.aggregates as Json);
    }
  }
  return result;
}

/** As routes/aggregate.ts: a client that hangs up stops its heavy read. */
function untilClientLeaves(req: FastifyRequest, reply: FastifyReply): Ctx {
  const ac = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return { ...req.ctx, work: { ...req.ctx.work, signal: ac.signal } };
}

export async function recordsAggregate(ctx: Ctx, streamId: string, body: unknown): Promise<{ aggregates: Json }> {
  if (!STREAM_RE.test(streamId)) throw validationError(`streamId '${streamId}' must be 1 to 100 characters: a lowercase letter, then lowercase letters, digits, _ or -, ending in a letter or digit`);
  const { objects } = await getSchema(ctx);
  const obj = objects.get(streamId);
  if (!obj) throw new CrmError('NOT_FOUND', `Stream '${streamId}' does not exist. Each object is a stream: ${[...objects.keys()].join(', ')}`);
  if (!isObj(body)) throw validationError('Send {"aggregates": {...}, "lastUpdatedTime": {...}, "filter": {...}}');
  const extra = Object.keys(body).filter((k) => !BODY_KEYS.includes(k));
  if (extra.length) throw validationError(`Unknown key(s) ${extra.join(', ')}; the body takes aggregates, lastUpdatedTime and filter`);
  if (body.aggregates === undefined) throw validationError('"aggregates" is required: a dictionary of named aggregates');
  if (!isObj(body.aggregates)) throw validationError('"aggregates" must be an object of named aggregates, e.g. {"my_avg": {"avg": {"property": ' + REF_EXAMPLE + '}}}');
  const aggregates = translateAggregates(obj, body.aggregates, '') as Json;
  const parts = [...(body.filter === undefined ? [] : [translateFilter(obj, body.filter, 'filter')]), ...(body.lastUpdatedTime === undefined ? [] : [lastUpdatedRange(body.lastUpdatedTime)])];
  const filter = parts.length === 0 ? undefined : parts.length === 1 ? parts[0] : { and: parts };
  // The document gives uniqueValues no size: every distinct value, within the answer-size budget.
  const r = await aggregateTree(ctx, obj.name, { aggregates, filter, defaultSize: Number.POSITIVE_INFINITY });
  const shaped = shapeLevel(aggregates, r.aggregates as Json);
  return { aggregates: nullAvgs(body.aggregates, aggregates, shaped) };
}

type P = { Params: { project?: string; streamId: string } };

// recordsAggregate checks the body by hand (its messages are Cognite's): this describes it.
const doc = {
  schema: {
    summary: 'Cognite records aggregate over a stream (an object)',
    description: 'Property references are [space, container, property]; the answer holds only the aggregates asked.',
    body: z
      .object({
        aggregates: z.record(z.string(), z.unknown()).describe('Named aggregates: count, sum, avg, min, max, uniqueValues, numberHistogram, timeHistogram'),
        lastUpdatedTime: z
          .object({
            gt: z.union([z.number(), z.string()]).optional(),
            gte: z.union([z.number(), z.string()]).optional(),
            lt: z.union([z.number(), z.string()]).optional(),
            lte: z.union([z.number(), z.string()]).optional(),
          })
          .optional()
          .describe('Epoch milliseconds or ISO-8601; a lower bound (gt or gte) is required'),
        filter: z.unknown().optional(),
      })
      .strict(),
    response: { 200: CogniteAggregate },
    errors: [404, 422],
    errorBody: CogniteError,
  },
};

/** Registered inside /api/v1 (auth, throttle, input limits apply); its errors in Cognite's shape. */
export async function cogniteRoutes(app: FastifyInstance) {
  // Every error of these routes (auth, limits, bad JSON, the service's) leaves the one error
  // handler as {"error": true, "code", "message"} with its status and headers; reshaped here.
  app.addHook('onSend', async (_req, reply, payload) => {
    if (reply.statusCode < 400 || typeof payload !== 'string') return payload;
    try {
      const b = JSON.parse(payload) as { error?: unknown; message?: unknown };
      if (b?.error === true) return JSON.stringify({ error: { code: reply.statusCode, message: b.message } });
    } catch {
      // not JSON: leave it
    }
    return payload;
  });
  const handler = async (req: FastifyRequest<P>, reply: FastifyReply) => recordsAggregate(untilClientLeaves(req, reply), req.params.streamId, req.body);
  app.post<P>('/projects/:project/streams/:streamId/records/aggregate', doc, handler);
  app.post<P>('/streams/:streamId/records/aggregate', doc, handler);
}
