import { aggregateGroups } from './aggregate.js';
import { heavy } from './budget.js';
import { now, nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { CrmError, validationError } from './errors.js';
import { parseDate, parseDateTime } from './field-types.js';
import type { Condition, FilterGroup } from './filters.js';
import { createRecord, deleteRecord, getRecord, type ListResult, listRecords, type RecordData, updateRecord } from './records.js';
import { localDate, localMidnight, looksRelative } from './relative-dates.js';
import { OPEN_TASK_STATUSES, TASK_PRIORITIES, TASK_STATUSES } from './system-objects.js';
import { checkTimeZone } from './time-buckets.js';
import { workspaceTimeZone } from './workspace.js';

/**
 * Tasks are records of the system object 'tasks' (so search, aggregation and export see them like
 * any object); this module adds what a task list needs: modes, linked-record filters, completion,
 * statistics, and entries in the linked records' timelines.
 */

export const TASK_MODES = ['my_open', 'overdue', 'today', 'upcoming', 'completed', 'all'] as const;
export type TaskMode = (typeof TASK_MODES)[number];
export const LINK_FIELDS = { contacts: 'contact', companies: 'company', opportunities: 'opportunity' } as const;
export type LinkObject = keyof typeof LINK_FIELDS;

export interface TaskQuery {
  mode?: TaskMode | undefined;
  /** A user id, or 'me'. */
  assignee?: string | undefined;
  status?: string[] | undefined;
  priority?: string[] | undefined;
  dueFrom?: string | undefined;
  dueTo?: string | undefined;
  /** Tasks linked to this record. */
  object?: string | undefined;
  recordId?: string | undefined;
  q?: string | undefined;
  /** IANA time zone that decides what "today" means (default: the workspace's). */
  timeZone?: string | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
  /** RELATION values as {id, name} (see ListOptions.relationNames). */
  relationNames?: boolean | undefined;
}

/** The UTC instants at which the local day containing `at` starts and ends in zone tz (23 or 25 hours across a DST change). */
export function localDay(tz: string, at: number): { start: string; end: string } {
  const day = localDate(tz, at);
  const next = new Date(Date.parse(`${day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
  return { start: localMidnight(tz, day), end: localMidnight(tz, next) };
}

function linkField(object: string): string {
  const f = (LINK_FIELDS as Record<string, string>)[object];
  if (!f) throw validationError(`Tasks link to ${Object.keys(LINK_FIELDS).join(', ')}; got '${object}'`);
  return f;
}

export async function listTasks(ctx: Ctx, q: TaskQuery = {}): Promise<ListResult> {
  const mode = q.mode ?? 'all';
  if (!(TASK_MODES as readonly string[]).includes(mode)) throw validationError(`mode must be one of ${TASK_MODES.join(', ')}, got '${mode}'`);
  const tz = q.timeZone ?? (await workspaceTimeZone(ctx));
  checkTimeZone(tz);
  const conds: (Condition | FilterGroup)[] = [];
  const open: Condition = { field: 'status', operator: 'in', value: OPEN_TASK_STATUSES };
  const nowAt = nowIso();
  const today = localDay(tz, now());
  let sortBy = 'created_at';
  let sortDir: 'asc' | 'desc' = 'desc';
  switch (mode) {
    case 'my_open':
      conds.push({ field: 'assignee', operator: 'eq', value: ctx.actor.userId }, open);
      sortBy = 'due_at';
      sortDir = 'asc';
      break;
    case 'overdue':
      conds.push(open, { field: 'due_at', operator: 'lt', value: nowAt });
      sortBy = 'due_at';
      sortDir = 'asc';
      break;
    case 'today':
      conds.push(open, { field: 'due_at', operator: 'gte', value: today.start }, { field: 'due_at', operator: 'lt', value: today.end });
      sortBy = 'due_at';
      sortDir = 'asc';
      break;
    case 'upcoming':
      conds.push(open, { field: 'due_at', operator: 'gte', value: today.end });
      sortBy = 'due_at';
      sortDir = 'asc';
      break;
    case 'completed':
      conds.push({ field: 'status', operator: 'eq', value: 'completed' });
      sortBy = 'completed_at';
      break;
    case 'all':
      break;
  }
  if (q.assignee) conds.push({ field: 'assignee', operator: 'eq', value: q.assignee === 'me' ? ctx.actor.userId : q.assignee });
  if (q.status?.length) conds.push({ field: 'status', operator: 'in', value: q.status });
  if (q.priority?.length) conds.push({ field: 'priority', operator: 'in', value: q.priority });
  // A bare date means the whole of that day, in the query's time zone.
  // Parsed strictly here (2024-13-01 and 2024-02-30 refused), so the message names the parameter.
  const isDate = (v: string) => /^\d{4}-\d{2}-\d{2}$/.test(v.trim());
  const dayOf = (name: string, v: string) => localDay(tz, Date.parse(`${parseDate(name, v)}T12:00:00Z`));
  // A relative date ('today') goes to the filter as it is, which reads it as a period of local days.
  const instant = (name: string, v: string) => {
    if (looksRelative(v)) return v;
    try {
      return parseDateTime(name, v);
    } catch (e) {
      if (e instanceof CrmError) throw new CrmError(e.code, `${e.message}, or a relative date: today, this_week, last_month, last_7_days, ...`, e.details);
      throw e;
    }
  };
  if (q.dueFrom) conds.push({ field: 'due_at', operator: 'gte', value: isDate(q.dueFrom) ? dayOf('due_from', q.dueFrom).start : instant('due_from', q.dueFrom) });
  if (q.dueTo) {
    const end = isDate(q.dueTo) ? dayOf('due_to', q.dueTo).end : undefined;
    // Up to the end of 9999-12-31 is up to the end of time: the day after has no four-digit year.
    if (end === undefined) conds.push({ field: 'due_at', operator: 'lte', value: instant('due_to', q.dueTo) });
    else if (/^\d{4}-/.test(end)) conds.push({ field: 'due_at', operator: 'lt', value: end });
  }
  if (q.object || q.recordId) {
    if (!q.object || !q.recordId) throw validationError('Filter by linked record with both object and record_id');
    conds.push({ field: linkField(q.object), operator: 'eq', value: q.recordId });
  }
  if (q.q) conds.push({ field: 'title', operator: 'contains', value: q.q });
  return listRecords(ctx, 'tasks', {
    filter: conds.length ? { operator: 'and', conditions: conds } : undefined,
    sortBy,
    sortDir,
    limit: q.limit,
    cursor: q.cursor,
    relationNames: q.relationNames,
    timeZone: tz,
  });
}

/** Body of POST /tasks: task fields, plus `links` [{object, id}] as an alternative to contact/company/opportunity. */
function taskValues(ctx: Ctx, input: unknown, creating: boolean): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw validationError('A task is a JSON object of fields');
  const { links, ...values } = input as Record<string, unknown> & { links?: unknown };
  if (links !== undefined) {
    if (!Array.isArray(links)) throw validationError('links must be [{"object": "contacts", "id": "..."}]');
    for (const l of links as { object?: unknown; id?: unknown }[]) {
      if (typeof l?.object !== 'string' || typeof l.id !== 'string') throw validationError('Each link is {"object": "contacts"|"companies"|"opportunities", "id": "..."}');
      const f = linkField(l.object);
      if (values[f] !== undefined && values[f] !== l.id) throw validationError(`A task links to one ${l.object.replace(/s$/, '')}; '${f}' is given twice`);
      values[f] = l.id;
    }
  }
  if (values.assignee === 'me') values.assignee = ctx.actor.userId;
  if (creating && values.assignee === undefined) values.assignee = ctx.actor.userId;
  if ('completed_at' in values) throw validationError('completed_at is set by completing the task (PUT /tasks/{id}/complete)');
  if (values.status === 'completed') values.completed_at = nowIso();
  else if (typeof values.status === 'string' && !creating) values.completed_at = null;
  return values;
}

export async function createTask(ctx: Ctx, input: unknown): Promise<RecordData> {
  // The linked records' timelines get 'related_created' in the same transaction (records service).
  return createRecord(ctx, 'tasks', taskValues(ctx, input, true));
}

export async function updateTask(ctx: Ctx, id: string, input: unknown): Promise<RecordData> {
  const before = (await getRecord(ctx, 'tasks', id, { enrich: false })) as RecordData;
  const values = taskValues(ctx, input, false);
  if (values.status === 'completed' && before.status === 'completed') delete values.completed_at;
  return updateRecord(ctx, 'tasks', id, values);
}

/** Complete (or, with completed: false, reopen) a task. */
export async function completeTask(ctx: Ctx, id: string, completed = true): Promise<RecordData> {
  const before = (await getRecord(ctx, 'tasks', id, { enrich: false })) as RecordData;
  if (completed && before.status === 'completed') return before;
  if (!completed && before.status !== 'completed') return before;
  // Linked records see 'related_status_changed' (open -> completed) in their timelines.
  return updateRecord(ctx, 'tasks', id, completed ? { status: 'completed', completed_at: nowIso() } : { status: 'open', completed_at: null });
}

export async function deleteTask(ctx: Ctx, id: string) {
  return deleteRecord(ctx, 'tasks', id);
}

export async function getTask(ctx: Ctx, id: string) {
  return getRecord(ctx, 'tasks', id);
}

/**
 * Counts by status and priority, overdue, and per assignee (with names). One place in the heavy
 * lane for the whole summary (its four aggregates run nested in it, one after another, on the one
 * read thread the slot stands for); four separate places let one request take a user's whole share.
 */
export function taskStats(ctx: Ctx, opts: { assignee?: string | undefined } = {}) {
  return heavy(ctx, () => runTaskStats(ctx, opts));
}

async function runTaskStats(ctx: Ctx, opts: { assignee?: string | undefined }) {
  const filter = opts.assignee ? { assignee: opts.assignee === 'me' ? ctx.actor.userId : opts.assignee } : undefined;
  const byStatus = await aggregateGroups(ctx, 'tasks', { filter, groupBy: ['status'], limit: TASK_STATUSES.length + 1 });
  const byPriority = await aggregateGroups(ctx, 'tasks', { filter, groupBy: ['priority'], limit: TASK_PRIORITIES.length + 1 });
  const byAssignee = await aggregateGroups(ctx, 'tasks', {
    filter: {
      operator: 'and',
      conditions: [...(filter ? [{ field: 'assignee', operator: 'eq' as const, value: filter.assignee }] : []), { field: 'status', operator: 'in' as const, value: OPEN_TASK_STATUSES }],
    },
    groupBy: ['assignee'],
    limit: 1000,
  });
  const overdue = await aggregateGroups(ctx, 'tasks', {
    filter: {
      operator: 'and',
      conditions: [
        ...(filter ? [{ field: 'assignee', operator: 'eq' as const, value: filter.assignee }] : []),
        { field: 'status', operator: 'in' as const, value: OPEN_TASK_STATUSES },
        { field: 'due_at', operator: 'lt' as const, value: nowIso() },
      ],
    },
  });
  const counts = (r: typeof byStatus, key: string, all: string[]) => {
    const out: Record<string, number> = Object.fromEntries(all.map((k) => [k, 0]));
    for (const g of r.groups ?? []) out[String(g.values[key] ?? 'none')] = g.count;
    return out;
  };
  return {
    total: byStatus.count,
    open: OPEN_TASK_STATUSES.reduce((s, k) => s + (counts(byStatus, 'status', TASK_STATUSES)[k] ?? 0), 0),
    overdue: overdue.count,
    by_status: counts(byStatus, 'status', TASK_STATUSES),
    by_priority: counts(byPriority, 'priority', TASK_PRIORITIES),
    open_by_assignee: (byAssignee.groups ?? []).map((g) => ({ assignee: g.values.assignee ?? null, name: g.labels?.assignee ?? null, open: g.count })),
  };
}

export function assertTaskId(id: unknown): string {
  if (typeof id !== 'string' || !id) throw new CrmError('VALIDATION_ERROR', 'Task id is required');
  return id;
}
