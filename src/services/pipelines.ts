import { type Kysely, sql } from 'kysely';
import { z } from 'zod';
import { aggregateGroups } from './aggregate.js';
import { runRead } from './aggregate-sql.js';
import { heavy } from './budget.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { CrmError, duplicateOn, validationError } from './errors.js';
import { encodeValue } from './field-types.js';
import { requireAdmin } from './permissions.js';
import { getRecord, type RecordData, updateRecord } from './records.js';
import { bumpVersion, getSchema, insertPipeline, type PipelineDef, parseWith, resolveObject } from './schema.js';

/** A pipeline as listPipelines and getPipeline answer it: described once for REST's OpenAPI document and the MCP tool's output schema. */
export const pipelineOutput = z.object({
  id: z.string(),
  object: z.string(),
  name: z.string(),
  field: z.string(),
  steps: z.array(
    z.object({
      id: z.string(),
      key: z.string(),
      name: z.string(),
      position: z.number().int(),
      probability: z.number().nullable(),
      won: z.boolean(),
      lost: z.boolean(),
      defaults: z.record(z.string(), z.unknown()).optional(),
    }),
  ),
});

/**
 * Pipelines: an ordered set of steps over one SELECT field of an object (opportunities.status by
 * default). The records service keeps them honest on every write: new records start on the first
 * step with its defaults, moves are validated, logged in the activity feed and in stage_history,
 * from which time-in-stage and conversion are computed.
 */

function describe(p: PipelineDef) {
  return {
    id: p.id,
    object: p.object,
    name: p.name,
    field: p.field,
    steps: p.steps.map((s) => ({
      id: s.id,
      key: s.key,
      name: s.name,
      position: s.position,
      probability: s.probability,
      won: s.won,
      lost: s.lost,
      ...(Object.keys(s.defaults).length ? { defaults: s.defaults } : {}),
    })),
  };
}

export async function listPipelines(ctx: Ctx, object?: string) {
  const schema = await getSchema(ctx);
  if (object) await resolveObject(ctx, object);
  return [...schema.objects.values()].filter((o) => o.pipeline && (!object || o.name === object)).map((o) => describe(o.pipeline!));
}

async function pipelineById(ctx: Ctx, id: string): Promise<PipelineDef> {
  const schema = await getSchema(ctx);
  for (const o of schema.objects.values()) if (o.pipeline && (o.pipeline.id === id || o.name === id)) return o.pipeline;
  const ids = [...schema.objects.values()].filter((o) => o.pipeline).map((o) => `${o.pipeline!.id} (${o.name})`);
  throw new CrmError('RECORD_NOT_FOUND', `No pipeline '${id}'. Pipelines: ${ids.join(', ') || 'none'}`);
}

export async function getPipeline(ctx: Ctx, id: string) {
  return describe(await pipelineById(ctx, id));
}

const stepSchema = z
  .object({
    key: z.string().min(1),
    name: z.string().min(1).max(200).optional(),
    probability: z.number().min(0).max(100).optional(),
    won: z.boolean().optional(),
    lost: z.boolean().optional(),
    defaults: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export const pipelineSchema = z
  .object({
    object: z.string(),
    name: z.string().min(1).max(200),
    field: z.string(),
    steps: z.array(stepSchema).min(2).max(50),
  })
  .strict();

/** Admins give an object a pipeline over one of its SELECT fields; existing records enter their current step now. */
export async function createPipeline(ctx: Ctx, input: unknown) {
  requireAdmin(ctx, 'create pipelines');
  const spec = parseWith(pipelineSchema, input, 'pipeline');
  const obj = await resolveObject(ctx, spec.object);
  if (obj.pipeline) throw new CrmError('DUPLICATE_RECORD', `${obj.name} already has a pipeline ('${obj.pipeline.name}'); an object has one pipeline`);
  const field = obj.byName.get(spec.field);
  if (field?.type !== 'SELECT' || field.readOnly) {
    const selects = obj.fields.filter((f) => f.type === 'SELECT').map((f) => f.name);
    throw validationError(`A pipeline runs over a SELECT field of ${obj.name}: ${selects.join(', ') || 'none (add one first)'}`);
  }
  const options = (field.options ?? []).map((o) => o.value);
  const keys = spec.steps.map((s) => s.key);
  if (new Set(keys).size !== keys.length) throw validationError('Step keys must be unique');
  const bad = keys.find((k) => !options.includes(k));
  if (bad) throw validationError(`Step '${bad}' is not an option of '${field.name}'. Options: ${options.join(', ')}`);
  for (const st of spec.steps) {
    if (st.won && st.lost) throw validationError(`Step '${st.key}' cannot be both won and lost`);
    for (const [name, value] of Object.entries(st.defaults ?? {})) {
      const f = obj.byName.get(name);
      if (!f || f.readOnly || name === field.name) throw validationError(`Step '${st.key}': default for unknown or read-only field '${name}'`);
      encodeValue(f, value);
    }
  }
  const id = await ctx.db.kysely
    .transaction()
    .execute(async (trx) => {
      const pid = await insertPipeline(trx, ctx.actor.workspaceId, {
        object: obj.name,
        name: spec.name,
        field: field.name,
        steps: spec.steps.map((s) => ({ ...s, name: s.name ?? field.options!.find((o) => o.value === s.key)!.label })),
      });
      const at = nowIso();
      await trx
        .insertInto('stage_history')
        .columns(['workspace_id', 'pipeline_id', 'record_id', 'step_key', 'entered_at'])
        .expression(
          (trx as unknown as Kysely<any>)
            .selectFrom(obj.table)
            .select([sql.lit(ctx.actor.workspaceId).as('w'), sql.lit(pid).as('p'), 'id', field.column, sql.lit(at).as('t')])
            .where(field.column, 'in', keys),
        )
        .execute();
      await bumpVersion(trx, ctx.actor.workspaceId);
      return pid;
    })
    .catch(duplicateOn(ctx.db.adapter, 'pipelines', `${obj.name} already has a pipeline; an object has one pipeline`));
  return getPipeline(ctx, id);
}

/** Move a record to a step (by key, or by step id); validated, logged, and timed by the records service. */
export async function moveRecord(ctx: Ctx, objectName: string, id: string, step: string): Promise<{ record: RecordData; from: string | null; to: string; moved: boolean }> {
  const obj = await resolveObject(ctx, objectName);
  const pl = obj.pipeline;
  if (!pl) {
    const withPipelines = (await listPipelines(ctx)).map((p) => p.object);
    throw validationError(`${obj.name} has no pipeline. Objects with pipelines: ${withPipelines.join(', ') || 'none'}`);
  }
  if (typeof step !== 'string' || !step) throw validationError(`Send {"step": "<key>"}; steps of ${pl.name}: ${pl.steps.map((s) => s.key).join(', ')}`);
  const target = pl.steps.find((s) => s.key === step || s.id === step);
  if (!target) throw validationError(`Unknown step '${step}'. Steps of ${pl.name}: ${pl.steps.map((s) => s.key).join(', ')}`, { allowed: pl.steps.map((s) => s.key) });
  const before = (await getRecord(ctx, obj.name, id, { enrich: false })) as RecordData;
  const from = (before[pl.field] as string | null) ?? null;
  if (from === target.key) return { record: before, from, to: target.key, moved: false };
  const record = await updateRecord(ctx, obj.name, id, { [pl.field]: target.key });
  return { record, from, to: target.key, moved: true };
}

/**
 * Per step: records there now (and their amount when the object has one), how many ever entered
 * it, the average time spent in it (closed stays), conversion to a later open or won step, and the
 * pipeline's win rate. Computed in SQL over stage_history.
 */
export async function pipelineStats(ctx: Ctx, id: string) {
  // Its own reads scan stage_history: heavy, in the lane with its time limit, like the aggregate it calls.
  return heavy(ctx, () => statsOf(ctx, id));
}

async function statsOf(ctx: Ctx, id: string) {
  const pl = await pipelineById(ctx, id);
  const obj = await resolveObject(ctx, pl.object);
  const amount = obj.byName.get('amount')?.type === 'CURRENCY' ? 'amount' : undefined;
  const current = await aggregateGroups(ctx, obj.name, {
    groupBy: [pl.field],
    metrics: amount ? [{ field: amount, function: 'sum' }] : [],
    limit: pl.steps.length + 10,
  });
  const db = ctx.db.kysely as unknown as Kysely<any>;
  const seconds = ctx.db.adapter.secondsBetween;
  const entered = await runRead<{ step_key: string; n: number }>(
    ctx,
    db
      .selectFrom('stage_history')
      .select(['step_key', sql<number>`COUNT(DISTINCT record_id)`.as('n')])
      .where('pipeline_id', '=', pl.id)
      .groupBy('step_key')
      .compile(),
  );
  const durations = await runRead<{ step_key: string; avg_s: number | null; n: number }>(
    ctx,
    db
      .selectFrom('stage_history')
      .select(['step_key', sql<number>`AVG(${seconds(sql.ref('entered_at'), sql.ref('left_at'))})`.as('avg_s'), sql<number>`COUNT(*)`.as('n')])
      .where('pipeline_id', '=', pl.id)
      .where('left_at', 'is not', null)
      .groupBy('step_key')
      .compile(),
  );
  const conversion = new Map<string, number>();
  for (let k = 0; k < pl.steps.length; k++) {
    const st = pl.steps[k]!;
    if (st.won || st.lost) continue;
    const later = pl.steps
      .slice(k + 1)
      .filter((x) => !x.lost)
      .map((x) => x.key);
    if (!later.length) continue;
    const [row] = await runRead<{ n: number }>(
      ctx,
      db
        .selectFrom('stage_history as h')
        .select(sql<number>`COUNT(DISTINCT h.record_id)`.as('n'))
        .where('h.pipeline_id', '=', pl.id)
        .where('h.step_key', '=', st.key)
        .where((eb: any) =>
          eb.exists(
            eb
              .selectFrom('stage_history as h2')
              .select(sql.lit(1).as('one'))
              .whereRef('h2.pipeline_id', '=', 'h.pipeline_id')
              .whereRef('h2.record_id', '=', 'h.record_id')
              .where('h2.step_key', 'in', later),
          ),
        )
        .compile(),
    );
    conversion.set(st.key, Number(row?.n ?? 0));
  }
  const enteredOf = new Map(entered.map((r) => [r.step_key, Number(r.n)]));
  const durOf = new Map(durations.map((r) => [r.step_key, r]));
  const nowOf = new Map((current.groups ?? []).map((g) => [g.values[pl.field] as string, g]));
  const won = pl.steps.filter((s) => s.won).reduce((a, s) => a + (enteredOf.get(s.key) ?? 0), 0);
  const lost = pl.steps.filter((s) => s.lost).reduce((a, s) => a + (enteredOf.get(s.key) ?? 0), 0);
  return {
    pipeline: { id: pl.id, name: pl.name, object: pl.object, field: pl.field },
    steps: pl.steps.map((s) => {
      const g = nowOf.get(s.key);
      const e = enteredOf.get(s.key) ?? 0;
      const d = durOf.get(s.key);
      const conv = conversion.get(s.key);
      return {
        key: s.key,
        name: s.name,
        current_count: g?.count ?? 0,
        ...(amount ? { current_amount: (g?.aggregates[amount]?.sum as number | string | undefined) ?? 0 } : {}),
        entered: e,
        avg_time_in_stage_seconds: d?.avg_s === null || d?.avg_s === undefined ? null : Math.round(d.avg_s),
        completed_stays: d ? Number(d.n) : 0,
        ...(conv !== undefined ? { converted: conv, conversion_rate: e ? conv / e : null } : {}),
      };
    }),
    win_rate: won + lost ? won / (won + lost) : null,
  };
}
