import { AsyncLocalStorage } from 'node:async_hooks';
import { sql, type Expression, type ExpressionBuilder, type Kysely, type SqlBool } from 'kysely';
import { newId } from './ids.js';
import type { Tables } from '../db/tables.js';
import type { Ctx } from './context.js';
import { CrmError, validationError, type ErrorCode } from './errors.js';
import { decodeValue, encodeValue, type FieldDef } from './field-types.js';
import { compileFilter, relatedValueSql, resolveRelated, type FilterGroup } from './filters.js';
import { getSchema, loadedSchema, resolveField, resolveObject, unknownField, type ObjectDef, type WorkspaceSchema } from './schema.js';
import { recordActivity, type ActivityEntry } from './activity.js';
import { checkpoint } from './work.js';
import { nowIso } from './clock.js';
import { bulkInsert } from '../db/bulk-insert.js';
import { removeKeys, writeKeys, type MatchKey } from './dedupe-keys.js';
import { displayColumns, displayNameOfRow, namesFor, withRelationNames } from './display-names.js';
import { indexReferrers, indexRows, unindexRecords } from './search.js';
import { budgetWhere, heavy, tooExpensive } from './budget.js';
import { runRead } from './aggregate.js';

export type RecordData = Record<string, unknown> & { id: string };

export const DEFAULT_LIMIT = 20;
export const MAX_LIMIT = 100;
export const MAX_BATCH = 100;

type AnyDb = Kysely<any>;
type EB = ExpressionBuilder<any, any>;
const dyn = (db: Kysely<Tables>) => db as unknown as AnyDb;

// ---------------------------------------------------------------------------------------------
// Row <-> record

function toRecord(obj: ObjectDef, row: Record<string, unknown>, fields?: FieldDef[]): RecordData {
  const out: Record<string, unknown> = {};
  for (const f of fields ?? obj.fields) out[f.name] = decodeValue(f, row[f.column]);
  return out as RecordData;
}

function projection(obj: ObjectDef, fields?: string[]): FieldDef[] {
  if (!fields || fields.length === 0) return obj.fields;
  const set = new Set(['id', ...fields]);
  return [...set].map((n) => resolveField(obj, n));
}

// ---------------------------------------------------------------------------------------------
// Listing: filters, sort, keyset pagination

export interface ListOptions {
  filter?: FilterGroup | undefined;
  sortBy?: string | undefined;
  sortDir?: 'asc' | 'desc' | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
  fields?: string[] | undefined;
  /** Skip the COUNT(*) when the caller does not need it. */
  includeTotal?: boolean | undefined;
  /** Internal callers (export) page with larger pages than clients may ask for. */
  maxLimit?: number | undefined;
  /**
   * RELATION values as {id, name} instead of the bare id (agents' surfaces): one more query per
   * related object for the whole page. REST leaves it off: its contract has bare ids.
   */
  relationNames?: boolean | undefined;
  /** The zone relative dates ('today') are read in, when the caller was given one; else the workspace's. */
  timeZone?: string | undefined;
}

export interface ListResult {
  data: RecordData[];
  total: number | null;
  nextCursor: string | null;
}

interface CursorState {
  /** sort field */
  f: string;
  d: 'asc' | 'desc';
  /** stored value of the sort column in the last row */
  v: string | number | null;
  /** seq of the last row */
  s: number;
}

function encodeCursor(c: CursorState): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

function decodeCursor(raw: string, sortField: string, dir: 'asc' | 'desc'): CursorState {
  let c: CursorState;
  try {
    c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as CursorState;
  } catch {
    throw validationError('Invalid cursor: pass the nextCursor value from the previous page unchanged');
  }
  if (!c || typeof c !== 'object' || typeof c.s !== 'number' || !['string', 'number'].includes(typeof c.v) && c.v !== null)
    throw validationError('Invalid cursor: pass the nextCursor value from the previous page unchanged');
  if (c.f !== sortField || c.d !== dir)
    throw validationError(`This cursor belongs to a listing sorted by ${c.f} ${c.d}; keep sort_by and sort_dir the same while paging`);
  return c;
}

const NOT_NULL_COLUMNS = new Set(['id', 'created_at', 'updated_at']);

export function checkLimit(limit: number | undefined, max = MAX_LIMIT, dflt = DEFAULT_LIMIT): number {
  if (limit === undefined) return dflt;
  if (!Number.isInteger(limit) || limit < 1 || limit > max) throw validationError(`limit must be an integer from 1 to ${max}, got ${limit}`);
  return limit;
}

/**
 * Conditions a list may carry and stay light: a few conditions on indexed fields are a few index
 * ranges; beyond that SQLite tends to scan.
 */
const LIGHT_MAX_CONDITIONS = 4;
/** Operators that match inside a value: no index serves them, every row is read. */
const SCAN_OPERATORS = new Set(['contains', 'not_contains', 'starts_with']);

function servedByIndex(f: FieldDef): boolean {
  return f.indexed || f.unique || NOT_NULL_COLUMNS.has(f.column);
}

/**
 * Whether a listing is expensive to evaluate, and so runs as a heavy read (lane, time limit, read
 * pool): a related-field condition or sort (a subquery per row), a condition that matches inside
 * text, a condition or sort on an unindexed field (a scan of the table, and its total a second
 * scan), or more than a few conditions. Plain listings, the hot path, stay on the main connection.
 * Only decides where the query runs, never what it answers: a wrong guess costs time, not results.
 */
export function isHeavyList(obj: ObjectDef, filter: FilterGroup | undefined, sort: { related: boolean; field: FieldDef }): boolean {
  if (sort.related || !servedByIndex(sort.field)) return true;
  if (!filter) return false;
  let conditions = 0;
  // An explicit stack: the filter was measured already (checkFilterSize), but no recursion is needed.
  const stack: unknown[] = [filter];
  while (stack.length) {
    const node = stack.pop() as { conditions?: unknown; field?: unknown; operator?: unknown } | null;
    if (!node || typeof node !== 'object') return true;
    if (Array.isArray(node.conditions)) {
      stack.push(...node.conditions);
      continue;
    }
    if (++conditions > LIGHT_MAX_CONDITIONS) return true;
    if (typeof node.field !== 'string' || node.field.includes('.')) return true;
    if (SCAN_OPERATORS.has(String(node.operator))) return true;
    const f = obj.byName.get(node.field);
    if (!f || !servedByIndex(f)) return true;
  }
  return false;
}

/** The time limit's error, in terms of a listing: what to narrow in a search. */
function listTimeoutError(e: unknown): unknown {
  if (!(e instanceof CrmError) || e.code !== 'QUERY_TOO_EXPENSIVE' || (e.details as { limit?: unknown } | undefined)?.limit !== 'timeoutMs') return e;
  const d = e.details as { max: number };
  return tooExpensive(
    `The search ran longer than its time limit of ${d.max / 1000} s and was stopped; narrow it: equals or in on indexed fields rather than contains, fewer conditions on related records (company.name), a sort on an indexed field, or include_total=false to skip counting every match`,
    { ...e.details },
  );
}

export async function listRecords(ctx: Ctx, objectName: string, opts: ListOptions = {}): Promise<ListResult> {
  const obj = await resolveObject(ctx, objectName);
  const limit = checkLimit(opts.limit, opts.maxLimit ?? MAX_LIMIT);
  const schema = await getSchema(ctx);
  const sortName = opts.sortBy ?? 'created_at';
  // 'company.name': the related record's value, one per row, from a correlated subquery.
  const related = sortName.includes('.') ? resolveRelated(obj, schema, sortName) : undefined;
  const sortField = related ? related.field : resolveField(obj, sortName);
  if (sortField.type === 'MULTI_SELECT') throw validationError(`Cannot sort by MULTI_SELECT field '${sortName}'`);
  const dir = opts.sortDir ?? 'desc';
  if (dir !== 'asc' && dir !== 'desc') throw validationError(`sort_dir must be 'asc' or 'desc', got '${String(dir)}'`);
  const fields = projection(obj, opts.fields);
  const where = opts.filter ? compileFilter(obj, ctx.db.adapter, opts.filter, undefined, schema, { userId: ctx.actor.userId, timeZone: opts.timeZone }) : undefined;
  const db = dyn(ctx.db.kysely);
  const col = sortField.column;
  const key: any = related ? relatedValueSql(related, obj.table, 'rs') : col;
  const notNullKey = !related && NOT_NULL_COLUMNS.has(col);
  const cursor = opts.cursor ? decodeCursor(opts.cursor, sortName, dir) : undefined;

  const columns = [...new Set(['seq', ...(related ? [] : [col]), ...fields.map((f) => f.column)])];
  const cmp = dir === 'asc' ? '>' : '<';

  // The order is split in segments so every query is a plain index range: NULLs sort lowest, so an
  // ascending listing is [nulls, values] and a descending one [values, nulls]. A NOT NULL column has one.
  type Segment = 'nulls' | 'values';
  const segments: Segment[] = notNullKey ? ['values'] : dir === 'asc' ? ['nulls', 'values'] : ['values', 'nulls'];
  let start = 0;
  if (cursor) start = segments.indexOf(cursor.v === null ? 'nulls' : 'values');
  if (start < 0) start = 0;

  // An expensive listing runs as a heavy read: its statements (page and total) on the read pool,
  // under the lane's time limit, each row passing the budget condition so that the statement stops
  // at the deadline. Without a pool (':memory:') they run on the main connection, which cannot stop
  // a statement: the lane still bounds how many run at once, and the limit is checked between them.
  const heavyList = isHeavyList(obj, opts.filter, { related: !!related, field: sortField });
  let guard: ReturnType<typeof budgetWhere>;
  const run = <R>(q: any): Promise<R[]> => (heavyList ? runRead<R>(ctx, q.compile()) : q.execute());
  const rows: Record<string, unknown>[] = [];
  const page = async (shape: (q: any) => any) => {
    let q = db.selectFrom(obj.table).select(columns);
    if (related) q = q.select(sql`${key}`.as('__sort'));
    if (guard) q = q.where(guard);
    if (where) q = q.where((eb: EB) => where(eb));
    rows.push(...(await run<Record<string, unknown>>(shape(q).limit(limit + 1 - rows.length))));
  };
  const execute = async (): Promise<number | null> => {
    guard = heavyList ? budgetWhere(ctx) : undefined;
    for (let i = start; i < segments.length && rows.length <= limit; i++) {
      const seg = segments[i]!;
      const resume = cursor && i === start ? cursor : undefined;
      if (seg === 'nulls') {
        await page((q) => {
          if (!notNullKey) q = q.where(key, 'is', null);
          if (resume) q = q.where('seq', cmp, resume.s);
          return q.orderBy('seq', dir);
        });
        continue;
      }
      const notNull = (q: any) => (notNullKey ? q : q.where(key, 'is not', null));
      if (resume) {
        // Resuming splits in two index ranges: the rest of the rows equal to the cursor's value (by
        // seq), then the values beyond it. A row-value comparison would seek on the value alone and
        // step through every row sharing it: slow deep in a low-cardinality field (a status).
        await page((q) => q.where(key, '=', resume.v).where('seq', cmp, resume.s).orderBy('seq', dir));
        if (rows.length <= limit) await page((q) => notNull(q).where(key, cmp, resume.v).orderBy(key, dir).orderBy('seq', dir));
      } else await page((q) => notNull(q).orderBy(key, dir).orderBy('seq', dir));
    }

    // The contract's total is an exact count of every match: for a heavy listing, in the same budget.
    return opts.includeTotal !== false ? countRecords(ctx, obj, where, guard, run) : null;
  };
  let total: number | null;
  try {
    total = heavyList ? await heavy(ctx, execute) : await execute();
  } catch (e) {
    throw listTimeoutError(e);
  }

  let nextCursor: string | null = null;
  if (rows.length > limit) {
    rows.length = limit;
    const last = rows[limit - 1]!;
    nextCursor = encodeCursor({ f: sortName, d: dir, v: ((related ? last.__sort : last[col]) ?? null) as string | number | null, s: last.seq as number });
  }
  const data = rows.map((r) => toRecord(obj, r, fields));
  return { data: opts.relationNames ? await nameRelationsOf(ctx, obj, data) : data, total, nextCursor };
}

async function countRecords(
  ctx: Ctx,
  obj: ObjectDef,
  where: ((eb: EB) => Expression<SqlBool>) | undefined,
  guard: ReturnType<typeof budgetWhere>,
  run: <R>(q: any) => Promise<R[]>,
): Promise<number> {
  let q = dyn(ctx.db.kysely).selectFrom(obj.table).select((eb: EB) => eb.fn.countAll().as('n'));
  if (guard) q = q.where(guard);
  if (where) q = q.where((eb: EB) => where(eb));
  const [row] = await run<{ n: number | bigint }>(q);
  return Number(row?.n ?? 0);
}

// ---------------------------------------------------------------------------------------------
// Reading one record, enriched with its associations

export interface Related {
  id: string;
  name: string;
  /** The relation field that links the two records, or 'association' for an explicit link. */
  via: string;
}

export async function getRecord(ctx: Ctx, objectName: string, id: string, opts: { enrich?: boolean; fields?: string[]; relationNames?: boolean } = {}) {
  const obj = await resolveObject(ctx, objectName);
  const fields = projection(obj, opts.fields);
  // All columns: the associations need the relation fields even when the projection leaves them out.
  const row = (await dyn(ctx.db.kysely)
    .selectFrom(obj.table)
    .select(obj.fields.map((f) => f.column))
    .where('id', '=', id)
    .executeTakeFirst()) as Record<string, unknown> | undefined;
  if (!row) throw notFound(obj, id);
  let rec = toRecord(obj, row, fields);
  if (opts.relationNames) rec = (await nameRelationsOf(ctx, obj, [rec]))[0]!;
  if (opts.enrich === false) return rec;
  return { ...rec, associations: await associationsOf(ctx, obj, id, row) };
}

export function notFound(obj: ObjectDef, id: string): CrmError {
  return new CrmError('RECORD_NOT_FOUND', `No ${obj.name} record with id '${id}'`);
}

const ASSOC_PREVIEW = 20;

async function nameRelationsOf(ctx: Ctx, obj: ObjectDef, records: RecordData[]): Promise<RecordData[]> {
  // The caller resolved `obj` a moment ago: its schema is loaded, no need to check its version again.
  return withRelationNames(dyn(ctx.db.kysely), ctx.actor.workspaceId, loadedSchema(ctx) ?? (await getSchema(ctx)), obj, records);
}

/** Records as a write returned them, with their RELATION values as {id, name} (see ListOptions.relationNames). */
export async function nameRelations(ctx: Ctx, objectName: string, records: RecordData[]): Promise<RecordData[]> {
  return nameRelationsOf(ctx, await resolveObject(ctx, objectName), records);
}

async function associationsOf(ctx: Ctx, obj: ObjectDef, id: string, row: Record<string, unknown>) {
  const groups = new Map<string, { total: number; records: Related[] }>();
  const add = (object: string, rel: Related) => {
    let g = groups.get(object);
    if (!g) groups.set(object, (g = { total: 0, records: [] }));
    g.total++;
    if (g.records.length < ASSOC_PREVIEW) g.records.push(rel);
  };
  // 1. Relation fields of this record (company, owner, ...).
  const schema = await getSchema(ctx);
  const outgoing = obj.fields.filter((f) => f.type === 'RELATION' && f.name !== 'created_by' && row[f.column]);
  for (const f of outgoing) {
    const target = f.target!;
    const names = await namesFor(ctx, schema, target, [row[f.column] as string]);
    const tid = row[f.column] as string;
    add(target, { id: tid, name: names.get(tid) ?? tid, via: f.name });
  }
  // 2. Records of any object whose relation field points here (a company's contacts and opportunities).
  for (const other of schema.objects.values()) {
    for (const f of other.fields) {
      if (f.type !== 'RELATION' || f.target !== obj.name) continue;
      const cols = displayColumns(other);
      const base = dyn(ctx.db.kysely).selectFrom(other.table).where(f.column, '=', id);
      const rows = (await base.select(cols).orderBy('created_at', 'desc').limit(ASSOC_PREVIEW).execute()) as Record<string, unknown>[];
      if (rows.length === 0) continue;
      const n = rows.length < ASSOC_PREVIEW ? rows.length : Number(((await base.select((eb: EB) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()) as { n: number }).n);
      let g = groups.get(other.name);
      if (!g) groups.set(other.name, (g = { total: 0, records: [] }));
      g.total += n;
      for (const r of rows) {
        if (g.records.length >= ASSOC_PREVIEW) break;
        g.records.push({ id: r.id as string, name: displayNameOfRow(other, r), via: f.name });
      }
    }
  }
  // 3. Explicit many-to-many associations.
  const links = await ctx.db.kysely
    .selectFrom('associations')
    .select(['a_object', 'a_id', 'b_object', 'b_id'])
    .where('workspace_id', '=', ctx.actor.workspaceId)
    .where((eb) =>
      eb.or([
        eb.and([eb('a_object', '=', obj.name), eb('a_id', '=', id)]),
        eb.and([eb('b_object', '=', obj.name), eb('b_id', '=', id)]),
      ]),
    )
    .orderBy('id')
    .execute();
  const byTarget = new Map<string, string[]>();
  for (const l of links) {
    const [to, toId] = l.a_object === obj.name && l.a_id === id ? [l.b_object, l.b_id] : [l.a_object, l.a_id];
    byTarget.set(to, [...(byTarget.get(to) ?? []), toId]);
  }
  for (const [to, ids] of byTarget) {
    const names = await namesFor(ctx, schema, to, ids.slice(0, ASSOC_PREVIEW));
    for (const tid of ids) add(to, { id: tid, name: names.get(tid) ?? tid, via: 'association' });
  }
  return Object.fromEntries(groups);
}

// ---------------------------------------------------------------------------------------------
// Writing

type Row = Record<string, string | number | null>;

export interface Prepared {
  row: Row;
  /** field name -> stored value, only for fields the input mentioned */
  touched: Map<string, string | number | null>;
  /** Duplicate-match keys, when the caller computed them already (imports): not computed twice. */
  keys?: MatchKey[];
}

function prepareWrite(obj: ObjectDef, input: unknown, mode: 'create' | 'update'): Prepared {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw validationError(`A ${obj.name} record must be a JSON object of field names to values`);
  const touched = new Map<string, string | number | null>();
  for (const [name, value] of Object.entries(input as Record<string, unknown>)) {
    if (name === 'id' && mode === 'update') continue;
    const f = obj.byName.get(name);
    if (!f) {
      const writable = obj.fields.filter((x) => !x.readOnly).map((x) => x.name);
      throw validationError(`Unknown field '${name}' on ${obj.name}. Writable fields: ${writable.join(', ')}`, { field: name, validFields: writable });
    }
    if (f.readOnly) throw validationError(`Field '${name}' is read-only`);
    touched.set(f.name, encodeValue(f, value));
  }
  const row: Row = {};
  for (const f of obj.fields) {
    if (f.readOnly) continue;
    if (touched.has(f.name)) row[f.column] = touched.get(f.name)!;
    else if (mode === 'create' && f.defaultValue !== undefined && f.defaultValue !== null) row[f.column] = encodeValue(f, f.defaultValue);
    if (f.required && (mode === 'create' ? row[f.column] === undefined || row[f.column] === null : touched.has(f.name) && touched.get(f.name) === null))
      throw new CrmError('MISSING_REQUIRED_FIELD', `Field '${f.name}' is required`, { field: f.name });
  }
  const p = { row, touched };
  if (obj.pipeline) {
    const field = obj.byName.get(obj.pipeline.field)!;
    // A new record starts on the pipeline's first step unless it names one (the field's own default,
    // set before the pipeline existed, may not even be a step).
    if (mode === 'create' && (!touched.has(field.name) || row[field.column] === null)) row[field.column] = obj.pipeline.steps[0]!.key;
    if (mode === 'create') enterStep(obj, p, row[field.column] as string);
    else if (touched.has(field.name)) stepOf(obj, touched.get(field.name) as string | null);
  }
  if (mode === 'create') stampCompletion(obj, p, undefined);
  return p;
}

/**
 * A task's completed_at follows its status on every path (crm_update_record, batch and bulk
 * writes, imports, not only the task service): entering 'completed' stamps it, leaving clears it.
 */
function stampCompletion(obj: ObjectDef, p: Prepared, oldStatus: unknown): void {
  if (obj.name !== 'tasks' || !obj.system) return;
  const status = obj.byName.get('status');
  const done = obj.byName.get('completed_at');
  if (!status || !done || !p.touched.has(status.name) || p.touched.has(done.name)) return;
  const now = p.touched.get(status.name);
  if (now === oldStatus) return;
  const value = now === 'completed' ? nowIso() : oldStatus === undefined ? undefined : null;
  if (value === undefined) return;
  p.row[done.column] = value;
  p.touched.set(done.name, value);
}

/**
 * Validate a record as create would (imports check duplicates on its stored form, `row`, then hand
 * it to createPrepared: validated once).
 */
export function prepareForImport(obj: ObjectDef, input: unknown): Prepared {
  return prepareWrite(obj, input, 'create');
}

/** Create records validated by prepareForImport, in one transaction; returns their ids. */
export async function createPrepared(ctx: Ctx, obj: ObjectDef, prepared: Prepared[]): Promise<string[]> {
  return inTransaction(ctx, (trx) => insertPrepared(ctx, trx, obj, prepared));
}

/** The pipeline step with this key, or a VALIDATION_ERROR listing the steps. */
function stepOf(obj: ObjectDef, key: string | null) {
  const pl = obj.pipeline!;
  const step = pl.steps.find((s) => s.key === key);
  if (!step)
    throw validationError(`Field '${pl.field}' must be a step of the ${pl.name}: ${pl.steps.map((s) => s.key).join(', ')}; got ${JSON.stringify(key)}`, {
      field: pl.field,
      allowed: pl.steps.map((s) => s.key),
    });
  return step;
}

/** A record entering a step takes the step's defaults (e.g. probability) for the fields the write did not set. */
function enterStep(obj: ObjectDef, p: Prepared, key: string) {
  const step = stepOf(obj, key);
  for (const [name, value] of Object.entries(step.defaults)) {
    const f = obj.byName.get(name);
    if (!f || f.readOnly || p.touched.has(name)) continue;
    const stored = encodeValue(f, value);
    p.row[f.column] = stored;
    p.touched.set(name, stored);
  }
}

/** Stage history: close the open interval, open the next. Kept for time-in-stage and conversion. */
async function moveHistory(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, id: string, from: string | null, to: string | null) {
  const pl = obj.pipeline;
  if (!pl || from === to) return;
  const at = nowIso();
  if (from !== null)
    await trx.updateTable('stage_history').set({ left_at: at }).where('pipeline_id', '=', pl.id).where('record_id', '=', id).where('left_at', 'is', null).execute();
  if (to !== null)
    await trx.insertInto('stage_history').values({ workspace_id: ctx.actor.workspaceId, pipeline_id: pl.id, record_id: id, step_key: to, entered_at: at, left_at: null }).execute();
}

function pipelineMove(obj: ObjectDef, id: string, from: unknown, to: unknown): ActivityEntry[] {
  const pl = obj.pipeline;
  if (!pl || from === to) return [];
  return [{ object: obj.name, recordId: id, action: 'pipeline_moved', payload: { pipeline: pl.name, pipeline_id: pl.id, from: from ?? null, to: to ?? null } }];
}

/** RELATION values must name existing records of the target object in this workspace. */
async function checkRelations(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, rows: Row[]): Promise<void> {
  // The schema comes from the cache loaded before the transaction began: querying outside
  // the transaction here would wait on the transaction's own connection.
  const schema = schemaCache.get(ctx) ?? (() => { throw new Error('schema not preloaded'); })();
  for (const f of obj.fields) {
    if (f.type !== 'RELATION' || f.readOnly) continue;
    const ids = [...new Set(rows.map((r) => r[f.column]).filter((v): v is string => typeof v === 'string'))];
    if (ids.length === 0) continue;
    let found: Set<string>;
    if (f.target === 'users') {
      const got = await trx.selectFrom('users').select('id').where('workspace_id', '=', ctx.actor.workspaceId).where('id', 'in', ids).execute();
      found = new Set(got.map((r) => r.id));
    } else {
      const target = schema.objects.get(f.target!);
      if (!target) throw validationError(`Field '${f.name}' points to missing object '${f.target}'`);
      found = new Set();
      for (let i = 0; i < ids.length; i += 500) {
        const got = (await dyn(trx).selectFrom(target.table).select('id').where('id', 'in', ids.slice(i, i + 500)).execute()) as { id: string }[];
        for (const r of got) found.add(r.id);
      }
    }
    const missing = ids.find((x) => !found.has(x));
    if (missing !== undefined)
      throw validationError(`Field '${f.name}' must reference an existing ${f.target} record; no ${f.target} record has id '${missing}'`, { field: f.name });
  }
}

function duplicateError(ctx: Ctx, obj: ObjectDef, err: unknown, row?: Row): CrmError | null {
  const kind = ctx.db.adapter.classifyError(err);
  if (kind?.kind !== 'unique') return null;
  const f = obj.fields.find((x) => x.column === kind.columns[0]);
  if (f) {
    const v = row?.[f.column];
    return new CrmError('DUPLICATE_RECORD', `A ${obj.name} record with ${f.name} ${v !== undefined ? `'${String(v)}' ` : ''}already exists`, { field: f.name });
  }
  return new CrmError('DUPLICATE_RECORD', `A ${obj.name} record with the same unique value already exists`);
}

async function insertRow(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, row: Row): Promise<string> {
  const now = nowIso();
  const id = newId();
  try {
    await dyn(trx).insertInto(obj.table).values({ ...row, id, created_at: now, updated_at: now, created_by: ctx.actor.userId }).execute();
  } catch (e) {
    throw duplicateError(ctx, obj, e, row) ?? e;
  }
  return id;
}

async function fetchRows(trx: Kysely<Tables>, obj: ObjectDef, ids: string[]): Promise<Map<string, Record<string, unknown>>> {
  const out = new Map<string, Record<string, unknown>>();
  for (let i = 0; i < ids.length; i += 500) {
    const rows = (await dyn(trx).selectFrom(obj.table).selectAll().where('id', 'in', ids.slice(i, i + 500)).execute()) as Record<string, unknown>[];
    for (const r of rows) out.set(r.id as string, r);
  }
  return out;
}

export interface RowError {
  index: number;
  code: string;
  message: string;
}

/**
 * Validate every row before anything is written, and report all the failing rows at once
 * (index, code, message), so a client can fix a batch in one round trip.
 */
function validateRows<T, R>(items: T[], fn: (item: T, index: number) => R): R[] {
  const out: R[] = [];
  const errors: RowError[] = [];
  items.forEach((item, i) => {
    try {
      out.push(fn(item, i));
    } catch (e) {
      if (!(e instanceof CrmError)) throw e;
      errors.push({ index: i, code: e.code, message: e.message });
    }
  });
  if (errors.length) {
    const first = errors[0]!;
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more failing rows, listed in details.errors)` : '';
    throw new CrmError(first.code as ErrorCode, `Row ${first.index}: ${first.message}${more}. Nothing was written.`, { index: first.index, errors });
  }
  return out;
}

/** Run fn per item inside a transaction; the first failure aborts it, naming the row, so nothing is half-written. */
async function eachRow<T, R>(items: T[], fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i++) {
    try {
      out.push(await fn(items[i]!, i));
    } catch (e) {
      if (e instanceof CrmError) {
        throw new CrmError(e.code, `Row ${i}: ${e.message}. Nothing was written.`, { ...e.details, index: i, errors: [{ index: i, code: e.code, message: e.message }] });
      }
      throw e;
    }
  }
  return out;
}

function changes(obj: ObjectDef, before: Record<string, unknown>, touched: Map<string, unknown>) {
  const diff: Record<string, [unknown, unknown]> = {};
  for (const [name, stored] of touched) {
    const f = obj.byName.get(name)!;
    if (before[f.column] !== stored) diff[name] = [decodeValue(f, before[f.column]), decodeValue(f, stored)];
  }
  return diff;
}

/**
 * Timeline entries on the records this one links to (a task's contact, an opportunity's company):
 * created, deleted, linked/unlinked, and status changes, so a contact's timeline shows its tasks
 * and deals moving. Written in the same transaction as the write itself.
 */
function relatedEntries(obj: ObjectDef, id: string, before: Record<string, unknown> | null, after: Record<string, unknown> | null): ActivityEntry[] {
  const out: ActivityEntry[] = [];
  const current = after ?? before!;
  const name = displayNameOfRow(obj, current);
  const base = { object: obj.name, id, name };
  const status = obj.byName.get('status');
  for (const f of obj.fields) {
    if (f.type !== 'RELATION' || f.target === 'users' || f.readOnly) continue;
    const was = (before?.[f.column] ?? null) as string | null;
    const now = (after?.[f.column] ?? null) as string | null;
    if (!before && now) out.push({ object: f.target!, recordId: now, action: 'related_created', payload: { ...base, field: f.name } });
    else if (!after && was) out.push({ object: f.target!, recordId: was, action: 'related_deleted', payload: { ...base, field: f.name } });
    else if (before && after && was !== now) {
      if (was) out.push({ object: f.target!, recordId: was, action: 'related_unlinked', payload: { ...base, field: f.name } });
      if (now) out.push({ object: f.target!, recordId: now, action: 'related_linked', payload: { ...base, field: f.name } });
    } else if (before && after && now && status && before[status.column] !== after[status.column])
      out.push({ object: f.target!, recordId: now, action: 'related_status_changed', payload: { ...base, field: f.name, from: before[status.column] ?? null, to: after[status.column] ?? null } });
  }
  return out;
}

export async function createRecord(ctx: Ctx, objectName: string, input: unknown): Promise<RecordData> {
  const [rec] = await createRecords(ctx, objectName, [input]).catch((e: unknown) => {
    // A single create reports its own message, without the batch's row prefix.
    if (e instanceof CrmError && e.details?.errors) {
      const first = (e.details.errors as RowError[])[0]!;
      throw new CrmError(e.code, first.message, { ...e.details, errors: undefined, index: undefined });
    }
    throw e;
  });
  return rec!;
}

export interface CreateOptions {
  /** Largest batch accepted (REST and MCP: 100; imports use larger internal batches). */
  max?: number;
  /** false: return only the ids (bulk loaders do not need the records back). */
  readBack?: boolean;
}

export async function createRecords(ctx: Ctx, objectName: string, inputs: unknown[], opts: CreateOptions = {}): Promise<RecordData[]> {
  const obj = await resolveObject(ctx, objectName);
  checkBatch(inputs, opts.max);
  const prepared = validateRows(inputs, (input) => prepareWrite(obj, input, 'create'));
  const ids = await inTransaction(ctx, (trx) => insertPrepared(ctx, trx, obj, prepared));
  return opts.readBack === false ? ids.map((id) => ({ id })) : readBack(ctx, obj, ids);
}

/**
 * Insert validated rows, with their stage history, search entries, match keys and activity, in the
 * caller's transaction. Relations are checked and rows inserted in bulk; when a bulk step fails it
 * is redone row by row, so the error names the failing row.
 */
async function insertPrepared(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, prepared: Prepared[]): Promise<string[]> {
  try {
    await checkRelations(ctx, trx, obj, prepared.map((p) => p.row));
  } catch (e) {
    if (!(e instanceof CrmError) || prepared.length === 1) throw e;
    await eachRow(prepared, async (p) => checkRelations(ctx, trx, obj, [p.row]));
  }
  const now = nowIso();
  const full: (Row & { id: string })[] = prepared.map((p) => ({ ...p.row, id: newId(), created_at: now, updated_at: now, created_by: ctx.actor.userId }));
  // Every row gets every column (absent = null), so one statement shape serves all chunks.
  const keys = [...new Set(full.flatMap((r) => Object.keys(r)))];
  const chunk = Math.max(1, Math.min(500, Math.floor(30000 / keys.length)));
  for (let i = 0; i < full.length; i += chunk) {
    const part = full.slice(i, i + chunk);
    try {
      await ctx.db.adapter.attempt(trx, () => bulkInsert(dyn(trx), obj.table, keys, part.map((r) => keys.map((k) => (r as Record<string, unknown>)[k] ?? null))));
    } catch (e) {
      if (!ctx.db.adapter.isUniqueViolation(e)) throw e;
      // Find the row: insert one by one (the failed statement wrote nothing).
      await eachRow(part, async (r, j) => {
        try {
          await dyn(trx).insertInto(obj.table).values(r).execute();
        } catch (err) {
          throw duplicateError(ctx, obj, err, prepared[i + j]!.row) ?? err;
        }
      }).catch((err: unknown) => {
        if (err instanceof CrmError && typeof err.details?.index === 'number') {
          const idx = i + (err.details.index as number);
          throw new CrmError(err.code, `Row ${idx}: ${(err.details.errors as RowError[])[0]!.message}. Nothing was written.`, { ...err.details, index: idx, errors: [{ index: idx, code: err.code, message: (err.details.errors as RowError[])[0]!.message }] });
        }
        throw err;
      });
    }
  }
  const ids = full.map((r) => r.id);
  if (obj.pipeline) {
    const col = obj.byName.get(obj.pipeline.field)!.column;
    const pl = obj.pipeline;
    const hist = full.filter((r) => r[col] !== null && r[col] !== undefined).map((r) => ({ workspace_id: ctx.actor.workspaceId, pipeline_id: pl.id, record_id: r.id, step_key: r[col] as string, entered_at: now, left_at: null }));
    for (let i = 0; i < hist.length; i += 1000) await trx.insertInto('stage_history').values(hist.slice(i, i + 1000)).execute();
  }
  await writeDerived(trx, ctx, obj, full, true, prepared.every((p) => p.keys) ? prepared.map((p) => p.keys!) : undefined);
  await recordActivity(trx, ctx, [
    ...ids.map((id, i) => ({ object: obj.name, recordId: id, action: 'created', payload: { fields: [...prepared[i]!.touched.keys()] } })),
    ...ids.flatMap((id, i) => relatedEntries(obj, id, null, prepared[i]!.row)),
  ]);
  return ids;
}

/** The search index and the duplicate-match keys follow every write, in its transaction. */
export async function writeDerived(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, rows: Record<string, unknown>[], fresh = false, keys?: MatchKey[][]) {
  await indexRows(dyn(trx), ctx.db, obj, ctx.actor.workspaceId, rows, fresh, schemaCache.get(ctx) ?? loadedSchema(ctx));
  await writeKeys(dyn(trx), obj, ctx.actor.workspaceId, rows, fresh, keys);
}

/**
 * Records whose search documents hold this record's name (a company's contacts and deals) are
 * reindexed when the name changes, in the same transaction. Bounded by the records linked to it:
 * read and rewritten in batches, never the whole object.
 */
async function followRename(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, id: string, diff: Record<string, unknown>) {
  if (!obj.displayFields.some((n) => n in diff)) return;
  await indexReferrers(dyn(trx), ctx.db, schemaCache.get(ctx)!, ctx.actor.workspaceId, obj, [id]);
}

export async function removeDerived(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, ids: string[]) {
  await unindexRecords(dyn(trx), ctx.db, obj, ctx.actor.workspaceId, ids);
  await removeKeys(dyn(trx), obj, ctx.actor.workspaceId, ids);
}

/**
 * The schema preloaded by the call running a transaction, for code inside it. Per call, not per
 * context: two concurrent calls on one context (an MCP session's parallel tool calls) each keep
 * their own; kept per context, the first call to finish removed the other's ("schema not preloaded").
 */
const preloaded = new AsyncLocalStorage<WorkspaceSchema>();
const schemaCache = {
  get(ctx: Ctx): WorkspaceSchema | undefined {
    const schema = preloaded.getStore();
    return schema?.workspaceId === ctx.actor.workspaceId ? schema : undefined;
  },
};

async function inTransaction<T>(ctx: Ctx, fn: (trx: Kysely<Tables>) => Promise<T>): Promise<T> {
  const schema = await getSchema(ctx);
  return preloaded.run(schema, () => ctx.db.kysely.transaction().execute(fn));
}

async function readBack(ctx: Ctx, obj: ObjectDef, ids: string[]): Promise<RecordData[]> {
  const rows = await fetchRows(ctx.db.kysely, obj, ids);
  return ids.map((id) => toRecord(obj, rows.get(id)!));
}

export function checkBatch(items: unknown[], max = MAX_BATCH): void {
  if (!Array.isArray(items) || items.length === 0) throw validationError('Send a non-empty array of records');
  if (items.length > max) throw validationError(`A batch holds at most ${max} records; got ${items.length}. Split it into several requests.`, { limit: max });
}

export interface UpdateInput {
  id: string;
  values: unknown;
}

export async function updateRecord(ctx: Ctx, objectName: string, id: string, values: unknown): Promise<RecordData> {
  const [rec] = await updateRecords(ctx, objectName, [{ id, values }]).catch((e: unknown) => {
    if (e instanceof CrmError && e.details?.errors) throw new CrmError(e.code, (e.details.errors as RowError[])[0]!.message, { ...e.details, errors: undefined, index: undefined });
    throw e;
  });
  return rec!;
}

export async function updateRecords(ctx: Ctx, objectName: string, updates: UpdateInput[], opts: CreateOptions = {}): Promise<RecordData[]> {
  const obj = await resolveObject(ctx, objectName);
  checkBatch(updates, opts.max);
  const prepared = validateRows(updates, (u) => {
    if (typeof u.id !== 'string' || !u.id) throw validationError("Each update needs the record's 'id'");
    return prepareWrite(obj, u.values, 'update');
  });
  const ids = updates.map((u) => u.id);
  await inTransaction(ctx, async (trx) => {
    const before = await fetchRows(trx, obj, ids);
    const activity: ActivityEntry[] = [];
    await eachRow(prepared, async (p, i) => {
      await checkpoint(ctx, i, prepared.length, `updating ${obj.name}`);
      const id = ids[i]!;
      const old = before.get(id);
      if (!old) throw notFound(obj, id);
      await checkRelations(ctx, trx, obj, [p.row]);
      stampCompletion(obj, p, old[obj.byName.get('status')?.column ?? 'status']);
      const stageCol = obj.pipeline ? obj.byName.get(obj.pipeline.field)!.column : undefined;
      const moved = stageCol !== undefined && p.row[stageCol] !== undefined && p.row[stageCol] !== old[stageCol];
      if (moved) enterStep(obj, p, p.row[stageCol!] as string);
      const diff = changes(obj, old, p.touched);
      if (Object.keys(diff).length === 0) return;
      try {
        await dyn(trx).updateTable(obj.table).set({ ...p.row, updated_at: nowIso() }).where('id', '=', id).execute();
      } catch (e) {
        throw duplicateError(ctx, obj, e, p.row) ?? e;
      }
      if (moved) await moveHistory(trx, ctx, obj, id, old[stageCol!] as string | null, p.row[stageCol!] as string);
      await writeDerived(trx, ctx, obj, [{ ...old, ...p.row }]);
      await followRename(trx, ctx, obj, id, diff);
      // Later updates in the same batch see this one.
      before.set(id, { ...old, ...p.row });
      activity.push(
        { object: obj.name, recordId: id, action: 'updated', payload: { changes: diff } },
        ...(moved ? pipelineMove(obj, id, old[stageCol!], p.row[stageCol!]) : []),
        ...relatedEntries(obj, id, old, { ...old, ...p.row }),
      );
    });
    await checkpoint(ctx, prepared.length, prepared.length, `updated ${obj.name}`);
    await recordActivity(trx, ctx, activity);
  });
  return opts.readBack === false ? ids.map((id) => ({ id })) : readBack(ctx, obj, ids);
}

export interface UpsertResult {
  data: RecordData[];
  results: { index: number; id: string; action: 'created' | 'updated' }[];
}

/** Create or update by 'id' or by a unique field (e.g. email). All rows or none. */
export async function upsertRecords(ctx: Ctx, objectName: string, inputs: unknown[], key = 'id'): Promise<UpsertResult> {
  const obj = await resolveObject(ctx, objectName);
  checkBatch(inputs);
  const keyField = obj.byName.get(key);
  if (!keyField || !keyField.unique) {
    const uniques = obj.fields.filter((f) => f.unique).map((f) => f.name);
    throw validationError(`Upsert key '${key}' must be 'id' or a unique field of ${obj.name}: ${uniques.join(', ')}`, { validKeys: uniques });
  }
  const keys = validateRows(inputs, (input) => {
    const v = typeof input === 'object' && input !== null ? (input as Record<string, unknown>)[key] : undefined;
    if (v === undefined || v === null || v === '') {
      if (key === 'id') return null; // no id: create
      throw new CrmError('MISSING_REQUIRED_FIELD', `Field '${key}' (the upsert key) is required in every record`);
    }
    return key === 'id' ? String(v) : encodeValue(keyField, v);
  });
  const results: UpsertResult['results'] = [];
  await inTransaction(ctx, async (trx) => {
    const activity: ActivityEntry[] = [];
    await eachRow(inputs, async (input, i) => {
      const k = keys[i];
      const existing =
        k === null
          ? undefined
          : ((await dyn(trx).selectFrom(obj.table).selectAll().where(keyField.column, '=', k).executeTakeFirst()) as Record<string, unknown> | undefined);
      if (!existing) {
        if (key === 'id' && k !== null) throw notFound(obj, String(k));
        const p = prepareWrite(obj, input, 'create');
        await checkRelations(ctx, trx, obj, [p.row]);
        const id = await insertRow(ctx, trx, obj, p.row);
        if (obj.pipeline) await moveHistory(trx, ctx, obj, id, null, p.row[obj.byName.get(obj.pipeline.field)!.column] as string);
        await writeDerived(trx, ctx, obj, [{ ...p.row, id }]);
        results.push({ index: i, id, action: 'created' });
        activity.push({ object: obj.name, recordId: id, action: 'created', payload: { fields: [...p.touched.keys()] } }, ...relatedEntries(obj, id, null, p.row));
      } else {
        const values = { ...(input as Record<string, unknown>) };
        delete values.id;
        const p = prepareWrite(obj, values, 'update');
        await checkRelations(ctx, trx, obj, [p.row]);
        const id = existing.id as string;
        const stageCol = obj.pipeline ? obj.byName.get(obj.pipeline.field)!.column : undefined;
        const moved = stageCol !== undefined && p.row[stageCol] !== undefined && p.row[stageCol] !== existing[stageCol];
        if (moved) enterStep(obj, p, p.row[stageCol!] as string);
        const diff = changes(obj, existing, p.touched);
        if (Object.keys(diff).length) {
          try {
            await dyn(trx).updateTable(obj.table).set({ ...p.row, updated_at: nowIso() }).where('id', '=', id).execute();
          } catch (e) {
            throw duplicateError(ctx, obj, e, p.row) ?? e;
          }
          if (moved) await moveHistory(trx, ctx, obj, id, existing[stageCol!] as string | null, p.row[stageCol!] as string);
          await writeDerived(trx, ctx, obj, [{ ...existing, ...p.row }]);
          await followRename(trx, ctx, obj, id, diff);
          activity.push(
            { object: obj.name, recordId: id, action: 'updated', payload: { changes: diff } },
            ...(moved ? pipelineMove(obj, id, existing[stageCol!], p.row[stageCol!]) : []),
            ...relatedEntries(obj, id, existing, { ...existing, ...p.row }),
          );
        }
        results.push({ index: i, id, action: 'updated' });
      }
    });
    await recordActivity(trx, ctx, activity);
  });
  return { data: await readBack(ctx, obj, results.map((r) => r.id)), results };
}

// ---------------------------------------------------------------------------------------------
// Deleting

export async function deleteRecord(ctx: Ctx, objectName: string, id: string): Promise<{ id: string; deleted: true }> {
  const r = await deleteRecords(ctx, objectName, [id]);
  if (r.not_found.length) throw notFound(await resolveObject(ctx, objectName), id);
  return { id, deleted: true };
}

/** Deletes what exists, reports what did not; one transaction. Links to the deleted records are cleared. */
export async function deleteRecords(ctx: Ctx, objectName: string, ids: string[]): Promise<{ deleted: string[]; not_found: string[] }> {
  const obj = await resolveObject(ctx, objectName);
  if (!Array.isArray(ids) || ids.length === 0 || ids.some((x) => typeof x !== 'string'))
    throw validationError("Send the ids to delete: {\"ids\": [\"...\"]}");
  if (ids.length > MAX_BATCH) throw validationError(`Delete at most ${MAX_BATCH} records per request; got ${ids.length}`, { limit: MAX_BATCH });
  const unique = [...new Set(ids)];
  const schema = await getSchema(ctx);
  return ctx.db.kysely.transaction().execute(async (trx) => {
    const rows = await fetchRows(trx, obj, unique);
    const present = unique.filter((id) => rows.has(id));
    if (present.length) {
      await dyn(trx).deleteFrom(obj.table).where('id', 'in', present).execute();
      await removeDerived(trx, ctx, obj, present);
      if (obj.pipeline)
        await trx.updateTable('stage_history').set({ left_at: nowIso() }).where('pipeline_id', '=', obj.pipeline.id).where('record_id', 'in', present).where('left_at', 'is', null).execute();
      // Documents that held these records' names (a deleted company's contacts) are rewritten
      // without them, while the relation fields still find them.
      await indexReferrers(dyn(trx), ctx.db, schema, ctx.actor.workspaceId, obj, present);
      // Relation fields elsewhere that pointed at these records become empty.
      for (const other of schema.objects.values())
        for (const f of other.fields)
          if (f.type === 'RELATION' && f.target === obj.name)
            await dyn(trx).updateTable(other.table).set({ [f.column]: null }).where(f.column, 'in', present).execute();
      await trx
        .deleteFrom('associations')
        .where('workspace_id', '=', ctx.actor.workspaceId)
        .where((eb) =>
          eb.or([
            eb.and([eb('a_object', '=', obj.name), eb('a_id', 'in', present)]),
            eb.and([eb('b_object', '=', obj.name), eb('b_id', 'in', present)]),
          ]),
        )
        .execute();
      await recordActivity(trx, ctx, [
        ...present.map((id) => ({ object: obj.name, recordId: id, action: 'deleted', payload: { name: displayNameOfRow(obj, rows.get(id)!) } })),
        ...present.flatMap((id) => relatedEntries(obj, id, rows.get(id)!, null)),
      ]);
    }
    return { deleted: present, not_found: unique.filter((id) => !rows.has(id)) };
  });
}

// ---------------------------------------------------------------------------------------------
// Associations (many-to-many links between any two records)

function orderPair(aObj: string, aId: string, bObj: string, bId: string) {
  // One row per pair, whichever side asked: canonical order by (object, id).
  return aObj < bObj || (aObj === bObj && aId <= bId) ? [aObj, aId, bObj, bId] : [bObj, bId, aObj, aId];
}

async function checkExists(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, id: string) {
  const r = await dyn(trx).selectFrom(obj.table).select('id').where('id', '=', id).executeTakeFirst();
  if (!r) throw notFound(obj, id);
}

export async function associate(ctx: Ctx, objectName: string, id: string, toObjectName: string, toId: string) {
  const obj = await resolveObject(ctx, objectName);
  const to = await resolveObject(ctx, toObjectName);
  if (obj.name === to.name && id === toId) throw validationError('A record cannot be associated with itself');
  const [aO, aI, bO, bI] = orderPair(obj.name, id, to.name, toId) as [string, string, string, string];
  return ctx.db.kysely.transaction().execute(async (trx) => {
    await checkExists(ctx, trx, obj, id);
    await checkExists(ctx, trx, to, toId);
    const res = await trx
      .insertInto('associations')
      .values({ workspace_id: ctx.actor.workspaceId, a_object: aO, a_id: aI, b_object: bO, b_id: bI, created_at: nowIso(), created_by: ctx.actor.userId })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    const created = Number(res.numInsertedOrUpdatedRows ?? 0n) > 0;
    if (created)
      await recordActivity(trx, ctx, [
        { object: obj.name, recordId: id, action: 'associated', payload: { object: to.name, id: toId } },
        { object: to.name, recordId: toId, action: 'associated', payload: { object: obj.name, id } },
      ]);
    return { object: obj.name, id, to_object: to.name, to_id: toId, created };
  });
}

export async function dissociate(ctx: Ctx, objectName: string, id: string, toObjectName: string, toId: string) {
  const obj = await resolveObject(ctx, objectName);
  const to = await resolveObject(ctx, toObjectName);
  const [aO, aI, bO, bI] = orderPair(obj.name, id, to.name, toId) as [string, string, string, string];
  return ctx.db.kysely.transaction().execute(async (trx) => {
    const res = await trx
      .deleteFrom('associations')
      .where('workspace_id', '=', ctx.actor.workspaceId)
      .where('a_object', '=', aO)
      .where('a_id', '=', aI)
      .where('b_object', '=', bO)
      .where('b_id', '=', bI)
      .executeTakeFirst();
    if (Number(res.numDeletedRows) === 0)
      throw new CrmError('RECORD_NOT_FOUND', `No association between ${obj.name} '${id}' and ${to.name} '${toId}'`);
    await recordActivity(trx, ctx, [
      { object: obj.name, recordId: id, action: 'dissociated', payload: { object: to.name, id: toId } },
      { object: to.name, recordId: toId, action: 'dissociated', payload: { object: obj.name, id } },
    ]);
    return { object: obj.name, id, to_object: to.name, to_id: toId, deleted: true };
  });
}

export { unknownField };
