import { z } from 'zod';
import { TASK_PRIORITIES, TASK_STATUSES } from '../services/system-objects.js';
import { fieldMap } from './arguments.js';
import { agentRecordOut } from './relations.js';

/** Arguments and results shared by the task tools (tools/*-task*.ts). */

export const taskIdArg = z.string().min(1).describe('Task id');

const statusArg = z.enum(TASK_STATUSES as [string, ...string[]]);
const priorityArg = z.enum(TASK_PRIORITIES as [string, ...string[]]);
const linkId = (what: string) => z.string().min(1).nullable().optional().describe(`The ${what} it is about`);

/** The task's own fields; `title` is required on create only (see crm_create_task). */
export const taskFields = {
  title: z.string().min(1).max(1000).describe('What to do'),
  description: z.string().max(100_000).nullable().optional().describe('Details'),
  due_at: z.string().nullable().optional().describe('ISO date-time (a date: midnight UTC)'),
  priority: priorityArg.optional().describe('Default medium'),
  status: statusArg.optional().describe('completed completes it'),
  assignee: z.string().min(1).nullable().optional().describe("User id or 'me' (default on create)"),
  time_estimate: z.number().int().min(0).nullable().optional().describe('Effort, seconds'),
  contact: linkId('contact'),
  company: linkId('company'),
  opportunity: linkId('deal'),
  values: fieldMap.optional().describe('Custom task fields by name'),
};

/** Named arguments and `values` become one field map for the tasks service. */
export function taskInput(a: Record<string, unknown>): Record<string, unknown> {
  const { values, id: _id, dry_run: _dry, ...named } = a as { values?: Record<string, unknown>; id?: unknown; dry_run?: unknown } & Record<string, unknown>;
  const out: Record<string, unknown> = { ...(values ?? {}) };
  for (const [k, v] of Object.entries(named)) if (v !== undefined) out[k] = v;
  return out;
}

export const taskOut = (description = 'The task: id, title, status, priority, due_at, assignee, links (contact, company, opportunity) and its other fields') => agentRecordOut(description);
