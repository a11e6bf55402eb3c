import { type Expression, type ExpressionBuilder, type Kysely, type SqlBool, sql } from 'kysely';
import { compiledByKey, compiledWith } from '../db/compiled-once.js';
import type { Tables } from '../db/tables.js';
import { runRead } from './aggregate-sql.js';
import { associationsOf } from './associations.js';
import { budgetWhere, heavy, tooExpensive } from './budget.js';
import type { Ctx } from './context.js';
import { type CountPlan, knownCount, planCount, rememberedCount } from './count-cache.js';
import { withRelationNames } from './display-names.js';
import { CrmError, validationError } from './errors.js';
import type { FieldDef } from './field-types.js';
import { compileFilterKept, type FilterGroup, relatedValueSql, resolveRelated } from './filters.js';
import { DEFAULT_LIMIT, MAX_LIMIT, notFound, projection, type RecordData, toRecord } from './record-rows.js';
import { getSchema, loadedSchema, type ObjectDef, resolveField, resolveObject } from './schema.js';

/**
 * Reading records: lists (filters, sort, keyset cursors, the heavy lane) and one record with its
 * associations.
 */

type AnyDb = Kysely<any>;
type EB = ExpressionBuilder<any, any>;
const dyn = (db: Kysely<Tables>) => db as unknown as AnyDb;

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
  /**
   * 1: the row after the last one holds another value, so no row tied with the last one is left
   * and the next page is one range (`value < v`) instead of two (the tied rows by seq, then that).
   */
  u?: 1;
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
  if (
    !c ||
    typeof c !== 'object' ||
    !Number.isSafeInteger(c.s) ||
    c.s < 0 ||
    (c.u !== undefined && c.u !== 1) ||
    (typeof c.v === 'number' ? !Number.isFinite(c.v) : typeof c.v === 'string' ? c.v.includes('\u0000') : c.v !== null)
  )
    throw validationError('Invalid cursor: pass the nextCursor value from the previous page unchanged');
  if (c.f !== sortField || c.d !== dir) throw validationError(`This cursor belongs to a listing sorted by ${c.f} ${c.d}; keep sort_by and sort_dir the same while paging`);
  return c;
}

const NOT_NULL_COLUMNS = new Set(['id', 'created_at', 'updated_at']);

/**
 * A list statement's start (its table and columns), built once per database handle, table and
 * column list and reused: Kysely's builders are immutable, and parsing a select list of a dozen
 * columns was a third of what building and compiling a page's statement cost (about 15 of 50 µs
 * for a page of opportunities). A handful of projections per table in practice; past 256 the
 * handle's are forgotten and built again.
 */
const listSelects = new WeakMap<AnyDb, Map<string, any>>();
function selectColumns(db: AnyDb, table: string, columns: string[]): any {
  let built = listSelects.get(db);
  if (!built) listSelects.set(db, (built = new Map()));
  const key = `${table} ${columns.join(',')}`;
  let q = built.get(key);
  if (!q) {
    if (built.size >= 256) built.clear();
    built.set(key, (q = db.selectFrom(table).select(columns)));
  }
  return q;
}

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
  // resolveObject checked the schema a moment ago: no second check of its version.
  const schema = loadedSchema(ctx) ?? (await getSchema(ctx));
  const sortName = opts.sortBy ?? 'created_at';
  // 'company.name': the related record's value, one per row, from a correlated subquery.
  const related = sortName.includes('.') ? resolveRelated(obj, schema, sortName) : undefined;
  const sortField = related ? related.field : resolveField(obj, sortName);
  if (sortField.type === 'MULTI_SELECT') throw validationError(`Cannot sort by MULTI_SELECT field '${sortName}'`);
  const dir = opts.sortDir ?? 'desc';
  if (dir !== 'asc' && dir !== 'desc') throw validationError(`sort_dir must be 'asc' or 'desc', got '${String(dir)}'`);
  const fields = projection(obj, opts.fields);
  const filter = opts.filter ? compileFilterKept(obj, ctx.db.adapter, opts.filter, schema, { userId: ctx.actor.userId, timeZone: opts.timeZone }) : undefined;
  const where = filter?.where;
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
  // Selected by the page's statements where a remembered total may answer and the database tells its
  // state in a statement (PostgreSQL's snapshot): the state the page saw, with no statement more.
  let pageStamp: Expression<string> | null = null;
  let stampSeen: string | undefined;
  const seen = (got: Record<string, unknown>[]) => {
    if (pageStamp && stampSeen === undefined && got.length > 0) stampSeen = got[0]!.__stamp as string;
    rows.push(...got);
  };
  // A page of a light listing without a related sort, the one polled and paged most: its statements
  // compiled once per table, columns, order and range of the order (and filter, kept by its text
  // with the object's schema), and run with the values of the cursor and the limit.
  const keptKey = !related && !heavyList && (!filter || filter.key !== undefined) ? `${columns.join(',')} ${col} ${dir}` : undefined;
  // `segment`: which range of the order `shape` reads (the key of its compiled statement, with
  // whether it selects the stamp); `values`: what `shape` binds, in order (the limit follows).
  const page = async (shape: (q: any) => any, segment?: string, values: unknown[] = []) => {
    const query = () => {
      let q = selectColumns(db, obj.table, columns);
      if (related) q = q.select(sql`${key}`.as('__sort'));
      if (pageStamp) q = q.select(stampColumn(pageStamp));
      if (guard) q = q.where(guard);
      if (where) q = q.where((eb: EB) => where(eb));
      return shape(q).limit(limit + 1 - rows.length);
    };
    if (keptKey === undefined || segment === undefined) {
      seen(await run<Record<string, unknown>>(query()));
      return;
    }
    // Kept (no related sort, no budget condition): built and compiled on the first request of its key.
    const tail = [...values, limit + 1 - rows.length];
    const at = `${keptKey} ${segment}${pageStamp ? ' stamp' : ''}`;
    const build = () => query().compile();
    const compiled = filter ? compiledWith(obj, `${filter.key}\u0000${at}`, tail, build) : compiledWith(db, `${obj.table} ${at}`, tail, build);
    seen((await db.executeQuery<Record<string, unknown>>(compiled)).rows);
  };
  const execute = async (): Promise<number | null> => {
    guard = heavyList ? budgetWhere(ctx) : undefined;
    if (opts.includeTotal === false) {
      await readPage();
      return null;
    }
    const counted = countOf(db, obj, where, filter?.key);
    // Remembered while the database is unchanged (the same total on every page of a listing); the
    // budget's condition only bounds the statement, it is not part of the question.
    const plan = planCount(ctx.db, ctx.actor.workspaceId, counted.compiled, ctx.dataVersion);
    // A total remembered in a state the page's statements tell: the page says whether it still holds.
    if (plan?.stamp && plan.known) pageStamp = plan.stamp;
    // Where statements leave this thread free (PostgreSQL), a light listing's total is counted on
    // another connection while its page is read: the page and its total in the time of the slower.
    const counting = !pageStamp && !heavyList && ctx.db.adapter.overlapsStatements && !ctx.db.kysely.isTransaction ? countRecords(plan, counted, guard, run) : undefined;
    try {
      await readPage();
    } catch (e) {
      await counting?.catch(() => {});
      throw e;
    }
    if (counting) return counting;
    const known = plan && pageStamp ? knownCount(plan, stampSeen) : undefined;
    // The contract's total is an exact count of every match: for a heavy listing, in the same budget.
    return known ?? countRecords(plan, counted, guard, run);
  };
  const readPage = async () => {
    for (let i = start; i < segments.length && rows.length <= limit; i++) {
      const seg = segments[i]!;
      const resume = cursor && i === start ? cursor : undefined;
      if (seg === 'nulls') {
        await page(
          (q) => {
            if (!notNullKey) q = q.where(key, 'is', null);
            if (resume) q = q.where('seq', cmp, resume.s);
            return q.orderBy('seq', dir);
          },
          resume ? 'nulls after' : 'nulls',
          resume ? [resume.s] : [],
        );
        continue;
      }
      const notNull = (q: any) => (notNullKey ? q : q.where(key, 'is not', null));
      if (resume) {
        // Resuming splits in two index ranges: the rest of the rows equal to the cursor's value (by
        // seq), then the values beyond it. A row-value comparison would seek on the value alone and
        // step through every row sharing it: slow deep in a low-cardinality field (a status). When
        // the previous page saw that no row tied with its last one is left (u), only the second
        // range is read: one statement, the one round trip on PostgreSQL.
        if (!resume.u) await page((q) => q.where(key, '=', resume.v).where('seq', cmp, resume.s).orderBy('seq', dir), 'tied', [resume.v, resume.s]);
        if (rows.length <= limit) await page((q) => notNull(q).where(key, cmp, resume.v).orderBy(key, dir).orderBy('seq', dir), 'values after', [resume.v]);
      } else await page((q) => notNull(q).orderBy(key, dir).orderBy('seq', dir), 'values');
    }
  };
  let total: number | null;
  try {
    total = heavyList ? await heavy(ctx, execute) : await execute();
  } catch (e) {
    throw listTimeoutError(e);
  }

  let nextCursor: string | null = null;
  if (rows.length > limit) {
    const sortValue = (r: Record<string, unknown>) => ((related ? r.__sort : r[col]) ?? null) as string | number | null;
    const last = rows[limit - 1]!;
    const v = sortValue(last);
    // The row read past the page (limit + 1) tells whether rows tied with the last one are left.
    const untied = v !== null && sortValue(rows[limit]!) !== v;
    rows.length = limit;
    nextCursor = encodeCursor({ f: sortName, d: dir, v, s: last.seq as number, ...(untied ? { u: 1 as const } : {}) });
  }
  const data = rows.map((r) => toRecord(obj, r, fields));
  return { data: opts.relationNames ? await nameRelationsOf(ctx, obj, data) : data, total, nextCursor };
}

/** The database's state as a statement saw it (Db.stampExpression), selected beside its rows. */
const stampColumn = (stamp: Expression<string>) => sql<string>`${stamp}`.as('__stamp');

/**
 * A list's count question. Without a filter it is the table's, compiled once and never built again
 * (building it each time cost about as much as a remembered total's whole check); with a filter kept
 * by its text (`filterKey`, see compileFilterKept), compiled once with it. The builder is made only
 * where it is run with more (a filter not kept, the budget's condition, a stamp).
 */
function countOf(db: AnyDb, obj: ObjectDef, where: ((eb: EB) => Expression<SqlBool>) | undefined, filterKey: string | undefined) {
  let built: any;
  const query = () => {
    if (!built) {
      const all = db.selectFrom(obj.table).select((eb: EB) => eb.fn.countAll().as('n'));
      built = where ? all.where((eb: EB) => where(eb)) : all;
    }
    return built;
  };
  const compile = () => query().compile();
  const plain = !where ? compiledByKey(db, `count ${obj.table}`, compile) : filterKey !== undefined ? compiledByKey(obj, `count\u0000${filterKey}`, compile) : undefined;
  return { db, query, plain, compiled: () => plain ?? compile() };
}

/** The count of the question's rows, under the budget's condition, from memory where `plan` may answer it. */
function countRecords(plan: CountPlan | null, c: ReturnType<typeof countOf>, guard: ReturnType<typeof budgetWhere>, run: <R>(q: any) => Promise<R[]>): Promise<number> {
  return rememberedCount(plan, async (stamp) => {
    let row: { n: number | bigint; __stamp?: string } | undefined;
    if (c.plain && !guard && !stamp) [row] = (await c.db.executeQuery<{ n: number | bigint }>(c.plain)).rows;
    else {
      let q: any = guard ? c.query().where(guard) : c.query();
      if (stamp) q = q.select(stampColumn(stamp));
      [row] = await run<{ n: number | bigint; __stamp?: string }>(q);
    }
    return { n: Number(row?.n ?? 0), stamp: row?.__stamp };
  });
}

// ---------------------------------------------------------------------------------------------
// Reading one record, enriched with its associations

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

async function nameRelationsOf(ctx: Ctx, obj: ObjectDef, records: RecordData[]): Promise<RecordData[]> {
  // The caller resolved `obj` a moment ago: its schema is loaded, no need to check its version again.
  return withRelationNames(dyn(ctx.db.kysely), ctx.actor.workspaceId, loadedSchema(ctx) ?? (await getSchema(ctx)), obj, records);
}

/** Records as a write returned them, with their RELATION values as {id, name} (see ListOptions.relationNames). */
export async function nameRelations(ctx: Ctx, objectName: string, records: RecordData[]): Promise<RecordData[]> {
  return nameRelationsOf(ctx, await resolveObject(ctx, objectName), records);
}
