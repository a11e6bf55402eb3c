import type { ToolDef } from '../src/mcp/tool.js';
import aggregate from './aggregate.js';
import batchWrite from './batch-write.js';
import bulkUpdate from './bulk-update.js';
import createField from './create-field.js';
import createNote from './create-note.js';
import createObject from './create-object.js';
import createRecord from './create-record.js';
import createTask from './create-task.js';
import deleteRecord from './delete-record.js';
import describeSchema from './describe-schema.js';
import exportRecords from './export.js';
import findDuplicates from './find-duplicates.js';
import fullTextSearch from './full-text-search.js';
import getActivity from './get-activity.js';
import getRecord from './get-record.js';
import getThread from './get-thread.js';
import importRecords from './import.js';
import link from './link.js';
import listChanges from './list-changes.js';
import listNotes from './list-notes.js';
import listTasks from './list-tasks.js';
import listThreads from './list-threads.js';
import mergeDuplicates from './merge-duplicates.js';
import movePipelineStep from './move-pipeline-step.js';
import search from './search.js';
import unmerge from './unmerge.js';
import updateRecord from './update-record.js';
import updateTask from './update-task.js';
import whoami from './whoami.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyTool = ToolDef<any, any>;

/**
 * Every MCP tool, in the order clients list them. Explicit on purpose: the server, the read-only
 * mode, the tests and the table in docs/mcp.md all read this list.
 *
 * Most useful first: some clients pass only the first 40 tools to the model (Cursor), and models
 * weigh early tools more. Finding and reading, then aggregating, then writing records, then the
 * day-to-day (tasks, notes, timeline, inbox, pipelines), then the admin's data tools last.
 */
export const TOOLS: readonly AnyTool[] = [
  describeSchema,
  search,
  fullTextSearch,
  getRecord,
  aggregate,
  createRecord,
  updateRecord,
  deleteRecord,
  batchWrite,
  link,
  listTasks,
  createTask,
  updateTask,
  listNotes,
  createNote,
  getActivity,
  listChanges,
  listThreads,
  getThread,
  movePipelineStep,
  whoami,
  findDuplicates,
  mergeDuplicates,
  unmerge,
  bulkUpdate,
  exportRecords,
  importRecords,
  createObject,
  createField,
];
