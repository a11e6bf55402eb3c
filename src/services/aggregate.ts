import { type Kysely, type RawBuilder, type SelectQueryBuilder, type SqlBool, sql } from 'kysely';
import { type DialectAdapter, ordered } from '../db/dialect.js';
import {
  avgCount,
  bucketSql,
  bucketValue,
  col,
  type Dim,
  type DimInput,
  dimColumn,
  fnOf,
  groupedRows,
  type Metric,
  type MetricInput,
  metricColumns,
  metricInput,
  metricOf,
  metricSql,
  recordRows,
  resolveDim,
  resolveMetric,
  runRead,
  sumsAsText,
  UTC_SEGMENTS,
  valueSpan,
} from './aggregate-sql.js';
import { budgetLimits, heavy, tooExpensive } from './budget.js';
import type { Ctx } from './context.js';
import { namesFor } from './display-names.js';
import { validationError } from './errors.js';
import { normalizeFilter } from './filter-styles.js';
import type { FilterGroup } from './filters.js';
import { getSchema, type ObjectDef, resolveObject, type WorkspaceSchema } from './schema.js';
import { type BucketRange, bucketRanges, type Interval } from './time-buckets.js';

export { AGG_FUNCTIONS, type AggFn, type DimInput, type MetricInput } from './aggregate-sql.js';

/**
 * The aggregation engine. Every request style (Kasar GET, multi-metric POST, nested trees) is
 * compiled to SQL (GROUP BY, window functions) and runs over every matching record: nothing is
 * sampled or truncated. Heavy queries run on the read pool, off the event loop.
 *
 * Semantics (the same in every style):
 *  - COUNT(id) counts records; COUNT(field) counts records where the field has a value.
 *  - COUNT_DISTINCT ignores empty values.
 *  - SUM over no values is 0; AVG, MIN and MAX over no values are null.
 *  - AVG of integers is a decimal (not truncated).
 *  - CURRENCY sums are exact (integer minor units); a sum beyond 2^53 minor units comes back as a
 *    decimal string instead of a number.
 *  - The group of records without a value is returned with the value null, and counted.
 *  - Grouped by a MULTI_SELECT field, a record counts in the group of each of its values (one
 *    without any in the null group); the overall count and metrics still count each record once.
 *  - MIN and MAX of a MULTI_SELECT field: the smallest and largest option value among all values of
 *    all matching records, compared as text (the way a SELECT's values compare in MIN, MAX and group
 *    order); null when no record has a value.
 *  - Groups are ordered by count descending, then by group value ascending (histograms: by bucket).
 */

/**
 * A read started now and awaited later, after other awaits: if it fails before it is awaited, its
 * rejection is handled (by whoever awaits it) instead of ending the process as unhandled.
 */
function handledLater<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

export const MAX_GROUP_BY = 5;
/** The most groups a client may ask for with `limit`; without one every group is answered (within maxCells). */
export const MAX_GROUP_LIMIT = 10_000;
export type OrderBy = 'count' | 'group' | { field: string; function: string };

export interface GroupRequest {
  filter?: unknown;
  metrics?: MetricInput[];
  groupBy?: (string | DimInput)[];
  order?: { by: OrderBy; dir?: 'asc' | 'desc' };
  /** The top groups to answer; without it, every group (the answer-size budget still bounds it). */
  limit?: number;
}

export interface Group {
  values: Record<string, unknown>;
  count: number;
  aggregates: Record<string, Record<string, unknown>>;
  labels?: Record<string, string | null>;
}

export interface GroupResult {
  object: string;
  count: number;
  aggregates: Record<string, Record<string, unknown>>;
  groups?: Group[];
  meta: {
    totalRecords: number;
    recordsProcessed: number;
    truncated: false;
    groupTotal?: number;
    groupsTruncated?: boolean;
    /** Records in the groups left out by the limit (with a MULTI_SELECT dim: once per value). */
    otherCount?: number;
  };
}

/** The same metric over all groups, computed from the grouped rows by a window (no second scan). */
function metricTotalSql(m: Metric, adapter: DialectAdapter): RawBuilder<unknown> | null {
  const c = metricInput(m, adapter);
  switch (m.fn) {
    case 'count':
      return m.field.name === 'id' ? sql`SUM(COUNT(*)) OVER ()` : sql`SUM(COUNT(${c})) OVER ()`;
    case 'sum':
    case 'avg':
      return sumsAsText(m) ? sql`CAST(SUM(SUM(${c})) OVER () AS TEXT)` : sql`SUM(SUM(${c})) OVER ()`;
    case 'min':
      return sql`MIN(MIN(${c})) OVER ()`;
    case 'max':
      return sql`MAX(MAX(${c})) OVER ()`;
    case 'count_distinct':
      return null; // not derivable from groups
  }
}

function nest(metrics: Metric[], row: Record<string, unknown>, prefix: string): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  metrics.forEach((m, i) => {
    (out[m.field.name] ??= {})[m.fn] = metricOf(m, row, prefix, i);
  });
  return out;
}

export function checkGroupLimit(limit: number | undefined, max = MAX_GROUP_LIMIT): number | undefined {
  if (limit === undefined) return undefined;
  if (!Number.isInteger(limit) || limit < 1 || limit > max) throw validationError(`limit (groups) must be an integer from 1 to ${max}, got ${limit}`);
  return limit;
}

/**
 * Calendar buckets of a DATE field rolled up from days. Grouping by the column itself reads the
 * rows in the order of an index on it (a covering one when the metrics are in it), with no function
 * per row and no sort; the few hundred day groups are then bucketed and summed. The bucket of each
 * day is the same expression the records' bucket would be (a DATE has no time of day, so no time
 * zone), hence the same groups. Measured on 1,000,000 rows: a year by month 659 ms per-row strftime,
 * 106 ms rolled up. Only where the roll-up is exact: COUNT, integer SUM and AVG, MIN and MAX (not
 * COUNT_DISTINCT, nor sums of REAL values, whose rounding depends on the order of addition), one
 * calendar dim, ordered by count or bucket.
 *
 * Calendar buckets of an indexed DATETIME field, from index ranges (issue 16): the zone's bucket
 * starts and offset changes over the column's span cut time into runs that each lie in one local
 * bucket (bucketRanges, exact in every zone: 30- and 45-minute offsets, changes at local midnight),
 * and each run is one aggregate over a range of the index (UNION ALL), with no function per row
 * and no sort; runs of the same bucket are summed as days are. The index scan beats a full pass
 * only when the index is what reads the rows: without a filter, or with one on the field alone
 * (another field's index would be read once per run), and over enough rows (ROWS_PER_RUN). Raw SQL
 * on SQLite, 1,000,000 rows over two years by month in America/New_York: COUNT 1,069 ms per row,
 * 65 ms by ranges; with SUM 1,272 ms, 171 ms (PostgreSQL: 2,787 and 1,776 ms, 261 and 362 ms).
 */
type RollUp = { kind: 'days' } | { kind: 'ranges'; ranges: BucketRange[] };

function canRollUp(dims: Dim[], metrics: Metric[], by: OrderBy): boolean {
  const d = dims[0];
  if (dims.length !== 1 || !d || d.kind !== 'time' || d.multi || d.related) return false;
  if (typeof by === 'object') return false;
  return metrics.every((m) => m.fn === 'count' || m.fn === 'min' || m.fn === 'max' || ((m.fn === 'sum' || m.fn === 'avg') && sumsAsText(m)));
}

/** Every condition of the filter names the field (or there is none). */
function onlyOn(g: FilterGroup | undefined, field: string): boolean {
  return !g || g.conditions.every((c) => ('conditions' in c ? onlyOn(c, field) : c.field === field));
}

async function rollUpOf(ctx: Ctx, obj: ObjectDef, dims: Dim[], metrics: Metric[], by: OrderBy, filter: unknown): Promise<RollUp | null> {
  if (!canRollUp(dims, metrics, by)) return null;
  const d = dims[0]!;
  if (d.field.type === 'DATE') return { kind: 'days' };
  if (!(d.field.indexed || d.field.unique) || !onlyOn(normalizeFilter(filter), d.field.name)) return null;
  const span = await valueSpan(ctx, obj, d);
  const ranges = span && bucketRanges(d.timeZone!, d.interval!, span.lo, span.hi);
  if (!ranges) return null;
  // Each run is a statement's worth of planning (about 0.45 ms on PostgreSQL: 365 day runs over 360
  // rows took 163 ms against 4 ms row by row): worth it only over enough rows, counted up to that
  // many on the index (a few milliseconds at most).
  const need = ranges.length * ROWS_PER_RUN;
  const db = ctx.db.kysely as unknown as Kysely<any>;
  const some = db
    .selectFrom(obj.table)
    .select(sql`1`.as('x'))
    .where(sql<SqlBool>`${dimColumn(d)} IS NOT NULL`)
    .limit(need);
  const [r] = await runRead<{ n: number | string }>(ctx, db.selectFrom(some.as('some')).select(sql`COUNT(*)`.as('n')).compile());
  return Number(r?.n ?? 0) >= need ? { kind: 'ranges', ranges } : null;
}

/**
 * Whether the counted roll-up holds every value: index ranges cover the span read before the count,
 * 2 days past each end, so a value written since beyond that was in no range. The span read again
 * still within them: every value counted was in a range. Day groups read every row: always.
 */
async function coveredStill(ctx: Ctx, obj: ObjectDef, d: Dim, how: RollUp): Promise<boolean> {
  if (how.kind !== 'ranges') return true;
  const now = await valueSpan(ctx, obj, d);
  return !now || (now.lo >= how.ranges[0]!.from && now.hi < how.ranges[how.ranges.length - 1]!.to);
}

/** Rows a run of bucketRanges must hold on average for the index ranges to beat a pass row by row. */
const ROWS_PER_RUN = 200;

/** The grouped select of runGroups (the same columns), from day groups or index ranges: see RollUp. */
function rollUp(db: Kysely<any>, base: () => SelectQueryBuilder<any, any, any>, d: Dim, metrics: Metric[], adapter: DialectAdapter, how: RollUp): SelectQueryBuilder<any, any, any> {
  const day = dimColumn(d);
  const partial = (i: number) => sql.ref(`days.p${i}`);
  const partials = [
    sql`COUNT(*)`.as('dn'),
    ...metrics.flatMap((m, i) => {
      const c = metricInput(m, adapter);
      switch (m.fn) {
        case 'count':
          return [(m.field.name === 'id' ? sql`COUNT(*)` : sql`COUNT(${c})`).as(`p${i}`)];
        case 'sum':
          return [sql`SUM(${c})`.as(`p${i}`)];
        case 'avg':
          return [sql`SUM(${c})`.as(`p${i}`), avgCount(m).as(`p${i}_n`)];
        default:
          return [sql`${sql.raw(m.fn === 'min' ? 'MIN' : 'MAX')}(${c})`.as(`p${i}`)];
      }
    }),
  ];
  let days: SelectQueryBuilder<any, any, any>;
  if (how.kind === 'days')
    days = base()
      .select([sql`${day}`.as('d'), ...partials])
      .groupBy(sql`${day}` as never);
  else {
    // One aggregate per run (an index range), and one for the records without a value.
    const run = (r: BucketRange | null) => {
      let q = base();
      if (!r) q = q.where(sql<SqlBool>`${day} IS NULL`);
      else {
        q = q.where(sql<SqlBool>`${day} >= ${r.from}`).where(sql<SqlBool>`${day} < ${r.to}`);
      }
      return q.select([sql`CAST(${r ? sql.lit(r.bucket) : sql`NULL`} AS TEXT)`.as('d'), ...partials]);
    };
    days = how.ranges.reduce((u, r) => u.unionAll(run(r)), run(null));
  }
  const text = (x: RawBuilder<unknown>) => sql`CAST(${x} AS TEXT)`;
  const from = db.selectFrom(days.as('days'));
  // A run without records answers a row of zeros: not a group.
  return (how.kind === 'days' ? from : from.where(sql<SqlBool>`days.dn > 0`)).select([
    (how.kind === 'days' ? adapter.timeBucket(sql.ref('days.d'), d.interval!, 'UTC', UTC_SEGMENTS) : sql.ref('days.d')).as('g0'),
    sql`SUM(days.dn)`.as('n'),
    ...metrics.flatMap((m, i) => {
      const p = partial(i);
      switch (m.fn) {
        case 'count':
          return [sql`SUM(${p})`.as(`m${i}`)];
        case 'sum':
          return [text(sql`SUM(${p})`).as(`m${i}`)];
        case 'avg':
          return [text(sql`SUM(${p})`).as(`m${i}`), sql`SUM(${sql.ref(`days.p${i}_n`)})`.as(`m${i}_n`)];
        default:
          return [sql`${sql.raw(m.fn === 'min' ? 'MIN' : 'MAX')}(${p})`.as(`m${i}`)];
      }
    }),
    sql`COUNT(*) OVER ()`.as('group_total'),
    sql`SUM(SUM(days.dn)) OVER ()`.as('record_total'),
    ...metrics.flatMap((m, i) => {
      const p = partial(i);
      switch (m.fn) {
        case 'count':
          return [sql`SUM(SUM(${p})) OVER ()`.as(`t${i}`)];
        case 'sum':
          return [text(sql`SUM(SUM(${p})) OVER ()`).as(`t${i}`)];
        case 'avg':
          return [text(sql`SUM(SUM(${p})) OVER ()`).as(`t${i}`), sql`SUM(SUM(${sql.ref(`days.p${i}_n`)})) OVER ()`.as(`t${i}_n`)];
        default: {
          const f = sql.raw(m.fn === 'min' ? 'MIN' : 'MAX');
          return [sql`${f}(${f}(${p})) OVER ()`.as(`t${i}`)];
        }
      }
    }),
  ]) as SelectQueryBuilder<any, any, any>;
}

/**
 * One calendar histogram's buckets from day groups or index ranges (see RollUp), where that is
 * exact and faster; else null, and the caller buckets row by row. Rows in bucket order (ascending,
 * as `ordered` sorts), at most `limit`: g0 (the bucket, as the per-row bucket expression gives it),
 * n, the metrics as metricColumns names them, group_total and record_total. Used by aggregateTree's
 * timeHistogram (Cognite's too) where it is a top-level node without children.
 */
export async function rolledUpHistogram(
  ctx: Ctx,
  obj: ObjectDef,
  base: () => SelectQueryBuilder<any, any, any>,
  d: Dim,
  metrics: Metric[],
  filter: unknown,
  limit: number,
): Promise<Record<string, unknown>[] | null> {
  const how = await rollUpOf(ctx, obj, [d], metrics, 'group', filter);
  if (!how) return null;
  const q = rollUp(ctx.db.kysely as unknown as Kysely<any>, base, d, metrics, ctx.db.adapter, how)
    .groupBy(sql.ref('g0'))
    .orderBy(ordered(sql.ref('g0'), 'asc') as any)
    .limit(limit);
  const rows = await runRead<Record<string, unknown>>(ctx, q.compile());
  return (await coveredStill(ctx, obj, d, how)) ? rows : null;
}

/** Count, metrics and groups in one GROUP BY over every matching record; in the heavy lane, within its budget. */
export function aggregateGroups(ctx: Ctx, objectName: string, req: GroupRequest): Promise<GroupResult> {
  return heavy(ctx, () => runGroups(ctx, objectName, req));
}

async function runGroups(ctx: Ctx, objectName: string, req: GroupRequest, perRow = false): Promise<GroupResult> {
  const obj = await resolveObject(ctx, objectName);
  const schema = await getSchema(ctx);
  const metrics = (req.metrics ?? []).map((m) => resolveMetric(obj, m));
  const rawDims = req.groupBy ?? [];
  if (!Array.isArray(rawDims)) throw validationError('groupBy must be a field name or an array of at most 5');
  if (rawDims.length > MAX_GROUP_BY) throw validationError(`groupBy takes at most ${MAX_GROUP_BY} fields, got ${rawDims.length}`);
  const dims = rawDims.map((d) => resolveDim(obj, d, schema));
  const keys = dims.map((d) => d.key);
  if (new Set(keys).size !== keys.length) throw validationError('groupBy lists a field twice');
  const limit = checkGroupLimit(req.limit);
  // The group count is not capped for its own sake; only the answer's size is.
  const { maxCells } = budgetLimits(ctx.db);
  if (limit !== undefined && limit > maxCells)
    throw tooExpensive(
      `limit asks for up to ${limit.toLocaleString('en-US')} groups; an answer holds at most ${maxCells.toLocaleString('en-US')}. Narrow it: a smaller limit, fewer groupBy fields, or a filter`,
      {
        limit: 'maxCells',
        max: maxCells,
        estimate: limit,
      },
    );
  const { all, matching: base, filtered } = recordRows(ctx, obj, schema, req.filter);
  const db = ctx.db.kysely as unknown as Kysely<any>;
  const adapter = ctx.db.adapter;
  // The count and every metric over the matching records, each counted once.
  const overall = () =>
    base()
      .select([sql`COUNT(*)`.as('n'), ...metricColumns(metrics, adapter)])
      .compile();

  // Started beside the main query and awaited after it: when the main query fails first (the time
  // limit, a client that hung up), this one's rejection must not go unhandled (Node would exit).
  const totalRecordsP = filtered ? handledLater(runRead<{ n: number }>(ctx, all().select(sql<number>`COUNT(*)`.as('n')).compile()).then((r) => Number(r[0]?.n ?? 0))) : undefined;

  if (dims.length === 0) {
    const [row] = await runRead<Record<string, unknown>>(ctx, overall());
    const count = Number(row?.n ?? 0);
    const totalRecords = totalRecordsP ? await totalRecordsP : count;
    return {
      object: obj.name,
      count,
      aggregates: nest(metrics, row ?? {}, 'm'),
      meta: { totalRecords, recordsProcessed: count, truncated: false },
    };
  }

  const histogramFirst = dims[0]!.kind !== 'value';
  const order = req.order ?? { by: histogramFirst ? ('group' as const) : ('count' as const), dir: histogramFirst ? ('asc' as const) : ('desc' as const) };
  const dir = order.dir ?? (order.by === 'group' ? 'asc' : 'desc');
  let orderMetric = -1;
  if (typeof order.by === 'object') {
    const want = resolveMetric(obj, order.by);
    orderMetric = metrics.findIndex((m) => m.field.name === want.field.name && m.fn === want.fn);
    if (orderMetric < 0) throw validationError('order.by names an aggregate that is not requested in "aggregate"');
  } else if (order.by !== 'count' && order.by !== 'group') throw validationError("order.by is 'count', 'group' or {field, function}");

  // With a MULTI_SELECT dim a record is in several groups: the totals cannot come from the groups
  // (they would count it once per value), so one more statement reads them over the records.
  const multi = dims.some((d) => d.multi);
  const rollup = perRow ? null : await rollUpOf(ctx, obj, dims, metrics, order.by, req.filter);
  // Each dim's bucket; a DATETIME's in a zone reads its time span first (see bucketSql).
  const bucket = bucketSql(ctx, obj);
  const buckets: RawBuilder<unknown>[] = [];
  if (!rollup) for (const [i, d] of dims.entries()) buckets.push(await bucket(d, i));
  let q = rollup
    ? rollUp(db, base, dims[0]!, metrics, adapter, rollup)
    : groupedRows(
        ctx,
        obj.table,
        base,
        dims.map((dim, i) => ({ dim, i })),
      ).select([
        ...buckets.map((b, i) => b.as(`g${i}`)),
        sql`COUNT(*)`.as('n'),
        ...metricColumns(metrics, adapter),
        sql`COUNT(*) OVER ()`.as('group_total'),
        // Records in all groups: each matching record once, or once per value with a MULTI_SELECT dim.
        sql`SUM(COUNT(*)) OVER ()`.as('record_total'),
        ...(multi
          ? []
          : metrics.flatMap((m, i) => {
              const t = metricTotalSql(m, adapter);
              return t ? [t.as(`t${i}`), ...(m.fn === 'avg' ? [sql`SUM(${avgCount(m)}) OVER ()`.as(`t${i}_n`)] : [])] : [];
            })),
      ]);
  q = q.groupBy(dims.map((_, i) => sql.ref(`g${i}`)));
  const groupCols = dims.map((_, i) => sql.ref(`g${i}`));
  // An integer SUM is selected as text (exact past 2^53): order by the number, not the text; and a
  // group without values shows a SUM of 0, so it sorts as 0, not as NULL.
  const om = metrics[orderMetric];
  const orderExpr = om?.fn === 'sum' ? sql`COALESCE(SUM(${col(om.table, om.field)}), 0)` : om?.fn === 'avg' ? sql`AVG(${col(om.table, om.field)})` : sql.ref(`m${orderMetric}`);
  const primary = order.by === 'count' ? [ordered(sql.ref('n'), dir)] : order.by === 'group' ? groupCols.map((g) => ordered(g, dir)) : [ordered(orderExpr, dir)];
  // Ties: count descending, then the group values ascending: the same answer every time.
  const ties = [...(order.by === 'count' ? [] : [sql`n DESC`]), ...(order.by === 'group' ? [] : groupCols.map((g) => ordered(g, 'asc')))];
  // Without a limit: every group, read up to one past the budget to know when it does not fit.
  q = q.orderBy(sql.join([...primary, ...ties]) as any).limit(limit ?? maxCells + 1);

  const distinctIdx = multi ? [] : metrics.map((m, i) => (m.fn === 'count_distinct' ? i : -1)).filter((i) => i >= 0);
  const overallDistinctP = distinctIdx.length
    ? handledLater(
        runRead<Record<string, unknown>>(
          ctx,
          base()
            .select(distinctIdx.map((i) => metricSql(metrics[i]!, adapter).as(`m${i}`)))
            .compile(),
        ),
      )
    : undefined;
  const overallP = multi ? handledLater(runRead<Record<string, unknown>>(ctx, overall())) : undefined;
  const rows = await runRead<Record<string, unknown>>(ctx, q.compile());
  // A value written since the span was read, beyond the ranges: answered row by row.
  if (rollup && !(await coveredStill(ctx, obj, dims[0]!, rollup))) return runGroups(ctx, objectName, req, true);
  const first = rows[0] ?? {};
  const memberships = Number(first.record_total ?? 0);
  let count = memberships;
  let aggregates: Group['aggregates'];
  if (overallP) {
    const [o] = await overallP;
    count = Number(o?.n ?? 0);
    aggregates = nest(metrics, o ?? {}, 'm');
  } else {
    const totals: Record<string, unknown> = {};
    metrics.forEach((m, i) => {
      totals[`t${i}`] = first[`t${i}`] ?? null;
      if (m.fn === 'avg') totals[`t${i}_n`] = first[`t${i}_n`] ?? 0;
    });
    if (overallDistinctP) {
      const [o] = await overallDistinctP;
      for (const i of distinctIdx) totals[`t${i}`] = o?.[`m${i}`] ?? 0;
    }
    aggregates = nest(metrics, totals, 't');
  }
  const groupTotal = Number(first.group_total ?? 0);
  if (limit === undefined && groupTotal > maxCells)
    throw tooExpensive(
      `groupBy ${keys.join(', ')} makes ${groupTotal.toLocaleString('en-US')} groups; an answer holds at most ${maxCells.toLocaleString('en-US')}. Narrow it: a filter, fewer groupBy fields, or a limit (the top groups in the order asked)`,
      { limit: 'maxCells', max: maxCells, estimate: groupTotal },
    );
  const groups: Group[] = rows.map((r) => ({
    values: Object.fromEntries(dims.map((dm, i) => [dm.key, bucketValue(dm, r[`g${i}`])])),
    count: Number(r.n),
    aggregates: nest(metrics, r, 'm'),
  }));
  await labelGroups(ctx, schema, dims, groups);
  const shown = groups.reduce((s, g) => s + g.count, 0);
  const totalRecords = totalRecordsP ? await totalRecordsP : count;
  return {
    object: obj.name,
    count,
    aggregates,
    groups,
    meta: {
      totalRecords,
      recordsProcessed: count,
      truncated: false,
      groupTotal,
      groupsTruncated: groupTotal > groups.length,
      otherCount: memberships - shown,
    },
  };
}

/** Names for RELATION group values (owner -> the user's name), so an agent need not look them up. */
async function labelGroups(ctx: Ctx, schema: WorkspaceSchema, dims: Dim[], groups: { values: Record<string, unknown>; labels?: Record<string, string | null> }[]) {
  for (const d of dims) {
    if (d.kind !== 'value' || d.field.type !== 'RELATION') continue;
    const ids = [...new Set(groups.map((g) => g.values[d.key]).filter((v): v is string => typeof v === 'string'))];
    const names = await namesFor(ctx, schema, d.field.target!, ids);
    for (const g of groups) {
      const v = g.values[d.key];
      (g.labels ??= {})[d.key] = typeof v === 'string' ? (names.get(v) ?? null) : null;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Kasar style: GET /aggregate/{object}?field&function&group_by&filter_*

export interface KasarRequest {
  field: string;
  function: string;
  groupBy?: string | undefined;
  interval?: Interval | undefined;
  timeZone?: string | undefined;
  filter?: unknown;
  order?: GroupRequest['order'];
  limit?: number | undefined;
}

export async function aggregateKasar(ctx: Ctx, objectName: string, r: KasarRequest) {
  if (!r.field) throw validationError("'field' is required (e.g. field=amount, or field=id with COUNT)");
  if (!r.function) throw validationError("'function' is required: one of COUNT, SUM, AVG, MIN, MAX, COUNT_DISTINCT");
  const fn = fnOf(r.function);
  const metric = { field: r.field, function: fn };
  const res = await aggregateGroups(ctx, objectName, {
    filter: r.filter,
    metrics: [metric],
    ...(r.groupBy ? { groupBy: [{ field: r.groupBy, interval: r.interval, timeZone: r.timeZone }] } : {}),
    ...(r.order ? { order: r.order } : {}),
    ...(r.limit !== undefined ? { limit: r.limit } : {}),
  });
  const head = { object_name: res.object, field: r.field, function: fn.toUpperCase() };
  if (!r.groupBy) return { ...head, value: res.aggregates[r.field]?.[fn] ?? null, count: res.count };
  return {
    ...head,
    group_by: r.groupBy,
    ...(r.interval ? { interval: r.interval } : {}),
    results: res.groups!.map((g) => ({
      group: g.values[r.groupBy!] ?? null,
      value: g.aggregates[r.field]?.[fn] ?? null,
      count: g.count,
      ...(g.labels ? { label: g.labels[r.groupBy!] ?? null } : {}),
    })),
    value: res.aggregates[r.field]?.[fn] ?? null,
    count: res.count,
    meta: res.meta,
  };
}
