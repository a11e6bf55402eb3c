/**
 * npm run bench:agent: what an agent pays, in calls and in context, for the questions people ask a CRM.
 *
 * An SDK Client (the same one Claude Code and other agents use) talks to the server over the
 * in-memory transport, as an agent would: it reads each answer to choose its next call, like a
 * model, but deterministically. The workspace holds the demo data `npm start` seeds (200 companies,
 * 1,000 contacts, 400 opportunities, 150 tasks, 120 threads).
 *
 * Per task: the calls it took and the tokens of the answers (bytes / 4 of the text content, which is
 * what clients put in front of the model; structuredContent is counted beside it for information).
 * Targets (issue 12): each task in at most 3 calls, the median task under 4k tokens of results,
 * tools/list at most 10k tokens (40 KB). Writes .bench/agent-latest.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import pino from 'pino';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { createMcpServer } from '../src/mcp/server.js';
import { ensureDefaultWorkspace } from '../src/services/bootstrap.js';
import { setClock } from '../src/services/clock.js';
import { contextFor } from '../src/services/context.js';
import { updateRecord } from '../src/services/records.js';
import { listUsers } from '../src/services/users.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const log = pino({ level: 'silent' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-bench-agent-'));
const db = openDatabase({ file: path.join(dir, 'crm.db') });
await migrate(db);
const first = (await ensureDefaultWorkspace(db, log, { name: 'default', demo: true }))!;
const ws = first.workspace.id;
const admin = (await listUsers(contextFor(db, log, { workspaceId: ws, userId: '', role: 'admin', via: 'bench' }))).find((u) => u.role === 'admin')!;
const actor = { workspaceId: ws, userId: admin.id, role: 'admin' as const, via: 'mcp' };

// Something to ask about: a deal that changed last week (the clock set back for the write).
const DAY = 86_400_000;
const server = await createMcpServer({ db, log, actor, watchSchema: true });
const [a, b] = InMemoryTransport.createLinkedPair();
await server.connect(a);
const client = new Client({ name: 'bench-agent', version: '1.0.0' });
await client.connect(b);

const listed = (await client.listTools()).tools;
const listBytes = JSON.stringify(listed).length;

interface Step {
  tool: string;
  textBytes: number;
  structuredBytes: number;
}
let steps: Step[] = [];
async function call(name: string, args: Record<string, unknown>): Promise<any> {
  const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
  const text = r.content.map((c) => (c.type === 'text' ? c.text : JSON.stringify(c))).join('\n');
  steps.push({ tool: name, textBytes: Buffer.byteLength(text), structuredBytes: Buffer.byteLength(JSON.stringify(r.structuredContent ?? {})) });
  if (r.isError) throw new Error(`${name} failed: ${text}`);
  return r.structuredContent;
}

const nameOf = (v: unknown) => (v && typeof v === 'object' ? (v as { name?: string }).name : undefined);

// Setup outside the measured tasks: a deal edited eight days ago, a contact pair that is a duplicate.
const deals = (await call('crm_search', { object: 'opportunities', limit: 3, fields: ['name'], sort_by: 'amount', sort_dir: 'asc' })).data;
const changedDeal = deals[0];
setClock(Date.now() - 6 * DAY);
await updateRecord(contextFor(db, log, { ...actor, via: 'rest' }), 'opportunities', changedDeal.id, { amount: 12_345 });
setClock(null);
// A contact with a plain last name (letters only, five or more) to mistype.
const anyContact = (await call('crm_search', { object: 'contacts', limit: 50, fields: ['first_name', 'last_name', 'phone'] })).data.find((c: any) => /^[A-Za-z]{5,}$/.test(c.last_name) && c.phone);
await call('crm_create_record', { object: 'contacts', values: { first_name: anyContact.first_name, last_name: anyContact.last_name, phone: anyContact.phone } });
steps = [];

let mergeId = '';
const nextFriday = (() => {
  const d = new Date();
  d.setUTCDate(d.getUTCDate() + ((5 - d.getUTCDay() + 7) % 7 || 7));
  return `${d.toISOString().slice(0, 10)}T09:00:00Z`;
})();

const tasks: { name: string; run: () => Promise<string> }[] = [
  {
    name: 'top open deals closing this quarter, with company names',
    run: async () => {
      const r = await call('crm_search', {
        object: 'opportunities',
        filter: {
          operator: 'and',
          conditions: [
            { field: 'status', operator: 'not_in', value: ['closed_won', 'closed_lost'] },
            { field: 'close_date', operator: 'eq', value: 'this_quarter' },
          ],
        },
        sort_by: 'amount',
        sort_dir: 'desc',
        limit: 5,
        fields: ['name', 'amount', 'status', 'company'],
      });
      return r.data.map((d: any) => `${d.name} (${nameOf(d.company) ?? 'no company'})`).join('; ');
    },
  },
  {
    name: 'pipeline value by stage and owner',
    run: async () => {
      const r = await call('crm_aggregate', { object: 'opportunities', aggregate: [{ field: 'amount', function: 'sum' }], groupBy: ['status', 'owner'], limit: 50 });
      return `${r.groups.length} groups`;
    },
  },
  {
    name: 'follow-up task for a named contact next Friday',
    run: async () => {
      const hit = (await call('crm_full_text_search', { q: `${anyContact.first_name} ${anyContact.last_name}`, objects: ['contacts'], limit: 3 })).data[0];
      const t = await call('crm_create_task', { title: `Follow up with ${anyContact.first_name}`, contact: hit.id, due_at: nextFriday });
      return `task ${t.task.id} due ${t.task.due_at}`;
    },
  },
  {
    name: 'find and merge duplicates, dry run first',
    run: async () => {
      const found = await call('crm_find_duplicates', { object: 'contacts', limit: 3 });
      const cluster = found.data[0];
      const [primary, ...rest] = cluster.records.map((r: { id: string }) => r.id);
      await call('crm_merge_duplicates', { object: 'contacts', primary_id: primary, duplicate_ids: rest, dry_run: true });
      const merged = await call('crm_merge_duplicates', { object: 'contacts', primary_id: primary, duplicate_ids: rest });
      mergeId = merged.merge_id;
      return `merged ${rest.length} into ${primary}`;
    },
  },
  {
    name: 'export qualified leads as CSV',
    run: async () => {
      const r = await call('crm_export', {
        object: 'contacts',
        filter: { operator: 'and', conditions: [{ field: 'status', operator: 'eq', value: 'qualified' }] },
        fields: ['first_name', 'last_name', 'email', 'company'],
        preview: 3,
      });
      return `${r.exported} rows`;
    },
  },
  {
    name: 'what changed on a deal last week',
    run: async () => {
      const hit = (
        await call('crm_search', { object: 'opportunities', filter: { operator: 'and', conditions: [{ field: 'name', operator: 'eq', value: changedDeal.name }] }, limit: 1, fields: ['name'] })
      ).data[0];
      const r = await call('crm_get_activity', { object: 'opportunities', id: hit.id, from: new Date(Date.now() - 14 * DAY).toISOString().slice(0, 10), limit: 10 });
      return `${r.data.length} entries`;
    },
  },
  {
    name: 'add a custom field and set it',
    run: async () => {
      await call('crm_create_field', { object: 'opportunities', name: 'competitor', label: 'Competitor', type: 'TEXT' });
      const r = await call('crm_update_record', { object: 'opportunities', id: changedDeal.id, values: { competitor: 'Globex' } });
      return `competitor = ${r.record.competitor}`;
    },
  },
  {
    name: 'a misspelt name',
    run: async () => {
      // Two letters of the last name swapped, as people mistype it.
      const last = String(anyContact.last_name);
      const typo = `${anyContact.first_name} ${last.slice(0, 2)}${last[3]}${last[2]}${last.slice(4)}`;
      const r = await call('crm_full_text_search', { q: typo, objects: ['contacts'], limit: 5 });
      const found = r.data.some((h: { name: string }) => h.name.includes(last));
      if (!found) throw new Error(`'${typo}' did not find ${anyContact.first_name} ${last}`);
      return `'${typo}' found ${r.data[0].name}`;
    },
  },
  {
    name: 'my overdue tasks',
    run: async () => {
      const r = await call('crm_list_tasks', { mode: 'overdue', assignee: 'me', limit: 10 });
      return `${r.total ?? r.data.length} overdue`;
    },
  },
  {
    name: 'unread threads',
    run: async () => {
      const r = await call('crm_list_threads', { unread: true, limit: 10 });
      return `${r.total} unread`;
    },
  },
  {
    name: 'move a deal to won',
    run: async () => {
      const deal = (
        await call('crm_search', {
          object: 'opportunities',
          filter: { operator: 'and', conditions: [{ field: 'status', operator: 'eq', value: 'negotiation' }] },
          sort_by: 'amount',
          sort_dir: 'desc',
          limit: 1,
          fields: ['name', 'amount', 'status'],
        })
      ).data[0];
      const r = await call('crm_move_pipeline_step', { object: 'opportunities', id: deal.id, step: 'closed_won' });
      return `${deal.name}: ${r.from} -> ${r.to}`;
    },
  },
  {
    name: 'undo the merge',
    run: async () => {
      const r = await call('crm_unmerge', { merge_id: mergeId });
      return `restored ${r.restored_ids.length}`;
    },
  },
];

interface Row {
  task: string;
  calls: number;
  tokens: number;
  structuredTokens: number;
  tools: string;
  answer: string;
}
const rows: Row[] = [];
for (const t of tasks) {
  steps = [];
  let answer: string;
  try {
    answer = await t.run();
  } catch (e) {
    answer = `FAILED: ${(e as Error).message.slice(0, 200)}`;
  }
  rows.push({
    task: t.name,
    calls: steps.length,
    tokens: Math.round(steps.reduce((n, s) => n + s.textBytes, 0) / 4),
    structuredTokens: Math.round(steps.reduce((n, s) => n + s.structuredBytes, 0) / 4),
    tools: steps.map((s) => s.tool.replace(/^crm_/, '')).join(' > '),
    answer,
  });
}

const sorted = rows.map((r) => r.tokens).sort((x, y) => x - y);
const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
const maxCalls = Math.max(...rows.map((r) => r.calls));
const failed = rows.filter((r) => r.answer.startsWith('FAILED'));

console.log(`tools/list: ${listed.length} tools, ${listBytes} bytes, about ${Math.round(listBytes / 4)} tokens (target <= 10,000)\n`);
console.log('| task | calls | tokens (text) | tokens (structured) | tools | answer |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.task} | ${r.calls} | ${r.tokens} | ${r.structuredTokens} | ${r.tools} | ${r.answer.replace(/\|/g, '/')} |`);
console.log(`\nmost calls in a task: ${maxCalls} (target <= 3); median tokens of results: ${median} (target < 4,000); failed tasks: ${failed.length}`);

fs.mkdirSync(path.join(root, '.bench'), { recursive: true });
fs.writeFileSync(
  path.join(root, '.bench/agent-latest.json'),
  JSON.stringify({ at: new Date().toISOString(), node: process.version, listBytes, tools: listed.length, median, maxCalls, rows }, null, 2),
);
await client.close();
await db.close();
fs.rmSync(dir, { recursive: true, force: true });
if (failed.length || maxCalls > 3 || median >= 4000 || listBytes > 40_000) process.exitCode = 1;
