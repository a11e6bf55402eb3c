import { type AliasedRawBuilder, type CompiledQuery, type Expression, type ExpressionBuilder, type Kysely, type RawBuilder, type SelectQueryBuilder, sql } from 'kysely';
import { classifyDbError, type DialectAdapter } from '../db/dialect.js';
import { isBudgetStop } from '../db/sqlite/read-pool.js';
import { budgetWhere, checkBudget, currentBudget } from './budget.js';
import type { Ctx } from './context.js';
import { validationError } from './errors.js';
import { decodeValue, type FieldDef, NUMERIC_TYPES, storageOf } from './field-types.js';
import { normalizeFilter } from './filter-styles.js';
import { compileFilter, type RelatedPath, relatedValueSql, resolveRelated } from './filters.js';
import type { ObjectDef, WorkspaceSchema } from './schema.js';
import { checkTimeZone, INTERVALS, type Interval, isInterval, offsetSegments, type ZoneSegment } from './time-buckets.js';
import { cancelledError, throwIfCancelled } from './work.js';

/**
 * The SQL both aggregate modules build (aggregate.ts: GET, multi-metric POST; aggregate-tree.ts:
 * nested buckets), in one place so that a metric or a bucket means the same in every style: metrics
 * and dims resolved against the schema, a metric's expression and its value read back, a dim's
 * bucket expression (with the time-zone segments SQLite needs), the rows a GROUP BY reads
 * (MULTI_SELECT values unnested, related values selected once per record), the matching records
 * (filter and budget guard), and the read itself. Only Kysely builders here: what differs between
 * SQLite and PostgreSQL comes from the dialect adapter.
 */

export const AGG_FUNCTIONS = ['count', 'sum', 'avg', 'min', 'max', 'count_distinct'] as const;
export type AggFn = (typeof AGG_FUNCTIONS)[number];

const RESERVED_GROUP_KEYS = new Set(['count', 'aggregates', 'meta', 'groups', 'labels']);

export interface MetricInput {
  field: string;
  function: string;
}

export interface DimInput {
  field: string;
  /** Calendar bucket for DATE/DATETIME fields. */
  interval?: Interval | undefined;
  /** Numeric bucket width (in the field's unit) for a number histogram. */
  histogram?: number | undefined;
  /** IANA time zone for calendar buckets of DATETIME fields (default UTC). */
  timeZone?: string | undefined;
}

type EB = ExpressionBuilder<any, any>;
type Select = SelectQueryBuilder<any, any, any>;

// ---------------------------------------------------------------------------------------------
// Resolution

export interface Metric {
  field: FieldDef;
  fn: AggFn;
  /** The aggregated object's table: columns are named with it (see col). */
  table: string;
}

export interface Dim {
  field: FieldDef;
  key: string;
  kind: 'value' | 'time' | 'number';
  interval?: Interval;
  histogram?: number;
  timeZone?: string;
  /** A related record's field ('company.industry'): its value per record comes from a subquery. */
  related?: RelatedPath;
  /** The grouped object's table: columns are named with it, and the related subquery correlates with it. */
  table: string;
  /** A MULTI_SELECT: each value of a record is a group of its own (the record's JSON array unnested). */
  multi?: boolean;
}

export function fnOf(name: string): AggFn {
  const n = name.toLowerCase().replace(/^countdistinct$/, 'count_distinct');
  if (!(AGG_FUNCTIONS as readonly string[]).includes(n)) throw validationError(`Unknown function '${name}'. Functions: ${AGG_FUNCTIONS.map((f) => f.toUpperCase()).join(', ')}`);
  return n as AggFn;
}

function fieldOf(obj: ObjectDef, name: string, role: string): FieldDef {
  const f = obj.byName.get(name);
  if (!f)
    throw validationError(`Unknown field '${name}' on ${obj.name}. Available: ${obj.fields.map((x) => x.name).join(', ')}`, {
      field: name,
      validFields: obj.fields.map((x) => x.name),
      role,
    });
  return f;
}

export function resolveMetric(obj: ObjectDef, m: MetricInput): Metric {
  if (!m || typeof m.field !== 'string' || typeof m.function !== 'string') throw validationError('Each aggregate needs "field" and "function", e.g. {"field": "amount", "function": "sum"}');
  const fn = fnOf(m.function);
  const field = fieldOf(obj, m.field, 'aggregate');
  if ((fn === 'sum' || fn === 'avg') && !NUMERIC_TYPES.has(field.type)) {
    const numeric = obj.fields.filter((f) => NUMERIC_TYPES.has(f.type)).map((f) => f.name);
    throw validationError(
      `${fn.toUpperCase()} needs a numeric field (NUMBER, CURRENCY, PERCENTAGE, FLOAT or INTEGER); '${field.name}' is ${field.type}. Numeric fields of ${obj.name}: ${numeric.join(', ') || 'none'}`,
      { field: field.name, numericFields: numeric },
    );
  }
  return { field, fn, table: obj.table };
}

export function resolveDim(obj: ObjectDef, d: string | DimInput, schema?: WorkspaceSchema): Dim {
  const spec: DimInput = typeof d === 'string' ? { field: d } : d;
  if (!spec || typeof spec.field !== 'string') throw validationError('Each groupBy entry is a field name or {"field", "interval"|"histogram"}');
  if (RESERVED_GROUP_KEYS.has(spec.field)) throw validationError(`'${spec.field}' is reserved in groupBy (count, aggregates, meta, groups and labels name parts of the answer)`);
  if (schema && spec.field.includes('.')) {
    const related = resolveRelated(obj, schema, spec.field);
    const inner = resolveDim(related.target, { ...spec, field: related.field.name });
    return { ...inner, key: spec.field, related, table: obj.table };
  }
  const field = fieldOf(obj, spec.field, 'groupBy');
  const table = obj.table;
  if (spec.interval !== undefined) {
    if (!isInterval(spec.interval)) throw validationError(`interval must be one of ${INTERVALS.join(', ')}, got '${String(spec.interval)}'`);
    if (field.type !== 'DATE' && field.type !== 'DATETIME') throw validationError(`interval applies to DATE and DATETIME fields; '${field.name}' is ${field.type}`);
    const timeZone = spec.timeZone ?? 'UTC';
    checkTimeZone(timeZone);
    return { field, key: field.name, kind: 'time', interval: spec.interval, timeZone, table };
  }
  if (spec.histogram !== undefined) {
    if (!NUMERIC_TYPES.has(field.type)) throw validationError(`A number histogram needs a numeric field; '${field.name}' is ${field.type}`);
    if (typeof spec.histogram !== 'number' || !(spec.histogram > 0)) throw validationError('histogram interval must be a positive number');
    return { field, key: field.name, kind: 'number', histogram: spec.histogram, table };
  }
  return { field, key: field.name, kind: 'value', table, ...(field.type === 'MULTI_SELECT' ? { multi: true } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Metrics

/**
 * A column of the aggregated records, named with their table: beside a JSON array's elements
 * (SQLite's json_each has columns id, key, value, type...) a bare name could be theirs.
 */
export const col = (table: string, f: FieldDef) => sql.ref(`${table}.${f.column}`);

/** Integer storage (INTEGER, CURRENCY's minor units) sums exactly in SQL; as text the sum survives the trip past 2^53. */
export const sumsAsText = (m: Metric) => storageOf(m.field.type) === 'integer';

/** What a metric aggregates per record: its column; for MIN or MAX of a MULTI_SELECT, the record's smallest or largest value. */
export function metricInput(m: Metric, adapter: DialectAdapter): Expression<unknown> {
  const c = col(m.table, m.field);
  return m.field.type === 'MULTI_SELECT' && (m.fn === 'min' || m.fn === 'max') ? adapter.jsonArrayExtreme(c, m.fn) : c;
}

/**
 * A metric's aggregate. AVG is its SUM here, divided by the values' count (avgCount, a column of its
 * own) when read back: in JavaScript, rounded once. PostgreSQL's AVG of a bigint is a numeric of 17
 * significant digits, which rounds a second time on its way to a double (another last digit than
 * SQLite's); and a grouped query's overall average comes from the same two aggregates.
 */
export function metricSql(m: Metric, adapter: DialectAdapter): RawBuilder<unknown> {
  const c = metricInput(m, adapter);
  switch (m.fn) {
    case 'count':
      return m.field.name === 'id' ? sql`COUNT(*)` : sql`COUNT(${c})`;
    case 'count_distinct':
      return sql`COUNT(DISTINCT ${c})`;
    case 'sum':
    case 'avg':
      return sumsAsText(m) ? sql`CAST(SUM(${c}) AS TEXT)` : sql`SUM(${c})`;
    case 'min':
      return sql`MIN(${c})`;
    case 'max':
      return sql`MAX(${c})`;
  }
}

/** The value count that goes with an AVG's sum. */
export function avgCount(m: Metric): RawBuilder<unknown> {
  return sql`COUNT(${col(m.table, m.field)})`;
}

/** The selected columns of metrics: `${prefix}${i}`, and for an AVG its count `${prefix}${i}_n` (read back by metricOf). */
export function metricColumns(metrics: readonly Metric[], adapter: DialectAdapter, prefix = 'm'): AliasedRawBuilder<unknown, string>[] {
  return metrics.flatMap((m, i) => [metricSql(m, adapter).as(`${prefix}${i}`), ...(m.fn === 'avg' ? [avgCount(m).as(`${prefix}${i}_n`)] : [])]);
}

/** The value of the i-th metric in a row selected with metricColumns (or the same columns computed otherwise). */
export function metricOf(m: Metric, row: Record<string, unknown>, prefix: string, i: number): unknown {
  return metricValue(m, row[`${prefix}${i}`], m.fn === 'avg' ? (row[`${prefix}${i}_n`] ?? null) : undefined);
}

function toExactNumber(text: string, scale: number): number | string {
  const units = BigInt(text);
  const abs = units < 0n ? -units : units;
  if (abs <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(units) / 10 ** scale;
  if (scale === 0) return units.toString();
  const s = abs.toString().padStart(scale + 1, '0');
  return `${units < 0n ? '-' : ''}${s.slice(0, -scale)}.${s.slice(-scale)}`;
}

/** A metric's value from its stored form; for AVG from (sum, count) when the count is given, else raw is the average. */
function metricValue(m: Metric, raw: unknown, count?: unknown): unknown {
  switch (m.fn) {
    case 'count':
    case 'count_distinct':
      return Number(raw ?? 0);
    case 'sum':
      if (raw === null || raw === undefined) return 0;
      if (typeof raw === 'string') return toExactNumber(raw, m.field.type === 'CURRENCY' ? (m.field.scale ?? 2) : 0);
      return raw;
    case 'avg': {
      if (raw === null || raw === undefined) return null;
      let v = Number(raw);
      if (count !== undefined) {
        const n = Number(count ?? 0);
        if (!n) return null;
        v /= n;
      }
      return m.field.type === 'CURRENCY' ? v / 10 ** (m.field.scale ?? 2) : v;
    }
    case 'min':
    case 'max':
      // A MULTI_SELECT's MIN or MAX is one of its option values, not a list.
      return m.field.type === 'MULTI_SELECT' ? (raw ?? null) : decodeValue(m.field, raw);
  }
}

// ---------------------------------------------------------------------------------------------
// Dims and buckets

/** The column of the i-th dim's related value in groupedRows' derived table. */
const relatedAlias = (i: number) => `__rv${i}`;

/** The alias of the i-th dim's unnested MULTI_SELECT values (see groupedRows). */
const multiAlias = (i: number) => `mv${i}`;

/**
 * A dim's value per record: its column, or the related record's value: a subquery, or with the
 * dim's place `i` among the grouped dims, the column groupedRows selected it into.
 */
export function dimColumn(d: Dim, i?: number): Expression<unknown> {
  if (!d.related) return col(d.table, d.field);
  return i === undefined ? relatedValueSql(d.related, d.table, 'rv') : sql.ref(`${d.table}.${relatedAlias(i)}`);
}

/** A histogram dim's bucket width in stored units (a currency's minor units); a finite, positive number. */
function histogramWidth(d: Dim): number {
  const width = d.field.type === 'CURRENCY' ? d.histogram! * 10 ** (d.field.scale ?? 2) : d.histogram!;
  if (!Number.isFinite(width) || width <= 0) throw validationError(`The histogram interval of '${d.key}' is out of range: a positive number whose buckets fit the field's values`);
  return width;
}

/** A bucket of the time zone's offsets: UTC, or a DATE (no time of day, so no zone). */
export const UTC_SEGMENTS: ZoneSegment[] = [{ until: null, modifier: '+0 minutes' }];

/**
 * The rows a GROUP BY reads: the matching records, or with a MULTI_SELECT dim one row per (record,
 * value). With such a dim, or a related one, the records come as a derived table (named as the
 * table): the budget condition's bare rowid would be ambiguous beside json_each's, and a related
 * value is selected there once per record, as a column (relatedAlias), because PostgreSQL refuses
 * to group by a subquery that reads a column it does not group by. `i` is a dim's place among the
 * grouped dims: it names its columns, as in dimColumn and the bucket expressions.
 */
export function groupedRows(ctx: Ctx, table: string, base: () => Select, dims: { dim: Dim; i: number }[]): Select {
  const multi = dims.filter((x) => x.dim.multi);
  const related = dims.filter((x) => x.dim.related);
  if (!multi.length && !related.length) return base();
  let rows = base().selectAll();
  if (related.length) rows = rows.select(related.map(({ dim, i }) => relatedValueSql(dim.related!, dim.table!, 'rv').as(relatedAlias(i))));
  let q = (ctx.db.kysely as unknown as Kysely<any>).selectFrom(rows.as(table)) as Select;
  for (const { dim, i } of multi) q = ctx.db.adapter.leftJoinJsonArray(q, dimColumn(dim, i), multiAlias(i));
  return q;
}

/**
 * The smallest and largest value of a dim's column over the whole table (an index's two ends where
 * it has one), or null when it has none: the span a zone's offsets or bucket ranges are needed for.
 */
export function valueSpan(ctx: Ctx, obj: ObjectDef, d: Dim): Promise<{ lo: string; hi: string } | null> {
  const db = ctx.db.kysely as unknown as Kysely<any>;
  // A related field's span: over its whole table, a superset of the values the records point at.
  const table = d.related ? d.related.target.table : obj.table;
  const column = sql.ref(d.field.column);
  let q: CompiledQuery;
  if (d.field.indexed || d.field.unique) {
    // Each end alone, unfiltered: one seek into the index each. MIN and MAX together, or behind the
    // budget's condition, read the whole index (420 ms at 1,000,000 rows, against 1 ms).
    const end = (fn: 'MIN' | 'MAX') => sql<string | null>`(${db.selectFrom(table).select(sql`${sql.raw(fn)}(${column})`.as('v'))})`;
    q = db.selectNoFrom([end('MIN').as('lo'), end('MAX').as('hi')]).compile();
  } else {
    const guard = budgetWhere(ctx);
    const from = db.selectFrom(table);
    q = (guard ? from.where(guard) : from).select([sql<string | null>`MIN(${column})`.as('lo'), sql<string | null>`MAX(${column})`.as('hi')]).compile();
  }
  return runRead<{ lo: string | null; hi: string | null }>(ctx, q).then(([r]) => (r?.lo && r.hi ? { lo: r.lo, hi: r.hi } : null));
}

/**
 * The bucket expression of the i-th grouped dim (over groupedRows): the value, a MULTI_SELECT's
 * unnested value, a calendar bucket in the dim's zone, or a histogram bucket. Where the dialect needs
 * them (SQLite), a zone's offsets over the data's time span become CASE branches: read once per
 * field and zone in a request (one MIN/MAX query each), hence one of these per request.
 */
export function bucketSql(ctx: Ctx, obj: ObjectDef): (d: Dim, i: number) => Promise<RawBuilder<unknown>> {
  const segments = new Map<string, Promise<ZoneSegment[]>>();
  const zoneSegments = (d: Dim): Promise<ZoneSegment[]> => {
    const key = `${d.key}|${d.timeZone}`;
    let s = segments.get(key);
    if (!s) {
      s = valueSpan(ctx, obj, d).then((r) => (r ? offsetSegments(d.timeZone!, r.lo, r.hi) : UTC_SEGMENTS));
      segments.set(key, s);
    }
    return s;
  };
  return async (d, i) => {
    if (d.multi) return sql`${sql.ref(`${multiAlias(i)}.value`)}`;
    const c = dimColumn(d, i);
    if (d.kind === 'time') {
      const local = d.field.type === 'DATETIME';
      const segs = local && d.timeZone !== 'UTC' && ctx.db.adapter.zoneSegments ? await zoneSegments(d) : UTC_SEGMENTS;
      return ctx.db.adapter.timeBucket(c, d.interval!, local ? d.timeZone! : 'UTC', segs);
    }
    if (d.kind === 'number') return ctx.db.adapter.histogramBucket(c, histogramWidth(d));
    return sql`${c}`;
  };
}

/**
 * Start of a number-histogram bucket, as stored by floor(v / width) * width. A negative value so
 * close to zero that v / width underflows lands in the bucket starting at -0, which GROUP BY merges
 * with the 0 bucket; whichever record SQLite meets first would decide the sign. Always +0.
 */
function numberBucketStart(f: FieldDef, raw: unknown): number {
  const v = f.type === 'CURRENCY' ? Number(raw) / 10 ** (f.scale ?? 2) : Number(raw);
  return v === 0 ? 0 : v;
}

/** A bucket's value in the answer, from what its expression selected. */
export function bucketValue(d: Dim, raw: unknown): unknown {
  if (raw === null || raw === undefined) return null;
  if (d.kind === 'time' || d.multi) return raw;
  if (d.kind === 'number') return numberBucketStart(d.field, raw);
  return decodeValue(d.field, raw);
}

// ---------------------------------------------------------------------------------------------
// The records read, and the read

/**
 * The records an aggregate reads: `all` (the object's table), `matching` (with the filter); both carry
 * the budget condition that lets the read pool stop a statement past the time limit or when the
 * caller gives up. `filtered`: the filter narrows anything at all.
 */
export function recordRows(ctx: Ctx, obj: ObjectDef, schema: WorkspaceSchema, filter: unknown): { all: () => Select; matching: () => Select; filtered: boolean } {
  const g = normalizeFilter(filter);
  const where = g ? compileFilter(obj, ctx.db.adapter, g, undefined, schema, { userId: ctx.actor.userId }) : undefined;
  const db = ctx.db.kysely as unknown as Kysely<any>;
  const guard = budgetWhere(ctx);
  const all = (): Select => (guard ? db.selectFrom(obj.table).where(guard) : db.selectFrom(obj.table));
  const matching = (): Select => (where ? all().where((eb: EB) => where(eb)) : all());
  return { all, matching, filtered: !!where };
}

/**
 * Heavy reads go to the worker pool when there is one (file databases); else the main connection.
 * Inside the heavy lane the budget's signal (time limit or the caller giving up) stops the query:
 * Piscina ends the worker thread that runs it and starts a fresh one. On the main connection a
 * statement cannot be stopped (better-sqlite3 has no interrupt); the budget is checked between
 * statements instead.
 */
export async function runRead<R>(ctx: Ctx, q: CompiledQuery): Promise<R[]> {
  throwIfCancelled(ctx);
  checkBudget();
  const signal = currentBudget()?.signal ?? ctx.work?.signal;
  if (ctx.db.readPool) {
    return ctx.db.readPool.all<R>(q.sql, q.parameters, signal).catch((e: unknown) => {
      // Stopped by its deadline inside the worker, perhaps a moment before this thread's timer.
      if (isBudgetStop(e)) currentBudget()?.expire();
      if (signal?.aborted) {
        checkBudget();
        throw cancelledError();
      }
      throw e;
    });
  }
  const budget = currentBudget();
  if (budget && ctx.db.boundedRead) {
    const rows = await ctx.db.boundedRead<R>(q, budget.deadline - performance.now(), signal).catch((e: unknown) => {
      // Stopped by the database: at the deadline, the budget's own error (QUERY_TOO_EXPENSIVE);
      // after its caller went away, the cancellation (checkBudget tells them apart).
      if (classifyDbError(e)?.kind === 'timeout' && !signal?.aborted) budget.expire();
      checkBudget();
      throw e;
    });
    checkBudget();
    return rows;
  }
  const rows = (await ctx.db.kysely.executeQuery<R>(q)).rows;
  checkBudget();
  return rows;
}
