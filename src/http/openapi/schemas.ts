import { z } from 'zod';
import { ERROR_STATUS } from '../../services/errors.js';
import { pipelineOutput } from '../../services/pipelines.js';

/**
 * Response bodies of the REST API, for the OpenAPI document (routes put them in `schema.response`).
 * Envelopes are exact; a record is open (its fields are the workspace's schema, custom fields
 * included). A schema with a meta id becomes a named component.
 */

export const PATH_PARAMS: Record<string, string> = {
  object: 'Object name: companies, contacts, opportunities, tasks or a custom object (GET /api/v1/schema lists them)',
  id: 'Id (a UUID)',
  toObject: 'Object name of the associated record',
  toId: 'Id of the associated record',
  streamId: 'Stream id: an object name (contacts, opportunities, a custom object)',
  project: 'Project name: any (the token picks the workspace)',
};

/** Query parameters shared by many routes, by name (a route's own .describe() wins). */
export const QUERY_PARAMS: Record<string, string> = {
  limit: 'Page or result size (a whole number; each route has its maximum)',
  cursor: 'The nextCursor of the previous page',
  sort_by: 'Field to sort by',
  sort_dir: 'asc or desc',
  fields: 'Comma-separated fields to return',
  include_total: "'false' skips counting the total (faster on large objects)",
  filter_field: 'One condition: the field',
  filter_operator: 'One condition: the operator (eq, neq, gt, gte, lt, lte, contains, in, is_null, between...)',
  filter_value: 'One condition: the value',
  filters: 'A FilterGroup as JSON: {"operator": "and", "conditions": [{"field", "operator", "value"}]}',
  q: 'Text to search for',
  objects: 'Comma-separated object names to search (default: all)',
  tz: 'IANA time zone for dates and buckets (default: the workspace zone)',
  from: 'From this date-time (inclusive)',
  to: 'Until this date-time (exclusive)',
  actions: 'Comma-separated activity actions (created, updated, deleted, ...)',
  object: 'Object name',
  record_id: 'Record id',
  since: 'The nextCursor of the previous call: changes after it',
  assignee: "User id, or 'me'",
  format: 'json (default) or csv',
};

const when = z.string().describe('ISO-8601 date-time, UTC');
const nullableWhen = when.nullable();
const ref = z.object({ id: z.string(), name: z.string().nullable() });
const int = z.number().int();

/** A record: its fields by name, system and custom; a relation holds the related record's id. */
export const CrmRecord = z
  .looseObject({ id: z.string(), created_at: when.optional(), updated_at: when.optional(), created_by: z.string().nullable().optional() })
  .meta({ id: 'Record', description: "A record: every field of its object by name (custom fields included); a RELATION field holds the related record's id" });

/** GET of one record: the record, plus its related records by object. */
const EnrichedRecord = CrmRecord.extend({
  associations: z.record(z.string(), z.object({ total: int, records: z.array(z.object({ id: z.string(), name: z.string().nullable(), via: z.string() })) })).optional(),
}).meta({ id: 'EnrichedRecord', description: 'A record and, unless a fields projection was asked, its associations: related records by object, with the relation field they come through' });

export const one = <T extends z.ZodType>(data: T) => z.object({ data });
/** A keyset page: nextCursor null on the last page; total null when include_total=false. */
export const page = <T extends z.ZodType>(item: T) =>
  z.object({ data: z.array(item), total: int.nullable(), nextCursor: z.string().nullable().describe('Pass as cursor for the next page; null on the last page') });
/** A whole list (no paging). */
export const all = <T extends z.ZodType>(item: T) => z.object({ data: z.array(item), total: int });

export const RecordOne = one(CrmRecord);
export const RecordPage = page(CrmRecord).meta({ id: 'RecordPage' });
export const RecordGet = one(EnrichedRecord);
export const RecordBatch = one(z.array(CrmRecord));
export const Deleted = one(z.object({ id: z.string(), deleted: z.literal(true) }));
export const DeletedMany = one(z.object({ deleted: z.array(z.string()), not_found: z.array(z.string()) }));
export const Association = one(z.object({ object: z.string(), id: z.string(), to_object: z.string(), to_id: z.string(), created: z.boolean().optional(), deleted: z.boolean().optional() }));
export const Upserted = z.object({
  data: z.array(CrmRecord),
  results: z.array(z.object({ index: int, id: z.string(), action: z.enum(['created', 'updated']) })),
});

// Schema
const FieldDescription = z
  .looseObject({
    name: z.string(),
    label: z.string(),
    type: z.string(),
    required: z.boolean(),
    unique: z.boolean(),
    system: z.boolean(),
    read_only: z.boolean(),
    description: z.string().optional(),
    target: z.string().optional(),
    options: z.array(z.object({ value: z.string(), label: z.string() })).optional(),
  })
  .meta({ id: 'Field', description: 'A field: type, constraints (min, max, scale, default...) and, for SELECT, its options' });
const ObjectDescription = z
  .looseObject({
    name: z.string(),
    label: z.string(),
    label_plural: z.string(),
    description: z.string().nullable(),
    system: z.boolean(),
    display_fields: z.array(z.string()),
    fields: z.array(FieldDescription),
  })
  .meta({ id: 'Object', description: 'An object (a kind of record) and its fields' });
export const ObjectList = one(z.array(ObjectDescription));
export const ObjectOne = one(ObjectDescription);
export const FieldOne = one(FieldDescription);

// Users and workspace
const User = z.object({ id: z.string(), email: z.string(), name: z.string(), role: z.enum(['admin', 'member']), created_at: when });
export const Me = one(User.extend({ workspace: z.string(), time_zone: z.string() }));
export const Users = all(User);
export const Workspace = one(z.object({ id: int, name: z.string(), time_zone: z.string() }));

// Aggregations
const AggMeta = z.object({
  totalRecords: int,
  recordsProcessed: int,
  truncated: z.boolean(),
  groupTotal: int.optional(),
  groupsTruncated: z.boolean().optional(),
  otherCount: int.optional().describe('Records in the groups left out by the limit'),
});
const MetricValues = z.record(z.string(), z.record(z.string(), z.unknown())).describe('By field, then by function: the value');
export const KasarAggregate = z.object({
  object_name: z.string(),
  field: z.string(),
  function: z.string(),
  group_by: z.string().optional(),
  interval: z.string().optional(),
  results: z.array(z.object({ group: z.unknown(), value: z.unknown(), count: int, label: z.unknown().optional() })).optional(),
  value: z.unknown(),
  count: int,
  meta: AggMeta.optional(),
});
export const GroupAggregate = z.object({
  success: z.literal(true),
  data: z.object({
    count: int,
    aggregates: MetricValues,
    groups: z
      .array(z.looseObject({ count: int, aggregates: MetricValues, labels: z.record(z.string(), z.unknown()).optional() }))
      .optional()
      .describe('One per group: its dimension values by field name, count and aggregates'),
    meta: AggMeta,
  }),
});
const AggTree = z.record(z.string(), z.unknown()).describe('By aggregate name: a value ({count}, {sum}...) or buckets with their own aggregates');
export const TreeAggregate = z.object({ object: z.string(), count: int, aggregates: AggTree });
export const CogniteAggregate = z.object({ aggregates: AggTree });

// Work: tasks, notes, activity, inbox
export const TaskStats = one(
  z.object({
    total: int,
    open: int,
    overdue: int,
    by_status: z.record(z.string(), int),
    by_priority: z.record(z.string(), int),
    open_by_assignee: z.array(z.object({ assignee: z.string().nullable(), name: z.string().nullable(), open: int })),
  }),
);
const Note = z
  .object({
    id: z.string(),
    body: z.string(),
    visibility: z.enum(['private', 'workspace']),
    object: z.string().nullable(),
    record_id: z.string().nullable(),
    author: ref,
    created_at: when,
    updated_at: when,
  })
  .meta({ id: 'Note' });
export const NoteOne = one(Note);
export const NotePage = page(Note);
const Activity = z.object({ id: int, action: z.string(), at: when, user: ref.nullable(), via: z.string().nullable(), details: z.record(z.string(), z.unknown()).optional() });
export const Timeline = page(Activity);
export const Changes = z.object({
  data: z.array(Activity.extend({ object: z.string(), record_id: z.string(), record_name: z.string().nullable().optional() })),
  nextCursor: z.string().describe('Pass as since to read on'),
  hasMore: z.boolean(),
});
const Message = z.object({
  id: z.string(),
  thread_id: z.string(),
  direction: z.enum(['inbound', 'outbound']),
  from: z.object({ email: z.string(), name: z.string().nullable() }),
  to: z.array(z.string()),
  subject: z.string().nullable(),
  body: z.string(),
  sent_at: when,
});
const Thread = z
  .object({
    id: z.string(),
    subject: z.string().nullable(),
    snippet: z.string().nullable(),
    unread: z.boolean(),
    message_count: int,
    last_message_at: nullableWhen,
    contact: ref.nullable(),
    company: ref.nullable(),
    created_at: when,
  })
  .meta({ id: 'Thread' });
export const ThreadPage = page(Thread);
export const ThreadOne = one(Thread);
export const ThreadWithMessages = one(Thread.extend({ messages: z.array(Message) }));
export const Interaction = one(Message.extend({ type: z.literal('email'), thread: Thread }));
const Integration = z.object({ configured: z.boolean(), provider: z.string().nullable(), supported_providers: z.array(z.string()), note: z.string().optional() });
export const Integrations = one(z.object({ email: Integration, calendar: Integration }));

// Pipelines
const Pipeline = pipelineOutput.meta({ id: 'Pipeline' });
export const Pipelines = all(Pipeline);
export const PipelineOne = one(Pipeline);
export const PipelineStats = one(
  z
    .object({
      pipeline: z.object({ id: z.string(), name: z.string(), object: z.string(), field: z.string() }),
      steps: z.array(
        z.looseObject({
          key: z.string(),
          name: z.string(),
          current_count: int,
          current_amount: z.number().nullable().optional(),
          entered: int,
          avg_time_in_stage_seconds: z.number().nullable(),
          completed_stays: int,
          converted: int.optional().describe('Not on won or lost steps'),
          conversion_rate: z.number().nullable().optional(),
        }),
      ),
    })
    .loose(),
);
export const Moved = z.object({ data: CrmRecord, move: z.object({ from: z.string().nullable(), to: z.string(), moved: z.boolean() }) });

// Search, import/export, bulk, duplicates
export const SearchHits = z.object({
  data: z.array(z.object({ object: z.string(), id: z.string(), name: z.string(), snippet: z.string().describe('Matched text, terms in <mark>'), score: z.number(), match: z.string() })),
  total: int,
  query: z.object({ q: z.string(), objects: z.array(z.string()), fuzzy: z.boolean() }),
});
export const Imported = z.object({
  object_name: z.string(),
  created: int,
  duplicates: int.describe('Rows skipped: they match an existing record (email, phone, domain or name)'),
  failed: int,
  errors: z.array(z.object({ index: int, code: z.string(), message: z.string() })),
});
export const Exported = z.object({
  format: z.literal('json'),
  records: z.array(CrmRecord),
  total: int.describe('Records matching the filter, as in a list (more than `records` when the export was cut at its limit)'),
  nextCursor: z.string().optional().describe('Present when the limit cut the export short: pass it as `cursor` for the rest'),
});
export const Bulk = one(
  z
    .looseObject({ action: z.string(), object: z.string(), matched: int, dry_run: z.boolean() })
    .describe('What was (or, with dry_run, would be) changed: updated/changed, would_change, unchanged, samples...'),
);
export const DuplicateClusters = z.object({
  object: z.string(),
  data: z.array(
    z.object({
      score: z.number(),
      records: z.array(z.object({ id: z.string(), name: z.string() })),
      evidence: z.array(z.looseObject({ kind: z.string(), record_ids: z.array(z.string()) })),
    }),
  ),
  total: int,
});
export const Merged = one(
  z.object({
    primary_id: z.string(),
    merged_ids: z.array(z.string()),
    record: CrmRecord,
    changes: z.record(z.string(), z.unknown()),
    moves: z.record(z.string(), int),
    merge_id: z.string().optional().describe('For unmerge; absent on a dry run'),
    dry_run: z.boolean(),
  }),
);
export const Unmerged = one(z.object({ merge_id: z.string(), primary_id: z.string(), restored_ids: z.array(z.string()) }));
export const DuplicatesResult = z.union([DuplicateClusters, Merged, Unmerged]);

export const Health = z.object({ status: z.literal('ok'), version: z.string(), database: z.string() });
export const OpenApiDocument = z.looseObject({ openapi: z.string(), info: z.looseObject({}), paths: z.looseObject({}) });

// Errors
const STATUS_TEXT: Record<number, string> = {
  400: 'Invalid request: the message names the problem and the fix',
  401: 'Missing, invalid or revoked token (WWW-Authenticate: Bearer)',
  403: "The token's role may not do this",
  404: 'Not found',
  409: 'Conflict: a unique value is taken, or the name already exists',
  413: 'Body over 5 MB',
  414: 'A path segment over 100 characters',
  415: 'The body is not JSON (send Content-Type: application/json)',
  422: 'Too expensive to answer (size or time budget): narrow the request',
  429: 'Rate limit or failed-authentication throttle; see Retry-After',
  500: 'Internal error (details in the server log, none on the wire)',
  503: 'Shutting down, database busy, or the heavy-read lane full; see Retry-After',
};

const codesOf = (status: number) =>
  Object.entries(ERROR_STATUS)
    .filter(([, s]) => s === status)
    .map(([c]) => c) as [string, ...string[]];
const apiErrors = new Map<number, z.ZodType>();

/** {"error": true, "code", "message", "details"?}: the /api/v1 error body, with the codes a status can carry. */
function apiErrorBody(status: number): z.ZodType {
  let s = apiErrors.get(status);
  if (!s) {
    s = z
      .object({
        error: z.literal(true),
        code: z.enum(codesOf(status)),
        message: z.string(),
        details: z.record(z.string(), z.unknown()).optional().describe('Machine-readable extras: valid fields, allowed values, per-row errors, retryAfterSeconds'),
      })
      .meta({ id: `Error${status}` });
    apiErrors.set(status, s);
  }
  return s;
}

export const BitrixError = z
  .object({ success: z.literal(false), error: z.object({ code: z.string().describe('INVALID_PARAMS for every 400, TOKEN_MISSING without a key; else our code'), message: z.string() }) })
  .meta({ id: 'Bitrix24Error' });
export const CogniteError = z.object({ error: z.object({ code: int.describe('The HTTP status'), message: z.string() }) }).meta({ id: 'CogniteError' });

/** The response object of an error status: its meaning, and the route's error body (the API's by default). */
export function apiError(status: number, body?: z.ZodType) {
  const text = STATUS_TEXT[status] ?? 'Error';
  return {
    description: body ? text : `${text}. Codes: ${codesOf(status).join(', ')}`,
    content: { 'application/json': { schema: body ?? apiErrorBody(status) } },
  };
}
