import { type Kysely, sql } from 'kysely';
import { type ChangeEntry, listChanges, ownedBy, ownedObjects } from './changes.js';
import { now } from './clock.js';
import type { Ctx } from './context.js';
import { displayNameOfRow, namesFor } from './display-names.js';
import { CrmError } from './errors.js';
import { decodeValue } from './field-types.js';
import { pipelineStats } from './pipelines.js';
import type { RecordData } from './records.js';
import { getSchema } from './schema.js';
import { listTasks } from './tasks.js';

/**
 * The figures behind the MCP prompts (pipeline review, weekly digest): computed here, in SQL,
 * so a prompt only has to lay them out.
 */

const DAY = 86_400_000;
/** A deal that has sat in the same open step this long is stalled. */
export const STALLED_DAYS = 30;

export async function pipelineReview(ctx: Ctx, pipeline?: string, stalledLimit = 10) {
  const schema = await getSchema(ctx);
  const withPipeline = [...schema.objects.values()].filter((o) => o.pipeline);
  const obj = pipeline ? withPipeline.find((o) => o.name === pipeline || o.pipeline!.id === pipeline) : withPipeline[0];
  if (!obj) {
    const valid = withPipeline.map((o) => `${o.name} (${o.pipeline!.name})`);
    throw new CrmError('RECORD_NOT_FOUND', pipeline ? `No pipeline '${pipeline}'. Pipelines (by object): ${valid.join(', ') || 'none'}` : 'This workspace has no pipeline');
  }
  const pl = obj.pipeline!;
  const stats = await pipelineStats(ctx, pl.id);
  const openSteps = pl.steps.filter((s) => !s.won && !s.lost);
  const cutoff = new Date(now() - STALLED_DAYS * DAY).toISOString();
  const k = ctx.db.kysely as unknown as Kysely<any>;
  const cols = obj.displayFields.map((n) => obj.byName.get(n)!);
  const amount = obj.byName.get('amount');
  const owner = obj.byName.get('owner');
  // The record's current stay (left_at null) on an open step, entered before the cutoff.
  const stalledQuery = k
    .selectFrom('stage_history as h')
    .innerJoin(`${obj.table} as r`, 'r.id', 'h.record_id')
    .where('h.pipeline_id', '=', pl.id)
    .where('h.left_at', 'is', null)
    .where('h.entered_at', '<', cutoff)
    .where(
      'h.step_key',
      'in',
      openSteps.map((s) => s.key),
    )
    .where(
      `r.${obj.byName.get(pl.field)!.column}`,
      'in',
      openSteps.map((s) => s.key),
    );
  const stalledTotal = openSteps.length ? Number((await stalledQuery.select(sql<number>`COUNT(*)`.as('n')).executeTakeFirst())?.n ?? 0) : 0;
  const rows = openSteps.length
    ? ((await stalledQuery
        .select(['r.id', 'h.step_key', 'h.entered_at', ...cols.map((c) => `r.${c.column}`), ...(amount ? [`r.${amount.column}`] : []), ...(owner ? [`r.${owner.column}`] : [])])
        .orderBy('h.entered_at', 'asc')
        .limit(stalledLimit)
        .execute()) as Record<string, unknown>[])
    : [];
  const owners = owner ? await namesFor(ctx, schema, 'users', [...new Set(rows.map((r) => r[owner.column]).filter((v): v is string => typeof v === 'string'))]) : new Map<string, string>();
  const stalled = rows.map((r) => {
    const rec = Object.fromEntries([...cols, ...(amount ? [amount] : [])].map((f) => [f.name, decodeValue(f, r[f.column])])) as RecordData;
    const ownerId = owner ? (r[owner.column] as string | null) : null;
    return {
      id: r.id as string,
      name: displayNameOfRow(obj, r),
      step: r.step_key as string,
      days_in_step: Math.floor((now() - Date.parse(r.entered_at as string)) / DAY),
      ...(amount ? { amount: rec[amount.name] ?? null } : {}),
      ...(owner ? { owner: ownerId ? { id: ownerId, name: owners.get(ownerId) ?? null } : null } : {}),
    };
  });
  const open = stats.steps.filter((s) => openSteps.some((o) => o.key === s.key));
  return {
    pipeline: stats.pipeline,
    open_steps: open.map((s) => ({
      key: s.key,
      name: s.name,
      count: s.current_count,
      ...(s.current_amount !== undefined ? { amount: s.current_amount } : {}),
      avg_days_in_step: s.avg_time_in_stage_seconds === null ? null : Math.round(s.avg_time_in_stage_seconds / 86_400),
    })),
    open_total: { count: open.reduce((a, s) => a + s.current_count, 0), ...(amount ? { amount: open.reduce((a, s) => a + Number(s.current_amount ?? 0), 0) } : {}) },
    closed_steps: stats.steps
      .filter((s) => !open.includes(s))
      .map((s) => ({ key: s.key, name: s.name, count: s.current_count, ...(s.current_amount !== undefined ? { amount: s.current_amount } : {}) })),
    win_rate: stats.win_rate,
    stalled: { days: STALLED_DAYS, total: stalledTotal, deals: stalled },
  };
}

export async function weeklyDigest(ctx: Ctx, limit = 20) {
  const schema = await getSchema(ctx);
  const since = new Date(now() - 7 * DAY).toISOString();
  const brief = (t: RecordData) => ({ id: t.id, title: t.title, due_at: t.due_at ?? null, priority: t.priority ?? null, status: t.status });
  const open = await listTasks(ctx, { mode: 'my_open', limit });
  const overdue = await listTasks(ctx, { mode: 'overdue', assignee: 'me', limit });

  // Deals: the first object with a pipeline and an owner field (opportunities in a new workspace).
  const deals = ownedObjects(schema).find((o) => o.pipeline);
  let dealChanges: ChangeEntry[] = [];
  let dealsMore = false;
  if (deals) {
    const r = await listChanges(ctx, { object: deals.name, owner: 'me', from: since, actions: ['created', 'updated', 'pipeline_moved', 'merged', 'deleted'], limit: 100 });
    dealChanges = r.data;
    dealsMore = r.has_more;
  }

  // Notes of the week on records I own (shared ones, and my own private ones).
  const owned = ownedObjects(schema);
  const notes = owned.length
    ? ((await ctx.db.kysely
        .selectFrom('notes')
        .leftJoin('users', 'users.id', 'notes.author_id')
        .select(['notes.id', 'notes.object', 'notes.record_id', 'notes.body', 'notes.created_at', 'notes.author_id', 'users.name as author_name'])
        .where('notes.workspace_id', '=', ctx.actor.workspaceId)
        .where('notes.created_at', '>=', since)
        .where((eb) => eb.or([eb('notes.visibility', '=', 'workspace'), eb('notes.author_id', '=', ctx.actor.userId)]))
        .where((eb) => ownedBy(ctx, eb, owned, ctx.actor.userId, 'notes.object', 'notes.record_id'))
        .orderBy('notes.created_at', 'desc')
        .limit(limit)
        .execute()) as { id: string; object: string; record_id: string; body: string; created_at: string; author_id: string; author_name: string | null }[])
    : [];
  const noteNames = new Map<string, Map<string, string>>();
  for (const o of new Set(notes.map((n) => n.object)))
    noteNames.set(
      o,
      await namesFor(
        ctx,
        schema,
        o,
        notes.filter((n) => n.object === o).map((n) => n.record_id),
      ),
    );

  return {
    since,
    open_tasks: { total: open.total, data: open.data.map(brief) },
    overdue_tasks: { total: overdue.total, data: overdue.data.map(brief) },
    deal_changes: { object: deals?.name ?? null, more: dealsMore, data: dealChanges },
    notes: notes.map((n) => ({
      id: n.id,
      object: n.object,
      record_id: n.record_id,
      record_name: noteNames.get(n.object)?.get(n.record_id) ?? null,
      author: n.author_name ?? n.author_id,
      at: n.created_at,
      body: n.body.length > 500 ? `${n.body.slice(0, 500)}…` : n.body,
    })),
  };
}
