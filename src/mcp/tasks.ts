import { z } from 'zod';
import { TASK_PRIORITIES, TASK_STATUSES } from '../services/system-objects.js';
import { fieldValue } from './arguments.js';
import { agentRecordOut } from './relations.js';

/** Arguments and results shared by the task tools (tools/*-task*.ts). */

export const taskIdArg = z.string().min(1).describe('Task id, as returned by crm_list_tasks or crm_create_task');

const statusArg = z.enum(TASK_STATUSES as [string, ...string[]]);
const priorityArg = z.enum(TASK_PRIORITIES as [string, ...string[]]);
const linkId = (object: string) => z.string().min(1).nullable().optional().describe(`Id of the ${object} record the task is about; null removes the link`);

/** The task's own fields; `title` is required on create only (see crm_create_task). */
export const taskFields = {
  title: z.string().min(1).max(1000).describe('What to do'),
  description: z.string().max(100_000).nullable().optional().describe('Details; null empties it'),
  due_at: z
    .string()
    .nullable()
    .optional()
    .describe('Due date-time, ISO 8601 (2026-05-01T15:00:00Z; a bare date means its midnight UTC); null removes it'),
  priority: priorityArg.optional().describe(`Priority: ${TASK_PRIORITIES.join(', ')} (default medium)`),
  status: statusArg.optional().describe(`Status: ${TASK_STATUSES.join(', ')} (default open); completed sets completed_at, another status reopens`),
  assignee: z.string().min(1).nullable().optional().describe("User id, or 'me' (default on create: me). crm_whoami gives your id"),
  time_estimate: z.number().int().min(0).nullable().optional().describe('Estimated effort in seconds'),
  contact: linkId('contacts'),
  company: linkId('companies'),
  opportunity: linkId('opportunities'),
  values: z
    .record(z.string(), fieldValue)
    .optional()
    .describe('Other task fields by name (custom fields an admin added), e.g. {"region": "EMEA"}'),
};

/** Named arguments and `values` become one field map for the tasks service. */
export function taskInput(a: Record<string, unknown>): Record<string, unknown> {
  const { values, id: _id, dry_run: _dry, ...named } = a as { values?: Record<string, unknown>; id?: unknown; dry_run?: unknown } & Record<string, unknown>;
  const out: Record<string, unknown> = { ...(values ?? {}) };
  for (const [k, v] of Object.entries(named)) if (v !== undefined) out[k] = v;
  return out;
}

export const taskOut = (description = 'The task: id, title, status, priority, due_at, assignee, links (contact, company, opportunity) and its other fields') =>
  agentRecordOut(description);
