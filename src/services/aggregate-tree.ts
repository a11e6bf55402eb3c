import { type Kysely, type RawBuilder, sql } from 'kysely';
import { ordered } from '../db/dialect.js';
import { rolledUpHistogram } from './aggregate.js';
import { bucketSql, bucketValue, type Dim, groupedRows, type Metric, metricColumns, metricOf, recordRows, resolveDim, resolveMetric, runRead } from './aggregate-sql.js';
import { budgetLimits, checkBudget, heavy, spendCells, tooExpensive } from './budget.js';
import type { Ctx } from './context.js';
import { namesFor } from './display-names.js';
import { validationError } from './errors.js';
import { parseNumberValue } from './field-types.js';
import { getSchema, type ObjectDef, resolveObject, type WorkspaceSchema } from './schema.js';
import { INTERVALS, type Interval } from './time-buckets.js';

/**
 * Nested aggregate trees (after Cognite's records aggregate): named metrics and bucket
 * aggregates (uniqueValues, numberHistogram, timeHistogram) with sub-aggregates, at most 5 per
 * level, 5 deep and 16 in all. One GROUP BY per bucket node, over every matching record. A
 * uniqueValues on a MULTI_SELECT puts a record in the bucket of each of its values (as groupBy does).
 */

export const TREE_LIMITS = { perLevel: 5, depth: 5, total: 16, defaultSize: 10, maxSize: 1000, maxHistogramBuckets: 1000 } as const;

type MetricKind = 'avg' | 'min' | 'max' | 'sum' | 'count' | 'countDistinct';
type BucketKind = 'uniqueValues' | 'numberHistogram' | 'timeHistogram';
const METRIC_KINDS: MetricKind[] = ['avg', 'min', 'max', 'sum', 'count', 'countDistinct'];
const BUCKET_KINDS: BucketKind[] = ['uniqueValues', 'numberHistogram', 'timeHistogram'];

interface MetricNode {
  name: string;
  kind: MetricKind;
  metric: Metric;
}
interface BucketNode {
  name: string;
  kind: BucketKind;
  dim: Dim;
  size: number;
  metrics: MetricNode[];
  buckets: BucketNode[];
}

export interface TreeRequest {
  aggregates: Record<string, unknown>;
  filter?: unknown;
  /**
   * Buckets of a uniqueValues without "size" (default TREE_LIMITS.defaultSize). Infinity: every
   * distinct value, for a style whose document knows no size; the answer-size budget still bounds it.
   */
  defaultSize?: number;
}

const CALENDAR: Record<string, Interval> = { '1d': 'day', '1w': 'week', '1M': 'month', '1q': 'quarter', '1y': 'year' };

function property(spec: Record<string, unknown>, where: string): string {
  const p = spec.property;
  const name = Array.isArray(p) ? p[p.length - 1] : p;
  if (typeof name !== 'string' || !name) throw validationError(`'${where}' needs "property": a field name (or [space, container, field])`);
  return name;
}

function parseLevel(
  obj: ObjectDef,
  input: unknown,
  depth: number,
  counter: { n: number },
  schema?: WorkspaceSchema,
  defaultSize: number = TREE_LIMITS.defaultSize,
): { metrics: MetricNode[]; buckets: BucketNode[] } {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw validationError('"aggregates" is an object of named aggregates, e.g. {"deals": {"count": {}}}');
  const entries = Object.entries(input as Record<string, unknown>);
  if (entries.length === 0) throw validationError('"aggregates" needs at least one named aggregate');
  if (entries.length > TREE_LIMITS.perLevel) throw validationError(`At most ${TREE_LIMITS.perLevel} aggregates per level; got ${entries.length}`);
  if (depth > TREE_LIMITS.depth) throw validationError(`Aggregate trees nest at most ${TREE_LIMITS.depth} deep`);
  const metrics: MetricNode[] = [];
  const buckets: BucketNode[] = [];
  for (const [name, node] of entries) {
    if (++counter.n > TREE_LIMITS.total) throw validationError(`At most ${TREE_LIMITS.total} aggregates in a whole tree`);
    if (!/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/.test(name)) throw validationError(`Aggregate name '${name}' must be letters, digits, _ or -`);
    const kinds = typeof node === 'object' && node !== null ? Object.keys(node) : [];
    if (kinds.length !== 1) throw validationError(`Aggregate '${name}' needs exactly one of: ${[...METRIC_KINDS, ...BUCKET_KINDS].join(', ')}`);
    const kind = kinds[0]!;
    const spec = ((node as Record<string, unknown>)[kind] ?? {}) as Record<string, unknown>;
    if ((METRIC_KINDS as string[]).includes(kind)) {
      const field = kind === 'count' && spec.property === undefined ? 'id' : property(spec, `${name}.${kind}`);
      const fn = kind === 'countDistinct' ? 'count_distinct' : kind;
      metrics.push({ name, kind: kind as MetricKind, metric: resolveMetric(obj, { field, function: fn }) });
      continue;
    }
    if (!(BUCKET_KINDS as string[]).includes(kind)) throw validationError(`Unknown aggregate '${kind}' in '${name}'. Aggregates: ${[...METRIC_KINDS, ...BUCKET_KINDS].join(', ')}`);
    const field = property(spec, `${name}.${kind}`);
    let dim: Dim;
    let size: number = TREE_LIMITS.maxHistogramBuckets;
    if (kind === 'uniqueValues') {
      dim = resolveDim(obj, field, schema);
      size = spec.size === undefined ? defaultSize : (parseNumberValue(spec.size, true) ?? NaN);
      if (spec.size !== undefined && (!Number.isInteger(size) || size < 1 || size > TREE_LIMITS.maxSize)) throw validationError(`'${name}.uniqueValues.size' must be 1 to ${TREE_LIMITS.maxSize}`);
    } else if (kind === 'numberHistogram') {
      dim = resolveDim(obj, { field, histogram: parseNumberValue(spec.interval) ?? NaN }, schema);
    } else {
      const ci = String(spec.calendarInterval ?? spec.interval ?? '');
      const interval: Interval | undefined = CALENDAR[ci] ?? ((INTERVALS as readonly string[]).includes(ci) ? (ci as Interval) : undefined);
      if (!interval) throw validationError(`'${name}.timeHistogram.calendarInterval' must be one of 1d, 1w, 1M, 1q, 1y (or ${INTERVALS.join(', ')})`);
      dim = resolveDim(obj, { field, interval, timeZone: typeof spec.timeZone === 'string' ? spec.timeZone : 'UTC' }, schema);
    }
    const sub = spec.aggregates === undefined ? { metrics: [], buckets: [] } : parseLevel(obj, spec.aggregates, depth + 1, counter, schema, defaultSize);
    buckets.push({ name, kind: kind as BucketKind, dim, size, ...sub });
  }
  return { metrics, buckets };
}

/** The buckets a tree may produce before it runs: each node's product of sizes along its path. */
function bucketNodes(level: { buckets: BucketNode[] }, path: BucketNode[] = []): { node: BucketNode; path: BucketNode[] }[] {
  return level.buckets.flatMap((b) => [{ node: b, path: [...path, b] }, ...bucketNodes(b, [...path, b])]);
}

/** Runs in the heavy lane (bounded concurrency, a time limit) and within the answer-size budget. */
export function aggregateTree(ctx: Ctx, objectName: string, req: TreeRequest) {
  return heavy(ctx, () => runTree(ctx, objectName, req));
}

/** Yield to the event loop this often while assembling buckets, so light requests keep moving. */
const ASSEMBLE_CHUNK = 2000;

async function runTree(ctx: Ctx, objectName: string, req: TreeRequest) {
  const obj = await resolveObject(ctx, objectName);
  const schema = await getSchema(ctx);
  if (!req || typeof req !== 'object') throw validationError('Send {"aggregates": {...}, "filter": {...}}');
  const root = parseLevel(obj, req.aggregates, 1, { n: 0 }, schema, req.defaultSize);
  const { matching: base } = recordRows(ctx, obj, schema, req.filter);
  const db = ctx.db.kysely as unknown as Kysely<any>;
  const adapter = ctx.db.adapter;
  // depth: the node's place on its path, which names its unnested MULTI_SELECT values and related
  // value (groupedRows); a DATETIME bucketed in a zone other than UTC reads its time span once.
  const bucketExpr = bucketSql(ctx, obj);
  const dimExpr = (b: BucketNode, depth: number) => bucketExpr(b.dim, depth);
  const metricsOut = (ms: MetricNode[], row: Record<string, unknown>) => Object.fromEntries(ms.map((m, i) => [m.name, { [m.kind]: metricOf(m.metric, row, 'm', i) }]));

  // Root: the count and the top-level metrics in one query. Without top-level metrics, the count
  // comes from the first top-level bucket node that holds each record once (not a MULTI_SELECT):
  // its records in all buckets, read beside its buckets (one statement fewer, a scan fewer). It is
  // read first only when the estimate below needs it.
  const counter = root.metrics.length ? undefined : root.buckets.find((b) => !b.dim.multi);
  let rootRow: Record<string, unknown> | undefined;
  const readRoot = async () =>
    (rootRow ??=
      (
        await runRead<Record<string, unknown>>(
          ctx,
          base()
            .select([
              sql`COUNT(*)`.as('n'),
              ...metricColumns(
                root.metrics.map((m) => m.metric),
                adapter,
              ),
            ])
            .compile(),
        )
      )[0] ?? {});
  let total = counter ? Number.POSITIVE_INFINITY : Number((await readRoot()).n ?? 0);

  // Refuse before running what cannot fit. A level has at most min(size, its distinct buckets)
  // buckets under each parent, and never more than the matching records: the product of those
  // along the path bounds each node. Distinct counts cost a scan, so they are read only when the
  // sizes alone (capped by the record count) could pass the limit.
  const { maxCells } = budgetLimits(ctx.db);
  const nodes = bucketNodes(root);
  const bound = (distinct: Map<BucketNode, number> | undefined) =>
    nodes.map(({ path }) =>
      Math.min(
        total,
        path.reduce((p, b) => p * Math.min(b.size, distinct?.get(b) ?? Infinity), 1),
      ),
    );
  let perNode = bound(undefined);
  if (perNode.reduce((s, x) => s + x, 0) > maxCells && !Number.isFinite(total)) {
    total = Number((await readRoot()).n ?? 0);
    perNode = bound(undefined);
  }
  if (perNode.reduce((s, x) => s + x, 0) > maxCells) {
    // A MULTI_SELECT has at most its options as distinct values: no need to count them.
    const counted = nodes.filter(({ node }) => !node.dim.multi);
    const exprs = await Promise.all(counted.map(({ node, path }) => dimExpr(node, path.length - 1)));
    const [d] = exprs.length
      ? await runRead<Record<string, unknown>>(
          ctx,
          base()
            .select(exprs.map((e, i) => sql`COUNT(DISTINCT ${e})`.as(`d${i}`)))
            .compile(),
        )
      : [];
    // The empty value is a bucket too (COUNT DISTINCT leaves it out).
    const distinct = new Map(counted.map(({ node }, i) => [node, Number(d?.[`d${i}`] ?? 0) + 1]));
    for (const { node } of nodes) if (node.dim.multi) distinct.set(node, (node.dim.field.options?.length ?? 0) + 1);
    perNode = bound(distinct);
  }
  const estimate = perNode.reduce((s, x) => s + x, 0);
  if (estimate > maxCells) {
    const worst = nodes[perNode.indexOf(Math.max(...perNode))]!;
    throw tooExpensive(
      `This aggregate tree could hold up to ${estimate.toLocaleString('en-US')} buckets over ${total.toLocaleString('en-US')} matching records; the limit is ${maxCells.toLocaleString('en-US')}. ` +
        `The largest part is '${worst.path.map((b) => b.name).join(' > ')}' (${worst.path.map((b) => `${b.name} size ${Number.isFinite(b.size) ? b.size : 'all'}`).join(' x ')}). ` +
        'Narrow it: fewer nested levels, a smaller size, or a filter',
      { limit: 'maxCells', max: maxCells, estimate, matchingRecords: total, largest: worst.path.map((b) => b.name).join('.') },
    );
  }

  interface Bucket {
    value: unknown;
    count: number;
    aggregates: Record<string, unknown>;
    label?: string | null;
  }
  const out: Record<string, unknown> = metricsOut(root.metrics, rootRow ?? {});

  /** One node's buckets under its ancestors' (at most its size each), counted row by row. */
  function bucketRows(b: BucketNode, ancestors: { node: BucketNode; expr: RawBuilder<unknown> }[], expr: RawBuilder<unknown>) {
    const dims = [...ancestors.map((a) => a.expr), expr];
    const parentCols = ancestors.map((_, i) => sql.ref(`g${i}`));
    const histogram = b.kind !== 'uniqueValues';
    // Window clauses cannot name select aliases: they repeat the bucket expressions.
    const rank = histogram ? ordered(expr, 'asc') : sql`COUNT(*) DESC, ${ordered(expr, 'asc')}`;
    const partition = ancestors.length ? sql`PARTITION BY ${sql.join(ancestors.map((a) => a.expr))}` : sql``;
    const levels = [...ancestors.map((a, i) => ({ dim: a.node.dim, i })), { dim: b.dim, i: ancestors.length }];
    const inner = groupedRows(ctx, obj.table, base, levels)
      .select([
        ...dims.map((d, i) => d.as(`g${i}`)),
        sql`COUNT(*)`.as('n'),
        ...metricColumns(
          b.metrics.map((m) => m.metric),
          adapter,
        ),
        sql`ROW_NUMBER() OVER (${partition} ORDER BY ${rank})`.as('rn'),
        sql`COUNT(*) OVER (${partition})`.as('bucket_total'),
        // Records in the parent's buckets: its record count, or more when a MULTI_SELECT puts one in several.
        sql`SUM(COUNT(*)) OVER (${partition})`.as('bucket_members'),
      ])
      .groupBy(dims.map((_, i) => sql.ref(`g${i}`)));
    return (
      db
        .selectFrom(inner.as('x'))
        .selectAll()
        // An unbounded size keeps every bucket (an integer bound: Infinity is no SQLite parameter).
        .where('rn', '<=', Number.isFinite(b.size) ? b.size : Number.MAX_SAFE_INTEGER)
        .orderBy(sql.join([...parentCols, sql.ref('rn')]) as any)
        // While running: never more rows than the budget allows, whatever the estimate said.
        .limit(maxCells + 1)
    );
  }

  // Walk bucket nodes depth-first, carrying the ancestor dims; each node is one grouped query.
  async function runBucket(
    b: BucketNode,
    ancestors: { node: BucketNode; expr: RawBuilder<unknown> }[],
    attach: (path: unknown[], key: string, name: string, result: unknown) => void,
    parentCounts: Map<string, { path: unknown[]; count: number }>,
  ) {
    // A top-level calendar histogram without children: from day groups or index ranges where that
    // is exact and faster (aggregate.ts, RollUp), no bucket computed row by row.
    const rolled =
      !ancestors.length && b.kind === 'timeHistogram' && !b.buckets.length
        ? await rolledUpHistogram(
            ctx,
            obj,
            base,
            b.dim,
            b.metrics.map((m) => m.metric),
            req.filter,
            Math.min(Number.isFinite(b.size) ? b.size : Number.MAX_SAFE_INTEGER, maxCells + 1),
          )
        : null;
    // Otherwise each record's bucket, grouped under its ancestors' buckets (a node with children is
    // never rolled up, so `expr` is there for them).
    const expr = rolled ? undefined : await dimExpr(b, ancestors.length);
    checkBudget();
    const rows: Record<string, unknown>[] = rolled
      ? rolled.map((r, i) => ({ ...r, rn: i + 1, bucket_total: r.group_total, bucket_members: r.record_total }))
      : await runRead<Record<string, unknown>>(ctx, bucketRows(b, ancestors, expr!).compile());
    spendCells(rows.length, `'${[...ancestors.map((a) => a.node.name), b.name].join(' > ')}'`);
    // The root count, when no root query read it: this node's records in all its buckets.
    if (b === counter && !Number.isFinite(total)) total = rows.length ? Number(rows[0]!.bucket_members) : 0;

    const labels =
      b.dim.kind === 'value' && b.dim.field.type === 'RELATION'
        ? await namesFor(ctx, schema, b.dim.field.target!, [...new Set(rows.map((r) => r[`g${ancestors.length}`]).filter((v): v is string => typeof v === 'string'))])
        : undefined;
    const byParent = new Map<string, { path: unknown[]; buckets: Bucket[]; total: number; members: number }>();
    const childCounts = new Map<string, { path: unknown[]; count: number }>();
    const pathCols = ancestors.map((_, i) => `g${i}`);
    const valueCol = `g${ancestors.length}`;
    // Buckets by the stored values of their path: where the children's results attach.
    const bucketIndex = new Map<string, Bucket>();
    let seen = 0;
    for (const r of rows) {
      if (++seen % ASSEMBLE_CHUNK === 0) {
        await new Promise((resolve) => setImmediate(resolve));
        checkBudget();
      }
      const path = pathCols.map((c) => r[c]);
      const key = pathKey(path);
      let entry = byParent.get(key);
      if (!entry) byParent.set(key, (entry = { path, buckets: [], total: Number(r.bucket_total), members: Number(r.bucket_members) }));
      const raw = r[valueCol];
      const bucket: Bucket = { value: bucketValue(b.dim, raw), count: Number(r.n), aggregates: metricsOut(b.metrics, r) };
      if (labels) bucket.label = typeof raw === 'string' ? (labels.get(raw) ?? null) : null;
      entry.buckets.push(bucket);
      const childKey = key + keyPart(raw);
      childCounts.set(childKey, { path: [...path, raw], count: bucket.count });
      bucketIndex.set(childKey, bucket);
    }
    const listKey = b.kind === 'uniqueValues' ? 'uniqueValueBuckets' : b.kind === 'numberHistogram' ? 'numberHistogramBuckets' : 'timeHistogramBuckets';
    for (const [key, { path, buckets, total: groups, members }] of byParent) {
      const shown = buckets.reduce((s, x) => s + x.count, 0);
      const result: Record<string, unknown> = {
        [listKey]: buckets.map((x) => (b.kind === 'uniqueValues' ? x : { start: x.value, count: x.count, aggregates: x.aggregates })),
      };
      if (b.kind === 'uniqueValues') Object.assign(result, { total: groups, otherCount: members - shown });
      attach(path, key, b.name, result);
    }
    // Parents without any matching record still get an empty bucket list.
    for (const [key, { path }] of parentCounts) if (!byParent.has(key)) attach(path, key, b.name, { [listKey]: [], ...(b.kind === 'uniqueValues' ? { total: 0, otherCount: 0 } : {}) });

    // Children: their results attach to this node's buckets.
    for (const child of b.buckets)
      await runBucket(
        child,
        [...ancestors, { node: b, expr: expr! }],
        (_path, key, name, result) => {
          const x = bucketIndex.get(key);
          if (x) x.aggregates[name] = result;
        },
        childCounts,
      );
  }

  for (const b of root.buckets) await runBucket(b, [], (_path, _key, name, result) => (out[name] = result), new Map([[pathKey([]), { path: [], count: total }]]));
  return { object: obj.name, count: total, aggregates: out };
}

/**
 * A bucket's path of stored values as a map key: built per row, so cheaper than JSON.stringify
 * (which took most of the tree's assembly time); typed and length-prefixed, so 1 and '1', or values
 * holding the separator, never collide.
 */
function keyPart(v: unknown): string {
  if (v === null || v === undefined) return '-;';
  const s = String(v);
  return `${typeof v === 'string' ? 's' : 'n'}${s.length}:${s};`;
}

function pathKey(path: readonly unknown[]): string {
  let k = '';
  for (const v of path) k += keyPart(v);
  return k;
}
